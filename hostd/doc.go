// Package hostd is devid-hostd, the daemon that keeps a host's sshd right:
//
//   - HostCert attests the host's TPM and gets an SSH host certificate for
//     the host key, renews it at 2/3 of its lifetime (package renew decides
//     when; every renewal is a fresh attestation, so the device's status is
//     checked each time), backs off with jitter when the CA cannot be
//     reached and keeps the current certificate meanwhile. A new
//     certificate is written atomically and checked with `sshd -t`; if sshd
//     refuses it the old file is put back (none on a new host), Watch keeps
//     guarding only the last good one, and sshd is not reloaded. It renews at
//     once when the configured principals differ from the certificate's, or
//     when asked (SIGUSR1, `devid-hostd renew`).
//   - UserCA fetches the CA's SSH user CA keys (/ssh/roots) and rewrites
//     TrustedUserCAKeys when they change; never with nothing in it. While
//     the CA is down it backs off with jitter.
//   - KRL long-polls the CA's KRL and installs each newer one whose
//     signature verifies with the last good user CA keys (CAKeys); polls
//     have a floor interval, failures and immediate 304s back off with
//     jitter.
//   - Watch puts back, within seconds, a managed file someone else deleted
//     or changed, and counts it.
//   - the metrics server exports Prometheus metrics (prefix devid_) on a
//     private registry.
//
// Each task is a value with Run(ctx) error. Daemon wires them together
// with systemd notification (READY once a host certificate and the user CA
// keys are in place — ones found valid at start count — WATCHDOG at half of WATCHDOG_USEC,
// STATUS, RELOADING, STOPPING) and reloads its configuration on SIGHUP or
// when the file changes. The state a human wants (`devid-hostd status`) is
// kept in StateDir/status.json; StateDir/hostd.pid, locked while the daemon
// runs, says whether it does (LockStateDir, RunningPID). At start it removes
// the temporary files interrupted writes left in the directories it writes.
package hostd
