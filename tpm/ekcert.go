package tpm

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
)

// oidSubjectAltName is the subject alternative name extension. An EK
// certificate's SAN is critical (its subject is empty) and holds a
// directoryName of TCG attributes (TPM manufacturer, model, version), which
// Go's x509 does not parse and so lists in UnhandledCriticalExtensions.
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// VerifyEKCertificate verifies an EK certificate like cert.Verify(opts), but
// accepts the critical subject alternative name that EK certificates carry
// and Go's x509 rejects ("unhandled critical extension"). Every other
// unhandled critical extension is still rejected. Unless opts.KeyUsages says
// otherwise, any extended key usage is accepted (EK certificates carry
// tcg-kp-EKCertificate, 2.23.133.8.1, not a TLS one). cert is not modified.
func VerifyEKCertificate(cert *x509.Certificate, opts x509.VerifyOptions) ([][]*x509.Certificate, error) {
	if cert == nil {
		return nil, errors.New("tpm: verifying EK certificate: no certificate")
	}
	c := *cert
	c.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(c.UnhandledCriticalExtensions),
		func(oid asn1.ObjectIdentifier) bool { return oid.Equal(oidSubjectAltName) })
	if len(opts.KeyUsages) == 0 {
		opts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
	}
	chains, err := c.Verify(opts)
	if err != nil {
		return nil, fmt.Errorf("tpm: verifying EK certificate %q (serial %s): %w", cert.Subject, cert.SerialNumber, err)
	}
	return chains, nil
}
