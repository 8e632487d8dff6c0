package tpm_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/deviceid"
	"github.com/devid-ssh/devid/tpm"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"
)

// TestECCOnlyEK: on a TPM whose only EKs are ECC ones, EK is an ECC EK
// with its certificate: swtpm's P-384 (template H-3), or, with a P-256 EK
// of template L-2 added, that one; held at their persistent handles or at
// none (made from their templates). Its device ID is deviceid's
// computation from the certificate, and stays the same after a restart;
// each EK's certificate chains to the EK CA; a challenge MakeCredential
// makes for an EK is answered with that EK and no other; and reading the
// EKs leaves no object loaded (swtpm has room for three).
func TestECCOnlyEK(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name          string
		opts          swtpmtest.Options
		curve         string
		handle, index uint32
		n             int // EKs
	}{
		{"swtpm's P-384", swtpmtest.Options{ECCOnly: true}, "P-384", 0x81010016, 0x01c00016, 1},
		{"P-256 and P-384", swtpmtest.Options{ECCOnly: true, ECCP256: true}, "P-256", 0x81010002, 0x01c0000a, 2},
		{"P-384 made from its template", swtpmtest.Options{ECCOnly: true, TransientEKs: true}, "P-384", 0, 0x01c00016, 1},
		{"P-256 and P-384 made from their templates", swtpmtest.Options{ECCOnly: true, ECCP256: true, TransientEKs: true}, "P-256", 0, 0x01c0000a, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			sw := c.opts.New(t)
			ek := mustEK(t, sw.TPM)
			pub, ok := ek.Public.(*ecdsa.PublicKey)
			if !ok || pub.Curve.Params().Name != c.curve {
				t.Fatalf("EK is a %T, want ECC %s", ek.Public, c.curve)
			}
			if ek.Handle != c.handle || ek.CertIndex != c.index {
				t.Errorf("EK at %#x, certificate at NV %#x; want %#x, %#x", ek.Handle, ek.CertIndex, c.handle, c.index)
			}
			if ek.Certificate == nil || !pub.Equal(ek.Certificate.PublicKey) {
				t.Fatal("no EK certificate for the EK")
			}
			if fromCert, err := deviceid.ParseEK(ek.Certificate.Raw); err != nil || fromCert.ID() != ek.DeviceID || !deviceid.Valid(ek.DeviceID) {
				t.Errorf("device ID %s; from the certificate %v (%v)", ek.DeviceID, fromCert, err)
			}

			eks, err := sw.TPM.EKs()
			if err != nil {
				t.Fatal(err)
			}
			if len(eks) != c.n || eks[0].DeviceID != ek.DeviceID {
				t.Fatalf("%d EKs, the first %s; want %d, the first the EK", len(eks), eks[0].DeviceID, c.n)
			}
			ak := mustAK(t, sw.TPM)
			for i, e := range eks {
				if _, ok := e.Public.(*ecdsa.PublicKey); !ok || e.Certificate == nil {
					t.Errorf("EK %d: a %T, certificate %v: want ECC EKs with certificates only", i, e.Public, e.Certificate != nil)
				}
				if _, err := tpm.VerifyEKCertificate(e.Certificate, x509.VerifyOptions{Roots: sw.EKRoots(), Intermediates: sw.EKIntermediates()}); err != nil {
					t.Errorf("EK %d: %v", i, err)
				}
				secret, ec, err := tpm.MakeCredential(e.Public, ak.AttestationParameters())
				if err != nil {
					t.Fatal(err)
				}
				got, err := ak.ActivateCredential(e, *ec)
				if err != nil || !bytes.Equal(got, secret) {
					t.Errorf("EK %d (%s): activated %x, %v; want %x", i, e.Type(), got, err, secret)
				}
				if len(eks) > 1 {
					other := eks[(i+1)%len(eks)]
					if got, err := ak.ActivateCredential(other, *ec); err == nil {
						t.Errorf("EK %d's challenge activated with EK %s, giving %x", i, other.DeviceID, got)
					}
				}
				tampered := *ec
				tampered.Secret = bytes.Clone(ec.Secret)
				tampered.Secret[len(tampered.Secret)/2] ^= 1
				if got, err := ak.ActivateCredential(e, tampered); err == nil {
					t.Errorf("EK %d: a tampered challenge activated, giving %x", i, got)
				}
			}
			// A challenge for another key on the same curve.
			stranger, _ := ecdsa.GenerateKey(pub.Curve, rand.Reader)
			_, ec, err := tpm.MakeCredential(&stranger.PublicKey, ak.AttestationParameters())
			if err != nil {
				t.Fatal(err)
			}
			if got, err := ak.ActivateCredential(ek, *ec); err == nil {
				t.Errorf("a challenge for another %s key activated, giving %x", c.curve, got)
			}

			// Reading the EKs again and again leaves nothing loaded: the
			// AK, a new key and the storage root key it is made under
			// still fit in swtpm's three slots.
			for range 4 {
				if _, err := sw.TPM.EKs(); err != nil {
					t.Fatal(err)
				}
			}
			key, err := ak.NewKey(nil)
			if err != nil {
				t.Fatalf("after reading the EKs: %v", err)
			}
			key.Close()

			if err := sw.Restart(); err != nil {
				t.Fatal(err)
			}
			if again := mustEK(t, sw.TPM); again.DeviceID != ek.DeviceID || again.Handle != ek.Handle {
				t.Errorf("after a restart: EK %s at %#x, want %s at %#x", again.DeviceID, again.Handle, ek.DeviceID, ek.Handle)
			}
		})
	}
}

// TestRSAEKStaysFirst: a TPM with an RSA EK and ECC EKs is named by its
// RSA EK, as before ECC EKs were read: EKs lists it first, then the
// P-256 and P-384 EKs where they are.
func TestRSAEKStaysFirst(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.Options{ECCP256: true}.New(t)
	ek := mustEK(t, sw.TPM)
	if _, ok := ek.Public.(*rsa.PublicKey); !ok || ek.Handle != tpm.RSAEKHandle {
		t.Fatalf("EK is a %T at %#x, want the RSA EK at %#x", ek.Public, ek.Handle, tpm.RSAEKHandle)
	}
	eks, err := sw.TPM.EKs()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range eks {
		got = append(got, fmt.Sprintf("%s@0x%08x/0x%08x", e.Type(), e.Handle, e.CertIndex))
	}
	want := "RSA-2048@0x81010001/0x01c00002 ECC-P-256@0x81010002/0x01c0000a ECC-P-384@0x81010016/0x01c00016"
	if strings.Join(got, " ") != want || eks[0].DeviceID != ek.DeviceID {
		t.Errorf("EKs %v, want %s", got, want)
	}
}

// TestActivateWithAnotherTPMsEK: an EK that is not this TPM's is refused
// before the TPM is asked, naming the EK; so is a malformed challenge.
func TestActivateWithAnotherTPMsEK(t *testing.T) {
	t.Parallel()
	sw, other := swtpmtest.Options{ECCOnly: true}.New(t), swtpmtest.Options{ECCOnly: true, TransientEKs: true}.New(t)
	otherEK := mustEK(t, other.TPM)
	ak := mustAK(t, sw.TPM)
	_, ec, err := tpm.MakeCredential(otherEK.Public, ak.AttestationParameters())
	if err != nil {
		t.Fatal(err)
	}
	// otherEK is made from its template: here the template gives this
	// TPM's key, not otherEK's.
	if _, err := ak.ActivateCredential(otherEK, *ec); err == nil || !strings.Contains(err.Error(), "is not the EK "+otherEK.DeviceID) {
		t.Errorf("another TPM's EK: %v", err)
	}
	ek := mustEK(t, sw.TPM)
	_, ec, err = tpm.MakeCredential(ek.Public, ak.AttestationParameters())
	if err != nil {
		t.Fatal(err)
	}
	long := *ec
	long.Credential = append(bytes.Clone(ec.Credential), 0)
	if _, err := ak.ActivateCredential(ek, long); err == nil || !strings.Contains(err.Error(), "malformed credential") {
		t.Errorf("a credential with a byte too many: %v", err)
	}
	if _, err := ak.ActivateCredential(nil, *ec); err == nil {
		t.Error("no EK: activated")
	}
}

// TestMakeCredentialRefuses: an EK of a kind no TPM template makes, and
// AK parameters no TPM made, get no challenge.
func TestMakeCredentialRefuses(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.Options{ECCOnly: true}.New(t)
	ak := mustAK(t, sw.TPM)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	for name, pub := range map[string]any{"P-521": &p521.PublicKey, "Ed25519": edPub} {
		if _, _, err := tpm.MakeCredential(pub, ak.AttestationParameters()); err == nil || !strings.HasPrefix(err.Error(), "tpm: ") {
			t.Errorf("%s EK: %v, want a refusal", name, err)
		}
	}
	ek := mustEK(t, sw.TPM)
	forged := ak.AttestationParameters()
	forged.CreateAttestation = bytes.Clone(forged.CreateAttestation)
	forged.CreateAttestation[len(forged.CreateAttestation)-1] ^= 1
	if _, _, err := tpm.MakeCredential(ek.Public, forged); err == nil {
		t.Error("AK parameters with a tampered creation attestation: a challenge")
	}
	// An AK that is not restricted to attestation: a plain signing key's
	// public area in place of the AK's.
	notAK := ak.AttestationParameters()
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](notAK.Public)
	if err != nil {
		t.Fatal(err)
	}
	pub.ObjectAttributes.Restricted = false
	notAK.Public = tpm2.Marshal(pub)
	if _, _, err := tpm.MakeCredential(ek.Public, notAK); err == nil {
		t.Error("an unrestricted AK: a challenge")
	}
	var _ attest.AttestationParameters = notAK
}

// TestPersistedRSAEKKeepsNamingTheDevice: a TPM with no RSA EK
// certificate but the RSA EK at 0x81010001 (where go-attestation's
// credential activation leaves it: a device devid named by that EK before
// it read ECC EKs) is still named by its RSA EK, not by its ECC EK.
func TestPersistedRSAEKKeepsNamingTheDevice(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.Options{ECCOnly: true}.New(t)
	ch, err := sw.RawChannel()
	if err != nil {
		t.Fatal(err)
	}
	rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tpm2.RSAEKTemplate)}.Execute(ch)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.EvictControl{Auth: tpm2.TPMRHOwner, ObjectHandle: tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name},
		PersistentHandle: tpm.RSAEKHandle}).Execute(ch); err != nil {
		t.Fatal(err)
	}
	public, _ := rsp.OutPublic.Contents()
	rsaKey, err := tpm2.Pub(*public)
	if err != nil {
		t.Fatal(err)
	}
	ch.Close()
	if err := sw.Restart(); err != nil {
		t.Fatal(err)
	}
	ek := mustEK(t, sw.TPM)
	want, _ := deviceid.FromPublicKey(rsaKey)
	if ek.Type() != "RSA-2048" || ek.Handle != tpm.RSAEKHandle || ek.Certificate != nil || ek.DeviceID != want {
		t.Fatalf("EK %s at %#x (certificate %v), %s; want the persisted RSA EK, %s", ek.Type(), ek.Handle, ek.Certificate != nil, ek.DeviceID, want)
	}
	eks, err := sw.TPM.EKs()
	if err != nil {
		t.Fatal(err)
	}
	if len(eks) != 2 || eks[1].Type() != "ECC-P-384" {
		t.Errorf("%d EKs, want the RSA EK, then the P-384 one", len(eks))
	}
	ak := mustAK(t, sw.TPM)
	secret, ec, err := tpm.MakeCredential(ek.Public, ak.AttestationParameters())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ak.ActivateCredential(ek, *ec); err != nil || !bytes.Equal(got, secret) {
		t.Errorf("activating with the RSA EK: %x, %v", got, err)
	}
}
