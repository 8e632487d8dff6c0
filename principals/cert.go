package principals

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/devid-ssh/devid/deviceid/idform"
)

// Certificate types (PROTOCOL.certkeys).
const (
	UserCert = 1
	HostCert = 2
)

// Certificate holds the fields of an OpenSSH certificate that the decision
// and its log need.
type Certificate struct {
	Type        string // e.g. ecdsa-sha2-nistp256-cert-v01@openssh.com
	Serial      uint64
	CertType    uint32 // UserCert or HostCert
	KeyID       string
	Principals  []string
	ValidAfter  uint64 // Unix seconds
	ValidBefore uint64 // Unix seconds; 1<<64-1 is forever
}

// certKeyFields returns, for a certificate type, how many length-prefixed
// fields (strings or mpints) hold the certified public key between the
// nonce and the serial (PROTOCOL.certkeys, PROTOCOL.u2f). A switch, not a
// map: a map literal would be built at every start of the helper.
func certKeyFields(certType string) (int, bool) {
	switch certType {
	case "ssh-ed25519-cert-v01@openssh.com":
		return 1, true // public key
	case "ssh-rsa-cert-v01@openssh.com", // e, n
		"ecdsa-sha2-nistp256-cert-v01@openssh.com", // curve, public key
		"ecdsa-sha2-nistp384-cert-v01@openssh.com",
		"ecdsa-sha2-nistp521-cert-v01@openssh.com",
		"sk-ssh-ed25519-cert-v01@openssh.com": // public key, application
		return 2, true
	case "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com":
		return 3, true // curve, public key, application
	case "ssh-dss-cert-v01@openssh.com":
		return 4, true // p, q, g, y
	}
	return 0, false
}

// IsCertType reports whether t names an OpenSSH certificate type, as sshd's
// %t token does for a certificate.
func IsCertType(t string) bool { return strings.HasSuffix(t, "-cert-v01@openssh.com") }

// ParseCertificate reads the certificate sshd passes the helper: its type
// (%t) and the certificate in standard base64 (%k). The type inside the
// certificate must be certType. Signatures and dates are not checked: sshd
// did that before running the helper.
func ParseCertificate(certType, b64 string) (*Certificate, error) {
	if i := strings.IndexAny(b64, "\r\n"); i >= 0 { // which package base64 skips
		return nil, fmt.Errorf("principals: certificate: line break in base64 at input byte %d", i)
	}
	blob, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("principals: certificate: %w", err)
	}
	c, err := parseCertBlob(blob)
	if err != nil {
		return nil, fmt.Errorf("principals: certificate: %w", err)
	}
	if c.Type != certType {
		return nil, fmt.Errorf("principals: certificate: type %s, but %s was given", c.Type, certType)
	}
	return c, nil
}

var errTruncated = errors.New("truncated")

// reader reads SSH wire format (RFC 4251, section 5).
type reader []byte

func (r *reader) uint32() (uint32, error) {
	if len(*r) < 4 {
		return 0, errTruncated
	}
	v := binary.BigEndian.Uint32(*r)
	*r = (*r)[4:]
	return v, nil
}

func (r *reader) uint64() (uint64, error) {
	if len(*r) < 8 {
		return 0, errTruncated
	}
	v := binary.BigEndian.Uint64(*r)
	*r = (*r)[8:]
	return v, nil
}

func (r *reader) string() ([]byte, error) {
	n, err := r.uint32()
	if err != nil {
		return nil, err
	}
	if uint64(len(*r)) < uint64(n) {
		return nil, errTruncated
	}
	s := (*r)[:n]
	*r = (*r)[n:]
	return s, nil
}

// parseCertBlob parses a certificate in wire format:
//
//	string    type
//	string    nonce
//	...       the public key, certKeyFields[type] strings
//	uint64    serial
//	uint32    type
//	string    key id
//	string    valid principals (a sequence of strings)
//	uint64    valid after
//	uint64    valid before
//	string    critical options
//	string    extensions
//	string    reserved
//	string    signature key
//	string    signature
//
// and nothing after.
func parseCertBlob(blob []byte) (*Certificate, error) {
	r := reader(blob)
	typ, err := r.string()
	if err != nil {
		return nil, err
	}
	c := &Certificate{Type: string(typ)}
	nkey, ok := certKeyFields(c.Type)
	if !ok {
		if !strings.Contains(c.Type, "-cert-") {
			return nil, fmt.Errorf("a %q key, not a certificate", typ)
		}
		return nil, fmt.Errorf("unsupported certificate type %q", typ)
	}
	for range 1 + nkey { // nonce, public key
		if _, err := r.string(); err != nil {
			return nil, err
		}
	}
	if c.Serial, err = r.uint64(); err != nil {
		return nil, err
	}
	if c.CertType, err = r.uint32(); err != nil {
		return nil, err
	}
	if c.CertType != UserCert && c.CertType != HostCert {
		return nil, fmt.Errorf("certificate type %d is neither user (1) nor host (2)", c.CertType)
	}
	keyID, err := r.string()
	if err != nil {
		return nil, err
	}
	c.KeyID = string(keyID)
	list, err := r.string()
	if err != nil {
		return nil, err
	}
	for pr := reader(list); len(pr) > 0; {
		p, err := pr.string()
		if err != nil {
			return nil, fmt.Errorf("valid principals: %w", err)
		}
		c.Principals = append(c.Principals, string(p))
	}
	if c.ValidAfter, err = r.uint64(); err != nil {
		return nil, err
	}
	if c.ValidBefore, err = r.uint64(); err != nil {
		return nil, err
	}
	for range 5 { // critical options, extensions, reserved, signature key, signature
		if _, err := r.string(); err != nil {
			return nil, err
		}
	}
	if len(r) != 0 {
		return nil, fmt.Errorf("%d bytes after the signature", len(r))
	}
	return c, nil
}

// DeviceID checks what devid's CA guarantees of a user certificate and
// returns the certificate's device ID: it must be a user certificate, carry
// exactly one principal of the form of a device ID, and have that device ID
// as its key ID.
func (c *Certificate) DeviceID() (string, error) {
	if c.CertType != UserCert {
		return "", errors.New("a host certificate, not a user certificate")
	}
	id, n := "", 0
	for _, p := range c.Principals {
		if idform.Valid(p) {
			id, n = p, n+1
		}
	}
	switch {
	case n == 0:
		return "", errors.New("the certificate has no device-ID principal")
	case n > 1:
		return "", fmt.Errorf("the certificate has %d device-ID principals; devid's CA issues one", n)
	case c.KeyID != id:
		return "", fmt.Errorf("key ID %q is not the device-ID principal %s", c.KeyID, id)
	}
	return id, nil
}
