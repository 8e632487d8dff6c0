package inventory_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/pgtest"
	"github.com/devid-ssh/devid/inventory"
	"github.com/smallstep/nosql"
	"github.com/smallstep/nosql/database"
)

// replicas opens two Stores that share nothing but the database: on
// PostgreSQL two connections pools (two devid-ca); on bbolt one handle (one
// file is one process's), but two Stores, each with its own write lock.
func replicas(t *testing.T, backend string) (*inventory.Store, *inventory.Store, []database.DB) {
	t.Helper()
	var dbs []database.DB
	switch backend {
	case "postgresql":
		dsn := pgtest.New(t)
		for range 2 {
			db, err := nosql.New("postgresql", dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			dbs = append(dbs, db)
		}
	case "bbolt":
		db, err := nosql.New("bbolt", filepath.Join(t.TempDir(), "db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		dbs = []database.DB{db, db}
	}
	var stores []*inventory.Store
	for _, db := range dbs {
		s, err := inventory.Open(db, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		// No pause between attempts: the most contention.
		inventory.SetSleep(s, func(time.Duration) {})
		stores = append(stores, s)
	}
	return stores[0], stores[1], dbs
}

func forBackends(t *testing.T, f func(t *testing.T, backend string)) {
	for _, b := range []string{"bbolt", "postgresql"} {
		t.Run(b, func(t *testing.T) { f(t, b) })
	}
}

// ecEK is an ECC EK (quick to make) as PEM, and its device ID.
func ecEK(t testing.TB) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// retryable: a write that gave up after its attempts (ErrConflict about no
// field) is the caller's to retry, as an admin would.
func gaveUp(err error) bool {
	var e *inventory.Error
	return errors.As(err, &e) && e.Kind == inventory.ErrConflict && e.Field == "" && strings.Contains(e.Msg, "meanwhile")
}

// Many writers on two Stores change one user at once, each adding an email
// of its own to the user's SCIM attributes (a read-modify-write of the
// record): none is lost, and each has its audit entry.
func TestReplicasNoLostUserUpdate(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		s1, s2, _ := replicas(t, backend)
		u, err := s1.CreateUser("scim", &inventory.User{Email: "alice@example.com", Login: "alice", SCIM: &inventory.SCIMIdentity{UserName: "alice"}})
		if err != nil {
			t.Fatal(err)
		}
		const perStore = 12
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		for i, s := range []*inventory.Store{s1, s2, s1, s2} {
			for j := range perStore / 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					mail := fmt.Sprintf("a%d-%d@example.com", i, j)
					for {
						_, err := s.ChangeUser("scim", u.ID, func(u *inventory.User) error {
							u.SCIM.Emails = append(u.SCIM.Emails, inventory.SCIMEmail{Value: mail})
							return nil
						})
						if gaveUp(err) {
							continue
						}
						if err != nil {
							mu.Lock()
							errs = append(errs, err)
							mu.Unlock()
						}
						return
					}
				}()
			}
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		got, err := s2.UserByID(u.ID)
		if err != nil {
			t.Fatal(err)
		}
		var mails []string
		for _, e := range got.SCIM.Emails {
			mails = append(mails, e.Value)
		}
		slices.Sort(mails)
		if len(mails) != 2*perStore || len(slices.Compact(slices.Clone(mails))) != 2*perStore {
			t.Fatalf("%d emails, want %d distinct: %v", len(mails), 2*perStore, mails)
		}
		audit, err := s1.Audit("alice@example.com")
		if err != nil {
			t.Fatal(err)
		}
		if len(audit) != 1+2*perStore {
			t.Fatalf("%d audit entries, want %d", len(audit), 1+2*perStore)
		}
		checkChain(t, audit)
	})
}

// checkChain checks that the audit entries of one subject form one chain:
// each change's before is what the change before it left (no two changes
// started from the same state, which a lost update would show).
func checkChain(t *testing.T, audit []inventory.AuditEntry) {
	t.Helper()
	befores := map[string]int{}
	afters := map[string]bool{}
	for _, e := range audit {
		afters[string(e.After)] = true
		if e.Before != nil {
			befores[string(e.Before)]++
		}
	}
	for b, n := range befores {
		if n != 1 {
			t.Fatalf("%d changes started from one state: %s", n, b)
		}
		if !afters[b] {
			t.Fatalf("a change started from a state no change left: %s", b)
		}
	}
}

// Many writers on two Stores quarantine and activate one device at once
// (each reads its status, then changes it): every change that succeeded
// started from the state the one before left, and the audit trail has one
// entry per change.
func TestReplicasNoLostDeviceUpdate(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		s1, s2, _ := replicas(t, backend)
		d, err := s1.AddDevice("op", inventory.NewDevice{EK: ecEK(t), Name: "web-1", Kind: "host"})
		if err != nil {
			t.Fatal(err)
		}
		const perWriter = 8
		var wg sync.WaitGroup
		var mu sync.Mutex
		done := 0
		var errs []error
		for i, s := range []*inventory.Store{s1, s2, s1, s2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < perWriter; {
					cur, err := s.Device("web-1")
					if err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
						return
					}
					reason := fmt.Sprintf("writer %d change %d", i, j)
					if cur.Status == inventory.StatusActive {
						_, err = s.Quarantine("op", "web-1", reason, 0)
					} else {
						_, err = s.SetStatus("op", d.ID, inventory.StatusActive, reason)
					}
					switch {
					case err == nil:
						mu.Lock()
						done++
						mu.Unlock()
						j++
					case errors.Is(err, inventory.ErrConflict):
						// Another writer changed it between the read and
						// the change: "already quarantined", or gave up.
					default:
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
						return
					}
				}
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		audit, err := s2.Audit(d.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(audit) != 1+done || done != 4*perWriter {
			t.Fatalf("%d audit entries for %d changes (want %d)", len(audit), done, 4*perWriter)
		}
		checkChain(t, audit)
		q := 0
		for _, e := range audit {
			if e.Action == "device.quarantine" {
				q++
			}
		}
		final, _ := s1.Device(d.ID)
		if want := map[bool]inventory.Status{true: inventory.StatusQuarantined, false: inventory.StatusActive}[q > done-q]; final.Status != want || q-(done-q) > 1 || q < done-q {
			t.Fatalf("%d quarantines, %d activations, status %s", q, done-q, final.Status)
		}
	})
}

// Two Stores add conflicting devices at once, round after round: the same
// name, the same serial, the same EK. One of each pair wins; the other is
// told it is a conflict.
func TestReplicasUniqueness(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		s1, s2, _ := replicas(t, backend)
		const rounds = 15
		for r := range rounds {
			ek := ecEK(t)
			cases := [][2]inventory.NewDevice{
				{{EK: ecEK(t), Name: fmt.Sprintf("name-%d", r), Kind: "host"}, {EK: ecEK(t), Name: fmt.Sprintf("name-%d", r), Kind: "host"}},
				{{Name: fmt.Sprintf("s1-%d", r), Kind: "workstation", Serial: fmt.Sprintf("C02X%d", r)}, {Name: fmt.Sprintf("s2-%d", r), Kind: "workstation", Serial: fmt.Sprintf("c02x%d", r)}},
				{{EK: ek, Name: fmt.Sprintf("ek1-%d", r), Kind: "host"}, {EK: ek, Name: fmt.Sprintf("ek2-%d", r), Kind: "host"}},
			}
			for _, c := range cases {
				var wg sync.WaitGroup
				errs := make([]error, 2)
				for i, s := range []*inventory.Store{s1, s2} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							_, errs[i] = s.AddDevice("op", c[i])
							if !gaveUp(errs[i]) {
								return
							}
						}
					}()
				}
				wg.Wait()
				ok := 0
				for _, err := range errs {
					switch {
					case err == nil:
						ok++
					case !errors.Is(err, inventory.ErrConflict):
						t.Fatalf("round %d: %v", r, err)
					}
				}
				if ok != 1 {
					t.Fatalf("round %d, %s / %s: %d of 2 added (%v)", r, c[0].Name, c[1].Name, ok, errs)
				}
			}
		}
		devs, err := s1.Devices()
		if err != nil {
			t.Fatal(err)
		}
		if len(devs) != 3*rounds {
			t.Fatalf("%d devices, want %d", len(devs), 3*rounds)
		}
		// Users too: one email, one login.
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i, s := range []*inventory.Store{s1, s2, s1, s2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				nu := inventory.NewUser{Email: "bob@example.com", Login: fmt.Sprintf("bob%d", i)}
				if i >= 2 {
					nu = inventory.NewUser{Email: fmt.Sprintf("b%d@example.com", i), Login: "bobby"}
				}
				for {
					_, errs[i] = s.AddUser("op", nu)
					if !gaveUp(errs[i]) {
						return
					}
				}
			}()
		}
		wg.Wait()
		if n := countNil(errs[:2]); n != 1 {
			t.Fatalf("same email: %d added (%v)", n, errs[:2])
		}
		if n := countNil(errs[2:]); n != 1 {
			t.Fatalf("same login: %d added (%v)", n, errs[2:])
		}
	})
}

func countNil(errs []error) int {
	n := 0
	for _, err := range errs {
		if err == nil {
			n++
		}
	}
	return n
}

// An import and status changes through the other Store at once: nothing
// either wrote is lost, and the index agrees with the devices.
func TestReplicasImportAndStatus(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		s1, s2, dbs := replicas(t, backend)
		var b strings.Builder
		b.WriteString("name,kind,serial\n")
		for i := range 200 {
			fmt.Fprintf(&b, "m-%03d,workstation,SER%03d\n", i, i)
		}
		if _, err := s1.ImportDevices("op", "a.csv", []byte(b.String()), false); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(2)
		var ierr, serr error
		go func() {
			defer wg.Done()
			var b strings.Builder
			b.WriteString("name,kind,serial,os\n")
			for i := range 200 {
				fmt.Fprintf(&b, "m-%03d,workstation,SER%03d,macOS 15\n", i, i)
			}
			for {
				_, ierr = s1.ImportDevices("op", "b.csv", []byte(b.String()), false)
				if !gaveUp(ierr) {
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			serr = retireEach(s2, 20, func(i int) string { return fmt.Sprintf("m-%03d", i*10) })
		}()
		wg.Wait()
		if ierr != nil || serr != nil {
			t.Fatal(ierr, serr)
		}
		devs, _ := s2.Devices()
		retired := 0
		for _, d := range devs {
			if d.OS != "macOS 15" {
				t.Fatalf("%s: os %q: the import's change was lost", d.Name, d.OS)
			}
			if d.Status == inventory.StatusRetired {
				retired++
			}
		}
		if retired != 20 {
			t.Fatalf("%d retired, want 20: a status change was lost", retired)
		}
		s3, err := inventory.Open(dbs[0], time.Now)
		if err != nil {
			t.Fatal(err)
		}
		if r := inventory.Repaired(s3); r != (inventory.IndexRepair{}) {
			t.Fatalf("index after concurrent writes: %+v, want nothing to repair", r)
		}
	})
}

// The index is rebuilt at Open when it is missing (a database an older
// devid-ca wrote) or stale (one an older devid-ca wrote to after a newer
// one), and lookups by name, serial and owner then find what the tables
// hold.
func TestIndexRepairedAtOpen(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		s1, _, dbs := replicas(t, backend)
		db := dbs[0]
		mustUser(t, s1, "carol@example.com", "carol")
		a, err := s1.AddDevice("op", inventory.NewDevice{EK: ecEK(t), Name: "a", Kind: "workstation", Owner: "carol@example.com", Serial: "SA"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s1.AddDevice("op", inventory.NewDevice{Name: "b", Kind: "host", Serial: "SB"}); err != nil {
			t.Fatal(err)
		}
		// Missing: the whole index gone.
		entries, err := db.List([]byte("devid_index"))
		if err != nil || len(entries) < 6 {
			t.Fatalf("index: %d entries, %v", len(entries), err)
		}
		for _, e := range entries {
			if err := db.Del([]byte("devid_index"), e.Key); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s1.Device("a"); !errors.Is(err, inventory.ErrNotFound) {
			t.Fatalf("by name without an index: %v (the test deletes nothing?)", err)
		}
		s2, err := inventory.Open(db, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		if r := inventory.Repaired(s2); r.Missing != len(entries) || r.Stale != 0 || r.Extra != 0 {
			t.Fatalf("repair: %+v, want %d missing", r, len(entries))
		}
		if d, err := s2.Device("a"); err != nil || d.ID != a.ID {
			t.Fatalf("by name after the repair: %+v %v", d, err)
		}
		// Stale: an older devid-ca renamed a device and changed its owner
		// and serial, writing the record alone.
		old := *a
		old.Name, old.Serial, old.Owner = "a2", "SA2", ""
		raw, _ := json.Marshal(old)
		if err := db.Set([]byte("devid_devices"), []byte(a.ID), raw); err != nil {
			t.Fatal(err)
		}
		s3, err := inventory.Open(db, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		if r := inventory.Repaired(s3); r.Missing != 2 || r.Extra != 3 || r.Stale != 0 {
			t.Fatalf("repair: %+v, want 2 missing (n:a2, s:SA2), 3 extra (n:a, s:SA, o:carol)", r)
		}
		if _, err := s3.Device("a"); !errors.Is(err, inventory.ErrNotFound) {
			t.Fatalf("old name: %v", err)
		}
		if _, err := s3.AddDevice("op", inventory.NewDevice{Name: "c", Kind: "host", Serial: "sa2"}); !errors.Is(err, inventory.ErrConflict) {
			t.Fatalf("a serial only the repaired index knows: %v", err)
		}
		if _, err := s3.AddDevice("op", inventory.NewDevice{Name: "a", Kind: "host", Serial: "SA"}); err != nil {
			t.Fatalf("the old name and serial are free: %v", err)
		}
		del, err := s3.DeleteUser("op", "carol@example.com", "left")
		if err != nil || len(del.Devices) != 0 {
			t.Fatalf("carol owns nothing now: %+v %v", del, err)
		}
	})
}

// retireEach retires the devices named name(0) … name(n-1), each as soon as
// the inventory, busy with another replica's writes, lets it.
func retireEach(s *inventory.Store, n int, name func(int) string) error {
	for i := range n {
		for {
			_, err := s.SetStatus("op", name(i), inventory.StatusRetired, "gone")
			if gaveUp(err) {
				continue
			}
			if err != nil {
				return err
			}
			break
		}
	}
	return nil
}
