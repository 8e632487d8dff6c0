package inventory

import (
	"fmt"
	"slices"

	"github.com/smallstep/nosql/database"
)

// UserChange is a user record before and after a committed change: Before
// is nil for a new user, After nil for a deleted one. Devices are the IDs
// of the devices the user owned when the change was made (set for a
// disable, an enable and a delete).
type UserChange struct {
	Before, After *User
	Devices       []string
}

// OffBoards reports whether the change takes a user's certificates away:
// the user was disabled, or deleted.
func (c UserChange) OffBoards() bool {
	return c.Before != nil && (c.After == nil || c.After.Disabled && !c.Before.Disabled)
}

// Reenables reports whether the change enables a disabled user.
func (c UserChange) Reenables() bool {
	return c.Before != nil && c.After != nil && c.Before.Disabled && !c.After.Disabled
}

// Renames reports whether the change gives a user another email or login
// (ChangeUser, ImportUsers). The certificates naming the old ones
// (user:EMAIL, login:LOGIN) must go with the change, as the
// BeforeUserCommit function of package revocation does: once the email or
// login is free, someone else may be given it, and a certificate naming it
// would log in as them.
func (c UserChange) Renames() bool {
	return c.Before != nil && c.After != nil && (c.Before.Email != c.After.Email || c.Before.Login != c.After.Login)
}

// userHooks are the functions BeforeUserCommit and OnUserChange set, and
// the changes committed under the write lock, delivered once it is
// released.
type userHooks struct {
	prepare  func([]UserChange, *database.Tx) ([]AuditEntry, error)
	onChange func([]UserChange)
	pending  []UserChange
}

// BeforeUserCommit sets a function called, with the store's write lock
// held, before every change to users is committed (a user added, updated,
// disabled, enabled or deleted). What it adds to tx, and the audit entries
// it returns, are committed in the same transaction as the change, or not
// at all (their ID, time and actor are filled in); an error refuses the
// change. It must not call the Store's write methods.
//
// Revocation uses it so that disabling (or deleting) a user and revoking
// the certificates their devices hold are one transaction: a crash cannot
// leave the user disabled and their certificates good; and so that a user
// renamed (another email or login) and the revocation of the certificates
// naming the old ones are one transaction too.
func (s *Store) BeforeUserCommit(f func(changes []UserChange, tx *database.Tx) ([]AuditEntry, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users.prepare = f
}

// OnUserChange sets a function called after every committed change to
// users, as OnDeviceChange is for devices: after the commit, once the
// write lock is released, before the write method returns.
func (s *Store) OnUserChange(f func([]UserChange)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users.onChange = f
}

// prepareUsers runs the BeforeUserCommit function on w's user changes, and
// adds the audit entries it returns to w.
func (s *Store) prepareUsers(w *writer, tx *database.Tx) error {
	if s.users.prepare == nil || len(w.userChanges) == 0 {
		return nil
	}
	audits, err := s.users.prepare(w.userChanges, tx)
	if err != nil {
		return err
	}
	for _, e := range audits {
		if err := CheckReason(e.Reason); err != nil {
			return err
		}
	}
	w.audits = append(w.audits, audits...)
	return nil
}

// changeUser adds a user change to w: the record (deleted when c.After is
// nil), and its audit entry.
func (w *writer) changeUser(c UserChange, action, reason string) {
	e := AuditEntry{Action: action, Reason: reason, Before: optJSON(c.Before)}
	if c.After == nil {
		w.puts = append(w.puts, put{table: usersTable, key: c.Before.Email})
		e.Subject = c.Before.Email
	} else {
		if c.After.ID == "" {
			c.After.ID = newID()
		}
		if c.Before != nil && c.Before.Email != c.After.Email {
			w.puts = append(w.puts, put{table: usersTable, key: c.Before.Email}) // moved
		}
		e.After = mustJSON(c.After)
		w.puts = append(w.puts, put{usersTable, c.After.Email, e.After})
		e.Subject = c.After.Email
	}
	w.userChanges = append(w.userChanges, c)
	w.audits = append(w.audits, e)
}

func deviceIDs(devs []*Device) []string {
	ids := make([]string, len(devs))
	for i, d := range devs {
		ids[i] = d.ID
	}
	slices.Sort(ids)
	return ids
}

// SetUserDisabled disables or enables a user, and records it in the audit
// trail (user.disable, user.enable) with the reason, which must pass
// CheckReason. Setting the state the user is in already is a conflict, so
// that a script notices it did nothing.
//
// A disabled user's devices get no certificate (CheckUsable), and the
// BeforeUserCommit function (package revocation) revokes, in the same
// transaction, the certificates their devices hold. Enabling a user does
// not bring those back: the devices get new ones.
func (s *Store) SetUserDisabled(actor, email string, disabled bool, reason string) (*User, error) {
	if err := CheckReason(reason); err != nil {
		return nil, err
	}
	var out *User
	err := s.write(func(t *txn) error {
		var err error
		out, err = s.setUserDisabled(t, actor, email, disabled, reason)
		return err
	})
	return out, err
}

// userErr reads a user by email, ErrNotFound if there is none.
func (t *txn) userErr(email string) (*User, error) {
	u, err := t.user(email)
	if err != nil {
		return nil, err
	}
	if u == nil {
		return nil, &Error{Kind: ErrNotFound, Msg: "no user " + email}
	}
	return u, nil
}

func (s *Store) setUserDisabled(t *txn, actor, email string, disabled bool, reason string) (*User, error) {
	old, err := t.userErr(email)
	if err != nil {
		return nil, err
	}
	if old.Disabled == disabled {
		return nil, &Error{Kind: ErrConflict, Field: "disabled", Msg: fmt.Sprintf("user %s is already %s", old.Email, userState(old))}
	}
	owned, err := t.ownedBy(old.Email)
	if err != nil {
		return nil, err
	}
	now := s.clock()
	u := *old
	u.Disabled, u.DisabledBy, u.StatusReason, u.StatusChanged, u.Updated = disabled, "", reason, now, now
	action := "user.enable"
	if disabled {
		action, u.DisabledBy = "user.disable", actor
	}
	var w writer
	w.changeUser(UserChange{Before: old, After: &u, Devices: deviceIDs(owned)}, action, reason)
	return &u, s.commit(t, actor, now, &w)
}

func userState(u *User) string {
	if u.Disabled {
		return "disabled"
	}
	return "enabled"
}

// UserDeletion is what DeleteUser did: the user as they were, and the
// devices they owned, as they are now.
type UserDeletion struct {
	User    *User
	Devices []*Device
}

// DeleteUser removes a user, with the reason (CheckReason) in the audit
// trail (user.delete). Their certificates are revoked as when they are
// disabled, in the same transaction (BeforeUserCommit). Every device they
// owned is left with no owner (device.update), and an active workstation
// among them is quarantined as well (device.quarantine, reason "owner
// EMAIL deleted"; one quarantined for a while has its quarantine's end
// taken away), so that it gets nothing until an operator gives it to
// someone and activates it: a workstation that simply lost its owner
// would go on getting certificates with its device ID and collection
// principals, in the hands of whoever had it. Hosts keep their status.
func (s *Store) DeleteUser(actor, email, reason string) (*UserDeletion, error) {
	if err := CheckReason(reason); err != nil {
		return nil, err
	}
	var out *UserDeletion
	err := s.write(func(t *txn) error {
		old, err := t.userErr(email)
		if err != nil {
			return err
		}
		out, err = s.deleteUser(t, actor, old, reason)
		return err
	})
	return out, err
}

// DeleteUserByID is DeleteUser for the user with this ID (an IdP's SCIM
// DELETE), found and deleted under one lock: the user the ID names at the
// moment of the deletion, whatever email they have by then, never someone
// given their earlier email since.
func (s *Store) DeleteUserByID(actor, id, reason string) (*UserDeletion, error) {
	if err := CheckReason(reason); err != nil {
		return nil, err
	}
	var out *UserDeletion
	err := s.write(func(t *txn) error {
		old, err := t.userByIDErr(id)
		if err != nil {
			return err
		}
		out, err = s.deleteUser(t, actor, old, reason)
		return err
	})
	return out, err
}

// deleteUser deletes old, read in t.
func (s *Store) deleteUser(t *txn, actor string, old *User, reason string) (*UserDeletion, error) {
	owned, err := t.ownedBy(old.Email)
	if err != nil {
		return nil, err
	}
	now := s.clock()
	var w writer
	out := &UserDeletion{User: old}
	for _, d := range owned {
		nd := *d
		nd.Owner, nd.Updated = "", now
		action, why := "device.update", fmt.Sprintf("owner %s deleted", old.Email)
		switch {
		case d.Kind != KindWorkstation:
		case d.Status == StatusActive:
			nd.Status, nd.StatusReason, nd.StatusChanged = StatusQuarantined, why, now
			action = "device.quarantine"
		case d.Status == StatusQuarantined && d.QuarantineUntil != nil:
			// A temporary quarantine would lift itself: it has no end now.
			nd.StatusReason, nd.QuarantineUntil = why, nil
			action = "device.quarantine"
		}
		w.putDevice(d, &nd, action, why)
		out.Devices = append(out.Devices, &nd)
	}
	w.changeUser(UserChange{Before: old, Devices: deviceIDs(owned)}, "user.delete", reason)
	return out, s.commit(t, actor, now, &w)
}
