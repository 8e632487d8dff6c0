package principals_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/devid-ssh/devid/principals"
	"golang.org/x/crypto/ssh"
)

// TestEmptyPrincipals: a user certificate with no principals at all
// (which devid's CA never issues; OpenSSH before 10.3 lets one in through
// an authorized_keys cert-authority line without principals=) parses, and
// is denied whatever the policy says: it has no device-ID principal, and
// the helper prints nothing.
func TestEmptyPrincipals(t *testing.T) {
	dev := devID("laptop-1")
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	key, _ := ssh.NewPublicKey(pub)
	c, err := principals.ParseCertificate("ssh-ed25519-cert-v01@openssh.com", b64(signedCert(t, key, ssh.UserCert, dev)))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Principals) != 0 || c.KeyID != dev {
		t.Fatalf("parsed principals %q, key ID %s", c.Principals, c.KeyID)
	}
	const want = "the certificate has no device-ID principal"
	if _, err := c.DeviceID(); err == nil || err.Error() != want {
		t.Fatalf("DeviceID = %v, want %s", err, want)
	}
	path := filepath.Join(t.TempDir(), "principals.conf")
	if err := os.WriteFile(path, []byte(designPolicy+"alice "+dev+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := principals.DecideFile(path, "alice", c)
	if err != nil || d.Allow || d.Principal() != "" || d.Reason != want {
		t.Fatalf("DecideFile = %+v, %v; want deny: %s", d, err, want)
	}
}
