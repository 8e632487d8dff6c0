package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/internal/sshdtest"
)

// TestSSHD runs devid-principals under the real sshd, installed as sshd
// requires (root-owned, in a root-owned directory writable by nobody else,
// outside /tmp), as AuthorizedPrincipalsCommand with a dedicated user, and
// logs in with certificates made by ssh-keygen. sshd runs in inetd mode, a
// new one for each login; it still needs root, for that user.
func TestSSHD(t *testing.T) {
	sshdtest.Need(t, sshdtest.SSHD, "ssh", "ssh-keygen")
	helper := sshdtest.InstallCommand(t, bin)
	inst := filepath.Dir(helper)
	pol := filepath.Join(inst, "principals.conf")
	setPolicy := func(text string) {
		t.Helper()
		if err := os.WriteFile(pol, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	dir := t.TempDir()
	keygen := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ssh-keygen", args...).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ca := filepath.Join(dir, "ca")
	keygen("-q", "-t", "ed25519", "-N", "", "-C", "", "-f", ca)
	dev := devID("laptop-1")
	// cert makes a key and a user certificate with this key ID and these
	// principals, and returns the key's path (the certificate is beside it).
	cert := func(name, keyID string, principals ...string) string {
		t.Helper()
		key := filepath.Join(dir, name)
		sshdtest.Keygen(t, key)
		keygen("-q", "-s", ca, "-I", keyID, "-n", strings.Join(principals, ","), "-z", "7", key+".pub")
		return key
	}
	devRoot := cert("dev-root", dev, dev, "login:root", "group:sre")
	devAlice := cert("dev-alice", dev, dev, "login:alice")
	noDevice := cert("no-device", dev, "login:root")
	otherKeyID := cert("other-key-id", devID("laptop-2"), dev, "login:root")

	s := sshdtest.NewInetd(t, sshdtest.Options{Lines: []string{
		"TrustedUserCAKeys " + ca + ".pub",
		"AuthorizedPrincipalsCommand " + helper + " --policy " + pol + " %u %t %k",
		"AuthorizedPrincipalsCommandUser nobody",
	}})
	login := func(key string) bool {
		t.Helper()
		out, err := s.SSHCert(t, "", "root", key, key+"-cert.pub")
		if err != nil && !strings.Contains(out, "Permission denied") {
			t.Fatalf("ssh with %s: %v\n%s", filepath.Base(key), err, out)
		}
		return err == nil
	}
	denied := 0
	for _, step := range []struct {
		policy string
		key    string
		allow  bool
	}{
		{"* login:{account}\n", devRoot, true},
		{"* login:{account}\n", devAlice, false},
		{"* login:{account}\n", noDevice, false},
		{"* login:{account}\n", otherKeyID, false},
		// The policy is read at every login: no reload.
		{"root group:sre collection:sre-laptops\n", devRoot, false},
		{"root group:sre\n", devRoot, true},
		{"root " + dev + "\n", devRoot, true},
		{"alice login:root\n", devRoot, false},
		// A policy that does not parse, or is missing, lets nobody in.
		{"root group:sre\n* login:{user}\n", devRoot, false},
		{"", devRoot, false},
	} {
		if step.policy == "" {
			os.Remove(pol)
		} else {
			setPolicy(step.policy)
		}
		if !step.allow {
			denied++
		}
		if got := login(step.key); got != step.allow {
			log, _ := os.ReadFile(s.Log)
			t.Fatalf("policy %q, key %s: login %v, want %v\nsshd log:\n%s", step.policy, filepath.Base(step.key), got, step.allow, log)
		}
	}
	// Each denial was the helper's: sshd found no principal it printed.
	// And denials exit 0: sshd logs no failure of the command.
	log, err := os.ReadFile(s.Log)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "Certificate does not contain an authorized principal"); n != denied {
		t.Errorf("sshd refused %d certificates for want of a principal, want %d", n, denied)
	}
	if m := regexp.MustCompile(`(?i)AuthorizedPrincipalsCommand.*(status|signal|failed)`).Find(log); m != nil {
		t.Errorf("sshd log: %s", m)
	}
}
