package main_test

import (
	"regexp"
	"testing"
)

// TestVersion: --version prints one line and exits 0; an account named
// --version in sshd's form is still an account (nothing printed but a
// principal).
func TestVersion(t *testing.T) {
	r := run(t, "--version")
	if r.code != 0 || !regexp.MustCompile(`^devid-principals \S+ \(go1\.[0-9.]+\S*\)\n$`).MatchString(r.stdout) || r.stderr != "" {
		t.Errorf("--version: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = run(t, "--policy", "/nonexistent", "--log", "stderr", "--version", "ssh-ed25519-cert-v01@openssh.com", "AAAA")
	if r.code != 0 || r.stdout != "" {
		t.Errorf("sshd's form with account --version: exit %d, stdout %q", r.code, r.stdout)
	}
}
