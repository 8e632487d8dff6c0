package deviceid_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/deviceid"
)

// testdata/ek.* hold one RSA-2048 key made with openssl; ek.id is its
// device ID computed by openssl too:
//
//	echo "urn:ek:sha256:$(openssl dgst -sha256 -binary ek.pub.der | base64 -w0)"
func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wantID(t *testing.T) string {
	return strings.TrimSpace(string(readTestdata(t, "ek.id")))
}

func TestParseMatchesOpenSSL(t *testing.T) {
	want := wantID(t)
	for _, name := range []string{"ek.pub.pem", "ek.pub.der", "ek.crt.pem", "ek.crt.der"} {
		got, err := deviceid.Parse(readTestdata(t, name))
		if err != nil {
			t.Errorf("Parse(%s): %v", name, err)
			continue
		}
		if got != want {
			t.Errorf("Parse(%s) = %q, want %q", name, got, want)
		}
	}
}

func TestFromPublicKeyAndCertificateAgree(t *testing.T) {
	want := wantID(t)
	cert, err := x509.ParseCertificate(readTestdata(t, "ek.crt.der"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := deviceid.FromCertificate(cert); err != nil || got != want {
		t.Errorf("FromCertificate = %q, %v; want %q", got, err, want)
	}
	if got, err := deviceid.FromPublicKey(cert.PublicKey); err != nil || got != want {
		t.Errorf("FromPublicKey = %q, %v; want %q", got, err, want)
	}
	if !strings.HasPrefix(want, deviceid.Prefix) {
		t.Errorf("%q does not start with Prefix %q", want, deviceid.Prefix)
	}
}

func TestFromPublicKeyOtherKeyTypes(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := deviceid.FromPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := deviceid.Parse(der); err != nil || got != id {
		t.Errorf("Parse(DER of the same key) = %q, %v; want %q", got, err, id)
	}
}

func TestRejects(t *testing.T) {
	if _, err := deviceid.FromPublicKey(nil); err == nil {
		t.Error("FromPublicKey(nil): no error")
	}
	if _, err := deviceid.FromPublicKey(struct{}{}); err == nil {
		t.Error("FromPublicKey(struct{}{}): no error")
	}
	if _, err := deviceid.FromCertificate(nil); err == nil {
		t.Error("FromCertificate(nil): no error")
	}
	pubPEM := readTestdata(t, "ek.pub.pem")
	crtPEM := readTestdata(t, "ek.crt.pem")
	pubDER := readTestdata(t, "ek.pub.der")
	for name, data := range map[string][]byte{
		"empty":                nil,
		"garbage":              []byte("not a key"),
		"two PEM blocks":       append(append([]byte{}, pubPEM...), crtPEM...),
		"PEM then garbage":     append(append([]byte{}, pubPEM...), "junk"...),
		"private key PEM":      bytes.Replace(pubPEM, []byte("PUBLIC KEY"), []byte("PRIVATE KEY"), 2),
		"PEM with bad content": bytes.Replace(crtPEM, []byte("CERTIFICATE"), []byte("PUBLIC KEY"), 2),
		"DER with trailing":    append(append([]byte{}, pubDER...), 0),
		"truncated DER":        pubDER[:len(pubDER)-1],
	} {
		if id, err := deviceid.Parse(data); err == nil {
			t.Errorf("Parse(%s) = %q, want an error", name, id)
		} else if !strings.HasPrefix(err.Error(), "deviceid: ") {
			t.Errorf("Parse(%s) error %q lacks the package prefix", name, err)
		}
	}
}

// FuzzParse: Parse never panics, and what it accepts gives a well-formed ID.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"ek.pub.pem", "ek.pub.der", "ek.crt.pem", "ek.crt.der"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		id, err := deviceid.Parse(data)
		if err != nil {
			return
		}
		if !strings.HasPrefix(id, deviceid.Prefix) || len(id) != len(deviceid.Prefix)+44 {
			t.Errorf("Parse gave malformed ID %q", id)
		}
	})
}
