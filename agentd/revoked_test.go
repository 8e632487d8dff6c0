package agentd

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/krl"
	"golang.org/x/crypto/ssh"
)

func newTestSigner(t *testing.T) ssh.Signer {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := ssh.NewSignerFromKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRevokedWatch: a KRL that revokes the certificate in place (by
// serial, or by key ID) asks for one renewal, logged; the same
// certificate in a later KRL asks for none more; a new certificate
// revoked asks again. A KRL that revokes other certificates, or a
// certificate for another key, asks for nothing.
func TestRevokedWatch(t *testing.T) {
	ca, key, other := newTestSigner(t), newTestSigner(t), newTestSigner(t)
	file := filepath.Join(t.TempDir(), "id_devid-cert.pub")
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	write := func(k ssh.Signer, serial uint64) *ssh.Certificate {
		c := &ssh.Certificate{Key: k.PublicKey(), Serial: serial, KeyId: "urn:ek:sha256:laptop", CertType: ssh.UserCert,
			ValidPrincipals: []string{"login:alice"}, ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(16 * time.Hour).Unix())}
		if err := c.SignCert(rand.Reader, ca); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, ssh.MarshalAuthorizedKey(c), 0o644); err != nil {
			t.Fatal(err)
		}
		return c
	}
	revoking := func(v uint64, serials []uint64, keyIDs ...string) *krl.KRL {
		k := &krl.KRL{Version: v}
		s := k.CertsFor(ca.PublicKey())
		for _, n := range serials {
			if err := s.Serials.Add(n, n); err != nil {
				t.Fatal(err)
			}
		}
		s.KeyIDs = keyIDs
		return k
	}
	var log bytes.Buffer
	asked := 0
	w := &revokedWatch{file: file, key: key.PublicKey(), now: func() time.Time { return now },
		log: slog.New(slog.NewTextHandler(&log, nil)), ask: func() { asked++ }}

	w.installed(revoking(1, nil)) // no certificate yet
	write(key, 10)
	w.installed(revoking(2, []uint64{9, 11}))
	if asked != 0 {
		t.Fatalf("asked %d renewals for a KRL that does not revoke the certificate", asked)
	}
	w.installed(revoking(3, []uint64{10}))
	if asked != 1 || !strings.Contains(log.String(), "revokes this agent's certificate") || !strings.Contains(log.String(), "serial=10") {
		t.Fatalf("certificate 10 revoked: asked %d renewals, log:\n%s", asked, log.String())
	}
	w.installed(revoking(4, []uint64{10, 12}))
	if asked != 1 {
		t.Fatalf("the same certificate in a later KRL: asked %d renewals, want still 1", asked)
	}
	write(key, 13)
	w.installed(revoking(5, []uint64{10}, "urn:ek:sha256:laptop"))
	if asked != 2 {
		t.Fatalf("a new certificate revoked by key ID: asked %d renewals, want 2", asked)
	}
	write(other, 14) // not this agent's key
	w.installed(revoking(6, []uint64{14}))
	if asked != 2 {
		t.Fatalf("another key's certificate: asked %d renewals, want 2", asked)
	}
}
