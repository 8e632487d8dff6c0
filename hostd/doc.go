// Package hostd is devid-hostd, the daemon that keeps a host's sshd right.
// It is a list of tasks, each named after the sshd option whose file it
// keeps, each owning its state:
//
//   - HostCertificate keeps HostCertificate valid. It asks an Issuer for a
//     certificate for the host key — devid-hostd's is EnrollIssuer, one
//     enroll.Client.Enroll per certificate, so every renewal is a fresh
//     attestation and the CA checks the device's status each time — renews
//     at 2/3 of its lifetime (package renew decides when), backs off with
//     jitter when the CA cannot be reached and keeps the current
//     certificate meanwhile. A new certificate is written atomically and
//     checked with `sshd -t` (SSHD); if sshd refuses it the old file is
//     put back (none on a new host), Watch keeps guarding only the last
//     good one, and sshd is not reloaded. sshd is reloaded after every
//     new certificate (OpenSSH 9.8 and later read it only then); a failed
//     reload is retried at the failure back-off, without a new
//     certificate, until sshd reloads. It renews at once when the
//     configured principals differ from the certificate's, or when asked
//     (SIGUSR1, `devid-hostd renew`).
//   - TrustedUserCAKeys fetches the CA's SSH user CA keys (/ssh/roots) and
//     rewrites the file when they change; never with nothing in it. While
//     the CA is down it backs off with jitter.
//   - RevokedKeys long-polls the CA's KRL and installs each newer one whose
//     signature verifies with the last good user CA keys (CAKeys, shared
//     with TrustedUserCAKeys); polls have a floor interval, failures and
//     immediate 304s back off with jitter; an older version is refused.
//   - Watch puts back, within seconds, a managed file someone else deleted
//     or changed (Files remembers what the tasks wrote), and reports
//     changes of the configuration file.
//   - MetricsServer serves the registry at /metrics.
//
// Each of the four is built by its New function from a Config that gives
// it what it depends on (small interfaces such as Issuer and SSHD, so that
// tests drive it with fakes and testing/synctest), a logger scoped with its
// name (the "task" attribute), and a prometheus.Registerer on which it
// registers its own metrics (prefix devid_; MetricNames lists them all);
// each has Run(ctx) and a Status() snapshot.
//
// Daemon builds the tasks from the configuration file and runs them with
// internal/task's Runner: a task that fails or panics is restarted after a
// back-off, and a metrics listener that cannot be bound stops the daemon
// (systemd restarts it). It runs them again with the new configuration on
// SIGHUP or when the file changes (a broken file keeps the running
// configuration); Registry, kept across configurations, takes their
// metrics (NewRegistry), and NewIssuer and NewSSHD let tests run the whole
// daemon on fakes. A status task writes StateDir/status.json (`devid-hostd
// status`) from the tasks' snapshots after every change, and the daemon
// tells systemd READY once a host certificate and the user CA keys are in
// place — ones found valid at start count —, WATCHDOG at half of
// WATCHDOG_USEC, STATUS, RELOADING and STOPPING. StateDir/hostd.pid,
// locked while the daemon runs, says whether it does (LockStateDir,
// RunningPID). At start it removes the temporary files interrupted writes
// left in the directories it writes.
package hostd
