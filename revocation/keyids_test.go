package revocation_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	mrand "math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/fakeclock"
	"github.com/devid-ssh/devid/internal/pgtest"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/krl"
	"github.com/smallstep/nosql"
)

// randomInventory drives an inventory through random changes: devices
// added (some pending, some owned by disabled users), quarantined,
// activated, retired, rebound, given to another owner by an import; users
// disabled, enabled, renamed (SCIM), deleted; time passing beyond the
// certificate lifetime. After each step, check(step) runs.
type randomInventory struct {
	t     *testing.T
	rng   *mrand.Rand
	inv   *inventory.Store
	clk   *fakeclock.Clock
	devs  []string          // device names
	eks   map[string]string // device name → EK, base64 DER ("" for pending)
	kinds map[string]string
	users []string // emails, current
	n     int
	ok    int // steps that changed something
}

func newRandomInventory(t *testing.T, seed uint64, inv *inventory.Store, clk *fakeclock.Clock) *randomInventory {
	return &randomInventory{t: t, rng: mrand.New(mrand.NewPCG(seed, 1)), inv: inv, clk: clk, eks: map[string]string{}, kinds: map[string]string{}}
}

func (ri *randomInventory) ek() string {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return base64.StdEncoding.EncodeToString(der)
}

func (ri *randomInventory) pick(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[ri.rng.IntN(len(s))]
}

func (ri *randomInventory) addUser() {
	ri.n++
	email := fmt.Sprintf("user%d@example.com", ri.n)
	if _, err := ri.inv.AddUser("test", inventory.NewUser{Email: email, Login: fmt.Sprintf("user%d", ri.n)}); err != nil {
		ri.t.Fatal(err)
	}
	ri.users = append(ri.users, email)
}

func (ri *randomInventory) addDevice() {
	ri.n++
	name := fmt.Sprintf("dev%d", ri.n)
	kind := []string{"host", "workstation"}[ri.rng.IntN(2)]
	ek := ""
	if ri.rng.IntN(5) > 0 {
		ek = ri.ek()
	}
	owner := ""
	if ri.rng.IntN(3) > 0 {
		owner = ri.pick(ri.users)
	}
	if _, err := ri.inv.AddDevice("test", inventory.NewDevice{EK: ek, Name: name, Kind: kind, Owner: owner, Serial: "SN-" + name}); err != nil {
		ri.t.Fatal(err)
	}
	ri.devs, ri.eks[name], ri.kinds[name] = append(ri.devs, name), ek, kind
}

// step makes one random change; an error (a change the inventory refuses)
// is no failure.
func (ri *randomInventory) step() {
	var err error
	dev, user := ri.pick(ri.devs), ri.pick(ri.users)
	switch op := ri.rng.IntN(12); op {
	case 0:
		ri.addDevice()
	case 1:
		ri.addUser()
	case 2:
		_, err = ri.inv.Quarantine("test", dev, "random", time.Duration(ri.rng.IntN(2))*time.Hour)
	case 3:
		_, err = ri.inv.SetStatus("test", dev, inventory.StatusActive, "random")
	case 4:
		if ri.rng.IntN(3) == 0 {
			_, err = ri.inv.SetStatus("test", dev, inventory.StatusRetired, "random")
		}
	case 5, 6:
		_, err = ri.inv.SetUserDisabled("test", user, ri.rng.IntN(2) == 0, "random")
	case 7:
		var u *inventory.User
		if u, err = ri.inv.User(user); err == nil {
			ri.n++
			email := fmt.Sprintf("renamed%d@example.com", ri.n)
			_, err = ri.inv.ChangeUser("test", u.ID, func(u *inventory.User) error {
				u.Email = email
				if ri.rng.IntN(2) == 0 {
					u.Disabled = !u.Disabled
				}
				return nil
			})
			if err == nil {
				for i, e := range ri.users {
					if e == user {
						ri.users[i] = email
					}
				}
			}
		}
	case 8:
		if ri.rng.IntN(3) == 0 {
			if _, err = ri.inv.DeleteUser("test", user, "random"); err == nil {
				for i, e := range ri.users {
					if e == user {
						ri.users = append(ri.users[:i], ri.users[i+1:]...)
						break
					}
				}
			}
		}
	case 9: // another owner, by an import
		if ek := ri.eks[dev]; ek != "" {
			csv := "ek,name,kind,owner\n" + ek + "," + dev + "," + ri.kinds[dev] + "," + ri.pick(ri.users) + "\n"
			_, err = ri.inv.ImportDevices("test", "random.csv", []byte(csv), false)
		}
	case 10:
		var d *inventory.Device
		if d, err = ri.inv.Device(dev); err == nil && d.Status == inventory.StatusActive {
			var r *inventory.Device
			if r, _, err = ri.inv.Rebind("test", dev, "random", nil); err == nil {
				ri.devs, ri.eks[r.Name], ri.kinds[r.Name], ri.eks[dev] = append(ri.devs, r.Name), ri.eks[dev], ri.kinds[dev], ""
			}
		}
	case 11:
		ri.clk.Advance(time.Duration(ri.rng.IntN(8*60)) * time.Minute)
		return
	}
	if err == nil {
		ri.ok++
	}
}

// TestKeyIDsMatchInventory: through random changes to devices and users,
// the KRL built from the revoked key IDs devid keeps (a rebuild) is, byte
// for byte, the KRL the earlier devid-ca built from the whole inventory.
func TestKeyIDsMatchInventory(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			f := newFixture(t)
			checkKeyIDs(t, f, seed, 250)
		})
	}
}

// TestKeyIDsMatchInventoryPostgreSQL is TestKeyIDsMatchInventory on a real
// PostgreSQL.
func TestKeyIDsMatchInventoryPostgreSQL(t *testing.T) {
	dsn := pgtest.New(t)
	db, err := nosql.New("postgresql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f := &fixture{db: db, clk: fakeclock.New(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)), hostCA: signer(t), userCA: signer(t), serial: 100}
	if err := f.open(db); err != nil {
		t.Fatal(err)
	}
	checkKeyIDs(t, f, 7, 150)
}

func checkKeyIDs(t *testing.T, f *fixture, seed uint64, steps int) {
	ri := newRandomInventory(t, seed, f.inv, f.clk)
	for range 3 {
		ri.addUser()
	}
	for range 8 {
		ri.addDevice()
	}
	keyIDs, userKeyIDs := 0, 0
	for i := range steps {
		ri.step()
		now := f.clk.Now()
		fromTable, fromInventory, err := f.rev.KRLBodies(now)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if !bytes.Equal(fromTable, fromInventory) {
			t.Fatalf("step %d: the KRL from the revoked key IDs differs from the KRL from the inventory:\n%s\nwant\n%s", i, dump(t, fromTable), dump(t, fromInventory))
		}
		if err := f.rev.Rebuild(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		k, err := krl.Parse(f.rev.Current().Body)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range k.Certs {
			if bytes.Equal(c.CA.Marshal(), f.hostCA.PublicKey().Marshal()) {
				keyIDs = max(keyIDs, len(c.KeyIDs))
			} else {
				userKeyIDs = max(userKeyIDs, len(c.KeyIDs))
			}
		}
	}
	// The walk revoked something, in both sections, and changed things.
	if keyIDs == 0 || userKeyIDs <= keyIDs || ri.ok < steps/3 {
		t.Fatalf("a walk that tests little: at most %d host and %d user key IDs revoked, %d of %d steps changed something", keyIDs, userKeyIDs, ri.ok, steps)
	}
	t.Logf("%d steps (%d changed something); at most %d host, %d user key IDs in the KRL", steps, ri.ok, keyIDs, userKeyIDs)
}

func dump(t *testing.T, body []byte) string {
	k, err := krl.Parse(body)
	if err != nil {
		return err.Error()
	}
	s := ""
	for _, c := range k.Certs {
		s += fmt.Sprintf("CA %s: key IDs %q\n", c.CA.Type(), c.KeyIDs)
	}
	return s
}

// TestKeyIDsBuiltAtUpgrade: a store an older devid-ca left (an inventory
// changed with no revoked key IDs table) gets the table built at Open, and
// the KRL revokes exactly what the older devid-ca's did: quarantined and
// retired devices, disabled users' devices, not those quarantined or
// disabled longer ago than the certificate lifetime. The build runs once:
// a second Open finds the marker and leaves the table as it is.
func TestKeyIDsBuiltAtUpgrade(t *testing.T) {
	db, err := nosql.New("bbolt", filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f := &fixture{db: db, clk: fakeclock.New(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)), hostCA: signer(t), userCA: signer(t), serial: 100}
	if f.inv, err = inventory.Open(db, f.clk.Now); err != nil {
		t.Fatal(err)
	}
	ri := newRandomInventory(t, 42, f.inv, f.clk) // an inventory with no revocation store hooked: an older devid-ca's
	for range 4 {
		ri.addUser()
	}
	for range 20 {
		ri.addDevice()
	}
	for range 200 {
		ri.step()
	}
	// And a device quarantined just now, so both sections have entries.
	quarantined := false
	for _, name := range ri.devs {
		if _, err := f.inv.Quarantine("test", name, "just now", 0); err == nil {
			quarantined = true
			break
		}
	}
	if !quarantined {
		t.Fatal("no device to quarantine")
	}
	if err := f.open(db); err != nil { // this devid-ca: builds the table
		t.Fatal(err)
	}
	fromTable, fromInventory, err := f.rev.KRLBodies(f.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fromTable, fromInventory) {
		t.Fatalf("after the upgrade the KRL differs from the older devid-ca's:\n%s\nwant\n%s", dump(t, fromTable), dump(t, fromInventory))
	}
	k, err := krl.Parse(fromTable)
	if err != nil || len(k.Certs) != 2 {
		t.Fatalf("the walk left %d CA sections revoked (%v), want both: a test that tests little", len(k.Certs), err)
	}
	t.Logf("upgrade: %s", dump(t, fromTable))

	// Built once: a record deleted by hand stays deleted at the next Open.
	entries, err := db.List([]byte("devid_revoked_keyids"))
	if err != nil || len(entries) < 2 {
		t.Fatalf("table: %d records, %v", len(entries), err)
	}
	victim := entries[0].Key
	if string(victim) == "built" {
		victim = entries[1].Key
	}
	if err := db.Del([]byte("devid_revoked_keyids"), victim); err != nil {
		t.Fatal(err)
	}
	if err := f.open(db); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Get([]byte("devid_revoked_keyids"), victim); err == nil {
		t.Fatalf("record %s written again at the second Open: the table was built twice", victim)
	}
}

// markerReads counts the reads of the revoked key IDs table's marker.
type markerReads struct {
	nosql.DB
	n atomic.Int32
}

func (m *markerReads) Get(bucket, key []byte) ([]byte, error) {
	if string(bucket) == "devid_revoked_keyids" && string(key) == "built" {
		m.n.Add(1)
	}
	return m.DB.Get(bucket, key)
}

// TestKeyIDsBuiltOnceAcrossReplicas: two devid-ca of this version starting
// together on an older store build the table once. One that finds another
// building it waits, serving nothing, until it is built, and builds
// nothing itself; one that finds a build its builder left long ago takes
// it over.
func TestKeyIDsBuiltOnceAcrossReplicas(t *testing.T) {
	db, err := nosql.New("bbolt", filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clk := fakeclock.New(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
	inv, err := inventory.Open(db, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	ri := newRandomInventory(t, 3, inv, clk) // an older devid-ca's inventory
	for range 3 {
		ri.addUser()
	}
	for range 12 {
		ri.addDevice()
	}
	for range 60 {
		ri.step()
	}
	table := []byte("devid_revoked_keyids")
	if err := db.CreateTable(table); err != nil {
		t.Fatal(err)
	}
	// Another replica is building it, since now.
	if err := db.Set(table, []byte("built"), []byte(`{"nonce":"other","since":"`+clk.Now().Format(time.RFC3339Nano)+`"}`)); err != nil {
		t.Fatal(err)
	}
	m := &markerReads{DB: db}
	f := &fixture{db: m, clk: clk, hostCA: signer(t), userCA: signer(t), serial: 100}
	opened := make(chan error, 1)
	go func() { opened <- f.open(m) }()
	// It reads the marker again and again: waiting.
	for deadline := time.Now().Add(time.Minute); m.n.Load() < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Open did not come back to the marker within a minute")
		}
	}
	select {
	case err := <-opened:
		t.Fatalf("Open returned (%v) while another replica was building the table", err)
	default:
	}
	// The other replica is done: it wrote one record, and the marker.
	sentinel := []byte("all urn:ek:sha256:sentinel 1")
	if err := db.Set(table, sentinel, []byte(`{"keyId":"urn:ek:sha256:sentinel","cover":"all","since":"`+clk.Now().Format(time.RFC3339Nano)+`"}`)); err != nil {
		t.Fatal(err)
	}
	if err := db.Set(table, []byte("built"), []byte(`{"built":"`+clk.Now().Format(time.RFC3339Nano)+`"}`)); err != nil {
		t.Fatal(err)
	}
	if err := <-opened; err != nil {
		t.Fatal(err)
	}
	entries, err := db.List(table)
	if err != nil || len(entries) != 2 {
		t.Fatalf("after waiting for the other replica: %d records (%v), want its 2: the waiting one built too", len(entries), err)
	}

	// A build left "building" three minutes ago: taken over, and built.
	if err := db.DeleteTable(table); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateTable(table); err != nil {
		t.Fatal(err)
	}
	if err := db.Set(table, []byte("built"), []byte(`{"nonce":"dead","since":"`+clk.Now().Add(-3*time.Minute).Format(time.RFC3339Nano)+`"}`)); err != nil {
		t.Fatal(err)
	}
	if err := f.open(db); err != nil {
		t.Fatal(err)
	}
	fromTable, fromInventory, err := f.rev.KRLBodies(clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fromTable, fromInventory) {
		t.Fatalf("after taking the build over, the KRL differs from the inventory's:\n%s\nwant\n%s", dump(t, fromTable), dump(t, fromInventory))
	}
	if k, err := krl.Parse(fromTable); err != nil || len(k.Certs) == 0 {
		t.Fatalf("nothing revoked after the take-over (%v): a test that tests little", err)
	}
}
