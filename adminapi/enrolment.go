package adminapi

import (
	"net/url"
	"time"
)

// TokenRequest is the body of POST /devid/v1/devices/{ref}/token.
type TokenRequest struct {
	// TTL is the token's lifetime, a Go duration ("24h", "90m"): default
	// 24h, at least 1m, at most 720h (30 days).
	TTL string `json:"ttl,omitempty"`
}

// IssuedToken is a new enrolment token: the only time the CA shows it.
type IssuedToken struct {
	Token    string    `json:"token,omitempty"` // devid-enrol-…: the secret, to hand to the device (`devid device token --out` leaves it out of its JSON)
	Hash     string    `json:"hash"`            // its short hash, as the audit trail and the CA's log name it
	Device   string    `json:"device"`          // the device's name
	DeviceID string    `json:"deviceId"`        // its provisional ID
	Kind     Kind      `json:"kind"`
	Expires  time.Time `json:"expires"`
}

// TokenInfo is the state of a device's newest token (never the token).
type TokenInfo struct {
	State      string    `json:"state"` // live, used, expired or superseded
	Hash       string    `json:"hash"`  // short hash
	IssuedBy   string    `json:"issuedBy"`
	Issued     time.Time `json:"issued"`
	Expires    time.Time `json:"expires"`
	Used       time.Time `json:"used,omitzero"`       // when it bound a TPM
	BoundTo    string    `json:"boundTo,omitempty"`   // that TPM's device ID
	Superseded time.Time `json:"superseded,omitzero"` // when a newer token replaced it
}

// RebindRequest is the body of POST /devid/v1/devices/{ref}/rebind: the
// device has a new TPM (a motherboard swap). Without EK it goes back to
// pending, and a token binds the new TPM; with EK (as NewDevice.EK) it is
// bound to it at once.
type RebindRequest struct {
	Reason string `json:"reason"` // required, for the audit trail
	EK     string `json:"ek,omitempty"`
}

// Rebound is the answer to a rebind: the device with its new ID, and the
// old TPM's record, retired under a name of its own.
type Rebound struct {
	Device  *Device `json:"device"`
	Retired *Device `json:"retired"`
}

// IssuedCert is an SSH certificate the CA issued to a device and that has
// not expired.
type IssuedCert struct {
	Serial      Serial    `json:"serial"` // a string in JSON
	Type        string    `json:"type"`   // host or user
	KeyID       string    `json:"keyId"`
	Principals  []string  `json:"principals"`
	ValidAfter  time.Time `json:"validAfter"`
	ValidBefore time.Time `json:"validBefore"`
	// RevokedAt: revoked by serial then; zero if not (a device that is not
	// active has every certificate revoked by its key ID).
	RevokedAt time.Time `json:"revokedAt,omitzero"`
}

// Attestation is a device's last successful attestation.
type Attestation struct {
	Time            time.Time `json:"time"`
	Manufacturer    string    `json:"manufacturer,omitempty"` // TPM_PT_MANUFACTURER, decimal
	Model           string    `json:"model,omitempty"`
	FirmwareVersion string    `json:"firmwareVersion,omitempty"`
	Token           string    `json:"token,omitempty"` // short hash of the token with which it bound the TPM, if it did
}

// DeviceDetails is a Device (its fields at the top level) and what it
// holds: its unexpired SSH certificates, its last attestation (null if
// none), and its newest enrolment token's state (null if none).
type DeviceDetails struct {
	Device
	Certificates    []IssuedCert `json:"certificates"`
	LastAttestation *Attestation `json:"lastAttestation"`
	Token           *TokenInfo   `json:"token"`
}

// IssueToken makes a one-time enrolment token for a pending device; ttl
// "" is the default.
func (c *Client) IssueToken(ref, ttl string) (*IssuedToken, error) {
	var out IssuedToken
	err := c.doJSON("POST", Prefix+"devices/"+url.PathEscape(ref)+"/token", TokenRequest{TTL: ttl}, &out)
	return &out, err
}

// Rebind gives a device a new TPM.
func (c *Client) Rebind(ref string, req RebindRequest) (*Rebound, error) {
	var out Rebound
	err := c.doJSON("POST", Prefix+"devices/"+url.PathEscape(ref)+"/rebind", req, &out)
	return &out, err
}

// DeviceDetails returns a device and what it holds.
func (c *Client) DeviceDetails(ref string) (*DeviceDetails, error) {
	var out DeviceDetails
	err := c.doJSON("GET", Prefix+"devices/"+url.PathEscape(ref)+"/details", nil, &out)
	return &out, err
}
