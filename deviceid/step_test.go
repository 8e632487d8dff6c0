package deviceid_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"reflect"
	"testing"
	"unsafe"

	"github.com/devid-ssh/devid/deviceid"
	steptpm "go.step.sm/crypto/tpm"
)

// stepEK is step's tpm.EK for pub. step makes its EKs only in
// tpm.GetEKs, from go-attestation's list, which on Linux holds the RSA EK
// alone: the EK's unexported public key is set here so that step's own
// EK.FingerprintURI, the device ID step's tooling puts in AK certificates,
// can be asked about an ECC key too.
func stepEK(t *testing.T, pub crypto.PublicKey) *steptpm.EK {
	t.Helper()
	ek := new(steptpm.EK)
	f := reflect.ValueOf(ek).Elem().FieldByName("public")
	if !f.IsValid() || f.Type() != reflect.TypeFor[crypto.PublicKey]() {
		t.Fatalf("go.step.sm/crypto/tpm.EK has no field public crypto.PublicKey any more: update this test")
	}
	reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Set(reflect.ValueOf(pub))
	if ek.Public() != pub {
		t.Fatal("setting step's EK public key failed")
	}
	return ek
}

// TestMatchesStep: the device ID of RSA, ECC P-256 and ECC P-384 EKs is
// the URI step's TPM tooling computes for them (go.step.sm/crypto/tpm
// EK.FingerprintURI).
func TestMatchesStep(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, pub := range map[string]crypto.PublicKey{"RSA-2048": &rsaKey.PublicKey, "P-256": &p256.PublicKey, "P-384": &p384.PublicKey} {
		u, err := stepEK(t, pub).FingerprintURI()
		if err != nil {
			t.Fatalf("%s: step: %v", name, err)
		}
		id, err := deviceid.FromPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		if id != u.String() {
			t.Errorf("%s: device ID %s, step's %s", name, id, u)
		}
	}
}
