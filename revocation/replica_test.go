package revocation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/krl"
	"github.com/devid-ssh/devid/krldist"
	"github.com/devid-ssh/devid/revocation"
	"github.com/smallstep/nosql"
	"golang.org/x/crypto/ssh"
)

// Replicas: devid-ca instances sharing one database. bbolt cannot be opened
// twice, even in one process (its file lock; a second open times out), so
// the instances here share one nosql.DB handle, as instances sharing a
// PostgreSQL database share the database. Each has its own inventory.Store
// and revocation.Store, as each process would.

// replica opens a second instance on f's database, with the same CA keys
// and clock.
func (f *fixture) replica(t *testing.T, db nosql.DB) *fixture {
	t.Helper()
	r := &fixture{db: f.db, clk: f.clk, hostCA: f.hostCA, userCA: f.userCA, serial: f.serial + 1000}
	if err := r.open(db); err != nil {
		t.Fatal(err)
	}
	return r
}

// direct is an http.RoundTripper that hands the request to a handler in
// process, so that a host's KRL client (krldist.Fetch) can talk to a Store
// inside a synctest bubble.
type direct struct{ h http.Handler }

func (d direct) RoundTrip(r *http.Request) (*http.Response, error) {
	w := httptest.NewRecorder()
	d.h.ServeHTTP(w, r)
	return w.Result(), nil
}

// longPoll is a host's KRL long-poll on s: ?after=after, waiting up to 5
// minutes. The channel gets what the host got.
func longPoll(t *testing.T, s *revocation.Store, after uint64) <-chan *krldist.Signed {
	ch := make(chan *krldist.Signed, 1)
	go func() {
		k, err := krldist.Fetch(context.Background(), &http.Client{Transport: direct{s}}, "http://ca", after, 5*time.Minute)
		if err != nil {
			t.Errorf("long-poll after %d: %v", after, err)
		}
		ch <- k
	}()
	return ch
}

func answered(ch <-chan *krldist.Signed) *krldist.Signed {
	select {
	case k := <-ch:
		return k
	default:
		return nil
	}
}

// storedKRL is the KRL stored in the database, as every instance will serve
// it.
func storedKRL(t *testing.T, db nosql.DB) *revocation.Published {
	t.Helper()
	b, err := db.Get([]byte("devid_krl"), []byte("current"))
	if err != nil {
		t.Fatal(err)
	}
	var p revocation.Published
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

func samePublished(a, b *revocation.Published) bool {
	return a.Version == b.Version && bytes.Equal(a.Body, b.Body) && bytes.Equal(a.Signature, b.Signature) && a.Generated.Equal(b.Generated)
}

// TestReplicasShareKRL: a revocation through instance A wakes a long-poll
// waiting on A at once, and one waiting on instance B once B's Watch reads
// the database (one poll interval, no sooner); B serves the same version,
// bytes and signature. A device quarantined through B reaches A the same
// way. Opening or rebuilding an instance with nothing changed allocates no
// version.
func TestReplicasShareKRL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := newFixture(t)
		b := a.replica(t, a.db)
		v0 := a.rev.Current().Version
		if v := b.rev.Current().Version; v != v0 {
			t.Fatalf("instance B opened at version %d, A's is %d: nothing changed", v, v0)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for _, f := range []*fixture{a, b} {
			wg.Go(func() {
				if err := f.rev.Watch(ctx); !errors.Is(err, context.Canceled) {
					t.Errorf("Watch: %v", err)
				}
			})
		}
		defer func() { cancel(); wg.Wait() }()

		host := a.device(t, "web-1", inventory.KindHost)
		c := a.issue(t, host, time.Hour)
		onA, onB := longPoll(t, a.rev, v0), longPoll(t, b.rev, v0)
		synctest.Wait()
		if answered(onA) != nil || answered(onB) != nil {
			t.Fatal("a long-poll answered before any change")
		}
		if _, err := a.rev.RevokeSerial("root", c.Serial, "leaked"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		kA := answered(onA)
		if kA == nil || kA.Version != v0+1 {
			t.Fatalf("long-poll on A after a revocation through A: %+v, want version %d at once", kA, v0+1)
		}
		if answered(onB) != nil {
			t.Fatal("B answered before reading the database")
		}
		time.Sleep(time.Duration(revocation.DefaultPoll))
		synctest.Wait()
		kB := answered(onB)
		if kB == nil {
			t.Fatal("long-poll on B not woken by a revocation through A")
		}
		if kB.Version != kA.Version || !bytes.Equal(kB.Body, kA.Body) || !bytes.Equal(kB.Signature, kA.Signature) || !kB.Generated.Equal(kA.Generated) {
			t.Fatalf("B serves version %d (%d bytes), A served version %d (%d bytes): want the same KRL", kB.Version, len(kB.Body), kA.Version, len(kA.Body))
		}
		if err := krldist.Verify(kB.Version, kB.Body, kB.Signature, []ssh.PublicKey{a.userCA.PublicKey()}); err != nil {
			t.Fatal(err)
		}
		wantKRL(t, "served by B", kB.Body, []*ssh.Certificate{c}, nil)

		// B rebuilds with nothing changed: no new version.
		if err := b.rev.Rebuild(); err != nil {
			t.Fatal(err)
		}
		if p := b.rev.Current(); p.Version != v0+1 || !samePublished(p, storedKRL(t, a.db)) {
			t.Fatalf("after an idle rebuild B serves version %d, want %d as stored", p.Version, v0+1)
		}

		// The other way: a change through B reaches A.
		onA = longPoll(t, a.rev, v0+1)
		laptop := a.device(t, "laptop", inventory.KindWorkstation)
		u := a.issue(t, laptop, time.Hour)
		if _, err := b.inv.SetStatus("test", laptop.ID, inventory.StatusQuarantined, "lost"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(revocation.DefaultPoll))
		synctest.Wait()
		kA = answered(onA)
		if kA == nil || kA.Version != v0+2 {
			t.Fatalf("long-poll on A after a quarantine through B: %+v, want version %d", kA, v0+2)
		}
		if !samePublished(a.rev.Current(), b.rev.Current()) {
			t.Fatal("A and B serve different KRLs")
		}
		wantKRL(t, "served by A", kA.Body, []*ssh.Certificate{c, u}, nil)
	})
}

// hookDB runs a function, once, before the next compare-and-swap: another
// instance acting in the middle of a rebuild.
type hookDB struct {
	nosql.DB
	mu   sync.Mutex
	hook func()
}

// hooked is a fixture whose revocation store (instance A) writes through a
// hookDB, and that hookDB.
func hooked(t *testing.T) (*fixture, *hookDB) {
	f := newFixture(t)
	hdb := &hookDB{DB: f.db}
	if err := f.open(hdb); err != nil { // A, reopened on hdb
		t.Fatal(err)
	}
	return f, hdb
}

func (h *hookDB) arm(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hook = f
}

func (h *hookDB) CmpAndSwap(bucket, key, old, new []byte) ([]byte, bool, error) {
	h.mu.Lock()
	f := h.hook
	h.hook = nil
	h.mu.Unlock()
	if f != nil {
		f()
	}
	return h.DB.CmpAndSwap(bucket, key, old, new)
}

// TestReplicaPublishesInBetween: while instance A rebuilds after a
// quarantine, instance B quarantines another device and publishes first. A
// does not store over it a KRL without B's change, nor a second KRL under
// B's version: the stored KRL revokes both devices, under one new version.
func TestReplicaPublishesInBetween(t *testing.T) {
	a, hdb := hooked(t)
	raw := a.db
	b := a.replica(t, raw)
	d1, d2 := a.device(t, "one", inventory.KindHost), a.device(t, "two", inventory.KindHost)
	c1, c2 := a.issue(t, d1, time.Hour), a.issue(t, d2, time.Hour)
	v0 := storedKRL(t, raw).Version
	hdb.arm(func() {
		if _, err := b.inv.SetStatus("test", d2.ID, inventory.StatusQuarantined, "lost"); err != nil {
			t.Error(err)
		}
	})
	if _, err := a.inv.SetStatus("test", d1.ID, inventory.StatusQuarantined, "lost"); err != nil {
		t.Fatal(err)
	}
	p := storedKRL(t, raw)
	if p.Version != v0+1 {
		t.Fatalf("stored version %d, want %d: one change published once, by B, and A's rebuild found it current", p.Version, v0+1)
	}
	wantKRL(t, "stored", p.Body, []*ssh.Certificate{c1, c2}, nil)
	if !samePublished(a.rev.Current(), p) || !samePublished(b.rev.Current(), p) {
		t.Fatal("an instance serves a KRL other than the stored one")
	}
}

// TestReplicaStaleRebuild: instance A activates a device and, before it
// stores the KRL built from that, instance B quarantines the device again;
// B's rebuild finds the stored KRL (from before the activation) right and
// publishes nothing. A must still not store its KRL, built from before B's
// change, over it: the device, quarantined, stays revoked.
func TestReplicaStaleRebuild(t *testing.T) {
	a, hdb := hooked(t)
	raw := a.db
	b := a.replica(t, raw)
	d := a.device(t, "laptop", inventory.KindWorkstation)
	if _, err := a.inv.SetStatus("test", d.ID, inventory.StatusQuarantined, "lost"); err != nil {
		t.Fatal(err)
	}
	before := storedKRL(t, raw)
	a.clk.Advance(time.Minute)
	hdb.arm(func() {
		if _, err := b.inv.SetStatus("test", d.ID, inventory.StatusQuarantined, "lost again"); err != nil {
			t.Error(err)
		}
	})
	if _, err := a.inv.SetStatus("test", d.ID, inventory.StatusActive, "found"); err != nil {
		t.Fatal(err)
	}
	if got, err := a.inv.Device(d.ID); err != nil || got.Status != inventory.StatusQuarantined {
		t.Fatalf("device %+v, %v; want quarantined (B's change came last)", got, err)
	}
	a.clk.Advance(time.Minute)
	c := a.issue(t, d, time.Hour) // any certificate with the device's key ID
	p := storedKRL(t, raw)
	k, err := krl.Parse(p.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !k.IsRevoked(c) {
		t.Fatalf("stored KRL version %d does not revoke the quarantined device (stale rebuild stored over a current one)", p.Version)
	}
	if p.Version != before.Version {
		t.Errorf("stored version %d, want %d: what is revoked did not change", p.Version, before.Version)
	}
}

// TestReplicaPublishesBeforeKRLStored: instance A has taken the next
// version (stored its head) but not yet stored its KRL when instance B
// quarantines another device and publishes. A's KRL, built without B's
// change, is not stored over B's, newer one: the stored KRL revokes both
// devices, under B's version, and both instances serve it.
func TestReplicaPublishesBeforeKRLStored(t *testing.T) {
	a := newFixture(t)
	raw := a.db
	fdb := &faultDB{DB: raw}
	if err := a.open(fdb); err != nil { // A, reopened on fdb
		t.Fatal(err)
	}
	b := a.replica(t, raw)
	d1, d2 := a.device(t, "one", inventory.KindHost), a.device(t, "two", inventory.KindHost)
	c1, c2 := a.issue(t, d1, time.Hour), a.issue(t, d2, time.Hour)
	v0 := storedKRL(t, raw).Version
	fdb.arm(func(bucket, key []byte) (bool, error) {
		if isKRL(bucket, key) { // A is about to store its KRL
			fdb.arm(nil)
			if _, err := b.inv.SetStatus("test", d2.ID, inventory.StatusQuarantined, "lost"); err != nil {
				t.Error(err)
			}
		}
		return false, nil
	})
	if _, err := a.inv.SetStatus("test", d1.ID, inventory.StatusQuarantined, "lost"); err != nil {
		t.Fatal(err)
	}
	p := storedKRL(t, raw)
	if p.Version != v0+2 {
		t.Fatalf("stored version %d, want %d: B's, after the one A took", p.Version, v0+2)
	}
	wantKRL(t, "stored", p.Body, []*ssh.Certificate{c1, c2}, nil)
	if !samePublished(a.rev.Current(), p) || !samePublished(b.rev.Current(), p) {
		t.Fatal("an instance serves a KRL other than the stored one")
	}
}
