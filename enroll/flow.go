package enroll

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/devid-ssh/devid/tpm"
	"golang.org/x/crypto/ssh"
)

// Request is what a whole enrolment asks for: an SSH certificate of Type
// ("host" or "user") for Key, or for FileKey. Principals are a host's
// names (none: the names the inventory gives it); the CA sets a user
// certificate's principals itself.
type Request struct {
	Type       string
	Principals []string
	// Key is the TPM-resident key to certify: the device certificate is
	// for it too, which is how the CA knows it lives in the device's TPM.
	// It stays loaded.
	Key *tpm.ResidentKey
	// FileKey, instead of Key, is a key outside the TPM. The CA signs it
	// only for devices whose collection allows file keys (migration); the
	// device certificate is then for a new TPM key, unloaded at the end.
	FileKey ssh.PublicKey
}

// Result is what a whole enrolment obtained. The TPM objects it made (the
// AK and the device certificate's key) are gone from the TPM by the time
// Enroll returns; the certificates are kept for reports and metrics.
type Result struct {
	DeviceID          string
	AKCertificate     *x509.Certificate
	DeviceCertificate *x509.Certificate
	SSHCertificate    *ssh.Certificate
}

// The steps of an enrolment, as StepError names them.
const (
	StepAttest            = "attestation"
	StepDeviceCertificate = "device certificate"
	StepSSHCertificate    = "SSH certificate"
)

// StepError is a failed enrolment: which step failed, and why.
type StepError struct {
	Step string // StepAttest, StepDeviceCertificate or StepSSHCertificate
	Err  error
	// DeviceCertificate is the device certificate the enrolment got before
	// its SSH certificate step failed; nil when it failed earlier.
	DeviceCertificate *x509.Certificate
}

func (e *StepError) Error() string { return e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

// Attested reports whether the device's TPM was attested: the enrolment
// failed only after the CA had accepted the attestation and issued the
// device certificate.
func (e *StepError) Attested() bool { return e.DeviceCertificate != nil }

// Enroll runs the three steps with t — Attest, DeviceCertificate,
// SSHCertificate — and unloads the TPM objects it made, whatever happens.
// A step that fails is a *StepError; a request that is not one (a type
// other than host or user, no key) is refused before any step. It is the
// one enrolment sequence devid has: devid-hostd, `devid enroll` and the
// tests call it.
func (c *Client) Enroll(ctx context.Context, t *tpm.TPM, req Request) (*Result, error) {
	if req.Type != "host" && req.Type != "user" {
		return nil, fmt.Errorf("enroll: certificate type %q: want host or user", req.Type)
	}
	var pub ssh.PublicKey
	switch {
	case req.Key != nil && req.FileKey != nil:
		return nil, errors.New("enroll: a request certifies one key: a TPM key or a file key, not both")
	case req.Key != nil:
		var err error
		if pub, err = ssh.NewPublicKey(req.Key.Public()); err != nil {
			return nil, fmt.Errorf("enroll: TPM key: %w", err)
		}
	case req.FileKey != nil:
		pub = req.FileKey
	default:
		return nil, errors.New("enroll: no key to certify")
	}
	att, err := c.Attest(ctx, t)
	if err != nil {
		return nil, &StepError{Step: StepAttest, Err: err}
	}
	defer att.Close()
	dc, err := c.DeviceCertificate(ctx, att, req.Key)
	if err != nil {
		return nil, &StepError{Step: StepDeviceCertificate, Err: err}
	}
	defer dc.Close()
	cert, err := c.SSHCertificate(ctx, dc, req.Type, req.Principals, pub)
	if err != nil {
		return nil, &StepError{Step: StepSSHCertificate, Err: err, DeviceCertificate: dc.Chain[0]}
	}
	return &Result{DeviceID: att.DeviceID, AKCertificate: att.Chain[0], DeviceCertificate: dc.Chain[0], SSHCertificate: cert}, nil
}
