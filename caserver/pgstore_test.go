package caserver

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/devid-ssh/devid/internal/pgtest"
	stepdb "github.com/smallstep/certificates/db"
	"github.com/smallstep/nosql"
)

// openPG opens a fresh PostgreSQL database as devid-ca does: step-ca's
// database, with pgCAS under it; it returns step-ca's database and the
// store devid's packages get.
func openPG(t *testing.T) (*stepdb.DB, nosql.DB) {
	t.Helper()
	adb, err := stepdb.New(&stepdb.Config{Type: "postgresql", DataSource: pgtest.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	sdb := adb.(*stepdb.DB)
	t.Cleanup(func() { sdb.Shutdown() })
	w, err := wrapPG(sdb, DBConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return sdb, w
}

// race runs f in n goroutines at once and counts those that return true.
func race(t *testing.T, n int, f func(i int) (bool, error)) int {
	t.Helper()
	var wg sync.WaitGroup
	var won atomic.Int32
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ok, err := f(i)
			if err != nil {
				t.Error(err)
			}
			if ok {
				won.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	return int(won.Load())
}

// TestPGCompareAndSwap: on PostgreSQL, of concurrent compare-and-swaps
// from the same old value (none, or a stored one) exactly one swaps, and
// the value stored is its; step-ca's one-time token check accepts a token
// once. (smallstep/nosql's own CmpAndSwap lets several swap from none: see
// pgstore.go; the count for it is logged.)
func TestPGCompareAndSwap(t *testing.T) {
	sdb, db := openPG(t)
	table := []byte("devid_test_cas")
	if err := db.CreateTable(table); err != nil {
		t.Fatal(err)
	}
	const n = 8
	driverWins := 0
	for round := range 10 {
		key := []byte(fmt.Sprint("new-", round))
		var winner atomic.Value
		if won := race(t, n, func(i int) (bool, error) {
			_, ok, err := db.CmpAndSwap(table, key, nil, []byte(fmt.Sprint(i)))
			if ok {
				winner.Store(fmt.Sprint(i))
			}
			return ok, err
		}); won != 1 {
			t.Fatalf("round %d: %d of %d compare-and-swaps from no value swapped, want 1", round, won, n)
		}
		if v, err := db.Get(table, key); err != nil || string(v) != winner.Load() {
			t.Fatalf("round %d: stored %q (%v), the winner wrote %q", round, v, err, winner.Load())
		}
		if won := race(t, n, func(i int) (bool, error) {
			_, ok, err := db.CmpAndSwap(table, key, []byte(winner.Load().(string)), []byte(fmt.Sprint("next-", i)))
			return ok, err
		}); won != 1 {
			t.Fatalf("round %d: %d of %d compare-and-swaps from the stored value swapped, want 1", round, won, n)
		}
		// The driver's own, for the record.
		raw := db.(pgCAS).DB
		driverWins = max(driverWins, race(t, n, func(i int) (bool, error) {
			_, ok, err := raw.CmpAndSwap(table, []byte(fmt.Sprint("driver-", round)), nil, []byte(fmt.Sprint(i)))
			return ok, err
		}))
	}
	t.Logf("smallstep/nosql's own CmpAndSwap from no value: up to %d of %d swapped in a round", driverWins, n)

	// A wrong old value: not swapped, the stored value returned.
	cur, ok, err := db.CmpAndSwap(table, []byte("new-0"), []byte("wrong"), []byte("x"))
	if err != nil || ok || !bytes.HasPrefix(cur, []byte("next-")) {
		t.Fatalf("CmpAndSwap from a wrong value: %q, %v, %v", cur, ok, err)
	}
	// From nil over a stored value: not swapped.
	if _, ok, err := db.CmpAndSwap(table, []byte("new-0"), nil, []byte("x")); err != nil || ok {
		t.Fatalf("CmpAndSwap from no value over a stored one: %v, %v", ok, err)
	}

	for round := range 5 {
		tok := fmt.Sprint("token-", round)
		if won := race(t, n, func(int) (bool, error) { return sdb.UseToken(tok, tok) }); won != 1 {
			t.Fatalf("step-ca accepted one-time token %s %d times of %d, want once", tok, won, n)
		}
	}
}

// TestPGBinary: keys and values of every byte value (NUL, invalid UTF-8)
// come back byte for byte through Get, List and compare-and-swap:
// smallstep/nosql's PostgreSQL driver scans them into strings.
func TestPGBinary(t *testing.T) {
	_, db := openPG(t)
	table := []byte("devid_test_binary")
	if err := db.CreateTable(table); err != nil {
		t.Fatal(err)
	}
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	keys := [][]byte{{0}, {0xff, 0xfe, 0}, all[:255], []byte("plain")}
	for i, k := range keys {
		if err := db.Set(table, k, append(all, byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i, k := range keys {
		v, err := db.Get(table, k)
		if err != nil || !bytes.Equal(v, append(all, byte(i))) {
			t.Fatalf("Get %x: %v, %d bytes", k, err, len(v))
		}
	}
	entries, err := db.List(table)
	if err != nil || len(entries) != len(keys) {
		t.Fatalf("List: %d entries, %v", len(entries), err)
	}
	for _, e := range entries {
		i := -1
		for j, k := range keys {
			if bytes.Equal(k, e.Key) {
				i = j
			}
		}
		if i < 0 || !bytes.Equal(e.Value, append(all, byte(i))) {
			t.Fatalf("List: key %x, value of %d bytes: not what was stored", e.Key, len(e.Value))
		}
	}
	if _, ok, err := db.CmpAndSwap(table, keys[0], append(all, 0), all[:1]); err != nil || !ok {
		t.Fatalf("CmpAndSwap from a binary value: %v, %v", ok, err)
	}
}
