package devidcli_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/cmd/devid/devidcli"
	"github.com/devid-ssh/devid/internal/command"
	"github.com/devid-ssh/devid/internal/sshdtest"
)

// TestKRLInspectAgreesWithSSHD: for RevokedKeys files that are not binary
// KRLs, what devid krl inspect says sshd does is what a real sshd does. sshd
// reads a file without the KRL magic as a list of public keys: empty or
// comments only, it revokes nothing; a line that is not a key makes it
// refuse every public-key login. sshd runs in inetd mode, a new one for
// each login: no port, and no root.
func TestKRLInspectAgreesWithSSHD(t *testing.T) {
	sshdtest.Need(t, "ssh-keygen")
	dir := t.TempDir()
	ca, user := filepath.Join(dir, "ca"), filepath.Join(dir, "user")
	revoked := filepath.Join(dir, "revoked_keys")
	srv := sshdtest.NewInetd(t, sshdtest.Options{Lines: []string{"TrustedUserCAKeys " + ca + ".pub", "RevokedKeys " + revoked}})
	sshdtest.Keygen(t, ca)
	sshdtest.Keygen(t, user)
	if out, err := exec.Command("ssh-keygen", "-q", "-s", ca, "-I", "test", "-n", srv.User, "-z", "7", user+".pub").CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -s: %v\n%s", err, out)
	}
	otherKey := filepath.Join(dir, "other")
	sshdtest.Keygen(t, otherKey)
	other, err := os.ReadFile(otherKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		content string
		login   bool   // a real sshd lets the certificate in
		says    string // what inspect says
		all     bool   // inspect says sshd refuses every login
	}{
		{"empty", "", true, "it lists no keys, so sshd revokes nothing: every login otherwise allowed gets in", false},
		{"comments", "# nothing revoked yet\n\n   # indented comment\n", true, "it lists no keys, so sshd revokes nothing", false},
		{"another key", string(other), true, "sshd revokes these 1 keys (and certificates of them or signed by them)", false},
		{"the CA's key", mustRead(t, ca+".pub"), false, "sshd revokes these 1 keys", false},
		{"not a key", "# revoked\nserial: 5\n", false, "line 2 is not a public key, so sshd refuses every public-key login", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(revoked, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := srv.SSHCert(t, "", srv.User, user, user+"-cert.pub")
			if (err == nil) != tc.login || !tc.login && !strings.Contains(out, "Permission denied") {
				t.Fatalf("login succeeded: %v, want %v\n%s", err == nil, tc.login, out)
			}
			var stdout, stderr bytes.Buffer
			env := &command.Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
			code := devidcli.Main([]string{"krl", "inspect", revoked}, env)
			all := stdout.String() + stderr.String()
			if !strings.Contains(all, "not a binary KRL") || !strings.Contains(all, tc.says) {
				t.Fatalf("inspect (exit %d) says:\n%s\nwant %q", code, all, tc.says)
			}
			if strings.Contains(all, "refuses every public-key login") != tc.all {
				t.Fatalf("inspect says sshd refuses every login: %v, want %v:\n%s", !tc.all, tc.all, all)
			}
			if wantCode := map[bool]int{true: 1, false: 0}[tc.all]; code != wantCode {
				t.Fatalf("inspect exit %d, want %d", code, wantCode)
			}
		})
	}
}

func mustRead(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
