package inventory

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"sort"
	"time"
)

// Imports at scale.
//
// An import reads its input once, as a stream (ImportDevicesFrom,
// ImportUsersFrom, ImportMDMFrom: a CSV or JSON reader over a request
// body or a file), keeping each row parsed (a few hundred bytes a row), up
// to ImportOptions.MaxRows rows and MaxBytes bytes. It then checks every
// row against the inventory, as if the rows were applied in turn, without
// writing anything: a bad row fails the whole import, with its file, line
// and field, and nothing changes. A dry run stops there.
//
// An import of at most ImportOptions.Batch rows is then one transaction,
// as it always was. A larger one is applied Batch rows at a time, each
// batch a transaction of its own with its audit entries, so that neither
// the transaction nor the memory grow with the file: each batch checks,
// under the guards (see guard.go), that the records its rows read are
// still as the check saw them, and starts again from a fresh read of the
// inventory if they are not. Should a batch fail even so (a row another
// writer made wrong meanwhile), the error says how many rows were applied;
// the import is idempotent, so running it again applies the rest.
type ImportOptions struct {
	DryRun bool
	// Batch is the number of rows applied per transaction (0:
	// DefaultImportBatch).
	Batch int
	// MaxRows and MaxBytes bound the input (0: DefaultMaxImportRows,
	// DefaultMaxImportBytes; negative: no bound).
	MaxRows  int
	MaxBytes int64
}

// Import limits, by default.
const (
	DefaultImportBatch    = 5000
	DefaultMaxImportRows  = 500_000
	DefaultMaxImportBytes = 256 << 20
)

func (o ImportOptions) batch() int {
	if o.Batch <= 0 {
		return DefaultImportBatch
	}
	return o.Batch
}

func (o ImportOptions) maxRows() int {
	switch {
	case o.MaxRows == 0:
		return DefaultMaxImportRows
	case o.MaxRows < 0:
		return int(^uint(0) >> 1)
	}
	return o.MaxRows
}

func (o ImportOptions) maxBytes() int64 {
	switch {
	case o.MaxBytes == 0:
		return DefaultMaxImportBytes
	case o.MaxBytes < 0:
		return 1<<63 - 1
	}
	return o.MaxBytes
}

// errTooLarge: the input is over ImportOptions.MaxBytes.
var errTooLarge = errors.New("too large")

// lineReader reads an import, counting its bytes against a bound and
// noting where each line ends, for the line numbers of errors and
// results.
type lineReader struct {
	r   io.Reader
	n   int64   // bytes read
	max int64   // bound on n
	nl  []int64 // offsets of the '\n' read
}

func (l *lineReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	for i := 0; i < n; {
		j := bytes.IndexByte(p[i:n], '\n')
		if j < 0 {
			break
		}
		l.nl = append(l.nl, l.n+int64(i+j))
		i += j + 1
	}
	l.n += int64(n)
	if l.n > l.max {
		return n, errTooLarge
	}
	return n, err
}

// lineAt is the 1-based line of the byte at offset off.
func (l *lineReader) lineAt(off int64) int {
	return 1 + sort.Search(len(l.nl), func(i int) bool { return l.nl[i] >= off })
}

// openImport wraps an import's input: a buffered lineReader, and its
// first non-blank byte (0 for none). skip are the characters blank before
// it.
func openImport(r io.Reader, opts ImportOptions, skip string) (*bufio.Reader, *lineReader, byte, error) {
	lr := &lineReader{r: r, max: opts.maxBytes()}
	br := bufio.NewReaderSize(lr, 64<<10)
	for n := 1; ; n++ {
		b, err := br.Peek(n)
		if len(b) < n {
			if errors.Is(err, errTooLarge) {
				return nil, nil, 0, err
			}
			if err != nil && err != io.EOF {
				return nil, nil, 0, err
			}
			return br, lr, 0, nil
		}
		rest := bytes.TrimLeft(b, skip)
		if len(rest) > 0 && !bytes.HasPrefix([]byte("\ufeff"), rest) {
			return br, lr, rest[0], nil
		}
		if n == br.Size() {
			return br, lr, 0, nil
		}
	}
}

// readErr turns an error reading an import into an *Error naming the
// file.
func readErr(file string, opts ImportOptions, err error) error {
	if errors.Is(err, errTooLarge) {
		return &Error{Kind: ErrTooLarge, File: file, Msg: fmt.Sprintf("larger than %d bytes, the most an import takes (split the file, or raise the limit: devid-ca's import.maxBytes)", opts.maxBytes())}
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Kind: ErrInvalid, File: file, Msg: "read: " + err.Error()}
}

func tooManyRows(file string, line int, opts ImportOptions) error {
	return &Error{Kind: ErrTooLarge, File: file, Line: line, Msg: fmt.Sprintf("more than %d rows, the most an import takes (split the file, or raise the limit: devid-ca's import.maxRows)", opts.maxRows())}
}

// importPlan is an import's parsed rows and how to apply them: begin
// starts a pass over the rows, from the first, with state of its own.
type importPlan struct {
	rows  int
	begin func() importPass
}

type importPass struct {
	// apply checks row i against snap as the rows before it left it and
	// adds its change to w and its result to report.
	apply func(snap *snapshot, i int, now time.Time, report *ImportReport, w *writer) error
	// finish, if not nil, runs after the last row (an MDM import's
	// missing devices).
	finish func(snap *snapshot, now time.Time, report *ImportReport, w *writer) error
}

// runImport checks every row of p, then, unless it is a dry run, applies
// them: in one transaction if they fit in a batch, else batch by batch.
func (s *Store) runImport(actor string, report *ImportReport, opts ImportOptions, p importPlan) (*ImportReport, error) {
	// The check: every row against the inventory as read now, nothing
	// kept but the report.
	checked, err := s.importPass(report, p, opts.batch())
	if err != nil {
		return nil, err
	}
	if opts.DryRun {
		return checked, nil
	}
	if p.rows <= opts.batch() {
		return s.importOne(actor, report, p)
	}
	return s.importBatches(actor, report, opts.batch(), p)
}

// cloneReport copies a report.
func cloneReport(r *ImportReport) *ImportReport {
	c := &ImportReport{DryRun: r.DryRun, Counts: map[string]int{}, Results: append([]ImportResult(nil), r.Results...)}
	for k, v := range r.Counts {
		c.Counts[k] = v
	}
	return c
}

// importPass runs a pass over every row on the inventory as read now,
// without writing: w is dropped every batch rows.
func (s *Store) importPass(report *ImportReport, p importPlan, batch int) (*ImportReport, error) {
	snap, err := s.reader().full(true)
	if err != nil {
		return nil, err
	}
	now := s.clock()
	rep := cloneReport(report)
	pass := p.begin()
	var w writer
	for i := range p.rows {
		if err := pass.apply(snap, i, now, rep, &w); err != nil {
			return nil, err
		}
		if (i+1)%batch == 0 {
			w = writer{}
		}
	}
	if pass.finish != nil {
		if err := pass.finish(snap, now, rep, &w); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// importOne applies every row in one guarded transaction, started again
// from a fresh read of the whole inventory if it changed meanwhile.
func (s *Store) importOne(actor string, report *ImportReport, p importPlan) (*ImportReport, error) {
	var out *ImportReport
	err := s.write(func(t *txn) error {
		snap, err := t.full(true)
		if err != nil {
			return err
		}
		now := s.clock()
		rep := cloneReport(report)
		pass := p.begin()
		var w writer
		for i := range p.rows {
			if err := pass.apply(snap, i, now, rep, &w); err != nil {
				return err
			}
		}
		if pass.finish != nil {
			if err := pass.finish(snap, now, rep, &w); err != nil {
				return err
			}
		}
		out = rep
		return s.commit(t, actor, now, &w)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// importBatches applies the rows batch rows at a time, each batch a
// transaction. The rows are applied to a snapshot of the inventory read
// once (unguarded); each batch then reads, under the guards, what its
// changes started from (the devices and users as they were, the names and
// serials they take, their owners) and commits only if that is what the
// snapshot had. If not, or if a guard moved, the pass starts again on a
// fresh snapshot: the rows of the batches committed already are applied
// to it again, unwritten (they find what they wrote), and the next batch
// is tried again.
func (s *Store) importBatches(actor string, report *ImportReport, batch int, p importPlan) (*ImportReport, error) {
	done := 0 // rows committed
	retriedAt := -1
	final := cloneReport(report)
	final.Results = nil
	for attempt := 1; done < p.rows; attempt++ {
		if attempt > maxAttempts*(p.rows/batch+1) {
			return nil, &Error{Kind: ErrConflict, Msg: fmt.Sprintf("the inventory kept changing while the import was applied: rows 1-%d of %d applied (it is idempotent: run it again)", done, p.rows)}
		}
		// Fast: the guards read before the snapshot, and carried from
		// batch to batch (each commit advances them all), so that a batch
		// commits only if nothing at all changed since the snapshot but
		// the import's own batches; nothing to verify. After a few
		// restarts (a busy inventory), each batch verifies what it read
		// instead (see verify), and conflicts only with the writes that
		// touch it.
		fast := attempt <= 3
		var gens map[int]uint64
		if fast {
			t := &txn{s: s, gens: map[int]uint64{}}
			if err := t.seeAll(); err != nil {
				return nil, err
			}
			gens = t.gens
		}
		snap, err := s.reader().full(true)
		if err != nil {
			return nil, err
		}
		now := s.clock()
		pass := p.begin()
		var w writer
		scratch := cloneReport(report)
		for i := range done { // what they wrote is there: no change
			if err := pass.apply(snap, i, now, scratch, &w); err != nil {
				return nil, partial(err, done, p.rows)
			}
		}
		restart := false
		for done < p.rows && !restart {
			end := min(done+batch, p.rows)
			rep := cloneReport(report)
			rep.Results = nil
			var applyErr error
			t := &txn{s: s, gens: map[int]uint64{}}
			if fast {
				t.gens = maps.Clone(gens)
			}
			s.mu.Lock()
			err := func(t *txn) error {
				w := writer{}
				for i := done; i < end; i++ {
					if applyErr = pass.apply(snap, i, now, rep, &w); applyErr != nil {
						return applyErr
					}
				}
				if end == p.rows && pass.finish != nil {
					if applyErr = pass.finish(snap, now, rep, &w); applyErr != nil {
						return applyErr
					}
				}
				if !fast {
					if err := t.verify(&w); err != nil {
						return err
					}
				}
				return s.commit(t, actor, now, &w)
			}(t)
			s.unlock()
			switch {
			case applyErr != nil && retriedAt != done:
				// Wrong against the snapshot: read afresh once, in case
				// another writer changed what the row is checked against.
				retriedAt, restart = done, true
			case applyErr != nil:
				return nil, partial(applyErr, done, p.rows)
			case errors.Is(err, errStale) || errors.Is(err, errRetry):
				restart = true
			case err != nil:
				return nil, partial(err, done, p.rows)
			default:
				for i := range gens {
					gens[i]++ // this commit advanced every guard
				}
				for k, v := range rep.Counts {
					final.Counts[k] += v - report.Counts[k]
				}
				final.Results = append(final.Results, rep.Results...)
				done = end
			}
		}
		if done == p.rows {
			break
		}
		s.sleep(time.Duration(attempt) * time.Millisecond)
	}
	return final, nil
}

// errStale: what a batch's rows started from is not what the inventory
// holds now.
var errStale = errors.New("inventory: changed since the import read it")

// partial says how many rows an import applied before err.
func partial(err error, done, rows int) error {
	if done == 0 {
		return err
	}
	var e *Error
	if errors.As(err, &e) {
		c := *e
		c.Msg += fmt.Sprintf(" (rows before it applied: the import stopped after %d of %d rows; fix the row and run it again)", done, rows)
		return &c
	}
	return fmt.Errorf("%w (the import stopped after %d of %d rows; run it again)", err, done, rows)
}

// verify reads, under the guards, what w's changes started from and
// checks that it is what they were computed from: every device and user
// as it was before, the names and serials the devices take free (or
// theirs), their owners users. errStale if not.
func (t *txn) verify(w *writer) error {
	mine := map[string]bool{} // device IDs this batch writes
	for _, c := range w.changes {
		mine[c.After.ID] = true
		if c.Before != nil {
			mine[c.Before.ID] = true
		}
	}
	produced := map[string]bool{} // records the batch made before a change
	for _, c := range w.changes {
		if c.Before != nil && !produced[c.Before.ID] {
			produced[c.Before.ID] = true
			var now Device
			if err := t.get(devicesTable, c.Before.ID, &now); errors.Is(err, ErrNotFound) {
				return errStale
			} else if err != nil {
				return err
			}
			if !bytes.Equal(mustJSON(&now), mustJSON(c.Before)) {
				return errStale
			}
		}
		produced[c.After.ID] = true
		a := c.After
		keys := []string{nameKey(a.Name)}
		if a.Serial != "" {
			keys = append(keys, serialKey(a.Serial))
		}
		for _, k := range keys {
			id, err := t.idxString(k)
			if err != nil {
				return err
			}
			if id != "" && !mine[id] {
				return errStale
			}
		}
		if a.Owner != "" {
			u, err := t.user(a.Owner)
			if err != nil {
				return err
			}
			if u == nil {
				return errStale
			}
		}
	}
	mineUsers := map[string]bool{}
	for _, c := range w.userChanges {
		for _, u := range []*User{c.Before, c.After} {
			if u != nil {
				mineUsers[foldEmail(u.Email)] = true
			}
		}
	}
	useen := map[string]bool{}
	for _, c := range w.userChanges {
		if c.Before != nil && !useen[c.Before.Email] {
			useen[c.Before.Email] = true
			now, err := t.user(c.Before.Email)
			if err != nil {
				return err
			}
			if now == nil || !bytes.Equal(mustJSON(now), mustJSON(c.Before)) {
				return errStale
			}
		}
		if a := c.After; a != nil {
			for _, k := range []string{emailKey(a.Email), loginKey(a.Login)} {
				email, err := t.idxString(k)
				if err != nil {
					return err
				}
				if email != "" && !mineUsers[foldEmail(email)] {
					return errStale
				}
			}
		}
	}
	return nil
}
