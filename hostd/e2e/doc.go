// Package e2e tests devid-hostd end to end, for what only real parts can
// show: the devid-hostd binary as a process (its stateDir lock, signals,
// `status` and `renew`, kill -9), a real devid-ca (caserver/catest), a
// swtpm per host, the real sshd reloading and logging users in, systemd's
// notification protocol, and a KRL reaching sshd. The tasks' decisions —
// renewal timing, back-off, refusals, restores — are tested in package
// hostd with fakes and testing/synctest, in seconds.
//
// BenchmarkHostdIdle (what an idle devid-hostd costs) and
// BenchmarkKRLPropagation (a quarantine reaching RevokedKeys on several
// hosts) are here too: `make bench` runs them.
//
// Without swtpm or sshd these tests skip, and fail when CI=true.
package e2e
