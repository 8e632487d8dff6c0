package tpm_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/tpm"
)

// testCA is a self-signed CA for certificates made in tests.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// newTestCA makes a CA named cn with subject key ID skid (nil: Go's own).
func newTestCA(t *testing.T, cn string, skid []byte) *testCA {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		SubjectKeyId:          skid,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	cert, key := issue(t, tmpl, nil)
	return &testCA{cert: cert, key: key}
}

// issue makes a certificate from tmpl for a new P-256 key, signed by ca
// (nil: self-signed).
func issue(t *testing.T, tmpl *x509.Certificate, ca *testCA) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	parent, signer := tmpl, crypto.Signer(key)
	if ca != nil {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

var (
	oidSAN           = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidEKCertificate = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
)

// tcgSAN returns a critical subject alternative name extension holding
// only a directoryName of TCG TPM attributes, as in swtpm's and
// manufacturers' EK certificates.
func tcgSAN(t *testing.T) pkix.Extension {
	t.Helper()
	name := pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
		{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 1}, Value: "id:00001014"}, // manufacturer
		{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 2}, Value: "swtpm"},       // model
		{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 3}, Value: "id:20191023"}, // version
	}}
	rdns, err := asn1.Marshal(name.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	dirName, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: rdns})
	if err != nil {
		t.Fatal(err)
	}
	names, err := asn1.Marshal(asn1.RawValue{Tag: asn1.TagSequence, IsCompound: true, Bytes: dirName})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidSAN, Critical: true, Value: names}
}

// issueEKCert issues an EK-like certificate (empty subject, critical TCG
// SAN, EKU tcg-kp-EKCertificate) with extra extensions.
func (ca *testCA) issueEKCert(t *testing.T, extra ...pkix.Extension) *x509.Certificate {
	t.Helper()
	cert, _ := issue(t, &x509.Certificate{
		SerialNumber:       big.NewInt(2),
		NotBefore:          time.Now().Add(-time.Hour),
		NotAfter:           time.Now().Add(time.Hour),
		KeyUsage:           x509.KeyUsageKeyEncipherment,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{oidEKCertificate},
		ExtraExtensions:    append([]pkix.Extension{tcgSAN(t)}, extra...),
	}, ca)
	return cert
}

// TestVerifyEKCertificate: Go's own Verify rejects an EK certificate for
// its TCG SAN; VerifyEKCertificate accepts it from its issuer, leaves the
// certificate as it was, and still rejects other unhandled critical
// extensions, another CA (even one with the same name and key ID) and no
// certificate.
func TestVerifyEKCertificate(t *testing.T) {
	ca := newTestCA(t, "EK CA", []byte("ek-ca-key-id"))
	cert := ca.issueEKCert(t)
	opts := x509.VerifyOptions{Roots: ca.pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}

	var unhandled x509.UnhandledCriticalExtension
	if _, err := cert.Verify(opts); !errors.As(err, &unhandled) {
		t.Fatalf("x509 Verify of an EK certificate: %v, want UnhandledCriticalExtension (else this helper is no longer needed)", err)
	}
	before := slices.Clone(cert.UnhandledCriticalExtensions)
	chains, err := tpm.VerifyEKCertificate(cert, x509.VerifyOptions{Roots: ca.pool()})
	if err != nil {
		t.Fatalf("VerifyEKCertificate: %v", err)
	}
	if len(chains) != 1 || len(chains[0]) != 2 || !chains[0][1].Equal(ca.cert) {
		t.Errorf("chains = %v, want [[cert, CA]]", chains)
	}
	if !slices.EqualFunc(cert.UnhandledCriticalExtensions, before, asn1.ObjectIdentifier.Equal) {
		t.Errorf("UnhandledCriticalExtensions changed from %v to %v", before, cert.UnhandledCriticalExtensions)
	}

	other := ca.issueEKCert(t, pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}})
	if _, err := tpm.VerifyEKCertificate(other, x509.VerifyOptions{Roots: ca.pool()}); !errors.As(err, &unhandled) {
		t.Errorf("VerifyEKCertificate with another unhandled critical extension: %v, want UnhandledCriticalExtension", err)
	}

	impostor := newTestCA(t, "EK CA", []byte("ek-ca-key-id"))
	_, err = tpm.VerifyEKCertificate(cert, x509.VerifyOptions{Roots: impostor.pool()})
	if err == nil {
		t.Error("VerifyEKCertificate against another CA of the same name and key ID succeeded")
	} else if !strings.HasPrefix(err.Error(), "tpm: verifying EK certificate") {
		t.Errorf("error %q lacks the package prefix", err)
	}

	if _, err := tpm.VerifyEKCertificate(nil, opts); err == nil {
		t.Error("VerifyEKCertificate(nil) succeeded")
	}
}
