// Package inventory is devid's device and user inventory: which machines
// exist, who owns them, and whether they may get certificates.
//
// A Device is identified by its device ID (package deviceid), computed from
// the Endorsement Key given at registration. A device registered without an
// EK (from an MDM export: a serial number, a name, an owner) is pending: it
// has a provisional ID (PendingIDPrefix) until its first attestation binds
// its TPM's EK to it, and it gets no certificate before. Its Status decides every
// issuance: only an active device gets certificates (CheckUsable, the one
// rule every issuer applies). A User carries the
// identity an IdP gives them (email, login name, groups); the CA copies it into
// the principals of the user certificates of the devices they own.
//
// A user can be disabled, enabled and deleted (SetUserDisabled,
// DeleteUser): off-boarding. A device whose owner is disabled gets no
// certificate (CheckUsable again), and the certificates the user's devices
// held are revoked in the transaction of the change (package revocation,
// through BeforeUserCommit).
//
// Every change is recorded in an audit trail (who, what, when, before and
// after), written in the same transaction as the change itself. The Store
// keeps everything in a step-ca nosql database (bbolt by default), beside
// step-ca's own tables.
//
// Imports (CSV or JSON exports from an MDM or asset system) are idempotent,
// and read as streams within bounds (ImportOptions: rows, bytes): every row
// is checked first, and a bad row fails the whole import with its line
// number before anything is written. An import of up to
// DefaultImportBatch rows is then one transaction; a larger one is applied
// in batches, each a transaction, and an error past the first says how many
// rows were applied (running it again applies the rest). A field the file
// does not give keeps its value. ImportMDM reads Jamf Pro's and Intune's
// own exports into the same import, and reports (or quarantines) the
// devices of that MDM its export no longer lists.
//
// Several devid-ca may share one database (PostgreSQL): every write is a
// compare-and-swap of what it read, through guard records (guard.go), and
// starts again, reading afresh, when another devid-ca changed any of it
// meanwhile; so no change is lost and the uniqueness of names, serials,
// EKs, emails and logins holds across them. A write about one device or
// user reads that device or user and the index records its checks need
// (index.go), not the whole inventory, so its cost does not grow with the
// fleet; Open builds or repairs the index of a database an older devid-ca
// wrote.
//
// A quarantine may be temporary (Quarantine with a duration): its end is
// in the device's record, and devid-ca lifts it then (LiftQuarantine), once
// even when several devid-ca share the database.
//
// Emails are case-insensitive and stored in lower case. Text is UTF-8, and
// what is printed as one line (names, emails, reasons) has no control
// characters.
package inventory

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

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

// PendingIDPrefix starts the provisional ID of a pending device: it has no
// EK, so no device ID yet.
const PendingIDPrefix = "urn:devid:pending:"

// IsPendingID says whether id is a pending device's provisional ID.
func IsPendingID(id string) bool { return strings.HasPrefix(id, PendingIDPrefix) }

// ParseKind checks a kind given as text.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case KindHost, KindWorkstation:
		return k, nil
	}
	return "", fmt.Errorf("unknown kind %q (want host or workstation)", s)
}

// ParseStatus checks a status given as text.
func ParseStatus(s string) (Status, error) {
	switch st := Status(s); st {
	case StatusActive, StatusQuarantined, StatusRetired, StatusPending:
		return st, nil
	}
	return "", fmt.Errorf("unknown status %q (want active, quarantined, retired or pending)", s)
}

// Device is one registered machine.
type Device struct {
	ID         string `json:"id"`                   // urn:ek:sha256:…, from the EK; PendingIDPrefix… while pending
	Name       string `json:"name"`                 // unique in the inventory
	Kind       Kind   `json:"kind"`                 // host or workstation
	Collection string `json:"collection,omitempty"` // named group of like devices
	Owner      string `json:"owner,omitempty"`      // email of the owning user
	Status     Status `json:"status"`
	// StatusReason is what the operator gave for the last status change.
	StatusReason string `json:"statusReason,omitempty"`
	// StatusChanged is when the status last changed (creation at first).
	// Certificates issued before a quarantine stay revoked when the device
	// is brought back: revocation keys on this time.
	StatusChanged time.Time `json:"statusChanged"`
	// QuarantineUntil is when a temporary quarantine ends (Quarantine with
	// a duration): devid-ca then brings the device back to active
	// (LiftQuarantine). Nil for a quarantine without an end, and for
	// every other status.
	QuarantineUntil *time.Time `json:"quarantineUntil,omitempty"`
	EKPublic        []byte     `json:"ekPublic"`         // PKIX DER of the EK; nil while pending
	EKCert          []byte     `json:"ekCert,omitempty"` // DER, when one was given
	// HostNames are the names and addresses a host may have in its SSH
	// host certificates besides its Name (package hostnames: exact
	// names, addresses, *.label patterns, CIDR prefixes).
	HostNames []string `json:"hostNames,omitempty"`
	// Serial is the machine's serial number, AssetTag its asset tag, OS
	// its operating system, as the MDM or the operator gave them. A serial
	// is unique in the inventory.
	Serial   string `json:"serial,omitempty"`
	AssetTag string `json:"assetTag,omitempty"`
	OS       string `json:"os,omitempty"`
	// Source is the MDM the device was imported from ("jamf", "intune"),
	// empty for one added by hand; SourceID is that MDM's ID for it.
	Source   string    `json:"source,omitempty"`
	SourceID string    `json:"sourceId,omitempty"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
}

// Pending says whether no TPM is bound to the device yet.
func (d *Device) Pending() bool { return d.Status == StatusPending }

// Collection is the policy of a named group of devices (Device.Collection).
// A device whose collection has no record gets the defaults: only keys
// that live in its TPM are signed, and no host names beyond its own.
type Collection struct {
	Name string `json:"name"`
	// AllowFileKeys: the CA also signs SSH keys that are not the device's
	// TPM key (files on disk), without the key:tpm principal. For
	// migrating a collection to TPM-resident keys, then turning it off.
	AllowFileKeys bool `json:"allowFileKeys"`
	// HostNames are names and addresses every host of the collection may
	// have in its host certificates (package hostnames).
	HostNames []string  `json:"hostNames"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
}

// CollectionUpdate creates or changes a collection: a nil field keeps its
// value (the default for a new collection), an empty HostNames clears it.
type CollectionUpdate struct {
	Name          string    `json:"name"`
	AllowFileKeys *bool     `json:"allowFileKeys,omitempty"`
	HostNames     *[]string `json:"hostNames,omitempty"`
}

// User is a person who may own devices.
type User struct {
	// ID is the user's stable identifier (their SCIM id): given when the
	// user is added, kept when their email changes. A user added before
	// users had IDs reads with one derived from their email (see
	// withID), written with the record the next time it changes.
	ID     string   `json:"id,omitempty"`
	Email  string   `json:"email"`  // IdP identity, unique
	Login  string   `json:"login"`  // login name, unique
	Groups []string `json:"groups"` // IdP groups, sorted
	// Disabled: no device the user owns gets a certificate (CheckUsable),
	// and the user certificates their devices held, and any carrying
	// their user: or login: principal, were revoked when they were
	// disabled (package revocation). A record written before users could
	// be disabled has no such field: enabled.
	Disabled bool `json:"disabled,omitempty"`
	// DisabledBy is who disabled the user (an admin's name, or scim:NAME
	// for an IdP's SCIM client): an IdP may enable only a user it
	// disabled itself. Empty while enabled, and for a user disabled before
	// it was recorded.
	DisabledBy string `json:"disabledBy,omitempty"`
	// StatusReason is what was given for the last disable or enable.
	StatusReason string `json:"statusReason,omitempty"`
	// StatusChanged is when the user was last disabled or enabled (zero:
	// never).
	StatusChanged time.Time `json:"statusChanged,omitzero"`
	// SCIM is what an IdP's SCIM client said of the user, if one
	// provisioned them (package scim): kept to be given back as it was
	// sent.
	SCIM    *SCIMIdentity `json:"scim,omitempty"`
	Created time.Time     `json:"created"`
	Updated time.Time     `json:"updated"`
}

// AuditEntry records one change to the inventory.
type AuditEntry struct {
	ID      string    `json:"id"` // sortable: entries list oldest first
	Time    time.Time `json:"time"`
	Actor   string    `json:"actor"`   // the authenticated admin
	Action  string    `json:"action"`  // e.g. device.add, device.quarantine
	Subject string    `json:"subject"` // device ID, user email, collection:NAME, or a certificate's key ID
	// SubjectName is the device's name when Subject is a device ID: the
	// name it had when the entry was written (entries from before names
	// were recorded show the name it has now).
	SubjectName string          `json:"subjectName,omitempty"`
	Reason      string          `json:"reason,omitempty"`
	Before      json.RawMessage `json:"before,omitempty"` // the Device, User or Collection; absent on creation
	After       json.RawMessage `json:"after,omitempty"`
}

// NewDevice is what an operator gives to register a device.
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

// NewUser is what an operator gives to add or update a user.
type NewUser struct {
	Email  string   `json:"email"`
	Login  string   `json:"login"`
	Groups []string `json:"groups,omitempty"`
}

// Errors callers branch on (with errors.Is).
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	ErrInvalid  = errors.New("invalid")
	// ErrTooLarge: an import over ImportOptions.MaxBytes or MaxRows.
	ErrTooLarge = errors.New("too large")
)

// Error is an inventory error that names the field, and for imports the
// line, it is about.
type Error struct {
	Kind  error  // ErrNotFound, ErrConflict, ErrInvalid or ErrTooLarge
	File  string // import file name, if any
	Line  int    // 1-based line in the import, 0 if none
	Field string // the offending field, if any
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("inventory: ")
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap lets errors.Is match the error kind.
func (e *Error) Unwrap() error { return e.Kind }

func invalid(field, format string, args ...any) *Error {
	return &Error{Kind: ErrInvalid, Field: field, Msg: fmt.Sprintf(format, args...)}
}
