package inventory

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/devid-ssh/devid/deviceid"
	"github.com/smallstep/nosql/database"
)

// Tables the inventory keeps in the CA's database.
var (
	devicesTable = []byte("devid_devices")
	usersTable   = []byte("devid_users")
	auditTable   = []byte("devid_audit")
	collsTable   = []byte("devid_collections")
)

// Store is the inventory kept in a step-ca nosql database. Its methods are
// safe for concurrent use, by several devid-ca on one database too (see
// guard.go: every write commits only if what it read is unchanged, or
// starts again); each write commits the change and its audit entry in one
// transaction.
type Store struct {
	db    database.DB
	now   func() time.Time
	sleep func(time.Duration) // between the attempts of a write

	mu       sync.Mutex // serialises this process's writes
	repaired *IndexRepair
	lastSeq  uint64
	onChange func([]DeviceChange)
	prepare  func([]DeviceChange, *database.Tx) error
	pending  []DeviceChange // committed under mu, delivered once it is released
	users    userHooks
}

// DeviceChange is a device record before and after a committed change
// (Before is nil for a new device).
type DeviceChange struct{ Before, After *Device }

// OnDeviceChange sets a function called after every committed change to
// devices: after the commit and after the store's write lock is released,
// so that a slow function (a KRL rebuild) never holds up other writes, in
// the goroutine of the write, before the write method returns. Calls for
// concurrent writes may overlap and come in any order: f should act on the
// state it reads then, not on the order of the changes. It may call the
// Store's methods.
func (s *Store) OnDeviceChange(f func([]DeviceChange)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onChange = f
}

// BeforeDeviceCommit sets a function called, with the store's write lock
// held, before every change to devices is committed. What it adds to tx is
// committed in the same transaction as the change, or not at all; an error
// refuses the change. It must not call the Store's write methods.
//
// Revocation uses it so that bringing a device back to active and revoking
// the certificates it held before are one transaction: a crash in between
// cannot leave the device active and its old certificates good.
func (s *Store) BeforeDeviceCommit(f func(changes []DeviceChange, tx *database.Tx) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prepare = f
}

// RecordAudit adds an audit entry for a change made outside the inventory
// (a certificate revoked by serial, say). before and after are marshalled
// to JSON. The reason must pass CheckReason.
func (s *Store) RecordAudit(actor, action, subject, reason string, before, after any) error {
	return s.Update(actor, func(*database.Tx) ([]AuditEntry, error) {
		var b, a json.RawMessage
		if before != nil {
			b = mustJSON(before)
		}
		if after != nil {
			a = mustJSON(after)
		}
		return []AuditEntry{{Action: action, Subject: subject, Reason: reason, Before: b, After: a}}, nil
	})
}

// Update commits a change made outside the inventory with its audit
// entries, in one transaction, with the store's write lock held: prepare
// adds the change to tx and returns the audit entries (their ID, time and
// actor are filled in, and a device's name where the subject is a device
// ID). An error from prepare, or a reason CheckReason refuses, commits
// nothing.
//
// prepare runs once per attempt (see guard.go), on that attempt's tx.
func (s *Store) Update(actor string, prepare func(tx *database.Tx) ([]AuditEntry, error)) error {
	return s.write(func(t *txn) error {
		w := writer{tx: new(database.Tx)}
		audits, err := prepare(w.tx)
		if err != nil {
			return err
		}
		for i, e := range audits {
			if err := CheckReason(e.Reason); err != nil {
				return err
			}
			if e.SubjectName == "" && strings.HasPrefix(e.Subject, "urn:") {
				if d, err := s.Device(e.Subject); err == nil {
					audits[i].SubjectName = d.Name
				}
			}
		}
		w.audits = audits
		return s.commit(t, actor, s.clock(), &w)
	})
}

// Open prepares the inventory tables in db, creates the guards of its
// writes (see guard.go) if the database has none yet, and checks the index
// (see index.go) against the tables, repairing what differs: a database
// that an older devid-ca, which kept no index, wrote to. That check reads
// every device, user and token once. now is the clock (time.Now in
// production).
func Open(db database.DB, now func() time.Time) (*Store, error) {
	for _, t := range [][]byte{devicesTable, usersTable, auditTable, collsTable, endsTable, tokensTable, attestedTable, groupsTable, guardsTable, indexTable} {
		if err := db.CreateTable(t); err != nil {
			return nil, fmt.Errorf("inventory: create table %s: %w", t, err)
		}
	}
	if err := initGuards(db); err != nil {
		return nil, err
	}
	s := &Store{db: db, now: now, sleep: time.Sleep}
	r, err := s.repairIndex()
	if err != nil {
		return nil, fmt.Errorf("inventory: index: %w", err)
	}
	s.repaired = r
	return s, nil
}

// reader reads without guards: for the Store's read methods.
func (s *Store) reader() *txn { return &txn{s: s} }

func (s *Store) clock() time.Time { return s.now().UTC().Round(0) }

// Device returns a device by device ID or by name.
func (s *Store) Device(ref string) (*Device, error) {
	if strings.HasPrefix(ref, "urn:") {
		var d Device
		if err := s.get(devicesTable, ref, &d); err != nil {
			return nil, err
		}
		return &d, nil
	}
	return s.reader().deviceRef(ref)
}

// Devices lists every device, sorted by name.
func (s *Store) Devices() ([]*Device, error) {
	return listSorted(s, devicesTable, func(d *Device) string { return d.Name })
}

// User returns a user by email, in any case. Users added since emails are
// folded to lower case are stored under that form; one stored before, in
// mixed case, is still found.
func (s *Store) User(email string) (*User, error) {
	var u User
	err := s.get(usersTable, email, &u)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return u.withID(), err
	}
	// Stored in lower case since emails are case-insensitive: one more
	// lookup, and the index (e:) for a mixed-case record an older devid
	// wrote.
	if folded := foldEmail(email); folded != email {
		if ferr := s.get(usersTable, folded, &u); ferr == nil || !errors.Is(ferr, ErrNotFound) {
			return u.withID(), ferr
		}
	}
	found, ierr := s.reader().user(email)
	if ierr != nil {
		return nil, ierr
	}
	if found != nil {
		return found, nil
	}
	return nil, err
}

// Users lists every user, sorted by email.
func (s *Store) Users() ([]*User, error) {
	users, err := listSorted(s, usersTable, func(u *User) string { return u.Email })
	for _, u := range users {
		u.withID()
	}
	return users, err
}

// Audit lists the audit trail, oldest first. A non-empty subject keeps only
// the entries about that device ID or user email (in any case); for a
// device bound to its TPM (device.bind), those about the provisional ID it
// had while pending too.
func (s *Store) Audit(subject string) ([]AuditEntry, error) {
	all, err := listSorted(s, auditTable, func(e *AuditEntry) string { return e.ID })
	if err != nil {
		return nil, err
	}
	// A device bound to its TPM had a provisional ID before: its entries
	// from then (added, imported, given a token) are its history too.
	subjects := map[string]bool{subject: true}
	if strings.HasPrefix(subject, "urn:") {
		for _, e := range all {
			var before struct {
				ID string `json:"id"`
			}
			if e.Action == "device.bind" && e.Subject == subject && json.Unmarshal(e.Before, &before) == nil && IsPendingID(before.ID) {
				subjects[before.ID] = true
			}
		}
	}
	var out []AuditEntry
	var names map[string]string // device ID → name now, read when needed
	for _, e := range all {
		if subject != "" && !subjects[e.Subject] && !(strings.Contains(subject, "@") && foldEmail(e.Subject) == foldEmail(subject)) {
			continue
		}
		if e.SubjectName == "" && strings.HasPrefix(e.Subject, "urn:") {
			if names == nil {
				if names, err = s.deviceNames(); err != nil {
					return nil, err
				}
			}
			e.SubjectName = names[e.Subject]
		}
		out = append(out, *e)
	}
	return out, nil
}

func (s *Store) deviceNames() (map[string]string, error) {
	devs, err := s.Devices()
	names := make(map[string]string, len(devs))
	for _, d := range devs {
		names[d.ID] = d.Name
	}
	return names, err
}

// AddDevice registers a device. Registering an EK that is already in the
// inventory is a conflict, whatever its status.
func (s *Store) AddDevice(actor string, nd NewDevice) (*Device, error) {
	f, ferr := checkNewDevice(nd)
	if ferr != nil {
		return nil, ferr
	}
	if err := f.checkNew(); err != nil {
		return nil, err
	}
	var d *Device
	err := s.write(func(t *txn) error {
		snap := t.lazy()
		if f.ek != nil {
			old, err := snap.device(f.ek.ID())
			if err != nil {
				return err
			}
			if old != nil {
				return &Error{Kind: ErrConflict, Field: "ek", Msg: fmt.Sprintf("already registered as device %q (%s, %s)", old.Name, old.ID, old.Status)}
			}
		}
		if err := snap.checkRefs(f, ""); err != nil {
			return err
		}
		owner, err := snap.owner(f.owner)
		if err != nil {
			return err
		}
		now := s.clock()
		d = f.newDevice(now)
		d.Owner = owner
		var w writer
		w.putDevice(nil, d, "device.add", "")
		return s.commit(t, actor, now, &w)
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// SetStatus changes a device's status (quarantine, retire, activate). The
// change is refused unless it is one the status machine allows: retired is
// final, and setting the current status again is an error so that a script
// notices it did nothing. The reason must pass CheckReason. Quarantining
// is Quarantine with no end; any change cancels a temporary quarantine's
// end.
func (s *Store) SetStatus(actor, ref string, to Status, reason string) (*Device, error) {
	if _, err := ParseStatus(string(to)); err != nil {
		return nil, invalid("status", "%s", err)
	}
	if to == StatusQuarantined {
		return s.Quarantine(actor, ref, reason, 0)
	}
	if err := CheckReason(reason); err != nil {
		return nil, err
	}
	var d Device
	err := s.write(func(t *txn) error {
		old, err := t.deviceRef(ref)
		if err != nil {
			return err
		}
		if !allowedTransition(old.Status, to) {
			return &Error{Kind: ErrConflict, Field: "status", Msg: transitionMsg(old, to)}
		}
		now := s.clock()
		d = *old
		d.Status, d.StatusReason, d.StatusChanged, d.Updated = to, reason, now, now
		var w writer
		w.putDevice(old, &d, "device."+verb(to), reason)
		return s.commit(t, actor, now, &w)
	})
	if err != nil {
		return nil, err
	}
	return &d, nil
}

func transitionMsg(d *Device, to Status) string {
	switch {
	case d.Status == to:
		return fmt.Sprintf("device %q is already %s", d.Name, to)
	case d.Status == StatusRetired:
		return fmt.Sprintf("device %q is retired, and retirement is final", d.Name)
	}
	return fmt.Sprintf("device %q cannot go from %s to %s", d.Name, d.Status, to)
}

func verb(st Status) string {
	switch st {
	case StatusActive:
		return "activate"
	case StatusQuarantined:
		return "quarantine"
	}
	return "retire"
}

// AddUser adds a user. A user with the same email or login is a conflict
// (use an import to update users).
func (s *Store) AddUser(actor string, nu NewUser) (*User, error) {
	nu, ferr := checkNewUser(nu)
	if ferr != nil {
		return nil, ferr
	}
	var u *User
	err := s.write(func(t *txn) error {
		if err := t.lazy().userFree(nu); err != nil {
			return err
		}
		now := s.clock()
		u = &User{Email: nu.Email, Login: nu.Login, Groups: nu.Groups, Created: now, Updated: now}
		var w writer
		w.putUser(nil, u, "user.add")
		return s.commit(t, actor, now, &w)
	})
	if err != nil {
		return nil, err
	}
	return u, nil
}

func (f *deviceFields) newDevice(now time.Time) *Device {
	st := f.status
	if st == "" {
		st = StatusActive
	}
	d := &Device{
		Name: f.name, Kind: f.kind, Collection: f.collection, Owner: f.owner,
		Status: st, StatusChanged: now, HostNames: f.hostNames,
		Serial: f.serial, AssetTag: f.assetTag, OS: f.os, Source: f.source, SourceID: f.sourceID,
		Created: now, Updated: now,
	}
	if f.ek == nil {
		d.ID, d.Status = newPendingID(), StatusPending
		return d
	}
	d.ID, d.EKPublic = f.ek.ID(), f.ek.PublicDER
	if f.ek.Certificate != nil {
		d.EKCert = f.ek.Certificate.Raw
	}
	return d
}

// newPendingID is a fresh provisional ID for a pending device.
func newPendingID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("inventory: crypto/rand: %v", err)) // crypto/rand does not fail on Linux
	}
	return PendingIDPrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// BindEK binds a TPM's EK to a pending device (by provisional ID or name):
// the device takes the EK's device ID and becomes active, in one
// transaction with its audit entry (action, e.g. device.bind) and with
// whatever extra adds to tx (a token used up). An EK registered already
// to another device is a conflict, and so is a device that is not pending.
func (s *Store) BindEK(actor, ref string, ek *deviceid.EK, action, reason string, extra func(tx *database.Tx, d *Device) error) (*Device, error) {
	if err := CheckReason(reason); err != nil {
		return nil, err
	}
	return s.bindEK(actor, ref, nil, ek, action, reason, extra)
}

// bindEK is BindEK; read, if not nil, is the device as the caller read it
// before, used at the first attempt.
func (s *Store) bindEK(actor, ref string, read *Device, ek *deviceid.EK, action, reason string, extra func(tx *database.Tx, d *Device) error) (*Device, error) {
	var d *Device
	sawPending := false
	err := s.write(func(t *txn) error {
		old := read
		read = nil
		if old != nil {
			if err := t.see(devicesTable, old.ID); err != nil {
				return err
			}
		} else {
			var err error
			if old, err = t.deviceRef(ref); err != nil {
				return err
			}
		}
		if sawPending && !old.Pending() {
			return &Error{Kind: ErrConflict, Field: "ek", Msg: fmt.Sprintf("device %q was bound to a TPM meanwhile (by another devid-ca on this database)", old.Name)}
		}
		sawPending = old.Pending()
		w := writer{tx: new(database.Tx)}
		var err error
		if d, err = t.lazy().bind(&w, old, ek, s.clock(), action, reason); err != nil {
			return err
		}
		if extra != nil {
			if err := extra(w.tx, d); err != nil {
				return err
			}
		}
		return s.commit(t, actor, d.Updated, &w)
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// bind adds to w the move of pending device old to the EK's device ID,
// active.
func (snap *snapshot) bind(w *writer, old *Device, ek *deviceid.EK, now time.Time, action, reason string) (*Device, error) {
	if !old.Pending() {
		return nil, &Error{Kind: ErrConflict, Field: "ek", Msg: fmt.Sprintf("device %q is %s, not pending: its TPM is bound already (a new TPM is an explicit rebind)", old.Name, old.Status)}
	}
	if other, err := snap.device(ek.ID()); err != nil {
		return nil, err
	} else if other != nil {
		return nil, &Error{Kind: ErrConflict, Field: "ek", Msg: fmt.Sprintf("this TPM is already device %q (%s, %s)", other.Name, other.ID, other.Status)}
	}
	d := *old
	d.ID, d.EKPublic, d.EKCert = ek.ID(), ek.PublicDER, nil
	if ek.Certificate != nil {
		d.EKCert = ek.Certificate.Raw
	}
	d.Status, d.StatusReason, d.StatusChanged, d.Updated = StatusActive, reason, now, now
	if w.tx == nil {
		w.tx = new(database.Tx)
	}
	// The guard against another devid-ca on the same database binding it
	// meanwhile: lock the pending record (a compare-and-swap that writes
	// what is there), read it, which fails the whole transaction if it
	// was deleted (bound) since, then delete it.
	rec := mustJSON(old)
	w.tx.Operations = append(w.tx.Operations, &database.TxEntry{Bucket: devicesTable, Key: []byte(old.ID), CmpValue: rec, Value: rec, Cmd: database.CmpAndSwap})
	w.tx.Get(devicesTable, []byte(old.ID))
	w.tx.Del(devicesTable, []byte(old.ID))
	w.putDevice(old, &d, action, reason)
	snap.byID[d.ID] = &d
	snap.forget(old.ID)
	snap.byName[d.Name] = &d
	if d.Serial != "" {
		snap.bySerial[foldSerial(d.Serial)] = &d
	}
	return &d, nil
}

// snapshot is the inventory as a write sees it: read whole (t nil), for
// imports and checks that span records; or read record by record through
// the index as the checks ask (lazy, t set), for writes about one device
// or user. Maps hold what was read (nil: known not to exist) and what the
// write changed.
type snapshot struct {
	t        *txn
	byID     map[string]*Device
	byName   map[string]*Device
	bySerial map[string]*Device // by serial folded to upper case
	users    map[string]*User   // by email folded to lower case
	logins   map[string]string  // login → email as stored ("": nobody's)
}

func newSnapshot(t *txn) *snapshot {
	return &snapshot{t: t, byID: map[string]*Device{}, byName: map[string]*Device{}, bySerial: map[string]*Device{}, users: map[string]*User{}, logins: map[string]string{}}
}

// lazy is a snapshot that reads through t as it is asked.
func (t *txn) lazy() *snapshot { return newSnapshot(t) }

// full reads the whole inventory (users only, without devices), after
// reading every guard.
func (t *txn) full(devices bool) (*snapshot, error) {
	if err := t.seeAll(); err != nil {
		return nil, err
	}
	snap := newSnapshot(nil)
	if devices {
		devs, err := t.s.Devices()
		if err != nil {
			return nil, err
		}
		for _, d := range devs {
			snap.byID[d.ID] = d
			snap.byName[d.Name] = d
			if d.Serial != "" {
				snap.bySerial[foldSerial(d.Serial)] = d
			}
		}
	}
	users, err := t.s.Users()
	if err != nil {
		return nil, err
	}
	for _, u := range users {
		// Before emails were folded, two users could differ only in case:
		// the one stored in lower case wins.
		if k := foldEmail(u.Email); snap.users[k] == nil || u.Email == k {
			snap.users[k] = u
		}
		snap.logins[u.Login] = u.Email
	}
	return snap, nil
}

// device returns the device with this ID; nil if there is none.
func (snap *snapshot) device(id string) (*Device, error) {
	if d, ok := snap.byID[id]; ok || snap.t == nil {
		return d, nil
	}
	d, err := snap.t.device(id)
	if err != nil {
		return nil, err
	}
	snap.byID[id] = d
	return d, nil
}

// named returns the device with this name; nil if there is none.
func (snap *snapshot) named(name string) (*Device, error) {
	if d, ok := snap.byName[name]; ok || snap.t == nil {
		return d, nil
	}
	d, err := snap.t.deviceByName(name)
	if err != nil {
		return nil, err
	}
	snap.byName[name] = d
	return d, nil
}

// serialed returns the device with this serial; nil if there is none.
func (snap *snapshot) serialed(serial string) (*Device, error) {
	k := foldSerial(serial)
	if d, ok := snap.bySerial[k]; ok || snap.t == nil {
		return d, nil
	}
	d, err := snap.t.deviceBySerial(serial)
	if err != nil {
		return nil, err
	}
	snap.bySerial[k] = d
	return d, nil
}

// user returns the user with this email (in any case); nil if none.
func (snap *snapshot) user(email string) (*User, error) {
	k := foldEmail(email)
	if u, ok := snap.users[k]; ok || snap.t == nil {
		return u, nil
	}
	u, err := snap.t.user(email)
	if err != nil {
		return nil, err
	}
	snap.users[k] = u
	return u, nil
}

// login returns the email of the user with this login; "" if none.
func (snap *snapshot) login(login string) (string, error) {
	if e, ok := snap.logins[login]; ok || snap.t == nil {
		return e, nil
	}
	e, err := snap.t.loginOwner(login)
	if err != nil {
		return "", err
	}
	snap.logins[login] = e
	return e, nil
}

// forget records that the device with this ID is gone.
func (snap *snapshot) forget(id string) {
	if snap.t == nil {
		delete(snap.byID, id)
		return
	}
	snap.byID[id] = nil
}

// userFree checks that a new user's email and login are no one's yet.
func (snap *snapshot) userFree(nu NewUser) error {
	old, err := snap.user(nu.Email)
	if err != nil {
		return err
	}
	if old != nil {
		return &Error{Kind: ErrConflict, Field: "email", Msg: fmt.Sprintf("user %s already exists", old.Email)}
	}
	other, err := snap.login(nu.Login)
	if err != nil {
		return err
	}
	if other != "" {
		return &Error{Kind: ErrConflict, Field: "login", Msg: fmt.Sprintf("login %q already belongs to %s", nu.Login, other)}
	}
	return nil
}

// checkRefs checks that a device's name is free (but for the device itself,
// self).
func (snap *snapshot) checkRefs(f *deviceFields, self string) error {
	other, err := snap.named(f.name)
	if err != nil {
		return err
	}
	if other != nil && other.ID != self {
		return nameTaken(f.name, other.ID)
	}
	if f.serial == "" {
		return nil
	}
	if other, err = snap.serialed(f.serial); err != nil {
		return err
	}
	if other != nil && other.ID != self {
		return serialTaken(f.serial, other)
	}
	return nil
}

func serialTaken(serial string, d *Device) *Error {
	return &Error{Kind: ErrConflict, Field: "serial", Msg: fmt.Sprintf("serial %q is already device %q (%s, %s)", serial, d.Name, d.ID, d.Status)}
}

// foldSerial: serial numbers compare without regard to case.
func foldSerial(s string) string { return strings.ToUpper(s) }

// owner checks that a device's owner (an email, "" for none) is a user, and
// returns the email as that user's record has it.
func (snap *snapshot) owner(email string) (string, error) {
	if email == "" {
		return "", nil
	}
	u, err := snap.user(email)
	if err != nil {
		return "", err
	}
	if u == nil {
		return "", &Error{Kind: ErrInvalid, Field: "owner", Msg: fmt.Sprintf("no user %s (add or import the user first)", email)}
	}
	return u.Email, nil
}

// writer collects the records and audit entries of one transaction.
type writer struct {
	tx          *database.Tx // other writes of the transaction, if any
	puts        []put
	audits      []AuditEntry
	changes     []DeviceChange
	userChanges []UserChange
}

type put struct {
	table []byte
	key   string
	value []byte // nil: delete the record
}

func (w *writer) putDevice(before, after *Device, action, reason string) {
	w.keepEnds(before, after)
	a := mustJSON(after)
	w.puts = append(w.puts, put{devicesTable, after.ID, a})
	w.changes = append(w.changes, DeviceChange{Before: before, After: after})
	w.audits = append(w.audits, AuditEntry{Action: action, Subject: after.ID, SubjectName: after.Name, Reason: reason, Before: optJSON(before), After: a})
}

func (w *writer) putUser(before, after *User, action string) {
	w.changeUser(UserChange{Before: before, After: after}, action, "")
}

func (w *writer) putCollection(before, after *Collection, action string) {
	a := mustJSON(after)
	w.puts = append(w.puts, put{collsTable, after.Name, a})
	w.audits = append(w.audits, AuditEntry{Action: action, Subject: CollectionSubject(after.Name), Before: optJSON(before), After: a})
}

func optJSON[T any](v *T) json.RawMessage {
	if v == nil {
		return nil
	}
	return mustJSON(v)
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("inventory: marshal %T: %v", v, err)) // plain structs: cannot fail
	}
	return b
}

// guardedTables are the tables whose records the guards cover.
var guardedTables = [][]byte{devicesTable, usersTable, collsTable, endsTable, tokensTable, groupsTable, indexTable}

func guarded(table []byte) bool {
	return slices.ContainsFunc(guardedTables, func(t []byte) bool { return bytes.Equal(t, table) })
}

// commit writes w's records, the index records they need and audit
// entries in one transaction, opened by the guards of everything t read
// and w writes; and keeps its changes for unlock to deliver. A guard that
// moved meanwhile fails it with errRetry. Callers hold s.mu (Store.write).
func (s *Store) commit(t *txn, actor string, now time.Time, w *writer) error {
	if len(w.puts) == 0 && len(w.audits) == 0 && (w.tx == nil || len(w.tx.Operations) == 0) {
		return nil
	}
	if err := t.indexPuts(w); err != nil {
		return err
	}
	for _, p := range w.puts {
		if guarded(p.table) {
			if err := t.see(p.table, p.key); err != nil {
				return err
			}
		}
	}
	if w.tx != nil {
		for _, op := range w.tx.Operations {
			switch op.Cmd {
			case database.Set, database.Delete, database.CmpAndSwap:
				if guarded(op.Bucket) {
					if err := t.see(op.Bucket, string(op.Key)); err != nil {
						return err
					}
				}
			}
		}
	}
	tx := &database.Tx{Operations: t.guardOps()}
	if w.tx != nil {
		tx.Operations = append(tx.Operations, w.tx.Operations...)
	}
	if s.prepare != nil && len(w.changes) > 0 {
		if err := s.prepare(w.changes, tx); err != nil {
			return err
		}
	}
	if err := s.prepareUsers(w, tx); err != nil {
		return err
	}
	for _, p := range w.puts {
		if p.value == nil {
			tx.Del(p.table, []byte(p.key))
			continue
		}
		tx.Set(p.table, []byte(p.key), p.value)
	}
	for _, e := range w.audits {
		key := s.nextAuditKey(now)
		e.ID, e.Time, e.Actor = hex.EncodeToString(key), now, actor
		tx.Set(auditTable, key, mustJSON(e))
	}
	if err := s.db.Update(tx); err != nil {
		if isRetryable(err) {
			return fmt.Errorf("%w: %v", errRetry, err)
		}
		return fmt.Errorf("inventory: write: %w", err)
	}
	s.pending = append(s.pending, w.changes...)
	s.users.pending = append(s.users.pending, w.userChanges...)
	return nil
}

// commitPuts commits w's records alone (no audit entry, no hooks).
func (s *Store) commitPuts(t *txn, w *writer) error { return s.commit(t, "", time.Time{}, w) }

// unlock releases s.mu, taken by a write method, and then delivers the
// device changes it committed to the OnDeviceChange function. Write methods
// defer it right after taking s.mu, so that it runs after their commit.
func (s *Store) unlock() {
	changes, f := s.pending, s.onChange
	userChanges, uf := s.users.pending, s.users.onChange
	s.pending, s.users.pending = nil, nil
	s.mu.Unlock()
	if f != nil && len(changes) > 0 {
		f(changes)
	}
	if uf != nil && len(userChanges) > 0 {
		uf(userChanges)
	}
}

// nextAuditKey returns a key that sorts after every earlier one of this
// process: the time in nanoseconds, made strictly increasing, then 4
// random bytes, so that two devid-ca on one database never write the same
// key.
func (s *Store) nextAuditKey(now time.Time) []byte {
	seq := uint64(now.UnixNano())
	if seq <= s.lastSeq {
		seq = s.lastSeq + 1
	}
	s.lastSeq = seq
	key := binary.BigEndian.AppendUint64(nil, seq)
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		panic(fmt.Sprintf("inventory: crypto/rand: %v", err)) // crypto/rand does not fail on Linux
	}
	return append(key, r[:]...)
}

func (s *Store) get(table []byte, key string, v any) error {
	b, err := s.db.Get(table, []byte(key))
	if database.IsErrNotFound(err) {
		what := "device"
		switch {
		case bytes.Equal(table, usersTable):
			what = "user"
		case bytes.Equal(table, collsTable):
			what = "collection"
		}
		return &Error{Kind: ErrNotFound, Msg: fmt.Sprintf("no %s %s", what, key)}
	}
	if err != nil {
		return fmt.Errorf("inventory: read %s/%s: %w", table, key, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("inventory: decode %s/%s: %w", table, key, err)
	}
	return nil
}

// listSorted decodes every record of a table, sorted by key(record).
func listSorted[T any](s *Store, table []byte, key func(*T) string) ([]*T, error) {
	entries, err := s.db.List(table)
	if err != nil && !database.IsErrNotFound(err) {
		return nil, fmt.Errorf("inventory: list %s: %w", table, err)
	}
	out := make([]*T, 0, len(entries))
	for _, e := range entries {
		v := new(T)
		if err := json.Unmarshal(e.Value, v); err != nil {
			return nil, fmt.Errorf("inventory: decode %s/%s: %w", table, e.Key, err)
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b *T) int { return strings.Compare(key(a), key(b)) })
	return out, nil
}
