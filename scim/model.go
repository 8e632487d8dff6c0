package scim

import (
	"errors"
	"time"
)

// User is a user as the service sees it: the SCIM attributes kept as the
// IdP sent them, and what devid derives from them.
type User struct {
	ID string
	// Provisioned: a SCIM client gave the user their SCIM attributes. A
	// user added otherwise (an import) has none: their userName is their
	// email.
	Provisioned bool
	UserName    string
	ExternalID  string
	DisplayName string
	GivenName   string
	FamilyName  string
	Emails      []Email
	Active      bool

	Email  string     // devid's identity: see the package doc
	Login  string     // devid's login name
	Groups []GroupRef // the groups with a record the user is in, read-only

	Created, Updated time.Time
}

// Email is one of a user's emails.
type Email struct {
	Value, Type string
	Primary     bool
}

// GroupRef names a group a user is in.
type GroupRef struct{ ID, DisplayName string }

// Group is a group: its members are user IDs.
type Group struct {
	ID          string
	DisplayName string
	ExternalID  string
	Members     []Member
	Created     time.Time
	Updated     time.Time
}

// Member is a member of a group: a user's ID, and their email to show.
type Member struct{ ID, Display string }

// Backend is what the service reads and writes: devid-ca's inventory,
// through an adapter. Its errors match ErrNotFound, ErrConflict or
// ErrInvalid (errors.Is) when they are about the request; their text is
// shown to the client. Any other error is a 500, logged and not shown.
type Backend interface {
	// Users lists every user; Groups every group with a record.
	Users() ([]*User, error)
	Groups() ([]*Group, error)
	// CreateUser adds a user: u's SCIM attributes, Email, Login and
	// Active (its ID and times are the backend's).
	CreateUser(actor string, u *User) (*User, error)
	// UpdateUser changes the user with this ID as f says, atomically: f
	// gets a copy of the user as stored and may change anything but its
	// ID, Groups and times. An error from f is returned and nothing is
	// written.
	UpdateUser(actor, id string, f func(u *User) error) (*User, error)
	// DeleteUser deletes a user.
	DeleteUser(actor, id string) error
	// CreateGroup adds a group with its members (their IDs).
	CreateGroup(actor string, g *Group) (*Group, error)
	// UpdateGroup changes a group's display name, external ID and
	// members as f says, atomically.
	UpdateGroup(actor, id string, f func(g *Group) error) (*Group, error)
	// DeleteGroup deletes a group.
	DeleteGroup(actor, id string) error
}

// Kinds of Backend errors.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	ErrInvalid  = errors.New("invalid")
)
