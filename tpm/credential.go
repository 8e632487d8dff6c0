package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"
)

// MakeCredential is an attestation CA's side of credential activation: it
// checks that ak is a restricted key a TPM made (go-attestation's
// ActivationParameters.CheckAKParameters) and returns a new 32-byte secret
// and that secret encrypted to the EK whose public key is ek, bound to the
// AK's name, which only AK.ActivateCredential in the TPM holding both
// recovers.
//
// An RSA EK's challenge is go-attestation's (ActivationParameters.Generate).
// An ECC EK's is made with go-tpm's TPM2_MakeCredential equivalent
// (tpm2.CreateCredential) for the EK as the TCG's template for its curve
// makes it: P-256 as templates L-2 and H-2 (SHA-256, AES-128), P-384 as
// H-3 (SHA-384, AES-256). go-attestation's Generate takes ECC keys but
// protects the secret with the AK's name algorithm and AES-128 whatever the
// EK, which only a P-256 EK decrypts.
func MakeCredential(ek crypto.PublicKey, ak attest.AttestationParameters) (secret []byte, ec *attest.EncryptedCredential, err error) {
	params := attest.ActivationParameters{EK: ek, AK: ak}
	switch k := ek.(type) {
	case *rsa.PublicKey:
		return params.Generate()
	case *ecdsa.PublicKey:
		if err := params.CheckAKParameters(); err != nil {
			return nil, nil, err
		}
		secret = make([]byte, 32)
		if _, err := io.ReadFull(rand.Reader, secret); err != nil {
			return nil, nil, err
		}
		ec, err := makeECCCredential(k, ak.Public, secret)
		if err != nil {
			return nil, nil, err
		}
		return secret, ec, nil
	}
	return nil, nil, fmt.Errorf("tpm: credential for an EK of type %T", ek)
}

// eccEKPublic is the public area a TPM makes for the ECC EK pub by the TCG
// template for its curve.
func eccEKPublic(pub *ecdsa.PublicKey) (*tpm2.TPMTPublic, error) {
	var t tpm2.TPMTPublic
	size := 0
	switch pub.Curve {
	case elliptic.P256():
		t, size = tpm2.ECCEKTemplate, 32
	case elliptic.P384():
		t, size = templateH3, 48
	default:
		return nil, fmt.Errorf("tpm: credential for an ECC EK on %s: devid takes P-256 and P-384", pub.Curve.Params().Name)
	}
	x, y := make([]byte, size), make([]byte, size)
	pub.X.FillBytes(x)
	pub.Y.FillBytes(y)
	t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: x},
		Y: tpm2.TPM2BECCParameter{Buffer: y},
	})
	return &t, nil
}

// makeECCCredential encrypts secret to the ECC EK pub for the object
// whose public area (TPMT_PUBLIC) is akPublic, as the TPM2B_ID_OBJECT and
// TPM2B_ENCRYPTED_SECRET TPM2_ActivateCredential takes.
func makeECCCredential(pub *ecdsa.PublicKey, akPublic []byte, secret []byte) (*attest.EncryptedCredential, error) {
	ekPublic, err := eccEKPublic(pub)
	if err != nil {
		return nil, err
	}
	key, err := tpm2.ImportEncapsulationKey(ekPublic)
	if err != nil {
		return nil, fmt.Errorf("tpm: the EK as an encapsulation key: %w", err)
	}
	akPub, err := tpm2.Unmarshal[tpm2.TPMTPublic](akPublic)
	if err != nil {
		return nil, fmt.Errorf("tpm: AK public area: %w", err)
	}
	name, err := tpm2.ObjectName(akPub)
	if err != nil {
		return nil, fmt.Errorf("tpm: AK name: %w", err)
	}
	idObject, encSecret, err := tpm2.CreateCredential(rand.Reader, key, name.Buffer, secret)
	if err != nil {
		return nil, fmt.Errorf("tpm: making the credential: %w", err)
	}
	cred, err := wrap2B(idObject)
	if err != nil {
		return nil, err
	}
	sec, err := wrap2B(encSecret)
	if err != nil {
		return nil, err
	}
	return &attest.EncryptedCredential{Credential: cred, Secret: sec}, nil
}

// wrap2B makes b a TPM2B: its 16-bit big-endian size, then b.
func wrap2B(b []byte) ([]byte, error) {
	if len(b) > 0xffff {
		return nil, errors.New("tpm: credential too long for a TPM2B")
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...), nil
}
