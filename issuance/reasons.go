package issuance

import (
	"strings"

	"github.com/smallstep/certificates/webhook"
)

// The kinds of refusal (Denied.Reason): a small, fixed set, so that they
// can label metrics. A device that may not have certificates is refused
// with its inventory.NotUsableError's Reason (not_registered, pending,
// not_active, owner_disabled, owner_not_user).
const (
	// ReasonNoDeviceCertificate: an SSH request without a device
	// certificate, or a device certificate request without a TPM
	// attestation.
	ReasonNoDeviceCertificate = "no_device_certificate"
	// ReasonBadDeviceCertificate: the device certificate does not name
	// exactly one device.
	ReasonBadDeviceCertificate = "bad_device_certificate"
	// ReasonWrongKind: a host asked for a user certificate, or a
	// workstation for a host certificate.
	ReasonWrongKind = "wrong_kind"
	// ReasonFileKey: the key is not TPM-resident and the device's
	// collection does not allow file keys.
	ReasonFileKey = "file_key"
	// ReasonHostName: a host asked for a name the inventory does not
	// allow it, or has none to give.
	ReasonHostName = "host_name"
	// ReasonNoPrincipals: the certificate would have no principal, or an
	// empty one (checkPrincipals).
	ReasonNoPrincipals = "no_principals"
	// ReasonX509NotAllowed: an X.509 certificate asked for through the
	// device provisioner, which issues SSH certificates only.
	ReasonX509NotAllowed = "x509_not_allowed"
	// ReasonError: the policy could not decide (the inventory could not
	// be read); the request is refused.
	ReasonError = "error"
)

// Kinds of certificate an Observer is told of, with their type ("ssh" or
// "x509").
const (
	KindHost    = "host"    // SSH host certificate
	KindUser    = "user"    // SSH user certificate
	KindDevice  = "device"  // X.509 device certificate (ACME device-attest-01)
	KindOther   = "other"   // X.509 through the device provisioner: always refused
	KindUnknown = "unknown" // an SSH request whose type is not known
)

// Observer is told of every refusal the policy makes, for metrics.
// certType is "ssh" or "x509", kind one of the Kind constants, reason one
// of the Reason constants or an inventory.NotUsableError's Reason.
type Observer interface {
	Refused(certType, kind, reason string)
}

// Observe makes o hear of every refusal from now on. Call it before the
// policy serves.
func (p *Policy) Observe(o Observer) { p.observer = o }

// refused tells the observer of a refusal of the webhook request at path.
func (p *Policy) refused(path string, req *webhook.RequestBody, reason string) {
	if p.observer == nil {
		return
	}
	certType, kind := "x509", KindOther
	switch path[strings.LastIndexByte(path, '/')+1:] {
	case PathSSH:
		certType, kind = "ssh", KindUnknown
		if sr := req.SSHCertificateRequest; sr != nil && (sr.Type == KindHost || sr.Type == KindUser) {
			kind = sr.Type
		}
	case PathDevice:
		kind = KindDevice
	}
	p.observer.Refused(certType, kind, reason)
}
