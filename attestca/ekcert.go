package attestca

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"slices"
)

// pkixExtension is pkix.Extension, named for the certificate template.
type pkixExtension = pkix.Extension

var oidExtSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// VerifyEKCertificate verifies an EK certificate. TPM vendors (and swtpm)
// mark the subject alternative name critical and put only TCG attributes in
// it, which Go's verifier reports as an unhandled critical extension: that
// one extension is accepted here, everything else is Go's usual check.
func VerifyEKCertificate(cert *x509.Certificate, opts x509.VerifyOptions) error {
	c := *cert
	c.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(c.UnhandledCriticalExtensions), func(o asn1.ObjectIdentifier) bool {
		return o.Equal(oidExtSubjectAltName)
	})
	if len(opts.KeyUsages) == 0 {
		opts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
	}
	_, err := c.Verify(opts)
	return err
}
