// Package revocation is devid-ca's side of SSH revocation: what is revoked,
// the KRL built from it, and its publication.
//
// What is revoked:
//
//   - every certificate of a quarantined or retired device, by its key ID
//     (the device ID): one KRL entry covers all of a device's certificates,
//     host and user;
//   - every user certificate of a disabled or deleted user, by serial,
//     and while the user is disabled, by their devices' key IDs in the
//     user CA's section (see users.go);
//   - every user certificate naming a renamed user's old email or login
//     (user:EMAIL, login:LOGIN), by serial (see users.go);
//   - single certificates, by serial (`devid cert revoke`);
//   - when a device is brought back to active, the certificates it held
//     before it was quarantined stay revoked: they are revoked by serial at
//     that moment (every unexpired certificate step-ca issued with the
//     device's key ID and a validity that started before the quarantine),
//     and the key ID entry goes, so the certificates it gets from now on are
//     good. The serials are written in the same database transaction as
//     the status change (inventory.Store.BeforeDeviceCommit): a crash
//     leaves either the device still quarantined or the device active with
//     its old certificates revoked by serial, never active and its old
//     certificates good. At start, Open repairs a database an older
//     devid-ca left with such a device (see repair).
//
// A serial is revoked once: revoking it again changes nothing and is an
// [AlreadyRevokedError], so the first reason and time stay on record.
//
// Entries that can only match expired certificates are pruned: a serial
// once its certificate has expired; a key ID once every certificate issued
// before the device left active has expired (no certificate is issued to a
// device that is not active). So the KRL stays small.
//
// The key IDs revoked are kept in devid's own table, written in the
// transaction of the inventory change that revokes them (see keyids.go),
// so a rebuild reads the revoked key IDs and serials, never the whole
// inventory: its cost does not grow with the number of devices.
//
// The KRL is rebuilt on every change; its krl_version only grows. It is
// kept in the database, in two records of table devid_krl: "current", the
// KRL as published (version, generated time, bytes, signature), and
// "head", a small record of the version published last and a generation
// every rebuild increments. The version is allocated there: a rebuild
// takes the head's version plus one by a compare-and-swap on the head, and
// only then stores the KRL (see [Store.Rebuild]), so that devid-ca
// instances sharing one database (replicas) never publish two KRLs under
// one version, and a restart goes on from the version it left. Each
// instance serves the newest version it has seen: its own at once,
// another's once [Store.Watch] notices it: Watch reads the head (by default
// every second, see [Poll]), and the KRL only when the head names a version
// newer than the one served, so the check costs the same for any size of
// KRL. A database an earlier devid-ca left with the KRL record alone is
// read as it is; the first rebuild adds the head. (An earlier devid-ca
// neither reads nor writes the head: stop the earlier instances on a
// database before starting this one on it.)
//
// The KRL is published at GET /devid/v1/krl, unsigned inside (OpenSSH's
// embedded KRL signatures are not portable across releases) with a
// detached signature by the CA's SSH user CA key in the response header
// Devid-KRL-Signature: the base64 of an SSH signature blob (RFC 4253
// "signature" encoding) over
//
//	"devid-krl-v1\x00" || uint64 version (big-endian) || SHA-256(KRL)
//
// Hosts hold the user CA key already (TrustedUserCAKeys, fetched over the
// pinned TLS connection). `?after=V` waits (long-poll, up to `wait`, default
// 55 s) until a version newer than V exists; 304 if none came.
package revocation

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/krldist"
	"github.com/smallstep/nosql/database"
	"golang.org/x/crypto/ssh"
)

// Tables: revoked serials (devid's) and issued SSH certificates (step-ca's).
var (
	serialsTable  = []byte("devid_revoked_serials")
	stateTable    = []byte("devid_krl")
	sshCertsTable = []byte("ssh_certs") // written by step-ca for every SSH certificate
	currentKey    = []byte("current")   // in stateTable: the KRL published, a Published
	headKey       = []byte("head")      // in stateTable: a head
)

// Inventory is what revocation needs of the inventory (an
// *inventory.Store).
type Inventory interface {
	Devices() ([]*inventory.Device, error)
	Users() ([]*inventory.User, error)
	User(email string) (*inventory.User, error)
	Audit(subject string) ([]inventory.AuditEntry, error)
	Update(actor string, prepare func(tx *database.Tx) ([]inventory.AuditEntry, error)) error
	BeforeDeviceCommit(func([]inventory.DeviceChange, *database.Tx) error)
	OnDeviceChange(func([]inventory.DeviceChange))
	BeforeUserCommit(func([]inventory.UserChange, *database.Tx) ([]inventory.AuditEntry, error))
	OnUserChange(func([]inventory.UserChange))
}

// Config configures a Store.
type Config struct {
	HostCA, UserCA ssh.PublicKey // the CA keys whose certificates the KRL covers
	Signer         ssh.Signer    // signs the published KRL (the user CA key)
	// MaxLifetime is the longest lifetime of an SSH certificate the CA
	// issues: a key ID entry is pruned that long after the device left
	// active.
	MaxLifetime time.Duration
	Now         func() time.Time
	Log         *slog.Logger
	// Changes says when another devid-ca on the same database may have
	// published a KRL; Watch then reads the stored head. Default
	// DefaultPoll.
	Changes Changes
}

// Changes tells a Store's Watch when the KRL stored in the database may
// have changed: another devid-ca sharing the database may have published a
// new version. (A Store knows of the versions it publishes itself at once.)
// Each time, Watch reads the small head record, and the KRL only if the
// head names a newer version.
type Changes interface {
	// Next returns when the stored KRL may have changed since Next last
	// returned, or with ctx's error once ctx is done.
	Next(ctx context.Context) error
}

// Poll is Changes for any database: the stored KRL may have changed every
// so often. A database that can notify (PostgreSQL's LISTEN/NOTIFY) can
// replace it with a Changes that waits for the notification.
type Poll time.Duration

// DefaultPoll is the Changes of a Store whose Config has none.
const DefaultPoll = Poll(time.Second)

// Next returns once the interval has passed, or ctx's error when ctx is
// done first.
func (p Poll) Next(ctx context.Context) error {
	t := time.NewTimer(time.Duration(p))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Published is a KRL as served.
type Published struct {
	Version   uint64    `json:"version"`
	Generated time.Time `json:"generated"`
	Body      []byte    `json:"krl"`       // the KRL
	Signature []byte    `json:"signature"` // SSH signature blob, see the package doc
}

// RevokedCert is a certificate revoked by serial.
type RevokedCert struct {
	Serial    Serial    `json:"serial"` // a string in JSON
	Type      string    `json:"type"`   // host or user
	KeyID     string    `json:"keyId"`
	NotAfter  time.Time `json:"notAfter"`
	RevokedAt time.Time `json:"revokedAt"`
	Reason    string    `json:"reason,omitempty"`
}

// head is the small record (stateTable, headKey) that rebuilds
// compare-and-swap and Watch polls, beside the KRL (stateTable,
// currentKey, a Published; a store of the earlier layout has that record
// alone, with a "rebuilds" field that is now ignored).
//
// Version is the version the last rebuild published or found current.
// Every rebuild that succeeds writes the head with Generation one up, even
// when it publishes nothing, so that a rebuild another instance began
// before it, from older revocations, fails its compare-and-swap and starts
// again (see rebuildOnce).
type head struct {
	Version    uint64 `json:"version"`
	Generation uint64 `json:"generation"`
}

// Store keeps the revocations and the current KRL.
type Store struct {
	cfg Config
	db  database.DB
	inv Inventory

	rebuilding  sync.Mutex   // one rebuild at a time in this process
	behind      atomic.Bool  // the last rebuild failed: a change may not be published
	lastRebuild atomic.Int64 // when a rebuild last succeeded, Unix nanoseconds (see Stats)
	waiting     atomic.Int64 // long-polls waiting in ServeHTTP (see Stats)

	mu      sync.Mutex
	current *Published    // the newest version this instance has seen
	changed chan struct{} // closed and replaced when current changes
}

// Open opens the revocation tables in db, builds the KRL, and hooks the
// store to inv's device changes. Run Watch beside it when other devid-ca
// instances share db.
func Open(cfg Config, db database.DB, inv Inventory) (*Store, error) {
	for _, t := range [][]byte{serialsTable, stateTable, sshCertsTable, keyIDsTable} {
		if err := db.CreateTable(t); err != nil {
			return nil, fmt.Errorf("revocation: create table %s: %w", t, err)
		}
	}
	if cfg.Changes == nil {
		cfg.Changes = DefaultPoll
	}
	s := &Store{cfg: cfg, db: db, inv: inv, changed: make(chan struct{})}
	_, stored, err := s.loadKRL()
	if err != nil {
		return nil, fmt.Errorf("revocation: %w", err)
	} else if stored != nil {
		s.see(stored)
	}
	if err := s.buildKeyIDs(); err != nil {
		return nil, err
	}
	if err := s.repair(); err != nil {
		return nil, err
	}
	if err := s.Rebuild(); err != nil {
		if stored == nil {
			return nil, err // nothing to serve
		}
		// The stored KRL is served meanwhile; the store is Behind, and
		// the krl-rebuild task tries again.
		s.cfg.Log.Error("KRL rebuild at start failed; serving the stored KRL until a rebuild succeeds", "version", stored.Version, "err", err)
	}
	inv.BeforeDeviceCommit(s.prepareDeviceChange)
	inv.OnDeviceChange(s.OnDeviceChange)
	inv.BeforeUserCommit(s.prepareUserChange)
	inv.OnUserChange(s.OnUserChange)
	return s, nil
}

// Current is the KRL being served: the newest version this instance has
// seen (one another instance published is seen once Watch reads it).
func (s *Store) Current() *Published {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// Wait returns the current KRL once its version is newer than after, or nil
// when ctx is done first.
func (s *Store) Wait(ctx context.Context, after uint64) *Published {
	for {
		s.mu.Lock()
		cur, ch := s.current, s.changed
		s.mu.Unlock()
		if cur != nil && cur.Version > after {
			return cur
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
		}
	}
}

// OnDeviceChange is the inventory hook called after a change to devices is
// committed, once the inventory's write lock is released: it rebuilds the
// KRL. (Open sets it.)
func (s *Store) OnDeviceChange(changes []inventory.DeviceChange) {
	if err := s.Rebuild(); err != nil {
		s.cfg.Log.Error("KRL rebuild failed; the previous KRL is still served", "err", err)
	}
}

// prepareDeviceChange is the inventory hook called before a change to
// devices is committed: a device brought back to active has its earlier
// certificates revoked by serial in tx, the transaction of the change. An
// error refuses the change.
func (s *Store) prepareDeviceChange(changes []inventory.DeviceChange, tx *database.Tx) error {
	if err := s.prepareKeyIDsOfDevices(changes, tx); err != nil {
		return fmt.Errorf("revocation: %w", err)
	}
	var certs []*ssh.Certificate
	for _, c := range changes {
		if c.Before == nil || c.Before.Status == inventory.StatusActive || c.Before.Pending() || c.After.Status != inventory.StatusActive {
			continue
		}
		if certs == nil {
			var err error
			if certs, err = s.issued(); err != nil {
				return fmt.Errorf("revocation: device %s stays %s: %w", c.After.ID, c.Before.Status, err)
			}
		}
		added, err := s.revokeEarlier(tx, certs, c.Before, time.Time{}, "")
		if err != nil {
			return fmt.Errorf("revocation: device %s stays %s: %w", c.After.ID, c.Before.Status, err)
		}
		s.cfg.Log.Info("device brought back: its earlier certificates are revoked by serial, with the status change", "device", c.After.ID, "certificates", len(added))
	}
	return nil
}

// revokeEarlier adds to tx the revocation by serial of every unexpired
// certificate of d, but for those revoked already (their first reason and
// time stay), and returns them. d is the device as it was before it was
// brought back. Whatever its validity's start: step-ca signs a certificate
// that starts later if asked, and none can have been issued while d was
// not active. With a non-zero until, only those whose validity began
// before it (repair, which runs after certificates may have been issued
// to the active device).
func (s *Store) revokeEarlier(tx *database.Tx, certs []*ssh.Certificate, d *inventory.Device, until time.Time, note string) ([]*RevokedCert, error) {
	now := s.cfg.Now()
	var added []*RevokedCert
	for _, c := range certs {
		if c.KeyId != d.ID || c.ValidBefore <= uint64(now.Unix()) || !until.IsZero() && c.ValidAfter >= uint64(until.Unix()) {
			continue
		}
		key, rc := record(c, now, "certificate from before the device was "+string(d.Status)+note)
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

// repair revokes, at start, what an earlier devid-ca may have left
// unrevoked: it committed a device's activation and then died before it
// revoked the certificates the device held before (devid-ca now does both
// in one transaction). For every active device whose last change was
// device.activate, the certificates that activation had to revoke are
// revoked by serial if they are not, and audited as cert.revoke by
// devid-ca.
func (s *Store) repair() error {
	devs, err := s.inv.Devices()
	if err != nil {
		return err
	}
	active := map[string]*inventory.Device{}
	for _, d := range devs {
		if d.Status == inventory.StatusActive {
			active[d.ID] = d
		}
	}
	entries, err := s.inv.Audit("")
	if err != nil {
		return err
	}
	before := map[string]*inventory.Device{} // device ID → as it was before its current activation
	for _, e := range entries {
		if e.Action != "device.activate" {
			continue
		}
		var b, a inventory.Device
		if json.Unmarshal(e.Before, &b) != nil || json.Unmarshal(e.After, &a) != nil {
			return fmt.Errorf("revocation: audit entry %s: undecodable device", e.ID)
		}
		if d, ok := active[a.ID]; ok && d.StatusChanged.Equal(a.StatusChanged) {
			before[a.ID] = &b
		}
	}
	if len(before) == 0 {
		return nil
	}
	certs, err := s.issued()
	if err != nil {
		return err
	}
	return s.inv.Update("devid-ca", func(tx *database.Tx) ([]inventory.AuditEntry, error) {
		var audits []inventory.AuditEntry
		for _, id := range slices.Sorted(maps.Keys(before)) {
			added, err := s.revokeEarlier(tx, certs, before[id], active[id].StatusChanged, "; repaired at start-up")
			if err != nil {
				return nil, fmt.Errorf("revocation: repair: %w", err)
			}
			for _, rc := range added {
				audits = append(audits, inventory.AuditEntry{Action: "cert.revoke", Subject: rc.KeyID, Reason: rc.Reason, After: mustJSON(rc)})
				s.cfg.Log.Warn("repaired: an active device's certificate from before its quarantine was not revoked; revoked now",
					"device", id, "serial", rc.Serial.String(), "type", rc.Type)
			}
		}
		return audits, nil
	})
}

// issued lists the SSH certificates step-ca issued.
func (s *Store) issued() ([]*ssh.Certificate, error) {
	entries, err := s.db.List(sshCertsTable)
	if err != nil && !database.IsErrNotFound(err) {
		return nil, fmt.Errorf("revocation: list issued certificates: %w", err)
	}
	out := make([]*ssh.Certificate, 0, len(entries))
	for _, e := range entries {
		k, err := ssh.ParsePublicKey(e.Value)
		if err != nil {
			continue
		}
		if c, ok := k.(*ssh.Certificate); ok {
			out = append(out, c)
		}
	}
	return out, nil
}

func certType(c *ssh.Certificate) string {
	if c.CertType == ssh.HostCert {
		return "host"
	}
	return "user"
}

// record is the revocation of c by serial, and its key in the serials table.
func record(c *ssh.Certificate, now time.Time, reason string) ([]byte, *RevokedCert) {
	rc := &RevokedCert{Serial: Serial(c.Serial), Type: certType(c), KeyID: c.KeyId, NotAfter: time.Unix(int64(c.ValidBefore), 0).UTC(), RevokedAt: now.UTC(), Reason: reason}
	return []byte(rc.Type + ":" + rc.Serial.String()), rc
}

// revoked returns the revocation stored under key, or nil if there is none.
func (s *Store) revoked(key []byte) (*RevokedCert, error) {
	b, err := s.db.Get(serialsTable, key)
	if database.IsErrNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("revoked serial %s: %w", key, err)
	}
	var rc RevokedCert
	if err := json.Unmarshal(b, &rc); err != nil {
		return nil, fmt.Errorf("revoked serial %s: %w", key, err)
	}
	return &rc, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("revocation: marshal %T: %v", v, err)) // plain structs: cannot fail
	}
	return b
}

// ErrUnknownCertificate: no such certificate was issued by this CA.
var ErrUnknownCertificate = errors.New("no SSH certificate with that serial was issued by this CA")

// AlreadyRevokedError: the certificate was revoked by serial before.
// Nothing changed; Revoked is the revocation on record, with its first
// reason and time.
type AlreadyRevokedError struct{ Revoked *RevokedCert }

func (e *AlreadyRevokedError) Error() string {
	r := e.Revoked
	msg := fmt.Sprintf("revocation: %s certificate %s was already revoked at %s", r.Type, r.Serial, r.RevokedAt.Format(time.RFC3339))
	if r.Reason != "" {
		msg += fmt.Sprintf(" (%s)", r.Reason)
	}
	return msg + "; nothing changed"
}

// WrongCAError: the certificate to revoke was not signed by this CA's SSH
// CA key of its type; a KRL entry for it would revoke nothing.
type WrongCAError struct {
	Serial uint64
	KeyID  string
	Type   string // host or user
}

func (e *WrongCAError) Error() string {
	return fmt.Sprintf("revocation: certificate %d (key ID %q) was not signed by this CA's %s CA key", e.Serial, e.KeyID, e.Type)
}

// RevokeSerial revokes the certificate with this serial, which this CA
// issued, and rebuilds the KRL, as RevokeCert.
func (s *Store) RevokeSerial(actor string, serial uint64, reason string) (*RevokedCert, error) {
	b, err := s.db.Get(sshCertsTable, []byte(strconv.FormatUint(serial, 10)))
	if database.IsErrNotFound(err) {
		// Revoked already by its file (a certificate step-ca did not
		// record): say so rather than that it is unknown.
		for _, typ := range []string{"user", "host"} {
			if prev, err := s.revoked([]byte(typ + ":" + strconv.FormatUint(serial, 10))); err != nil {
				return nil, fmt.Errorf("revocation: %w", err)
			} else if prev != nil {
				return nil, &AlreadyRevokedError{Revoked: prev}
			}
		}
		return nil, fmt.Errorf("revocation: serial %d: %w", serial, ErrUnknownCertificate)
	}
	if err != nil {
		return nil, fmt.Errorf("revocation: %w", err)
	}
	k, err := ssh.ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("revocation: stored certificate %d: %w", serial, err)
	}
	c, ok := k.(*ssh.Certificate)
	if !ok {
		return nil, fmt.Errorf("revocation: stored certificate %d is not a certificate", serial)
	}
	return s.RevokeCert(actor, c, reason)
}

// RevokeCert revokes a certificate this CA signed, by serial, and records
// it in the audit trail (action cert.revoke, the revocation as "after"),
// in one transaction, then rebuilds the KRL. A certificate revoked by
// serial already is an *AlreadyRevokedError; one another CA key signed, a
// *WrongCAError.
//
// Once the revocation is committed the call succeeds: if the rebuild then
// fails (the database, or other devid-ca instances publishing under each
// attempt), that is logged as an error, the previous KRL is still served,
// and the revocation is in the KRL from the next rebuild that succeeds: the
// store is Behind, so devid-ca's krl-rebuild task retries within seconds.
func (s *Store) RevokeCert(actor string, c *ssh.Certificate, reason string) (*RevokedCert, error) {
	if err := inventory.CheckReason(reason); err != nil { // before anything is written
		return nil, err
	}
	ca := s.cfg.UserCA
	if c.CertType == ssh.HostCert {
		ca = s.cfg.HostCA
	}
	if !bytes.Equal(c.SignatureKey.Marshal(), ca.Marshal()) {
		return nil, &WrongCAError{Serial: c.Serial, KeyID: c.KeyId, Type: certType(c)}
	}
	if c.Serial == 0 {
		return nil, errors.New("revocation: serial 0 cannot be revoked in a KRL")
	}
	key, rc := record(c, s.cfg.Now(), reason)
	err := s.inv.Update(actor, func(tx *database.Tx) ([]inventory.AuditEntry, error) {
		// Under the inventory's write lock, as the revocations of a device
		// brought back are: no other revocation of this serial in between.
		prev, err := s.revoked(key)
		if err != nil {
			return nil, fmt.Errorf("revocation: %w", err)
		}
		if prev != nil {
			return nil, &AlreadyRevokedError{Revoked: prev}
		}
		b := mustJSON(rc)
		tx.Set(serialsTable, key, b)
		return []inventory.AuditEntry{{Action: "cert.revoke", Subject: c.KeyId, Reason: reason, After: b}}, nil
	})
	if err != nil {
		return nil, err
	}
	s.cfg.Log.Warn("certificate revoked", "admin", actor, "serial", c.Serial, "type", rc.Type, "key_id", c.KeyId, "reason", reason)
	if err := s.Rebuild(); err != nil {
		s.cfg.Log.Error("certificate revoked, but the KRL rebuild failed: the previous KRL is still served; the next rebuild carries the revocation",
			"serial", c.Serial, "type", rc.Type, "err", err)
	}
	return rc, nil
}

// Revocations is what the KRL holds at a moment.
type Revocations struct {
	KeyIDs []string // non-active devices whose earlier certificates may still be valid
	// UserKeyIDs are the active devices of disabled users (see
	// prepareUserChange): their user certificates, not host ones.
	UserKeyIDs []string
	Host       []uint64 // serials, host CA
	User       []uint64 // serials, user CA
	Expired    int      // entries pruned because they can only match expired certificates
}

// revocations computes what is revoked now, from the revoked key IDs
// (keyids.go) and serials: never from the whole inventory.
func (s *Store) revocations(now time.Time) (*Revocations, error) {
	r := &Revocations{}
	if err := s.revokedKeyIDs(r, now); err != nil {
		return nil, err
	}
	entries, err := s.db.List(serialsTable)
	if err != nil && !database.IsErrNotFound(err) {
		return nil, fmt.Errorf("revocation: list revoked serials: %w", err)
	}
	for _, e := range entries {
		var rc RevokedCert
		if err := json.Unmarshal(e.Value, &rc); err != nil {
			return nil, fmt.Errorf("revocation: revoked serial %s: %w", e.Key, err)
		}
		if !now.Before(rc.NotAfter) {
			r.Expired++
			s.db.Del(serialsTable, e.Key) // prune: it can only match an expired certificate
			continue
		}
		if rc.Type == "host" {
			r.Host = append(r.Host, uint64(rc.Serial))
		} else {
			r.User = append(r.User, uint64(rc.Serial))
		}
	}
	slices.Sort(r.Host)
	slices.Sort(r.User)
	return r, nil
}

// maxRebuildAttempts bounds the attempts of one Rebuild: each one that
// fails means another instance stored a head or a KRL in between.
const maxRebuildAttempts = 10

// Rebuild builds the KRL from the revocations, and publishes it as a new
// version if what it revokes changed. The version is allocated in the
// database: the stored head's version plus one, written only if the head is
// still the one the rebuild read before the revocations (else the rebuild
// starts again); the KRL is stored after it. So a change committed before
// Rebuild is called is in the stored KRL when it returns nil, whichever
// instance published it.
//
// A failed Rebuild leaves the store Behind until one succeeds.
func (s *Store) Rebuild() error {
	s.rebuilding.Lock()
	defer s.rebuilding.Unlock()
	err := s.rebuild()
	s.behind.Store(err != nil)
	if err == nil {
		s.lastRebuild.Store(s.cfg.Now().UnixNano())
	}
	return err
}

func (s *Store) rebuild() error {
	for range maxRebuildAttempts {
		if done, err := s.rebuildOnce(); err != nil || done {
			return err
		}
	}
	return fmt.Errorf("revocation: KRL not published: the stored KRL changed under each of %d attempts (other devid-ca instances publishing)", maxRebuildAttempts)
}

// Behind reports whether the last rebuild failed, so that a change
// committed since (a revocation, a device's status) may not be in the KRL
// served: devid-ca's krl-rebuild task then retries within seconds rather
// than at its periodic rebuild.
func (s *Store) Behind() bool { return s.behind.Load() }

// rebuildOnce reads the stored head, the stored KRL (unless this instance
// serves the version the head names already) and then the revocations, and
// stores the KRL built from them if nothing was stored in between. It
// reports whether it stored it.
//
// The order matters across instances. A compare-and-swap on the head that
// succeeds proves that no rebuild stored a head since it was read, so the
// revocations, read after, are at least as new as those of every KRL
// stored before. Every rebuild that succeeds stores a head (the generation
// one up when the KRL is unchanged), so that a rebuild begun earlier, from
// revocations read before a change this one saw, cannot store over it.
//
// A new KRL is stored after its head, by a compare-and-swap from the KRL
// read before the head's; a rebuild keeps the stored KRL only if it is the
// version the head names. So the records never disagree in a way that
// loses a KRL or takes one back:
//
//   - a stored KRL was built by a rebuild whose head won: its version and
//     its revocations are newer than those of the KRL it replaced; a
//     rebuild whose KRL write comes too late (another KRL was stored since
//     it read) fails its compare-and-swap and starts again;
//   - a crash between the two writes leaves the head naming a version
//     never stored, and the KRL before it stored and served; the next
//     rebuild, finding the stored KRL is not the head's version, publishes
//     a new one (a version is skipped, none is reused).
//
// (One transaction cannot hold both writes: in nosql.DB.Update a
// compare-and-swap that fails does not abort the transaction, and
// bbolt and PostgreSQL have no compare-or-rollback.)
func (s *Store) rebuildOnce() (bool, error) {
	hraw, h, err := s.loadHead()
	if err != nil {
		return false, fmt.Errorf("revocation: %w", err)
	}
	// The KRL the head names: the one this instance serves if it has that
	// version (a version is stored once, so the stored KRL is that one),
	// else the one stored.
	var kraw []byte // the stored KRL's bytes, once read
	read := false
	prev := s.Current()
	if hraw == nil || prev == nil || prev.Version != h.Version {
		if kraw, prev, err = s.loadKRL(); err != nil {
			return false, fmt.Errorf("revocation: %w", err)
		}
		read = true
		if prev != nil {
			s.see(prev)
			if hraw == nil {
				h.Version = prev.Version // a store of the earlier layout: the KRL alone; this rebuild adds the head
			}
		}
	}
	now := s.cfg.Now()
	r, err := s.revocations(now)
	if err != nil {
		return false, err
	}
	next := head{Version: h.Version, Generation: h.Generation + 1}
	if prev != nil && prev.Version == h.Version {
		// Unchanged revocations: keep the stored KRL and its version (the
		// KRL's own generated time would otherwise make every rebuild
		// new), and store the head alone.
		body, err := encode(r, prev.Version, prev.Generated, s.cfg.HostCA, s.cfg.UserCA)
		if err == nil && bytes.Equal(body, prev.Body) {
			return s.swapHead(hraw, next)
		}
	}
	if !read { // the KRL's stored bytes, for its compare-and-swap
		if kraw, prev, err = s.loadKRL(); err != nil {
			return false, fmt.Errorf("revocation: %w", err)
		}
		if prev != nil {
			s.see(prev)
		}
	}
	next.Version = h.Version + 1
	if prev != nil {
		next.Version = max(next.Version, prev.Version+1)
	}
	if cur := s.Current(); cur != nil {
		next.Version = max(next.Version, cur.Version+1) // never back, even if the database went back
	}
	body, err := encode(r, next.Version, now, s.cfg.HostCA, s.cfg.UserCA)
	if err != nil {
		return false, fmt.Errorf("revocation: build KRL: %w", err)
	}
	sig, err := s.cfg.Signer.Sign(rand.Reader, krldist.SignedData(next.Version, body))
	if err != nil {
		return false, fmt.Errorf("revocation: sign KRL: %w", err)
	}
	p := &Published{Version: next.Version, Generated: now.UTC().Truncate(time.Second), Body: body, Signature: ssh.Marshal(sig)}
	if ok, err := s.swapHead(hraw, next); err != nil || !ok {
		return false, err
	}
	_, swapped, err := s.db.CmpAndSwap(stateTable, currentKey, kraw, mustJSON(p))
	if err != nil {
		return false, fmt.Errorf("revocation: store KRL version %d: %w", p.Version, err)
	}
	if !swapped {
		return false, nil
	}
	s.see(p)
	s.cfg.Log.Info("KRL published", "version", p.Version, "key_ids", len(r.KeyIDs), "host_serials", len(r.Host), "user_serials", len(r.User), "bytes", len(p.Body), "pruned", r.Expired)
	return true, nil
}

// swapHead stores h if the stored head is still old (its bytes as stored,
// nil for none), and reports whether it did.
func (s *Store) swapHead(old []byte, h head) (bool, error) {
	_, swapped, err := s.db.CmpAndSwap(stateTable, headKey, old, mustJSON(h))
	if err != nil {
		return false, fmt.Errorf("revocation: store KRL head, version %d: %w", h.Version, err)
	}
	return swapped, nil
}

// loadHead reads the stored head: its bytes as stored (nil if there is
// none), and decoded.
func (s *Store) loadHead() ([]byte, head, error) {
	raw, err := s.db.Get(stateTable, headKey)
	if database.IsErrNotFound(err) {
		return nil, head{}, nil
	}
	if err != nil {
		return nil, head{}, fmt.Errorf("read stored KRL head: %w", err)
	}
	var h head
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, head{}, fmt.Errorf("stored KRL head: %w", err)
	}
	return raw, h, nil
}

// loadKRL reads the stored KRL: its bytes as stored (nil if there is
// none), and decoded.
func (s *Store) loadKRL() ([]byte, *Published, error) {
	raw, err := s.db.Get(stateTable, currentKey)
	if database.IsErrNotFound(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read stored KRL: %w", err)
	}
	var p Published
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, nil, fmt.Errorf("stored KRL: %w", err)
	}
	return raw, &p, nil
}

// see makes p the KRL served if it is newer than the one served, and wakes
// the long-polls. It reports whether it did.
func (s *Store) see(p *Published) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != nil && p.Version <= s.current.Version {
		return false
	}
	s.current = p
	close(s.changed)
	s.changed = make(chan struct{})
	return true
}

// Watch serves the KRLs other devid-ca instances store in the database:
// each time Config.Changes says the stored KRL may have changed, Watch
// reads the stored head and, only if it names a version newer than the one
// served, the stored KRL, which it serves if it is newer and wakes the
// long-polls. (The KRL is stored just after its head. Until it is, or, if
// a crash came between the two, until the next rebuild anywhere stores a
// newer one, Watch reads the KRL each time.) It returns ctx's error once
// ctx is done, or an error when the database cannot be read.
func (s *Store) Watch(ctx context.Context) error {
	for {
		if err := s.cfg.Changes.Next(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("revocation: watch: %w", err)
		}
		_, h, err := s.loadHead()
		if err != nil {
			return fmt.Errorf("revocation: watch: %w", err)
		}
		if cur := s.Current(); h.Version == 0 || cur != nil && h.Version <= cur.Version {
			continue
		}
		_, p, err := s.loadKRL()
		if err != nil {
			return fmt.Errorf("revocation: watch: %w", err)
		}
		if p != nil && s.see(p) {
			s.cfg.Log.Info("KRL published by another devid-ca: serving it", "version", p.Version, "bytes", len(p.Body))
		}
	}
}

// ServeHTTP serves GET /devid/v1/krl[?after=VERSION[&wait=DURATION]].
func (s *Store) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "use GET", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	var after uint64
	if a := q.Get("after"); a != "" {
		var err error
		if after, err = strconv.ParseUint(a, 10, 64); err != nil {
			http.Error(w, "after: want a KRL version", http.StatusBadRequest)
			return
		}
	}
	wait := 55 * time.Second
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > 5*time.Minute {
			http.Error(w, "wait: want a duration up to 5m", http.StatusBadRequest)
			return
		}
		wait = d
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	s.waiting.Add(1)
	p := s.Wait(ctx, after)
	s.waiting.Add(-1)
	if p == nil {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	krldist.Serve(w, p.Version, p.Generated, p.Body, p.Signature)
}
