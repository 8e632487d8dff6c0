package inventory

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/smallstep/nosql/database"
)

// Writes shared by several devid-ca on one database.
//
// Every write is optimistic: it reads what it needs, builds its
// transaction, and commits it only if nothing it read or writes changed
// meanwhile, through any devid-ca on the database; if something did, the
// transaction changes nothing and the write starts again, reading afresh
// (at most maxAttempts times, with a random pause that grows, before it
// gives up with an ErrConflict).
//
// nosql offers no compare-or-abort: in db.Update a compare-and-swap that
// does not match does not abort the transaction, and a Set overwrites
// whatever is there. What aborts is a Get of a record that is not there.
// So the inventory's records are covered by guardStripes guards, a record
// (table, key) by the guard stripeOf(table, key). A guard is two records of
// guardsTable: its hint, sNNN, holding its generation G, and its marker,
// sNNN:G. A write reads the hint of every guard it needs before it reads
// anything the guard covers, and its transaction begins, guard by guard in
// ascending order, with
//
//	CmpAndSwap(sNNN, G, G+1)  lock the hint (PostgreSQL: SELECT … FOR UPDATE,
//	                          waiting for any other write holding it)
//	Get(sNNN:G)               abort unless the generation is still G
//	Del(sNNN:G); Set(sNNN:G+1)
//
// and only then writes its records. Of two writes that read the same
// generation, the second waits for the first's lock, then finds the marker
// gone and aborts. On bbolt a transaction is serialised whole, and the
// same steps hold. The guards are created by Open; nosql has no
// insert-if-absent on PostgreSQL, so replicas starting together on an
// empty database, while another is already writing, could in principle
// create a guard twice: start one devid-ca first (or migrate) on a new
// database.
//
// The functions of BeforeDeviceCommit and BeforeUserCommit run at every
// attempt, on the attempt's transaction: what they add is committed with
// the change, or dropped with it.
var guardsTable = []byte("devid_guards")

// guardStripes is the number of guards: writes to records under different
// guards go on in parallel on different devid-ca; those under one guard
// wait for each other and the later of two that read the same generation
// starts again.
const guardStripes = 256

// maxAttempts bounds how many times a write starts again when another
// devid-ca changed what it read.
const maxAttempts = 12

func stripeOf(table []byte, key string) int {
	h := fnv.New32a()
	h.Write(table)
	h.Write([]byte{0})
	h.Write([]byte(key))
	return int(h.Sum32() % guardStripes)
}

func hintKey(i int) []byte              { return fmt.Appendf(nil, "s%03d", i) }
func markKey(i int, gen uint64) []byte  { return fmt.Appendf(nil, "s%03d:%d", i, gen) }
func genValue(gen uint64) []byte        { return strconv.AppendUint(nil, gen, 10) }
func parseGen(b []byte) (uint64, error) { return strconv.ParseUint(string(b), 10, 64) }

// initGuards creates the guards a database lacks: hint 0 and marker 0.
func initGuards(db database.DB) error {
	entries, err := db.List(guardsTable)
	if err != nil && !database.IsErrNotFound(err) {
		return fmt.Errorf("inventory: list %s: %w", guardsTable, err)
	}
	have := make(map[string]bool, len(entries))
	for _, e := range entries {
		have[string(e.Key)] = true
	}
	tx := new(database.Tx)
	for i := range guardStripes {
		if have[string(hintKey(i))] {
			continue
		}
		tx.Operations = append(tx.Operations,
			&database.TxEntry{Bucket: guardsTable, Key: hintKey(i), Value: genValue(0), Cmd: database.CmpAndSwap},
			&database.TxEntry{Bucket: guardsTable, Key: markKey(i, 0), Value: []byte("1"), Cmd: database.CmpAndSwap})
	}
	if len(tx.Operations) == 0 {
		return nil
	}
	if err := db.Update(tx); err != nil {
		return fmt.Errorf("inventory: create guards: %w", err)
	}
	return nil
}

// txn is one attempt of a write: the generations of the guards it read,
// each read before anything the guard covers.
type txn struct {
	s    *Store
	gens map[int]uint64
}

// errRetry: the attempt's transaction aborted because something it read
// changed meanwhile.
var errRetry = errors.New("inventory: changed meanwhile by another writer")

// see reads the generation of the guard of (table, key), once per attempt.
func (t *txn) see(table []byte, key string) error {
	if t.gens == nil {
		return nil // a reader (Store.reader): no guards
	}
	i := stripeOf(table, key)
	if _, ok := t.gens[i]; ok {
		return nil
	}
	b, err := t.s.db.Get(guardsTable, hintKey(i))
	if err != nil {
		return fmt.Errorf("inventory: read guard %s: %w (devid-ca creates the guards when it starts)", hintKey(i), err)
	}
	g, err := parseGen(b)
	if err != nil {
		return fmt.Errorf("inventory: guard %s: %w", hintKey(i), err)
	}
	t.gens[i] = g
	return nil
}

// seeAll reads the generation of every guard: for a write that reads whole
// tables (imports, groups), before it reads them.
func (t *txn) seeAll() error {
	if t.gens == nil {
		return nil // a reader
	}
	entries, err := t.s.db.List(guardsTable)
	if err != nil {
		return fmt.Errorf("inventory: list %s: %w", guardsTable, err)
	}
	for _, e := range entries {
		k := string(e.Key)
		if len(k) != 4 || k[0] != 's' {
			continue
		}
		i, err := strconv.Atoi(k[1:])
		if err != nil || i < 0 || i >= guardStripes {
			continue
		}
		g, err := parseGen(e.Value)
		if err != nil {
			return fmt.Errorf("inventory: guard %s: %w", k, err)
		}
		if _, ok := t.gens[i]; !ok {
			t.gens[i] = g
		}
	}
	if len(t.gens) != guardStripes {
		return fmt.Errorf("inventory: %d of %d guards in %s (devid-ca creates them when it starts)", len(t.gens), guardStripes, guardsTable)
	}
	return nil
}

// get reads a record under its guard.
func (t *txn) get(table []byte, key string, v any) error {
	if err := t.see(table, key); err != nil {
		return err
	}
	return t.s.get(table, key, v)
}

// getRaw reads a record under its guard: nil if there is none.
func (t *txn) getRaw(table []byte, key string) ([]byte, error) {
	if err := t.see(table, key); err != nil {
		return nil, err
	}
	b, err := t.s.db.Get(table, []byte(key))
	if database.IsErrNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("inventory: read %s/%q: %w", table, key, err)
	}
	return b, nil
}

// guardOps are the operations that open the attempt's transaction: lock,
// check and advance each guard read, in ascending order (so that two
// transactions never wait for each other's locks in a circle).
func (t *txn) guardOps() []*database.TxEntry {
	stripes := make([]int, 0, len(t.gens))
	for i := range t.gens {
		stripes = append(stripes, i)
	}
	slices.Sort(stripes)
	ops := make([]*database.TxEntry, 0, 4*len(stripes))
	for _, i := range stripes {
		g := t.gens[i]
		ops = append(ops,
			&database.TxEntry{Bucket: guardsTable, Key: hintKey(i), CmpValue: genValue(g), Value: genValue(g + 1), Cmd: database.CmpAndSwap},
			&database.TxEntry{Bucket: guardsTable, Key: markKey(i, g), Cmd: database.Get},
			&database.TxEntry{Bucket: guardsTable, Key: markKey(i, g), Cmd: database.Delete},
			&database.TxEntry{Bucket: guardsTable, Key: markKey(i, g+1), Value: []byte("1"), Cmd: database.Set})
	}
	return ops
}

// write runs f, an attempt of a write, with the store's write lock held,
// until it commits or fails for another reason than a change made
// meanwhile by another devid-ca on the database (errRetry), at most
// maxAttempts times.
func (s *Store) write(f func(t *txn) error) error {
	pause := 2 * time.Millisecond
	for attempt := 1; ; attempt++ {
		s.mu.Lock()
		err := f(&txn{s: s, gens: map[int]uint64{}})
		s.unlock()
		if !errors.Is(err, errRetry) {
			return err
		}
		if attempt == maxAttempts {
			return &Error{Kind: ErrConflict, Msg: fmt.Sprintf("what this change read was changed %d times meanwhile (by other devid-ca on this database): try again", attempt)}
		}
		s.sleep(pause/2 + rand.N(pause))
		pause = min(2*pause, 200*time.Millisecond)
	}
}

// isRetryable says whether db.Update failed because the transaction must
// start again: a guard's marker, or a record the transaction checks
// (snapshot.bind, lift), was gone; or PostgreSQL chose it as a deadlock's
// or serialisation failure's victim.
func isRetryable(err error) bool {
	if database.IsErrNotFound(err) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "SQLSTATE 40P01") || strings.Contains(s, "SQLSTATE 40001")
}
