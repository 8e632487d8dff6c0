package tpm

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"io"

	"github.com/devid-ssh/devid/deviceid"
	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"
)

// EK is a TPM's RSA endorsement key, which names the device.
type EK struct {
	// Public is the RSA EK's public key; nil for another EK (OtherPublic).
	Public *rsa.PublicKey
	// OtherPublic is a non-RSA EK's public key (EKs).
	OtherPublic crypto.PublicKey
	// Certificate is the EK certificate the manufacturer stored in the
	// TPM's NV memory, or nil if there is none. Its DER is Certificate.Raw.
	Certificate *x509.Certificate
	// DeviceID is the device ID computed from Public (package deviceid).
	DeviceID string
}

// PublicKey returns the EK's public key, RSA or not.
func (ek *EK) PublicKey() crypto.PublicKey {
	if ek.Public != nil {
		return ek.Public
	}
	return ek.OtherPublic
}

// EK returns the TPM's RSA endorsement key and its certificate, if the TPM
// holds one. (swtpm also makes an ECC P-384 EK, which devid does not use.)
func (t *TPM) EK() (*EK, error) {
	eks, err := call(t, "reading endorsement keys", (*attest.TPM).EKs)
	if err != nil {
		return nil, err
	}
	for _, ek := range eks {
		pub, ok := ek.Public.(*rsa.PublicKey)
		if !ok {
			continue
		}
		id, err := deviceid.FromPublicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("tpm: %s: %w", t.name, err)
		}
		return &EK{Public: pub, Certificate: ek.Certificate, DeviceID: id}, nil
	}
	return nil, fmt.Errorf("tpm: %s: no RSA endorsement key among %d", t.name, len(eks))
}

// EKs returns the TPM's endorsement keys: the RSA EK that names the device
// (EK) first, then any other EK whose certificate the TPM holds (an ECC
// EK, on TPMs that have one; devid does not attest with it). Their
// DeviceID is computed the same way for each.
func (t *TPM) EKs() ([]*EK, error) {
	rsaEK, err := t.EK()
	if err != nil {
		return nil, err
	}
	out := []*EK{rsaEK}
	certs, err := call(t, "reading EK certificates", (*attest.TPM).EKCertificates)
	if err != nil {
		return out, nil // the RSA EK is what counts; others are extra
	}
	for _, ek := range certs {
		if _, isRSA := ek.Public.(*rsa.PublicKey); isRSA || ek.Certificate == nil {
			continue
		}
		id, err := deviceid.FromPublicKey(ek.Public)
		if err != nil {
			continue
		}
		out = append(out, &EK{Public: nil, OtherPublic: ek.Public, Certificate: ek.Certificate, DeviceID: id})
	}
	return out, nil
}

// AK is an RSA-2048 attestation key loaded in the TPM. Close it when done:
// a TPM without a resource manager has room for only a few loaded objects.
type AK struct {
	t      *TPM
	ak     *attest.AK
	params attest.AttestationParameters
	public crypto.PublicKey
	handle *tpm2.AuthHandle // where the AK is loaded, once Certify looked
}

// NewAK creates and loads an RSA-2048 attestation key (under the storage
// root key at 0x81000001, which go-attestation creates if missing). On
// swtpm this takes 0.1–0.5 s: make one where a new one is needed.
func (t *TPM) NewAK() (*AK, error) {
	ak, err := call(t, "creating AK", func(at *attest.TPM) (*attest.AK, error) {
		return at.NewAK(&attest.AKConfig{Algorithm: attest.RSA})
	})
	if err != nil {
		return nil, err
	}
	return &AK{t: t, ak: ak, params: ak.AttestationParameters(), public: ak.Public()}, nil
}

// AttestationParameters returns what an attestation CA needs to challenge
// the AK (go-attestation's attest.ActivationParameters.AK).
func (a *AK) AttestationParameters() attest.AttestationParameters {
	return a.params
}

// Public returns the AK's public key (an *rsa.PublicKey), against which key
// certifications verify.
func (a *AK) Public() crypto.PublicKey {
	return a.public
}

// ActivateCredential runs TPM2_ActivateCredential with the AK and the RSA EK
// and returns the secret an attestation CA encrypted to them: only the TPM
// holding both can.
func (a *AK) ActivateCredential(ec attest.EncryptedCredential) ([]byte, error) {
	return call(a.t, "activating credential", func(at *attest.TPM) ([]byte, error) {
		return a.ak.ActivateCredential(at, ec)
	})
}

// NewKey creates and loads an ECDSA P-256 signing key certified by the AK,
// its certification carrying qualifyingData (for ACME device-attest-01: the
// SHA-256 of the key authorization).
func (a *AK) NewKey(qualifyingData []byte) (*Key, error) {
	return call(a.t, "creating certified key", func(at *attest.TPM) (*Key, error) {
		k, err := at.NewKey(a.ak, &attest.KeyConfig{
			Algorithm:      attest.ECDSA,
			Size:           256,
			QualifyingData: qualifyingData,
		})
		if err != nil {
			return nil, err
		}
		priv, err := k.Private(k.Public())
		if err != nil {
			k.Close()
			return nil, err
		}
		signer, ok := priv.(crypto.Signer)
		if !ok {
			k.Close()
			return nil, fmt.Errorf("%T is not a crypto.Signer", priv)
		}
		return &Key{t: a.t, key: k, signer: signer, params: k.CertificationParameters()}, nil
	})
}

// Close flushes the AK from the TPM.
func (a *AK) Close() error {
	_, err := call(a.t, "flushing AK", func(at *attest.TPM) (struct{}, error) {
		return struct{}{}, a.ak.Close(at)
	})
	return err
}

// Key is an ECDSA P-256 key loaded in the TPM, certified by an AK. It is a
// crypto.Signer whose private half never leaves the TPM. Close it when done.
type Key struct {
	t      *TPM
	key    *attest.Key
	signer crypto.Signer // go-attestation's, which bypasses t's mutex
	params attest.CertificationParameters
}

// CertificationParameters returns the AK's certification of the key; check it
// with its Verify method and the AK's public key (attest.VerifyOpts{Public:
// ak.Public(), Hash: crypto.SHA256}).
func (k *Key) CertificationParameters() attest.CertificationParameters {
	return k.params
}

// Public returns the key's public half, an *ecdsa.PublicKey.
func (k *Key) Public() crypto.PublicKey {
	return k.signer.Public()
}

// Sign signs digest in the TPM and returns an ASN.1 ECDSA signature.
func (k *Key) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return call(k.t, "signing", func(*attest.TPM) ([]byte, error) {
		return k.signer.Sign(rand, digest, opts)
	})
}

// Close flushes the key from the TPM.
func (k *Key) Close() error {
	_, err := call(k.t, "flushing key", func(*attest.TPM) (struct{}, error) {
		return struct{}{}, k.key.Close()
	})
	return err
}
