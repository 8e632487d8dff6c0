package revocation

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/devid-ssh/devid/inventory"
	"github.com/smallstep/nosql/database"
)

// The revoked key IDs, kept in devid's own table so that a rebuild reads
// what is revoked, never the whole inventory: its cost grows with the
// revocations, not with the number of devices or users.
//
// Table devid_revoked_keyids holds one record per key ID the KRL may
// revoke, written in the transaction of the inventory change that makes it
// so (BeforeDeviceCommit, BeforeUserCommit):
//
//   - cover "all": a device that is not active (quarantined, retired),
//     since its status changed: every certificate of its key ID, host and
//     user;
//   - cover "user": a device, in any status, owned by a disabled user,
//     since the user was disabled: its user certificates (see users.go).
//
// The key is "COVER ID SINCE" (SINCE in Unix nanoseconds), so a record is
// written with one meaning only: a device quarantined again, or a user
// disabled again, gets a new record, and the deletion of an expired one by
// a rebuild (pruning, below) can never take a newer one with it, whichever
// devid-ca sharing the database writes it. A change deletes the records its
// "before" state had and writes those its "after" state has.
//
// A record older than the longest certificate lifetime (Config.MaxLifetime,
// plus a minute) can only match expired certificates: no certificate is
// issued to a device that is not active, or to a disabled user's device.
// A rebuild leaves it out of the KRL and deletes it.
//
// A database an older devid-ca left has no such table: Open builds it once
// from the inventory, with the record "built" (the marker) in the same
// transaction, so that the first KRL after the upgrade revokes exactly
// what the older devid-ca's did. Replicas of this version starting
// together on such a database build it once: the first to swap the marker
// from nothing to "building" builds, the others wait (in Open, serving
// nothing, so changing nothing) until it says "built"; a "building" older
// than buildStale (its builder died) is taken over. (Older devid-ca
// instances must be stopped first, as for the KRL head.)
var (
	keyIDsTable = []byte("devid_revoked_keyids")
	builtKey    = []byte("built") // in keyIDsTable: the table was built
)

// Key ID covers.
const (
	coverAll  = "all"  // host and user certificates
	coverUser = "user" // user certificates
)

// revokedKeyID is a record of keyIDsTable.
type revokedKeyID struct {
	KeyID string    `json:"keyId"`
	Cover string    `json:"cover"`
	Since time.Time `json:"since"` // when the device left active, or its owner was disabled
}

func (r revokedKeyID) key() []byte {
	return []byte(r.Cover + " " + r.KeyID + " " + strconv.FormatInt(r.Since.UnixNano(), 10))
}

// expired reports whether the record can only match expired certificates.
func (s *Store) expired(since, now time.Time) bool {
	return now.Sub(since) > s.cfg.MaxLifetime+time.Minute
}

// deviceKeyIDs returns the records device d (as it is in some state) has,
// owner its owner's user record as it is then (nil for none).
func deviceKeyIDs(d *inventory.Device, owner *inventory.User) []revokedKeyID {
	var out []revokedKeyID
	if d.Status != inventory.StatusActive && !inventory.IsPendingID(d.ID) { // a pending device, even retired, never had a certificate
		out = append(out, revokedKeyID{KeyID: d.ID, Cover: coverAll, Since: d.StatusChanged})
	}
	if owner != nil && owner.Disabled {
		out = append(out, revokedKeyID{KeyID: d.ID, Cover: coverUser, Since: owner.StatusChanged})
	}
	return out
}

// owners looks up devices' owners, once each.
type owners struct {
	inv  Inventory
	seen map[string]*inventory.User // by folded email; nil: no such user
}

func (o *owners) of(d *inventory.Device) (*inventory.User, error) {
	if d.Owner == "" {
		return nil, nil
	}
	k := strings.ToLower(d.Owner)
	if u, ok := o.seen[k]; ok {
		return u, nil
	}
	u, err := o.inv.User(d.Owner)
	if errors.Is(err, inventory.ErrNotFound) {
		u, err = nil, nil // deleted, or renamed in this very change (prepareKeyIDsOfUsers fixes that)
	}
	if err != nil {
		return nil, fmt.Errorf("owner %s of device %s: %w", d.Owner, d.ID, err)
	}
	if o.seen == nil {
		o.seen = map[string]*inventory.User{}
	}
	o.seen[k] = u
	return u, nil
}

// prepareKeyIDsOfDevices adds to tx, the transaction of a change to
// devices, the deletion of the records the devices had before and the
// records they have after.
func (s *Store) prepareKeyIDsOfDevices(changes []inventory.DeviceChange, tx *database.Tx) error {
	o := owners{inv: s.inv}
	for _, c := range changes {
		if c.Before == nil {
			continue
		}
		u, err := o.of(c.Before)
		if err != nil {
			return err
		}
		for _, r := range deviceKeyIDs(c.Before, u) {
			tx.Del(keyIDsTable, r.key())
		}
	}
	now := s.cfg.Now()
	for _, c := range changes {
		u, err := o.of(c.After)
		if err != nil {
			return err
		}
		for _, r := range deviceKeyIDs(c.After, u) {
			if !s.expired(r.Since, now) {
				tx.Set(keyIDsTable, r.key(), mustJSON(r))
			}
		}
	}
	return nil
}

// prepareKeyIDsOfUsers adds to tx, the transaction of a change to users
// (after the device records of the same change, prepareKeyIDsOfDevices),
// the user-cover records of the user's devices: deleted for a user
// disabled before, written for a user disabled after (disabled again, or
// renamed while disabled, as SCIM may).
func (s *Store) prepareKeyIDsOfUsers(changes []inventory.UserChange, tx *database.Tx) {
	now := s.cfg.Now()
	for _, c := range changes {
		if c.Before != nil && c.Before.Disabled {
			for _, id := range c.Devices {
				tx.Del(keyIDsTable, revokedKeyID{KeyID: id, Cover: coverUser, Since: c.Before.StatusChanged}.key())
			}
		}
		if c.After != nil && c.After.Disabled && !s.expired(c.After.StatusChanged, now) {
			for _, id := range c.Devices {
				r := revokedKeyID{KeyID: id, Cover: coverUser, Since: c.After.StatusChanged}
				tx.Set(keyIDsTable, r.key(), mustJSON(r))
			}
		}
	}
}

// buildMarker is the record builtKey: the table is built (Built), or
// being built since Since by the Open that wrote Nonce.
type buildMarker struct {
	Built time.Time `json:"built,omitzero"`
	Nonce string    `json:"nonce,omitempty"`
	Since time.Time `json:"since,omitzero"`
}

// buildStale is how long a build may say "building" before another Open
// takes it over; buildPoll how often a waiting Open looks.
const (
	buildStale = 2 * time.Minute
	buildPoll  = 100 * time.Millisecond
)

// buildKeyIDs builds the table from the inventory if it was not built
// (a database an older devid-ca left), in one transaction with its
// marker, under the inventory's write lock; or waits for the replica
// building it.
func (s *Store) buildKeyIDs() error {
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return fmt.Errorf("revocation: %w", err)
	}
	mine := mustJSON(buildMarker{Nonce: hex.EncodeToString(nonce[:]), Since: s.cfg.Now().UTC()})
	for {
		old, err := s.db.Get(keyIDsTable, builtKey)
		switch {
		case database.IsErrNotFound(err):
			old = nil
		case err != nil:
			return fmt.Errorf("revocation: read %s/%s: %w", keyIDsTable, builtKey, err)
		default:
			var m buildMarker
			if err := json.Unmarshal(old, &m); err != nil {
				return fmt.Errorf("revocation: %s/%s: %w", keyIDsTable, builtKey, err)
			}
			if !m.Built.IsZero() {
				return nil
			}
			if s.cfg.Now().Sub(m.Since) < buildStale {
				time.Sleep(buildPoll) // another devid-ca is building it
				continue
			}
			s.cfg.Log.Warn("taking over the build of the revoked key IDs table: its builder has said \"building\" too long", "since", m.Since)
		}
		_, swapped, err := s.db.CmpAndSwap(keyIDsTable, builtKey, old, mine)
		if err != nil {
			return fmt.Errorf("revocation: write %s/%s: %w", keyIDsTable, builtKey, err)
		}
		if swapped {
			return s.build(mine)
		}
	}
}

// build writes the table from the inventory, and the marker built, in one
// transaction, if the marker is still mine.
func (s *Store) build(mine []byte) error {
	n := 0
	err := s.inv.Update("devid-ca", func(tx *database.Tx) ([]inventory.AuditEntry, error) {
		if cur, err := s.db.Get(keyIDsTable, builtKey); err != nil || !bytes.Equal(cur, mine) {
			return nil, fmt.Errorf("taken over by another devid-ca (%v)", err)
		}
		devs, err := s.inv.Devices()
		if err != nil {
			return nil, err
		}
		users, err := s.inv.Users()
		if err != nil {
			return nil, err
		}
		byEmail := make(map[string]*inventory.User, len(users))
		for _, u := range users {
			byEmail[strings.ToLower(u.Email)] = u
		}
		now := s.cfg.Now()
		for _, d := range devs {
			var owner *inventory.User
			if d.Owner != "" {
				owner = byEmail[strings.ToLower(d.Owner)]
			}
			for _, r := range deviceKeyIDs(d, owner) {
				if !s.expired(r.Since, now) {
					tx.Set(keyIDsTable, r.key(), mustJSON(r))
					n++
				}
			}
		}
		tx.Set(keyIDsTable, builtKey, mustJSON(buildMarker{Built: now.UTC()}))
		return nil, nil
	})
	if err != nil {
		return fmt.Errorf("revocation: build table %s from the inventory: %w", keyIDsTable, err)
	}
	s.cfg.Log.Info("revoked key IDs indexed from the inventory (first start of this devid-ca version on this store)", "records", n)
	return nil
}

// revokedKeyIDs reads the table: the key IDs revoked whole (KeyIDs), and
// those whose user certificates alone are (UserKeyIDs, less those in
// KeyIDs), sorted; it deletes the expired records and counts them.
func (s *Store) revokedKeyIDs(r *Revocations, now time.Time) error {
	entries, err := s.db.List(keyIDsTable)
	if err != nil && !database.IsErrNotFound(err) {
		return fmt.Errorf("revocation: list revoked key IDs: %w", err)
	}
	all, user := map[string]bool{}, map[string]bool{}
	for _, e := range entries {
		if string(e.Key) == string(builtKey) {
			continue
		}
		var rk revokedKeyID
		if err := json.Unmarshal(e.Value, &rk); err != nil {
			return fmt.Errorf("revocation: revoked key ID %s: %w", e.Key, err)
		}
		if s.expired(rk.Since, now) {
			r.Expired++
			s.db.Del(keyIDsTable, e.Key) // prune: it can only match expired certificates
			continue
		}
		switch rk.Cover {
		case coverAll:
			all[rk.KeyID] = true
		case coverUser:
			user[rk.KeyID] = true
		default:
			return fmt.Errorf("revocation: revoked key ID %s: unknown cover %q", e.Key, rk.Cover)
		}
	}
	for id := range all {
		r.KeyIDs = append(r.KeyIDs, id)
	}
	for id := range user {
		if !all[id] {
			r.UserKeyIDs = append(r.UserKeyIDs, id)
		}
	}
	slices.Sort(r.KeyIDs)
	slices.Sort(r.UserKeyIDs)
	return nil
}
