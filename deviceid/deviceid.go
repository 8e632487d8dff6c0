// Package deviceid computes devid's device identifiers.
//
// A device is identified by its TPM's Endorsement Key (EK): RSA (2048 bits
// or more), or ECC on NIST P-256 or P-384 for a TPM that has only an ECC EK
// (which EK names a device is package tpm's choice). Its device ID is
//
//	urn:ek:sha256:<standard base64 of SHA-256 of the PKIX DER EK public key>
//
// whatever the key's type: the form step's TPM tooling already uses in the
// URI SAN of attestation certificates (go.step.sm/crypto/tpm's
// EK.FingerprintURI, and the permanent identifier its tpmkms puts in AK
// certificates, for RSA and ECDSA EKs alike). The same string is the key ID of every SSH certificate the
// device holds and its principal in user certificates, so one KRL key-ID entry
// revokes all of them.
//
// The package has no dependencies beyond the standard library: the CA and the
// host daemon use it. Its Prefix and Valid are those of package idform, which
// the principals helper imports instead (see there why).
package deviceid

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/devid-ssh/devid/deviceid/idform"
)

// Prefix starts every device ID.
const Prefix = idform.Prefix

// FromPublicKey returns the device ID of an EK public key.
func FromPublicKey(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("deviceid: marshal EK public key: %w", err)
	}
	return fromPKIX(der), nil
}

func fromPKIX(der []byte) string {
	sum := sha256.Sum256(der)
	return Prefix + base64.StdEncoding.EncodeToString(sum[:])
}

// EK is an Endorsement Key as given at registration: its public key, and its
// certificate when one was given.
type EK struct {
	Public      crypto.PublicKey
	PublicDER   []byte            // PKIX DER of Public
	Certificate *x509.Certificate // nil when only the public key was given
}

// ID returns the device ID of the EK.
func (ek *EK) ID() string { return fromPKIX(ek.PublicDER) }

// ParseEK reads an EK public key or EK certificate, PEM ("PUBLIC KEY" or
// "CERTIFICATE") or DER. Whitespace around PEM is ignored; DER is binary and
// taken byte for byte (its last byte may well be 0x0a or 0x20). Trailing
// data after a PEM block or DER value is an error, as is a key that is
// neither RSA (2048 bits or more) nor ECDSA on P-256 or P-384.
func ParseEK(data []byte) (*EK, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("deviceid: empty EK")
	}
	der := data
	kind := ""
	if text := bytes.TrimSpace(data); bytes.HasPrefix(text, []byte("-----BEGIN")) {
		block, rest := pem.Decode(text)
		if block == nil {
			return nil, errors.New("deviceid: EK: malformed PEM")
		}
		if len(bytes.TrimSpace(rest)) != 0 {
			return nil, errors.New("deviceid: EK: trailing data after the PEM block")
		}
		switch block.Type {
		case "PUBLIC KEY":
			kind = "key"
		case "CERTIFICATE":
			kind = "cert"
		default:
			return nil, fmt.Errorf("deviceid: EK: PEM block %q is neither PUBLIC KEY nor CERTIFICATE", block.Type)
		}
		der = block.Bytes
	}
	if kind != "cert" {
		if pub, err := x509.ParsePKIXPublicKey(der); err == nil {
			return newEK(pub, nil)
		} else if kind == "key" {
			return nil, fmt.Errorf("deviceid: EK public key: %w", err)
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		if kind == "cert" {
			return nil, fmt.Errorf("deviceid: EK certificate: %w", err)
		}
		return nil, fmt.Errorf("deviceid: EK is neither a PKIX public key nor an X.509 certificate, PEM or DER (as a certificate: %v)", err)
	}
	return newEK(cert.PublicKey, cert)
}

// ParseEKText is ParseEK for text fields (CSV cells, JSON strings): PEM, or
// standard or URL-safe base64 of the DER.
func ParseEKText(s string) (*EK, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-----BEGIN") {
		return ParseEK([]byte(s))
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if der, err := enc.DecodeString(s); err == nil {
			return ParseEK(der)
		}
	}
	return nil, errors.New("deviceid: EK is neither PEM nor base64 DER")
}

func newEK(pub crypto.PublicKey, cert *x509.Certificate) (*EK, error) {
	if err := CheckKey(pub); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("deviceid: EK public key: %w", err)
	}
	return &EK{Public: pub, PublicDER: der, Certificate: cert}, nil
}

// CheckKey says whether pub is a key an EK can be: RSA of 2048 bits or
// more, or ECDSA on P-256 or P-384 (the curves of the TCG's EK templates
// L-2, H-2 and H-3, the ECC EKs TPMs ship with).
func CheckKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("deviceid: EK is RSA-%d; at least 2048 bits required", k.N.BitLen())
		}
		return nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384():
			return nil
		}
		return fmt.Errorf("deviceid: EK is ECC on curve %s; devid takes ECC EKs on P-256 and P-384", k.Curve.Params().Name)
	}
	return fmt.Errorf("deviceid: EK is a %T; devid takes RSA EKs and ECC EKs on P-256 or P-384", pub)
}

// Valid reports whether s has the form of a device ID: the prefix followed by
// the standard base64 encoding of 32 bytes.
func Valid(s string) bool { return idform.Valid(s) }
