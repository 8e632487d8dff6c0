// Package fleetsim is devid-bench: a fleet of simulated hosts and
// workstations, run with devid's own client code, against devid-ca
// replicas and, beside them, a stock step-ca — all on loopback — and the
// figures it measures.
//
// # What runs
//
//   - A CA directory made by caserver.Init (what `devid-ca init` does), and
//     Options.Replicas `devid-ca serve` processes on it: on one PostgreSQL
//     database (two fresh databases are created on Options.PostgresDSN's
//     server, one for devid, one for step-ca, and dropped at the end), or
//     one on bbolt.
//   - A stock step-ca (Options.StepCA, v0.30.2 built from the module
//     proxy), configured with the same root, intermediate and SSH CA keys
//     and one X5C provisioner of the same name as devid's device
//     provisioner, trusting the same root, with the same lifetimes and no
//     webhooks: the same /ssh/sign without devid's checks, on the same kind
//     of store.
//   - Options.Hosts devices, registered by a device import through the
//     admin API with generated ECDSA P-256 EKs; a fraction are
//     workstations (SSH user certificates, owned by one user).
//
// Simulated devices have no TPM. Each gets a device certificate minted by
// the bench with the intermediate key from the CA directory — what ACME
// device-attest-01 issues to a device whose AK certified a TPM-resident
// key — so the X5C token (signed by the device key, which is also the key
// certified) passes devid's issuance checks (package issuance: the device
// is active, of the right kind, and the SSH key is the device
// certificate's). The attestation itself and the TPM-resident-key proof
// (package issuance/tpmkey) are not exercised by simulated devices; the
// attestation is measured with Options.SwTPMs real swtpms running
// enroll.Client.Attest in a loop, alternating replicas.
//
// Each simulated device runs devid-hostd's own tasks: hostd.HostCertificate
// (renewal at 2/3 of the lifetime with renew.Policy's jitter, its failure
// back-off) with an Issuer that is enroll.Client.SSHCertificate, and
// hostd.RevokedKeys (the KRL long-poll, krldist, the signature check and
// the file write). Device i talks to replica i mod Options.Replicas.
//
// # Time
//
// Options.Day is what 24 hours become: the host certificate lifetime. The
// user certificates' 16 hours, renew.Policy's back-off (5 s to 5 min) and
// the outage (1 hour) are divided by the same factor; the KRL long-poll's
// wait (55 s) and the hostd KRL task's own back-off are not (they are
// wall-clock behaviour of a connection, not of a certificate's life).
//
// # The run
//
//  1. Issuance throughput: Options.Concurrency workers run
//     enroll.Client.SSHCertificate (host certificates) against replica 1,
//     then step-ca, then again (after a 1 s warm-up of each, on kept-alive
//     connections): certificates per second and latency.
//  2. The fleet starts, each device at a uniform random time within its
//     certificate's renewal cycle (from one renewal to the next: 0.64 of
//     the lifetime, hostd's 2/3 less half its jitter), so that from the
//     second cycle on the fleet renews at a steady rate. During the
//     steady period (Options.Steady): the latency of every renewal (a fresh
//     TLS connection each, as a host renewing once a day has), and of the
//     swtpms' attestations (the two HTTP requests, from the client). Each
//     swtpm makes its AK once and has it certified again and again: the
//     RSA key generation a real device's TPM does on its own chip would
//     take most of a CPU here.
//  3. After the steady period, Options.Quarantines devices are quarantined
//     through replica 1's admin API, 3 s apart; for each, the time from the
//     admin request to every host, on whichever replica it polls:
//     delivered, when the CA's answer with a KRL of that version (or
//     newer) reached the host's socket (the kernel's receive timestamp,
//     SO_TIMESTAMPNS), and installed, when the host had checked the
//     signature, decoded the KRL and written sshd's file. The bench does
//     the installing for all 10,000 hosts on the CPUs the CAs use, so
//     installed is bounded below by 10,000 times a host's own work
//     (reported as the bench's CPU per install) over the cores; delivered
//     is the CA's part. The renewals' latency meanwhile is reported apart.
//  4. Then every replica is killed (SIGKILL), stays down for 1 hour
//     (compressed), and is restarted; the hosts' renewal attempts and KRL
//     requests are counted, and the busiest window of 10 minutes
//     (compressed; at least 1 s) after the restart is compared with the
//     busiest window of the steady period, as hostd's TestOutageStorm
//     does (and with the steady mean).
//  5. At the end of the steady period, each replica's VmRSS and VmHWM, its
//     sockets, its established connections on its HTTPS port and its
//     threads, from /proc.
//
// # Limits of one machine
//
// Every long-poll is two sockets on this machine (the host's and the
// CA's): 10,000 hosts need 10,000 in the bench's process and 10,000 / R in
// each replica's, within RLIMIT_NOFILE (Go raises the soft limit to the
// hard one). The bench, the replicas, PostgreSQL and step-ca share the
// CPUs: the figures are the whole system's on that machine, and
// throughput compares the two CAs under the same conditions, not their
// absolute capacity.
package fleetsim
