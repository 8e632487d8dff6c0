package revocation

import (
	"fmt"
	"slices"
	"strings"

	"github.com/devid-ssh/devid/inventory"
	"github.com/smallstep/nosql/database"
	"golang.org/x/crypto/ssh"
)

// A user's certificates, for off-boarding: the SSH user certificates
// whose key ID is the device ID of a device the user owns, and those
// (whatever their key ID) whose principals hold the user's user:EMAIL or
// login:LOGIN (package issuance puts them in every user certificate of an
// owned device; a device given to someone else keeps, until they expire,
// certificates naming its earlier owner).
//
// Disabling or deleting a user revokes every unexpired one by serial, in
// the transaction of the change (prepareUserChange), each audited as
// cert.revoke. While a user is disabled, the key IDs of the devices they
// own are in the KRL's user CA section too (Revocations.UserKeyIDs): a
// certificate whose signing had passed the issuance check just before the
// disable committed, and that step-ca recorded just after the revocation
// read the issued certificates, is revoked all the same. Enabling the user
// again revokes, by serial, in that transaction too, any such certificate
// (valid from before the disable), and the key IDs go: the devices' new
// certificates are good, their old ones stay revoked.
//
// Deleting a user quarantines their active workstations (package
// inventory, DeleteUser): the devices' key IDs are in the KRL from then,
// as for any quarantine.
//
// Renaming a user (another email or login: a SCIM change of userName, an
// import that changes a login) frees the old ones for someone else: a new
// hire given alice@ and the login alice would be logged in as by any
// certificate that still names user:alice@ or login:alice. So the rename
// revokes by serial, in its transaction (prepareUserChange), every
// unexpired user certificate naming an old user: or login: principal of
// the user, whatever its key ID and whenever its validity begins (step-ca
// signs a validity start the client asks for, future ones too), each
// audited as cert.revoke. The renamed user's own workstations renew at
// once when they find their certificate in the KRL (devid-agent).

// prepareUserChange is the inventory hook called before a change to users
// is committed: it adds to tx the revocation by serial of the certificates
// a disabled or deleted user's devices hold, or, for a user enabled again,
// those left from before the disable, or, for a user renamed, those naming
// the old email or login, and returns their cert.revoke audit entries. An
// error refuses the change.
func (s *Store) prepareUserChange(changes []inventory.UserChange, tx *database.Tx) ([]inventory.AuditEntry, error) {
	s.prepareKeyIDsOfUsers(changes, tx)
	var certs []*ssh.Certificate
	var audits []inventory.AuditEntry
	seen := map[string]bool{}
	for _, c := range changes {
		if c.Renames() {
			if certs == nil {
				var err error
				if certs, err = s.issued(); err != nil {
					return nil, fmt.Errorf("revocation: user %s not renamed: %w", c.Before.Email, err)
				}
			}
			old, renamed := renamedPrincipals(c)
			why := fmt.Sprintf("user renamed: names %s, now %s", strings.Join(old, " "), strings.Join(renamed, " "))
			if len(why) > inventory.MaxReasonLen { // long emails: cut, as CheckReason wants
				why = strings.ToValidUTF8(why[:inventory.MaxReasonLen-len("…")], "") + "…"
			}
			added, err := s.revokeUserCerts(tx, certs, seen, func(cert *ssh.Certificate) bool {
				return slices.ContainsFunc(cert.ValidPrincipals, func(p string) bool { return slices.Contains(old, p) })
			}, why)
			if err != nil {
				return nil, fmt.Errorf("revocation: user %s not renamed: %w", c.Before.Email, err)
			}
			for _, rc := range added {
				audits = append(audits, inventory.AuditEntry{Action: "cert.revoke", Subject: rc.KeyID, Reason: rc.Reason, After: mustJSON(rc)})
			}
			s.cfg.Log.Warn("user renamed: the certificates naming their old email or login are revoked by serial, with the change",
				"user", c.After.Email, "old", old, "certificates", len(added))
		}
		// Every unexpired certificate, whatever its validity's start:
		// step-ca signs one that starts later if asked, and no
		// certificate of theirs can have been issued while they were
		// disabled.
		var why, verb string
		switch {
		case c.OffBoards() && c.After == nil:
			verb, why = "deleted", fmt.Sprintf("user %s deleted", c.Before.Email)
		case c.OffBoards():
			verb, why = "disabled", fmt.Sprintf("user %s disabled", c.Before.Email)
		case c.Reenables():
			verb, why = "enabled", fmt.Sprintf("certificate from before user %s was disabled", c.Before.Email)
		default:
			continue
		}
		if certs == nil {
			var err error
			if certs, err = s.issued(); err != nil {
				return nil, fmt.Errorf("revocation: user %s not %s: %w", c.Before.Email, verb, err)
			}
		}
		u, devices := c.Before, c.Devices
		added, err := s.revokeUserCerts(tx, certs, seen, func(cert *ssh.Certificate) bool { return userCert(cert, u, devices) }, why)
		if err != nil {
			return nil, fmt.Errorf("revocation: user %s not %s: %w", c.Before.Email, verb, err)
		}
		for _, rc := range added {
			audits = append(audits, inventory.AuditEntry{Action: "cert.revoke", Subject: rc.KeyID, Reason: rc.Reason, After: mustJSON(rc)})
		}
		s.cfg.Log.Warn("user "+verb+": their certificates are revoked by serial, with the change", "user", c.Before.Email, "devices", len(c.Devices), "certificates", len(added))
	}
	return audits, nil
}

// revokeUserCerts adds to tx the revocation by serial of every unexpired
// user certificate that match says is the user's (see above), whenever its
// validity begins, but for those revoked already (in the store, or in
// seen, which it adds to), and returns them.
func (s *Store) revokeUserCerts(tx *database.Tx, certs []*ssh.Certificate, seen map[string]bool, match func(*ssh.Certificate) bool, reason string) ([]*RevokedCert, error) {
	now := s.cfg.Now()
	var added []*RevokedCert
	for _, c := range certs {
		if c.CertType != ssh.UserCert || c.ValidBefore <= uint64(now.Unix()) || !match(c) {
			continue
		}
		key, rc := record(c, now, reason)
		if seen[string(key)] {
			continue
		}
		seen[string(key)] = true
		if prev, err := s.revoked(key); err != nil {
			return nil, err
		} else if prev != nil {
			continue
		}
		tx.Set(serialsTable, key, mustJSON(rc))
		added = append(added, rc)
	}
	return added, nil
}

// userCert reports whether c is one of u's certificates: its key ID is
// one of u's devices, or it names u as user: or login: principal.
func userCert(c *ssh.Certificate, u *inventory.User, devices []string) bool {
	if slices.Contains(devices, c.KeyId) {
		return true
	}
	return slices.ContainsFunc(c.ValidPrincipals, func(p string) bool {
		return p == "user:"+u.Email || u.Login != "" && p == "login:"+u.Login
	})
}

// renamedPrincipals returns the user: and login: principals a rename
// takes from the user, and those it gives instead.
func renamedPrincipals(c inventory.UserChange) (old, renamed []string) {
	if c.Before.Email != c.After.Email {
		old, renamed = append(old, "user:"+c.Before.Email), append(renamed, "user:"+c.After.Email)
	}
	if c.Before.Login != c.After.Login {
		if c.Before.Login != "" {
			old = append(old, "login:"+c.Before.Login)
		}
		if c.After.Login != "" {
			renamed = append(renamed, "login:"+c.After.Login)
		}
	}
	return old, renamed
}

// OnUserChange is the inventory hook called after a change to users is
// committed: a user disabled, enabled, deleted or renamed changes the KRL,
// which it rebuilds. (Open sets it.)
func (s *Store) OnUserChange(changes []inventory.UserChange) {
	if !slices.ContainsFunc(changes, func(c inventory.UserChange) bool { return c.OffBoards() || c.Reenables() || c.Renames() }) {
		return
	}
	if err := s.Rebuild(); err != nil {
		s.cfg.Log.Error("KRL rebuild failed; the previous KRL is still served", "err", err)
	}
}
