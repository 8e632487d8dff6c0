package attestca

// Enrolment tokens at the Attestation CA. A device registered without its
// EK (pending) presents a one-time token (wire.Enrolment) with its first
// attestation:
//
//   - Attest checks the EK certificate against the manufacturer roots
//     first, as for every device, then the token (inventory's
//     CheckEnrolment: known, live, for a pending device of the kind and
//     name the device says it is, and a TPM no device has), and records
//     the token's hash in the pending attestation.
//   - Secret, once credential activation has proved that the TPM holds the
//     EK, binds the EK to the device and marks the token used, in one
//     transaction (inventory's BindEnrolment), then issues the AK
//     certificate. Of two TPMs racing with one token, one wins; the other
//     is told the token is used.
//
// A token that bound this very TPM is accepted again and changes nothing
// (devid-hostd restarted with the token still in its configuration): the
// device is then checked as any other. Every refusal is a 403 with the
// reason; a token that is not one (malformed) is a 400. The token itself
// is never logged: its short hash is.

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/devid-ssh/devid/deviceid"
	"github.com/devid-ssh/devid/enroltoken"
	"github.com/devid-ssh/devid/inventory"
)

// Enrolments is the part of the inventory that binds pending devices to
// their TPMs with one-time tokens, and keeps devices' last attestations
// (an *inventory.Store).
type Enrolments interface {
	CheckEnrolment(h enroltoken.Hash, claim inventory.EnrolmentClaim, ekID string) (*inventory.Device, *inventory.EnrolmentToken, error)
	BindEnrolment(actor string, h enroltoken.Hash, claim inventory.EnrolmentClaim, ek *deviceid.EK) (*inventory.Device, error)
	RecordAttestation(inventory.Attestation) error
}

// Actor is who the audit trail says bound a device with a token.
const Actor = "devid-ca (attestation)"

// pendingEnrolment is the token part of a pending attestation: the
// token's hash, what the device claimed, and the EK to bind.
type pendingEnrolment struct {
	TokenHash string `json:"tokenHash"` // hex SHA-256
	Kind      string `json:"kind,omitempty"`
	Name      string `json:"name,omitempty"`
	EK        []byte `json:"ek"`               // PKIX DER
	EKCert    []byte `json:"ekCert,omitempty"` // DER
	Device    string `json:"device"`           // the pending device's name, for logs
}

// checkEnrolment checks the token req presents for the TPM whose device ID
// is id, and returns what the pending attestation keeps of it: nil when
// req has none, or when it bound this TPM already (the device is then
// checked as any other by the caller: bound reports it).
func (ca *CA) checkEnrolment(req *AttestRequest, id string, ekPub crypto.PublicKey) (rec *pendingEnrolment, bound bool, err error) {
	e := req.Enrolment
	if e == nil {
		return nil, false, nil
	}
	tok, err := enroltoken.Parse(e.Token)
	if err != nil {
		return nil, false, invalid("device %s: enrolment token: %v", id, err)
	}
	claim, err := enrolmentClaim(e)
	if err != nil {
		return nil, false, invalid("device %s: %v", id, err)
	}
	d, _, err := ca.devices.CheckEnrolment(tok.Hash(), claim, id)
	if err != nil {
		return nil, false, tokenRefusal(id, err)
	}
	if d.ID == id {
		return nil, true, nil
	}
	ekDER, err := x509.MarshalPKIXPublicKey(ekPub)
	if err != nil {
		return nil, false, invalid("EK: %v", err)
	}
	rec = &pendingEnrolment{TokenHash: tok.Hash().String(), Kind: e.Kind, Name: e.Name, EK: ekDER, Device: d.Name}
	if len(req.EKCerts) > 0 {
		rec.EKCert = req.EKCerts[0]
	}
	ca.cfg.Log.Info("enrolment token accepted; binding after credential activation", "device", d.Name, "pending_id", d.ID, "tpm", id, "token", tok.Hash().Short())
	return rec, false, nil
}

func enrolmentClaim(e *Enrolment) (inventory.EnrolmentClaim, error) {
	var c inventory.EnrolmentClaim
	if e.Kind != "" {
		k, err := inventory.ParseKind(e.Kind)
		if err != nil {
			return c, fmt.Errorf("enrolment kind: %v", err)
		}
		c.Kind = k
	}
	if len(e.Name) > 253 {
		return c, fmt.Errorf("enrolment name: %d bytes, at most 253", len(e.Name))
	}
	c.Name = e.Name
	return c, nil
}

// tokenRefusal turns the inventory's refusal of a token into the CA's.
func tokenRefusal(id string, err error) error {
	var ie *inventory.Error
	if errors.As(err, &ie) {
		if errors.Is(err, inventory.ErrInvalid) {
			return invalid("device %s: %s", id, ie.Msg)
		}
		return withReason(ReasonToken, refused("device %s: %s", id, ie.Msg))
	}
	return fmt.Errorf("attestca: inventory: %w", err)
}

// bindEnrolment binds the TPM of a pending attestation that presented a
// token to its device. The TPM has proved it holds the EK.
func (ca *CA) bindEnrolment(rec *pending) error {
	e := rec.Enrolment
	if e == nil {
		return nil
	}
	h, err := enroltoken.ParseHash(e.TokenHash)
	if err != nil {
		return fmt.Errorf("attestca: stored attestation: %w", err)
	}
	der := e.EK
	if len(e.EKCert) > 0 {
		der = e.EKCert
	}
	ek, err := deviceid.ParseEK(der)
	if err != nil {
		return fmt.Errorf("attestca: stored attestation: %w", err)
	}
	claim, err := enrolmentClaim(&Enrolment{Kind: e.Kind, Name: e.Name})
	if err != nil {
		return fmt.Errorf("attestca: stored attestation: %w", err)
	}
	d, err := ca.devices.BindEnrolment(Actor, h, claim, ek)
	if err != nil {
		return tokenRefusal(rec.DeviceID, err)
	}
	ca.cfg.Log.Warn("device bound to its TPM by enrolment token", "device", d.Name, "id", d.ID, "token", h.Short())
	return nil
}

// recordAttestation keeps the device's last attestation; a failure is
// logged, not the device's problem.
func (ca *CA) recordAttestation(rec *pending) {
	a := inventory.Attestation{DeviceID: rec.DeviceID, Time: ca.cfg.Now(), Manufacturer: rec.TPM.Manufacturer,
		Model: rec.TPM.Model, FirmwareVersion: rec.TPM.FirmwareVersion}
	if rec.Enrolment != nil && len(rec.Enrolment.TokenHash) >= 12 {
		a.Token = rec.Enrolment.TokenHash[:12]
	}
	if err := ca.devices.RecordAttestation(a); err != nil {
		ca.cfg.Log.Error("cannot record the attestation", "device", rec.DeviceID, "err", err)
	}
}
