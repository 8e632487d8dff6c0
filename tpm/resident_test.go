package tpm_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/tpm"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	keyfile "github.com/foxboron/go-tpm-keyfiles"
	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"
)

func mustResident(t *testing.T, tp *tpm.TPM, file []byte) *tpm.ResidentKey {
	t.Helper()
	k, err := tp.LoadResidentKey(file)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

func checkSigns(t *testing.T, k crypto.Signer) {
	t.Helper()
	digest := sha256.Sum256([]byte("devid"))
	sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatal("the TPM's signature does not verify")
	}
}

// TestResidentKey: a key file made by the TPM loads again after the TPM
// restarts (as after a reboot) and signs there with the same key; an AK
// certifies it over qualifying data, as go-attestation verifies; on another
// TPM the same key file cannot even be loaded, so it cannot sign.
func TestResidentKey(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.New(t)
	file, err := sw.TPM.CreateResidentKey("devid test")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(file, []byte("-----BEGIN TSS2 PRIVATE KEY-----")) {
		t.Fatalf("key file is not a TSS2 key:\n%s", file)
	}
	k := mustResident(t, sw.TPM, file)
	checkSigns(t, k)
	pub := k.Public().(*ecdsa.PublicKey)
	// A second Close does nothing: the handle may name another object by
	// then (here the AK below, which must still certify).
	k0 := mustResident(t, sw.TPM, file)
	if err := k0.Close(); err != nil {
		t.Fatal(err)
	}

	ak := mustAK(t, sw.TPM)
	if err := k0.Close(); err != nil {
		t.Fatal(err)
	}
	nonce := sha256.Sum256([]byte("fresh qualifying data"))
	for range 2 { // an AK certifies the same key again
		cp, err := ak.Certify(k, nonce[:])
		if err != nil {
			t.Fatal(err)
		}
		if err := cp.Verify(attest.VerifyOpts{Public: ak.Public(), Hash: crypto.SHA256}); err != nil {
			t.Fatalf("certification does not verify: %v", err)
		}
		info, err := tpm2.Unmarshal[tpm2.TPMSAttest](cp.CreateAttestation)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(info.ExtraData.Buffer, nonce[:]) {
			t.Fatalf("certification carries %x, want the qualifying data %x", info.ExtraData.Buffer, nonce)
		}
	}

	if err := sw.Restart(); err != nil {
		t.Fatal(err)
	}
	k2 := mustResident(t, sw.TPM, file)
	if !k2.Public().(*ecdsa.PublicKey).Equal(pub) {
		t.Fatal("the key file loaded a different key after a restart")
	}
	checkSigns(t, k2)

	other := swtpmtest.New(t)
	_, err = other.TPM.LoadResidentKey(file)
	if err == nil || !strings.Contains(err.Error(), "another TPM") {
		t.Fatalf("loading another TPM's key file: %v, want a failure saying so", err)
	}
	// The other TPM still works: the failure left nothing loaded behind.
	mustResident(t, other.TPM, mustCreate(t, other.TPM))
}

func mustCreate(t *testing.T, tp *tpm.TPM) []byte {
	t.Helper()
	f, err := tp.CreateResidentKey("")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestResidentKeyRefusesNonResident: a key file whose key could exist
// outside a TPM is refused before the TPM is asked.
func TestResidentKeyRefusesNonResident(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.New(t)
	file := mustCreate(t, sw.TPM)
	for _, tc := range []struct {
		name string
		edit func(*tpm2.TPMAObject)
		want string
	}{
		{"fixedTPM", func(a *tpm2.TPMAObject) { a.FixedTPM = false }, "exportable"},
		{"fixedParent", func(a *tpm2.TPMAObject) { a.FixedParent = false }, "duplicated"},
		{"sensitiveDataOrigin", func(a *tpm2.TPMAObject) { a.SensitiveDataOrigin = false }, "not created by the TPM"},
		{"restricted", func(a *tpm2.TPMAObject) { a.Restricted = true }, "unrestricted signing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kf, err := keyfile.Decode(file)
			if err != nil {
				t.Fatal(err)
			}
			p, err := kf.Pubkey.Contents()
			if err != nil {
				t.Fatal(err)
			}
			tc.edit(&p.ObjectAttributes)
			kf.Pubkey = tpm2.New2B(*p)
			_, err = sw.TPM.LoadResidentKey(kf.Bytes())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
	t.Run("P-384", func(t *testing.T) {
		kf, err := keyfile.Decode(file)
		if err != nil {
			t.Fatal(err)
		}
		p, err := kf.Pubkey.Contents()
		if err != nil {
			t.Fatal(err)
		}
		ecc, err := p.Parameters.ECCDetail()
		if err != nil {
			t.Fatal(err)
		}
		ecc.CurveID = tpm2.TPMECCNistP384
		kf.Pubkey = tpm2.New2B(*p)
		if _, err := sw.TPM.LoadResidentKey(kf.Bytes()); err == nil || !strings.Contains(err.Error(), "want NIST P-256") {
			t.Fatalf("got %v, want a refusal of the curve", err)
		}
	})
	if _, err := sw.TPM.LoadResidentKey([]byte("-----BEGIN TSS2 PRIVATE KEY-----\nAAAA\n-----END TSS2 PRIVATE KEY-----\n")); err == nil {
		t.Fatal("a garbage key file loaded")
	}
}
