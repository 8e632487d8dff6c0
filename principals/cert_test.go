package principals_test

import (
	"crypto/dsa"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/devid-ssh/devid/internal/sshdtest"
	"github.com/devid-ssh/devid/principals"
)

// skKey builds a security-key public key, which x/crypto/ssh parses but
// cannot make from a Go key.
func skKey(t testing.TB, algo string) ssh.PublicKey {
	t.Helper()
	var fields []any
	switch algo {
	case ssh.KeyAlgoSKED25519:
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		fields = []any{algo, []byte(pub), "ssh:"}
	case ssh.KeyAlgoSKECDSA256:
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pt, _ := k.PublicKey.Bytes()
		fields = []any{algo, "nistp256", pt, "ssh:"}
	}
	var blob []byte
	for _, f := range fields {
		var b []byte
		switch f := f.(type) {
		case string:
			b = []byte(f)
		case []byte:
			b = f
		}
		blob = append(blob, byte(len(b)>>24), byte(len(b)>>16), byte(len(b)>>8), byte(len(b)))
		blob = append(blob, b...)
	}
	k, err := ssh.ParsePublicKey(blob)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signedCert returns a certificate for key, signed by a new Ed25519 CA.
func signedCert(t testing.TB, key ssh.PublicKey, certType uint32, keyID string, principals ...string) *ssh.Certificate {
	t.Helper()
	_, caPriv, _ := ed25519.GenerateKey(rand.Reader)
	ca, err := ssh.NewSignerFromKey(caPriv)
	if err != nil {
		t.Fatal(err)
	}
	c := &ssh.Certificate{Key: key, Serial: 42, CertType: certType, KeyId: keyID, ValidPrincipals: principals,
		ValidAfter: 1700000000, ValidBefore: ssh.CertTimeInfinity,
		Permissions: ssh.Permissions{Extensions: map[string]string{"permit-pty": ""}, CriticalOptions: map[string]string{"source-address": "10.0.0.0/8"}}}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return c
}

func b64(c *ssh.Certificate) string { return base64.StdEncoding.EncodeToString(c.Marshal()) }

func TestParseCertificateKeyTypes(t *testing.T) {
	dev := devID("laptop-1")
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	var dsaKey dsa.PrivateKey
	dsa.GenerateParameters(&dsaKey.Parameters, rand.Reader, dsa.L1024N160)
	dsa.GenerateKey(&dsaKey, rand.Reader)
	keys := []ssh.PublicKey{skKey(t, ssh.KeyAlgoSKED25519), skKey(t, ssh.KeyAlgoSKECDSA256)}
	for _, k := range []any{&rsaKey.PublicKey, &p256.PublicKey, &p384.PublicKey, &p521.PublicKey, edPub, &dsaKey.PublicKey} {
		pub, err := ssh.NewPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, pub)
	}
	seen := map[string]bool{}
	for _, key := range keys {
		sc := signedCert(t, key, ssh.UserCert, dev, dev, "login:alice", "group:sre")
		seen[sc.Type()] = true
		t.Run(sc.Type(), func(t *testing.T) {
			c, err := principals.ParseCertificate(sc.Type(), b64(sc))
			if err != nil {
				t.Fatal(err)
			}
			want := &principals.Certificate{Type: sc.Type(), Serial: 42, CertType: principals.UserCert, KeyID: dev,
				Principals: []string{dev, "login:alice", "group:sre"}, ValidAfter: 1700000000, ValidBefore: ssh.CertTimeInfinity}
			if !reflect.DeepEqual(c, want) {
				t.Fatalf("ParseCertificate = %+v\nwant %+v", c, want)
			}
			// Every shorter prefix of the certificate is refused.
			blob := sc.Marshal()
			for n := range len(blob) {
				if _, err := principals.ParseCertificate(sc.Type(), base64.StdEncoding.EncodeToString(blob[:n])); err == nil {
					t.Fatalf("a certificate cut to %d of %d bytes parsed", n, len(blob))
				}
			}
		})
	}
	if len(seen) != 8 {
		t.Errorf("covered %d certificate types, want the 8 OpenSSH has", len(seen))
	}
}

func TestParseCertificateErrors(t *testing.T) {
	dev := devID("laptop-1")
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	key, _ := ssh.NewPublicKey(edPub)
	sc := signedCert(t, key, ssh.UserCert, dev, dev)
	good := sc.Marshal()
	typ := sc.Type()
	enc := base64.StdEncoding.EncodeToString
	withCertType := func(v byte) []byte { // the uint32 certificate type field, just before the key ID
		b := append([]byte(nil), good...)
		i := strings.Index(string(b), "\x00\x00\x00\x01\x00\x00\x00"+string(rune(len(dev)))+dev) // type 1, then the key ID
		if i < 0 {
			t.Fatal("no certificate type field found")
		}
		b[i+3] = v
		return b
	}
	for _, tc := range []struct {
		name, typ, b64, want string
	}{
		{"garbage base64", typ, "not base64!", "principals: certificate: illegal base64 data at input byte 3"},
		{"empty", typ, "", "principals: certificate: truncated"},
		{"base64 with a newline", typ, enc(good)[:20] + "\n" + enc(good)[20:], "principals: certificate: line break in base64 at input byte 20"},
		{"unpadded base64", typ, strings.TrimRight(enc(append(good, 0)), "="), "principals: certificate: illegal base64 data"},
		{"plain key", "ssh-ed25519", enc(key.Marshal()), `principals: certificate: a "ssh-ed25519" key, not a certificate`},
		{"unknown certificate type", "ssh-mldsa-44-cert-v01@golang.org", enc(append([]byte("\x00\x00\x00\x20ssh-mldsa-44-cert-v01@golang.org"), good[36:]...)), `principals: certificate: unsupported certificate type "ssh-mldsa-44-cert-v01@golang.org"`},
		{"type differs from %t", "ecdsa-sha2-nistp256-cert-v01@openssh.com", enc(good), "principals: certificate: type ssh-ed25519-cert-v01@openssh.com, but ecdsa-sha2-nistp256-cert-v01@openssh.com was given"},
		{"trailing bytes", typ, enc(append(good, 0, 0, 0, 0)), "principals: certificate: 4 bytes after the signature"},
		{"certificate type 3", typ, enc(withCertType(3)), "principals: certificate: certificate type 3 is neither user (1) nor host (2)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := principals.ParseCertificate(tc.typ, tc.b64)
			if c != nil || err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("ParseCertificate = %+v, %v; want %q", c, err, tc.want)
			}
		})
	}
	// A host certificate parses; DeviceID refuses it.
	hc := signedCert(t, key, ssh.HostCert, dev, dev)
	c, err := principals.ParseCertificate(typ, b64(hc))
	if err != nil || c.CertType != principals.HostCert {
		t.Fatalf("host certificate: %+v, %v", c, err)
	}
	if _, err := c.DeviceID(); err == nil {
		t.Fatal("DeviceID accepted a host certificate")
	}
}

// TestParseCertificateSSHKeygen reads certificates made by OpenSSH's own
// ssh-keygen, as sshd passes them: %t and %k are the first two fields of the
// certificate file.
func TestParseCertificateSSHKeygen(t *testing.T) {
	sshdtest.Need(t, "ssh-keygen")
	dir := t.TempDir()
	dev := devID("laptop-1")
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ssh-keygen", args...).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "ca"))
	for _, kt := range []string{"ed25519", "ecdsa", "rsa"} {
		key := filepath.Join(dir, kt)
		run("-q", "-t", kt, "-N", "", "-f", key)
		run("-q", "-s", filepath.Join(dir, "ca"), "-I", dev, "-n", dev+",login:alice,group:sre", "-z", "1234", "-V", "20240101:20991231", key+".pub")
		data, err := os.ReadFile(key + "-cert.pub")
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(data))
		c, err := principals.ParseCertificate(f[0], f[1])
		if err != nil {
			t.Fatalf("%s: %v", kt, err)
		}
		if c.Serial != 1234 || c.KeyID != dev || strings.Join(c.Principals, ",") != dev+",login:alice,group:sre" || c.CertType != principals.UserCert {
			t.Fatalf("%s: %+v", kt, c)
		}
		if id, err := c.DeviceID(); err != nil || id != dev {
			t.Fatalf("%s: DeviceID = %q, %v", kt, id, err)
		}
	}
}
