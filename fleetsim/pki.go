package fleetsim

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/devid-ssh/devid/deviceid"
	"go.step.sm/crypto/pemutil"
	"go.step.sm/crypto/x509util"
	"golang.org/x/crypto/ssh"
)

// caFiles is what the bench reads from the CA directory: the root to pin,
// the intermediate and its key (to mint simulated devices' device
// certificates), and the SSH user CA key (to verify KRLs, as hosts do
// with the keys from /ssh/roots).
type caFiles struct {
	root, intermediate *x509.Certificate
	intKey             crypto.Signer
	roots              *x509.CertPool
	userCA             ssh.PublicKey
}

func readCAFiles(dir string) (*caFiles, error) {
	f := &caFiles{}
	var err error
	if f.root, err = pemutil.ReadCertificate(filepath.Join(dir, "certs", "root_ca.crt")); err != nil {
		return nil, fmt.Errorf("fleetsim: CA directory %s: %w", dir, err)
	}
	if f.intermediate, err = pemutil.ReadCertificate(filepath.Join(dir, "certs", "intermediate_ca.crt")); err != nil {
		return nil, fmt.Errorf("fleetsim: CA directory %s: %w", dir, err)
	}
	k, err := pemutil.Read(filepath.Join(dir, "secrets", "intermediate_ca.key"))
	if err != nil {
		return nil, fmt.Errorf("fleetsim: CA directory %s: %w", dir, err)
	}
	var ok bool
	if f.intKey, ok = k.(crypto.Signer); !ok {
		return nil, fmt.Errorf("fleetsim: %s/secrets/intermediate_ca.key is not a signing key", dir)
	}
	b, err := os.ReadFile(filepath.Join(dir, "certs", "ssh_user_ca.pub"))
	if err != nil {
		return nil, fmt.Errorf("fleetsim: CA directory %s: %w", dir, err)
	}
	if f.userCA, _, _, _, err = ssh.ParseAuthorizedKey(b); err != nil {
		return nil, fmt.Errorf("fleetsim: %s/certs/ssh_user_ca.pub: %w", dir, err)
	}
	f.roots = x509.NewCertPool()
	f.roots.AddCert(f.root)
	return f, nil
}

// newEK makes a software ECDSA P-256 endorsement key and returns the
// device ID it gives and its PKIX DER (the inventory's "ek" field).
func newEK() (id string, der []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", nil, err
	}
	if der, err = x509.MarshalPKIXPublicKey(k.Public()); err != nil {
		return "", nil, err
	}
	id, err = deviceid.FromPublicKey(k.Public())
	return id, der, err
}

// deviceCert mints what ACME device-attest-01 gives a device: a
// certificate from the intermediate naming the device by its
// PermanentIdentifier, for key. Simulated hosts have no TPM: the bench
// signs it with the intermediate key from the CA directory, so the
// attestation and the TPM-resident-key proof (package issuance/tpmkey)
// are not exercised by them, only by the swtpm pool.
func (f *caFiles) deviceCert(deviceID string, key crypto.Signer, now time.Time, lifetime time.Duration) ([]*x509.Certificate, error) {
	rv, err := x509util.SubjectAlternativeName{Type: x509util.PermanentIdentifierType, Value: deviceID}.RawValue()
	if err != nil {
		return nil, err
	}
	san, err := asn1.Marshal([]asn1.RawValue{rv})
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: deviceID},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(lifetime),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: san}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.intermediate, key.Public(), f.intKey)
	if err != nil {
		return nil, fmt.Errorf("fleetsim: minting a device certificate: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return []*x509.Certificate{c, f.intermediate}, nil
}

func loadKeyPair(crt, key string) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		return nil, fmt.Errorf("fleetsim: admin certificate: %w", err)
	}
	return &c, nil
}
