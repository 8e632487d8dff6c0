package revocation_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/revocation"
	"github.com/smallstep/nosql"
	"github.com/smallstep/nosql/database"
	"golang.org/x/crypto/ssh"
)

// The stored KRL's record (table devid_krl, key current), the one that
// grows with the fleet, and the small head beside it.
var (
	krlTable = []byte("devid_krl")
	krlKey   = []byte("current")
	headKey  = []byte("head")
)

func isKRL(bucket, key []byte) bool {
	return string(bucket) == string(krlTable) && string(key) == string(krlKey)
}

// countDB counts the reads and writes of the stored KRL's record.
type countDB struct {
	nosql.DB
	mu            sync.Mutex
	reads, writes int
}

func (c *countDB) count(reads, writes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads += reads
	c.writes += writes
}

// counts returns the reads and writes of the stored KRL so far.
func (c *countDB) counts() (reads, writes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads, c.writes
}

func (c *countDB) Get(bucket, key []byte) ([]byte, error) {
	if isKRL(bucket, key) {
		c.count(1, 0)
	}
	return c.DB.Get(bucket, key)
}

func (c *countDB) List(bucket []byte) ([]*database.Entry, error) {
	if string(bucket) == string(krlTable) {
		c.count(1, 0)
	}
	return c.DB.List(bucket)
}

func (c *countDB) Set(bucket, key, value []byte) error {
	if isKRL(bucket, key) {
		c.count(0, 1)
	}
	return c.DB.Set(bucket, key, value)
}

func (c *countDB) CmpAndSwap(bucket, key, old, new []byte) ([]byte, bool, error) {
	if isKRL(bucket, key) {
		c.count(0, 1)
	}
	return c.DB.CmpAndSwap(bucket, key, old, new)
}

func (c *countDB) Del(bucket, key []byte) error {
	if isKRL(bucket, key) {
		c.count(0, 1)
	}
	return c.DB.Del(bucket, key)
}

func (c *countDB) Update(tx *database.Tx) error {
	for _, op := range tx.Operations {
		if isKRL(op.Bucket, op.Key) {
			c.count(0, 1)
		}
	}
	return c.DB.Update(tx)
}

// faultDB runs fail, while armed, before each compare-and-swap: an error
// it returns is the compare-and-swap's, and lose makes it fail without
// writing, as if another instance had written first.
type faultDB struct {
	nosql.DB
	mu   sync.Mutex
	fail func(bucket, key []byte) (lose bool, err error)
}

func (f *faultDB) arm(fail func(bucket, key []byte) (bool, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fail
}

func (f *faultDB) CmpAndSwap(bucket, key, old, new []byte) ([]byte, bool, error) {
	f.mu.Lock()
	fail := f.fail
	f.mu.Unlock()
	if fail != nil {
		lose, err := fail(bucket, key)
		if err != nil {
			return nil, false, err
		}
		if lose {
			cur, err := f.DB.Get(bucket, key)
			if database.IsErrNotFound(err) {
				err = nil
			}
			return cur, false, err
		}
	}
	return f.DB.CmpAndSwap(bucket, key, old, new)
}

// watch runs s.Watch until the test's function returns.
func watch(t *testing.T, s *revocation.Store) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.Watch(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Watch: %v", err)
		}
	})
	return func() { cancel(); wg.Wait() }
}

// TestWatchReadsHeadOnly: while no new KRL is stored, an instance's Watch
// does not read the stored KRL, however often it polls, nor when another
// instance rebuilds with nothing changed; a rebuild with nothing changed
// neither reads nor writes it. A new KRL is read once, and served.
func TestWatchReadsHeadOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := newFixture(t)
		cdb := &countDB{DB: a.db}
		b := a.replica(t, cdb)
		defer watch(t, b.rev)()
		poll := time.Duration(revocation.DefaultPoll)
		r0, w0 := cdb.counts()

		time.Sleep(5 * poll)
		synctest.Wait()
		if err := a.rev.Rebuild(); err != nil { // another instance's periodic rebuild
			t.Fatal(err)
		}
		time.Sleep(5 * poll)
		synctest.Wait()
		if err := b.rev.Rebuild(); err != nil { // this instance's
			t.Fatal(err)
		}
		time.Sleep(5 * poll)
		synctest.Wait()
		if r, w := cdb.counts(); r != r0 || w != w0 {
			t.Fatalf("no new KRL for 15 polls and two rebuilds: instance B read the stored KRL %d times and wrote it %d times, want 0", r-r0, w-w0)
		}

		v0 := b.rev.Current().Version
		host := a.device(t, "web-1", inventory.KindHost)
		c := a.issue(t, host, time.Hour)
		if _, err := a.rev.RevokeSerial("root", c.Serial, "leaked"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * poll)
		synctest.Wait()
		if r, _ := cdb.counts(); r != r0+1 {
			t.Fatalf("one new KRL, 5 polls: instance B read the stored KRL %d times, want 1", r-r0)
		}
		p := b.rev.Current()
		if p.Version != v0+1 || !samePublished(p, storedKRL(t, a.db)) {
			t.Fatalf("instance B serves version %d, want %d as stored", p.Version, v0+1)
		}
		wantKRL(t, "served by B", p.Body, []*ssh.Certificate{c}, nil)
	})
}

// TestUpgradeFromKRLRecordAlone: a database an earlier devid-ca left, with
// the KRL record alone (and its rebuilds counter), opens serving that KRL,
// under its version, without rewriting it; from there another instance's
// Watch sees the next version.
func TestUpgradeFromKRLRecordAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := newFixture(t)
		host := a.device(t, "web-1", inventory.KindHost)
		c1, c2 := a.issue(t, host, time.Hour), a.issue(t, host, time.Hour)
		if _, err := a.rev.RevokeSerial("root", c1.Serial, "leaked"); err != nil {
			t.Fatal(err)
		}
		before := storedKRL(t, a.db)
		earlier, err := json.Marshal(struct {
			revocation.Published
			Rebuilds uint64 `json:"rebuilds,omitempty"`
		}{*before, 7})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.db.Set(krlTable, krlKey, earlier); err != nil {
			t.Fatal(err)
		}
		if err := a.db.Del(krlTable, headKey); err != nil {
			t.Fatal(err)
		}

		cdb := &countDB{DB: a.db}
		if err := a.open(cdb); err != nil { // the upgraded devid-ca starts
			t.Fatalf("open a store of the earlier layout: %v", err)
		}
		if p := a.rev.Current(); !samePublished(p, before) {
			t.Fatalf("opened on the earlier layout, serves version %d, want %d as stored", p.Version, before.Version)
		}
		if _, w := cdb.counts(); w != 0 {
			t.Fatalf("opening the earlier layout wrote the KRL record %d times; nothing changed", w)
		}
		if raw, err := a.db.Get(krlTable, krlKey); err != nil || string(raw) != string(earlier) {
			t.Fatalf("the stored KRL record changed at open (%v)", err)
		}

		b := a.replica(t, a.db)
		defer watch(t, b.rev)()
		if _, err := a.rev.RevokeSerial("root", c2.Serial, "leaked"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(revocation.DefaultPoll))
		synctest.Wait()
		p := b.rev.Current()
		if p.Version != before.Version+1 || !samePublished(p, a.rev.Current()) || !samePublished(p, storedKRL(t, a.db)) {
			t.Fatalf("after a revocation: B serves version %d, want %d as A and as stored", p.Version, before.Version+1)
		}
		wantKRL(t, "served by B", p.Body, []*ssh.Certificate{c1, c2}, nil)
	})
}

// TestCrashBetweenHeadAndKRL: devid-ca dies after it stored the head of a
// new version and before the KRL itself. The KRL stored before stays
// stored and served (nothing lost, nothing back); restarted, the instance
// publishes a newer version, not the one it had taken, and the other
// instance serves it.
func TestCrashBetweenHeadAndKRL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := newFixture(t)
		raw := a.db
		fdb := &faultDB{DB: raw}
		if err := a.open(fdb); err != nil { // A, reopened on fdb
			t.Fatal(err)
		}
		b := a.replica(t, raw)
		defer watch(t, b.rev)()
		poll := time.Duration(revocation.DefaultPoll)
		d := a.device(t, "laptop", inventory.KindWorkstation)
		c := a.issue(t, d, time.Hour)
		before := storedKRL(t, raw)

		fdb.arm(func(bucket, key []byte) (bool, error) {
			if isKRL(bucket, key) {
				return false, errCrashed
			}
			return false, nil
		})
		if _, err := a.inv.SetStatus("test", d.ID, inventory.StatusQuarantined, "lost"); err != nil {
			t.Fatal(err) // committed; the rebuild's failure is logged
		}
		time.Sleep(3 * poll)
		synctest.Wait()
		if p := storedKRL(t, raw); !samePublished(p, before) {
			t.Fatalf("stored KRL version %d after the crash, want %d as before", p.Version, before.Version)
		}
		if p := b.rev.Current(); !samePublished(p, before) {
			t.Fatalf("instance B serves version %d after the crash, want %d", p.Version, before.Version)
		}

		if err := a.open(raw); err != nil { // A restarts
			t.Fatalf("restart: %v", err)
		}
		p := a.rev.Current()
		if p.Version != before.Version+2 {
			t.Fatalf("after the restart A serves version %d, want %d: newer than the one taken before the crash", p.Version, before.Version+2)
		}
		if !samePublished(p, storedKRL(t, raw)) {
			t.Fatal("A serves a KRL other than the stored one")
		}
		wantKRL(t, "after the restart", p.Body, []*ssh.Certificate{c}, nil)
		time.Sleep(poll)
		synctest.Wait()
		if !samePublished(b.rev.Current(), p) {
			t.Fatalf("instance B serves version %d, want %d", b.rev.Current().Version, p.Version)
		}
	})
}
