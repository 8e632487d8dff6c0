// Package adminapi is devid-ca's admin API as its callers see it: the
// routes, the JSON of every request and response, and the Client the devid
// CLI uses. It imports only the standard library, so the operator's
// command does not link the CA: the server side is package
// caserver/adminhttp, which converts between these types and the CA's
// stores (packages inventory and revocation).
//
// # Routes
//
// Under Prefix, /devid/v1/, for an admin client certificate only:
//
//	GET  /devid/v1/whoami                   WhoAmI
//	GET  /devid/v1/devices                  DeviceList; ?status=S&kind=K&collection=C&owner=EMAIL filter
//	POST /devid/v1/devices                  NewDevice → Device (201)
//	GET  /devid/v1/devices/{ref}            Device, by device ID or name
//	POST /devid/v1/devices/{ref}/status     StatusRequest → Device
//	POST /devid/v1/devices/{ref}/token      TokenRequest → IssuedToken (201), for a pending device
//	POST /devid/v1/devices/{ref}/rebind     RebindRequest → Rebound
//	GET  /devid/v1/devices/{ref}/details    DeviceDetails
//	POST /devid/v1/import/devices           CSV or JSON export → ImportReport; ?file=NAME&dry_run=BOOL,
//	                                        and for an MDM's export (MDMImport) &format=jamf|intune
//	                                        [&missing=keep|quarantine&kind=K&collection=C]
//	GET  /devid/v1/users                    UserList
//	POST /devid/v1/users                    NewUser → User (201)
//	GET  /devid/v1/users/{email}            User
//	POST /devid/v1/users/{email}/status     UserStatusRequest → UserDevices (disable, enable; see users.go)
//	DELETE /devid/v1/users/{email}          ReasonRequest → UserDevices
//	POST /devid/v1/import/users             CSV or JSON export → ImportReport; ?file=NAME&dry_run=BOOL
//	GET  /devid/v1/collections              CollectionList
//	GET  /devid/v1/collections/{name}       Collection
//	PUT  /devid/v1/collections/{name}       CollectionUpdate → Collection (created if new)
//	GET  /devid/v1/audit                    AuditList; ?subject=NAME|DEVICE-ID|EMAIL|collection:NAME
//	POST /devid/v1/certs/revoke             RevokeRequest → RevokedCert
//
// One route under the prefix is public, and not part of this API: GET
// /devid/v1/krl (krldist.Path), the KRL every host polls without a client
// certificate. It is served by devid-ca's revocation store (package
// revocation; the exchange is package krldist's), keeps that URL because
// deployed hosts poll it, and is routed before the admin API, which never
// sees it.
//
// # Authentication
//
// Mutual TLS: the caller presents a client certificate that chains to the
// CA's admin root (created by `devid-ca init`, separate from the root that
// devices and hosts trust). The certificate's common name is the admin's
// name in the audit trail. No certificate: 401. A certificate that chains
// to the CA's other roots (a device's, say): 403. A certificate that chains
// to nothing the CA knows fails the TLS handshake.
//
// # Errors
//
// Requests and responses are JSON. Errors are an ErrorResponse,
//
//	{"error": "...", "field": "...", "line": N}
//
// with 400 for invalid input, 404 for an unknown device, user or
// certificate serial, 409 for a
// conflict (a duplicate, a status change the status machine refuses, a
// certificate revoked already), 413 for a body over MaxBody. The Client
// returns them as an *APIError.
//
// # Serials
//
// SSH certificate serials are JSON strings of decimal digits in every
// response (they use all 64 bits; JSON numbers above 2^53 lose precision in
// many readers); requests may give them as strings or as numbers (Serial).
package adminapi

import (
	"encoding/json"
	"fmt"
	"time"
)

// Prefix is where the admin API lives.
const Prefix = "/devid/v1/"

// MaxBody bounds request bodies (but imports', read as streams within the
// CA's limits.importMaxBytes) and the responses the
// Client reads.
const MaxBody = 32 << 20

// Kind is what a device is for.
type Kind string

// Device kinds.
const (
	KindHost        Kind = "host"        // a server: gets SSH host certificates
	KindWorkstation Kind = "workstation" // a user's machine: gets SSH user certificates
)

// Status decides whether a device may get certificates.
type Status string

// Device statuses. Only StatusActive devices get certificates.
const (
	StatusActive      Status = "active"
	StatusQuarantined Status = "quarantined"
	StatusRetired     Status = "retired"
	// StatusPending: registered without an EK; no TPM is bound to it yet.
	StatusPending Status = "pending"
)

// ParseKind checks a kind given as text, as the CA does.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case KindHost, KindWorkstation:
		return k, nil
	}
	return "", fmt.Errorf("unknown kind %q (want host or workstation)", s)
}

// ParseStatus checks a status given as text, as the CA does.
func ParseStatus(s string) (Status, error) {
	switch st := Status(s); st {
	case StatusActive, StatusQuarantined, StatusRetired, StatusPending:
		return st, nil
	}
	return "", fmt.Errorf("unknown status %q (want active, quarantined, retired or pending)", s)
}

// Device is one registered machine.
type Device struct {
	ID         string `json:"id"`                   // urn:ek:sha256:…, from the EK; urn:devid:pending:… while pending
	Name       string `json:"name"`                 // unique in the inventory
	Kind       Kind   `json:"kind"`                 // host or workstation
	Collection string `json:"collection,omitempty"` // named group of like devices
	Owner      string `json:"owner,omitempty"`      // email of the owning user
	Status     Status `json:"status"`
	// StatusReason is what the operator gave for the last status change.
	StatusReason string `json:"statusReason,omitempty"`
	// StatusChanged is when the status last changed (creation at first).
	StatusChanged time.Time `json:"statusChanged"`
	// QuarantineUntil is when a temporary quarantine ends: the CA then
	// activates the device. Absent for a quarantine with no end and every
	// other status.
	QuarantineUntil *time.Time `json:"quarantineUntil,omitempty"`
	EKPublic        []byte     `json:"ekPublic"`         // PKIX DER of the EK; null while pending
	EKCert          []byte     `json:"ekCert,omitempty"` // DER, when one was given
	// HostNames are the names and addresses a host may have in its SSH
	// host certificates besides its Name: exact names, addresses,
	// *.label patterns ("*" is exactly one label), CIDR prefixes.
	HostNames []string `json:"hostNames,omitempty"`
	// Serial is the machine's serial number (unique), AssetTag its asset
	// tag, OS its operating system; Source the MDM it was imported from
	// (jamf, intune; empty if added by hand), SourceID that MDM's ID.
	Serial   string    `json:"serial,omitempty"`
	AssetTag string    `json:"assetTag,omitempty"`
	OS       string    `json:"os,omitempty"`
	Source   string    `json:"source,omitempty"`
	SourceID string    `json:"sourceId,omitempty"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
}

// Collection is the policy of a named group of devices. A collection that
// devices name but nobody set has the defaults: AllowFileKeys false, no
// HostNames, and zero Created and Updated times.
type Collection struct {
	Name string `json:"name"`
	// AllowFileKeys: the CA also signs SSH keys that are not the device's
	// TPM key, without the key:tpm principal (a migration aid).
	AllowFileKeys bool `json:"allowFileKeys"`
	// HostNames every host of the collection may have in its host
	// certificates (as Device.HostNames).
	HostNames []string  `json:"hostNames"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
}

// CollectionUpdate is the body of PUT /devid/v1/collections/{name}: a
// field left out (or null) keeps its value, or a new collection's default;
// hostNames [] clears the host names.
type CollectionUpdate struct {
	AllowFileKeys *bool     `json:"allowFileKeys,omitempty"`
	HostNames     *[]string `json:"hostNames,omitempty"`
}

// User is a person who may own devices.
type User struct {
	// ID is the user's stable identifier, kept when their email changes
	// (their SCIM id).
	ID     string   `json:"id,omitempty"`
	Email  string   `json:"email"`  // IdP identity, unique, lower case
	Login  string   `json:"login"`  // login name, unique
	Groups []string `json:"groups"` // IdP groups, sorted
	// Disabled: no device the user owns gets a certificate, and the user
	// certificates their devices held were revoked when they were
	// disabled. Absent: enabled.
	Disabled bool `json:"disabled,omitempty"`
	// DisabledBy is who disabled the user: an admin, or scim:NAME (an
	// IdP may enable only a user it disabled itself).
	DisabledBy string `json:"disabledBy,omitempty"`
	// StatusReason is what was given for the last disable or enable.
	StatusReason string `json:"statusReason,omitempty"`
	// StatusChanged is when the user was last disabled or enabled;
	// absent if never.
	StatusChanged time.Time `json:"statusChanged,omitzero"`
	// SCIM is what the IdP's SCIM client said of the user, if one
	// provisioned them.
	SCIM    *SCIMIdentity `json:"scim,omitempty"`
	Created time.Time     `json:"created"`
	Updated time.Time     `json:"updated"`
}

// SCIMIdentity is what an IdP's SCIM client said of a user, as it sent it.
type SCIMIdentity struct {
	UserName    string      `json:"userName"`
	ExternalID  string      `json:"externalId,omitempty"`
	DisplayName string      `json:"displayName,omitempty"`
	GivenName   string      `json:"givenName,omitempty"`
	FamilyName  string      `json:"familyName,omitempty"`
	Emails      []SCIMEmail `json:"emails,omitempty"`
}

// SCIMEmail is one of a SCIM user's emails.
type SCIMEmail struct {
	Value   string `json:"value"`
	Type    string `json:"type,omitempty"`
	Primary bool   `json:"primary,omitempty"`
}

// AuditEntry records one change to the inventory, or a certificate revoked
// by serial.
type AuditEntry struct {
	ID      string    `json:"id"` // sortable: entries list oldest first
	Time    time.Time `json:"time"`
	Actor   string    `json:"actor"`   // the authenticated admin
	Action  string    `json:"action"`  // e.g. device.add, device.quarantine, cert.revoke
	Subject string    `json:"subject"` // device ID, user email, or a certificate's key ID
	// SubjectName is the device's name when Subject is a device ID.
	SubjectName string `json:"subjectName,omitempty"`
	Reason      string `json:"reason,omitempty"`
	// Before and After are the Device or User before and after the
	// change (Before absent on creation); for cert.revoke, After is the
	// RevokedCert.
	Before json.RawMessage `json:"before,omitempty"`
	After  json.RawMessage `json:"after,omitempty"`
}

// NewDevice is the body of POST /devid/v1/devices, and a row of a device
// import.
type NewDevice struct {
	// ID, when given, must equal the device ID computed from EK: a check
	// that an export and the EK in it belong together.
	ID string `json:"id,omitempty"`
	// EK is the PEM, or base64 of the DER, of the EK public key or
	// certificate. Without it the device is pending (it needs a Serial or
	// an AssetTag) until its first attestation binds its TPM to it.
	EK         string `json:"ek,omitempty"`
	Name       string `json:"name"`
	Kind       string `json:"kind"`
	Collection string `json:"collection,omitempty"`
	Owner      string `json:"owner,omitempty"`
	Status     string `json:"status,omitempty"` // default active (pending without an EK)
	// HostNames: see Device.HostNames.
	HostNames []string `json:"hostNames,omitempty"`
	// Serial, AssetTag, OS, Source, SourceID: see Device.
	Serial   string `json:"serial,omitempty"`
	AssetTag string `json:"assetTag,omitempty"`
	OS       string `json:"os,omitempty"`
	Source   string `json:"source,omitempty"`
	SourceID string `json:"sourceId,omitempty"`
}

// NewUser is the body of POST /devid/v1/users, and a row of a user import.
type NewUser struct {
	Email  string   `json:"email"`
	Login  string   `json:"login"`
	Groups []string `json:"groups,omitempty"`
}

// StatusRequest is the body of POST /devid/v1/devices/{ref}/status.
type StatusRequest struct {
	Status Status `json:"status"`
	Reason string `json:"reason,omitempty"`
	// For, with status quarantined, makes the quarantine temporary: a Go
	// duration ("2h", "90m"), from 1m to 8784h. The CA activates the
	// device when it ends, as `devid device activate` would; a quarantine
	// without it has no end (and replaces one that had).
	For string `json:"for,omitempty"`
}

// Import results, per row (ImportResult.Result, ImportReport.Counts).
const (
	Added     = "added"
	Updated   = "updated"
	Unchanged = "unchanged"
	// Held: the row asked to bring a quarantined or retired device back to
	// active, which an import never does (use an explicit activate). The
	// whole row was set aside; the note says what it would have changed.
	Held = "held"
	// Missing and MissingQuarantined are the results of an MDM import for
	// a device of its source that the export no longer lists (no line):
	// reported and left as it is, or quarantined (missing=quarantine).
	Missing            = "missing"
	MissingQuarantined = "quarantined"
)

// MDMImport is the query of an import of an MDM's device export (POST
// /devid/v1/import/devices with format=…).
type MDMImport struct {
	Format string // jamf or intune
	// Missing: what happens to the devices of this source the export no
	// longer lists: keep (the default: reported) or quarantine.
	Missing string
	// Kind and Collection, when set, are every listed device's; a device
	// the export adds is otherwise a workstation. Collection also limits
	// Missing to that collection's devices.
	Kind, Collection string
}

// ImportResult says what an import did with one row.
type ImportResult struct {
	Line    int      `json:"line"`
	Subject string   `json:"subject"` // device ID or user email
	Name    string   `json:"name,omitempty"`
	Result  string   `json:"result"`            // Added, Updated, Unchanged or Held
	Changes []string `json:"changes,omitempty"` // field: old → new
	Note    string   `json:"note,omitempty"`
}

// ImportReport is the outcome of an import.
type ImportReport struct {
	DryRun  bool           `json:"dryRun"` // nothing was written
	Counts  map[string]int `json:"counts"` // by result
	Results []ImportResult `json:"results"`
}

// RevokeRequest is the body of POST /devid/v1/certs/revoke: a serial, or
// the certificate itself (OpenSSH authorized_keys format).
type RevokeRequest struct {
	Serial      Serial `json:"serial,omitempty"`
	Certificate string `json:"certificate,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

// RevokedCert is a certificate revoked by serial: the answer to
// POST /devid/v1/certs/revoke, and the "after" of a cert.revoke audit
// entry.
type RevokedCert struct {
	Serial    Serial    `json:"serial"` // a string in JSON
	Type      string    `json:"type"`   // host or user
	KeyID     string    `json:"keyId"`
	NotAfter  time.Time `json:"notAfter"`
	RevokedAt time.Time `json:"revokedAt"`
	Reason    string    `json:"reason,omitempty"`
}

// DeviceList, UserList, AuditList and CollectionList are the list responses.
type (
	DeviceList struct {
		Devices []*Device `json:"devices"`
	}
	UserList struct {
		Users []*User `json:"users"`
	}
	AuditList struct {
		Entries []AuditEntry `json:"entries"`
	}
	CollectionList struct {
		Collections []*Collection `json:"collections"`
	}
)

// WhoAmI is the answer to GET /devid/v1/whoami: the admin the CA sees.
type WhoAmI struct {
	Admin string `json:"admin"`
}

// ErrorResponse is the body of every error response.
type ErrorResponse struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"` // the field it is about, if any
	Line  int    `json:"line,omitempty"`  // the import line it is about, if any
}
