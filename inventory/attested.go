package inventory

import (
	"errors"
	"time"
)

var attestedTable = []byte("devid_last_attestation")

// Attestation is what the Attestation CA saw at a device's last successful
// attestation: when, and the TPM it attested. It is an observation, not a
// change to the inventory: it is not in the audit trail (a device renews
// its certificates by attesting, several times a day).
type Attestation struct {
	DeviceID        string    `json:"deviceId"`
	Time            time.Time `json:"time"`
	Manufacturer    string    `json:"manufacturer,omitempty"` // TPM_PT_MANUFACTURER, decimal, as the device reported it
	Model           string    `json:"model,omitempty"`
	FirmwareVersion string    `json:"firmwareVersion,omitempty"`
	// Token is the short hash of the enrolment token with which this
	// attestation bound the TPM to its device, if it did.
	Token string `json:"token,omitempty"`
}

// RecordAttestation records a device's last attestation, replacing the
// one before.
func (s *Store) RecordAttestation(a Attestation) error {
	a.Time = a.Time.UTC().Round(0)
	if err := s.db.Set(attestedTable, []byte(a.DeviceID), mustJSON(a)); err != nil {
		return errors.New("inventory: record attestation: " + err.Error())
	}
	return nil
}

// LastAttestation returns a device's last attestation; nil if none was
// recorded.
func (s *Store) LastAttestation(deviceID string) (*Attestation, error) {
	var a Attestation
	err := s.get(attestedTable, deviceID, &a)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &a, nil
}
