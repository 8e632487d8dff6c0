package deviceid_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/deviceid"
)

func TestParseEK(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	sum := sha256.Sum256(der)
	want := "urn:ek:sha256:" + base64.StdEncoding.EncodeToString(sum[:])
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ek"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	inputs := map[string][]byte{
		"pkix der":  der,
		"pkix pem":  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
		"cert der":  certDER,
		"cert pem":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}),
		"pem+space": append([]byte("\n  "), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...),
	}
	for name, in := range inputs {
		ek, err := deviceid.ParseEK(in)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if ek.ID() != want || !deviceid.Valid(ek.ID()) {
			t.Fatalf("%s: ID = %s, want %s", name, ek.ID(), want)
		}
		if (ek.Certificate != nil) != strings.HasPrefix(name, "cert") {
			t.Fatalf("%s: certificate presence wrong", name)
		}
	}
	if ek, err := deviceid.ParseEKText(base64.StdEncoding.EncodeToString(certDER)); err != nil || ek.ID() != want {
		t.Fatalf("base64 cert: %v", err)
	}
	if id, _ := deviceid.FromPublicKey(&key.PublicKey); id != want {
		t.Fatalf("FromPublicKey = %s", id)
	}

	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p224DER, _ := x509.MarshalPKIXPublicKey(&p224.PublicKey)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	p521DER, _ := x509.MarshalPKIXPublicKey(&p521.PublicKey)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKIXPublicKey(edPub)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallDER, _ := x509.MarshalPKIXPublicKey(&small.PublicKey)
	bad := map[string][]byte{
		"empty":     nil,
		"garbage":   []byte("hello"),
		"ecc-p224":  p224DER,
		"ecc-p521":  p521DER,
		"ed25519":   edDER,
		"rsa-1024":  smallDER,
		"pem type":  pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}),
		"pem trail": append(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), "junk"...),
		"der trail": append(append([]byte{}, der...), 0),
	}
	for name, in := range bad {
		if _, err := deviceid.ParseEK(in); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !strings.HasPrefix(err.Error(), "deviceid: ") {
			t.Errorf("%s: error %q lacks the package prefix", name, err)
		}
	}
}

func TestValid(t *testing.T) {
	for s, want := range map[string]bool{
		"urn:ek:sha256:" + base64.StdEncoding.EncodeToString(make([]byte, 32)): true,
		"urn:ek:sha256:" + base64.StdEncoding.EncodeToString(make([]byte, 31)): false,
		"urn:ek:sha1:AAAA":                         false,
		"urn:ek:sha256:" + strings.Repeat("!", 44): false,
	} {
		if deviceid.Valid(s) != want {
			t.Errorf("Valid(%q) != %v", s, want)
		}
	}
}

// testEKs are the EKs in testdata, made with openssl: ek.* an RSA-2048
// key, ek-p256.* and ek-p384.* ECC keys (openssl ecparam -genkey, with a
// self-signed certificate from openssl req -x509); each one's .id is its
// device ID computed by openssl too:
//
//	echo "urn:ek:sha256:$(openssl dgst -sha256 -binary ek.pub.der | base64 -w0)"
var testEKs = []string{"ek", "ek-p256", "ek-p384"}

func TestMatchesOpenSSL(t *testing.T) {
	for _, base := range testEKs {
		want, err := os.ReadFile(filepath.Join("testdata", base+".id"))
		if err != nil {
			t.Fatal(err)
		}
		for _, ext := range []string{".pub.pem", ".pub.der", ".crt.pem", ".crt.der"} {
			name := base + ext
			b, err := os.ReadFile(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			ek, err := deviceid.ParseEK(b)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if ek.ID() != strings.TrimSpace(string(want)) {
				t.Errorf("%s: %s, want %s", name, ek.ID(), want)
			}
			if id, err := deviceid.FromPublicKey(ek.Public); err != nil || id != ek.ID() {
				t.Errorf("%s: FromPublicKey %s (%v), want %s", name, id, err, ek.ID())
			}
		}
	}
}

// FuzzParseEK: ParseEK never panics, and what it accepts has a valid ID
// that ParseEK of the re-encoded public key agrees with.
func FuzzParseEK(f *testing.F) {
	for _, base := range testEKs {
		for _, ext := range []string{".pub.pem", ".pub.der", ".crt.pem", ".crt.der"} {
			b, err := os.ReadFile(filepath.Join("testdata", base+ext))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ek, err := deviceid.ParseEK(data)
		if err != nil {
			return
		}
		if !deviceid.Valid(ek.ID()) {
			t.Fatalf("invalid ID %q", ek.ID())
		}
		again, err := deviceid.ParseEK(ek.PublicDER)
		if err != nil || again.ID() != ek.ID() {
			t.Fatalf("re-parse: %v", err)
		}
	})
}

// TestParseEKEveryLastByte: a DER EK certificate is accepted whatever its
// last byte (the last byte of the issuer's signature) is. Whitespace bytes
// there once were trimmed off, and 1 in 43 real EK certificates failed.
func TestParseEKEveryLastByte(t *testing.T) {
	ek, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	// An ECDSA issuer: its signatures are random, so new serials soon give
	// every last byte.
	issuer, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "ek"}, NotBefore: time.Unix(1700000000, 0), NotAfter: time.Unix(1800000000, 0)}
	byLast := map[byte][]byte{}
	for serial := int64(1); len(byLast) < 256; serial++ {
		if serial > 100000 {
			t.Fatalf("only %d of 256 last bytes after %d certificates", len(byLast), serial)
		}
		tmpl.SerialNumber = big.NewInt(serial)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ek.PublicKey, issuer)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := byLast[der[len(der)-1]]; !ok {
			byLast[der[len(der)-1]] = der
		}
	}
	want, _ := deviceid.FromPublicKey(&ek.PublicKey)
	for b := range 256 {
		der := byLast[byte(b)]
		got, err := deviceid.ParseEK(der)
		if err != nil {
			t.Errorf("DER certificate ending in 0x%02x: %v", b, err)
			continue
		}
		if got.ID() != want || got.Certificate == nil {
			t.Errorf("DER certificate ending in 0x%02x: ID %s (certificate %v), want %s", b, got.ID(), got.Certificate != nil, want)
		}
		// The same through the text form (base64 of the DER).
		if got, err := deviceid.ParseEKText(base64.StdEncoding.EncodeToString(der)); err != nil || got.ID() != want {
			t.Errorf("base64 DER certificate ending in 0x%02x: %v", b, err)
		}
		// Whitespace after a DER value is trailing data, not padding.
		if _, err := deviceid.ParseEK(append(append([]byte{}, der...), '\n')); err == nil {
			t.Errorf("DER certificate ending in 0x%02x, then a newline: accepted", b)
		}
	}
}

// TestParseEKECC: ECC EKs on P-256 and P-384 are taken, as keys and as
// certificates, their device ID the same computation as an RSA EK's; an
// ECC EK on another curve is refused, naming the curve.
func TestParseEKECC(t *testing.T) {
	for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		key, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
		sum := sha256.Sum256(der)
		want := "urn:ek:sha256:" + base64.StdEncoding.EncodeToString(sum[:])
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageKeyAgreement}
		certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		for name, in := range map[string][]byte{
			"pkix der": der,
			"pkix pem": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
			"cert der": certDER,
			"cert pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}),
		} {
			ek, err := deviceid.ParseEK(in)
			if err != nil {
				t.Fatalf("%s %s: %v", curve.Params().Name, name, err)
			}
			if ek.ID() != want || !deviceid.Valid(ek.ID()) {
				t.Errorf("%s %s: ID %s, want %s", curve.Params().Name, name, ek.ID(), want)
			}
			if !key.PublicKey.Equal(ek.Public) {
				t.Errorf("%s %s: public key %T is not the EK", curve.Params().Name, name, ek.Public)
			}
		}
	}
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&p521.PublicKey)
	if _, err := deviceid.ParseEK(der); err == nil || !strings.Contains(err.Error(), "curve P-521") || !strings.Contains(err.Error(), "P-256 and P-384") {
		t.Errorf("a P-521 EK: %v, want a refusal naming the curve and the ones taken", err)
	}
}
