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
//  2. The fleet starts, device i at a random time in the first renewal
//     period (2/3 of Day), so that the second period is steady. During the
//     steady period (Options.Steady): the latency of every renewal (a fresh
//     TLS connection each, as a host renewing once a day has), and of the
//     swtpms' attestations (the two HTTP requests, from the client).
//  3. A quarter into the steady period, Options.Quarantines devices are
//     quarantined through replica 1's admin API, 3 s apart; for each, the
//     time from the admin request to the installation of a KRL of that
//     version (or newer) by every host, on whichever replica it polls.
//  4. At the end of the steady period every replica is killed (SIGKILL),
//     stays down for 1 hour (compressed), and is restarted; the hosts'
//     renewal attempts and KRL requests are counted, and the highest rate
//     over any window of 10 minutes (compressed; at least 1 s) after the
//     restart is compared with the steady mean rate.
//  5. Just before the outage, each replica's VmRSS and VmHWM, its
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
