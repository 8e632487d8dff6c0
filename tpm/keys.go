package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

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

// ActivateCredential runs TPM2_ActivateCredential with the AK and ek (one
// of this TPM's, from EK or EKs: the one the device is registered by) and
// returns the secret an attestation CA encrypted to them (MakeCredential):
// only the TPM holding both can. An RSA EK is go-attestation's, at
// RSAEKHandle (which it makes there if missing); an ECC EK is used where
// EKs found it, at its persistent handle or made from its template, under
// its own policy.
func (a *AK) ActivateCredential(ek *EK, ec attest.EncryptedCredential) ([]byte, error) {
	if ek == nil {
		return nil, errors.New("tpm: activating credential: no EK")
	}
	switch ek.Public.(type) {
	case *rsa.PublicKey:
		return call(a.t, "activating credential", func(at *attest.TPM) ([]byte, error) {
			return a.ak.ActivateCredential(at, ec)
		})
	case *ecdsa.PublicKey:
		return callRaw(a.t, "activating credential with the ECC EK", func(tr transport.TPMCloser) ([]byte, error) {
			return a.activateECC(tr, ek, ec)
		})
	}
	return nil, fmt.Errorf("tpm: activating credential: the EK is a %T", ek.Public)
}

// activateECC is ActivateCredential with an ECC EK, through go-tpm:
// go-attestation's ActivateCredentialWithEK knows only the P-256 EK at
// 0x81010002 and authorises it with a SHA-256 policy, which a high-range
// EK (H-3: SHA-384) does not take.
func (a *AK) activateECC(tr transport.TPMCloser, ek *EK, ec attest.EncryptedCredential) ([]byte, error) {
	cred, err := unwrap2B("credential", ec.Credential)
	if err != nil {
		return nil, err
	}
	secret, err := unwrap2B("encrypted secret", ec.Secret)
	if err != nil {
		return nil, err
	}
	akh, err := a.loadedHandle(tr)
	if err != nil {
		return nil, err
	}
	l, made, err := ek.load(tr)
	if err != nil {
		return nil, err
	}
	if made {
		defer flush(tr, l.handle)
	}
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: akh,
		KeyHandle:      tpm2.AuthHandle{Handle: l.handle, Name: l.name, Auth: l.auth()},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: cred},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: secret},
	}.Execute(tr)
	if err != nil {
		return nil, err
	}
	return rsp.CertInfo.Buffer, nil
}

// unwrap2B returns the contents of a TPM2B (a big-endian 16-bit size, then
// that many bytes), refusing any other length.
func unwrap2B(what string, b []byte) ([]byte, error) {
	if len(b) < 2 || int(binary.BigEndian.Uint16(b)) != len(b)-2 {
		return nil, fmt.Errorf("malformed %s: not a TPM2B of %d bytes", what, len(b))
	}
	return b[2:], nil
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
