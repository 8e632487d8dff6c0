// Package deviceid computes devid's device identifiers.
//
// A device is named by its TPM's endorsement key (EK). Its device ID is
//
//	urn:ek:sha256:<standard base64 of SHA-256 of the PKIX DER of the EK public key>
//
// the form step's TPM tooling (go.step.sm/crypto/tpm) already puts in AK
// certificates, so either side can compute the name of a device from its EK
// alone. devid keys devices on their RSA EK.
//
// To name a device:
//
//   - from the EK public key a TPM reports: [FromPublicKey];
//   - from an EK certificate: [FromCertificate];
//   - from a file an operator hands in (PEM or DER, a PKIX public key or an
//     X.509 certificate, e.g. an asset or MDM export): [Parse].
//
// The package is pure computation: it does not talk to a TPM and depends on
// the standard library only.
package deviceid

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
)

// Prefix starts every device ID.
const Prefix = "urn:ek:sha256:"

// FromPublicKey returns the device ID of the TPM whose EK public key is pub
// (an *rsa.PublicKey for devid's RSA EKs; any key type that
// x509.MarshalPKIXPublicKey accepts gives an ID).
func FromPublicKey(pub crypto.PublicKey) (string, error) {
	if pub == nil {
		return "", errors.New("deviceid: no public key")
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("deviceid: encoding %T as PKIX: %w", pub, err)
	}
	return fromPKIX(der), nil
}

// FromCertificate returns the device ID of the TPM whose EK certificate is
// cert: the ID of the certificate's public key. It does not verify the
// certificate.
func FromCertificate(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", errors.New("deviceid: no certificate")
	}
	// Re-encode the parsed key rather than hash RawSubjectPublicKeyInfo:
	// the ID of a certificate then equals the ID of its key (as a TPM
	// reports it) however the issuer happened to encode the key.
	return FromPublicKey(cert.PublicKey)
}

// Parse returns the device ID of the EK in data: a PKIX public key or an
// X.509 certificate, each either DER or PEM ("PUBLIC KEY" or "CERTIFICATE",
// one block, nothing but white space around it).
func Parse(data []byte) (string, error) {
	if block, rest := pem.Decode(data); block != nil {
		if len(bytes.TrimSpace(rest)) != 0 {
			return "", errors.New("deviceid: trailing data after the PEM block")
		}
		if len(block.Headers) != 0 {
			return "", fmt.Errorf("deviceid: PEM block %q has headers", block.Type)
		}
		switch block.Type {
		case "PUBLIC KEY":
			return parsePublicKey(block.Bytes)
		case "CERTIFICATE":
			return parseCertificate(block.Bytes)
		default:
			return "", fmt.Errorf("deviceid: PEM block %q is neither a PUBLIC KEY nor a CERTIFICATE", block.Type)
		}
	}
	if id, err := parsePublicKey(data); err == nil {
		return id, nil
	}
	if id, err := parseCertificate(data); err == nil {
		return id, nil
	}
	return "", errors.New("deviceid: data is neither a PKIX public key nor an X.509 certificate, in PEM or DER")
}

func parsePublicKey(der []byte) (string, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return "", fmt.Errorf("deviceid: parsing public key: %w", err)
	}
	return FromPublicKey(pub)
}

func parseCertificate(der []byte) (string, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return "", fmt.Errorf("deviceid: parsing certificate: %w", err)
	}
	return FromCertificate(cert)
}

func fromPKIX(der []byte) string {
	sum := sha256.Sum256(der)
	return Prefix + base64.StdEncoding.EncodeToString(sum[:])
}
