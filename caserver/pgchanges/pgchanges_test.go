package pgchanges_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/devid-ssh/devid/caserver/pgchanges"
	"github.com/devid-ssh/devid/internal/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/smallstep/nosql"
)

// hang bounds a wait that only a hang would exceed.
const hang = 2 * time.Minute

// events records what the Observer heard, in order.
type events struct {
	mu  sync.Mutex
	got []string
}

func (e *events) Connected(up bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if up {
		e.got = append(e.got, "up")
	} else {
		e.got = append(e.got, "down")
	}
}

func (e *events) Reconnected() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, "reconnected")
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.got...)
}

func logger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tlog{t}, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// start runs a Listener on dsn until the test ends.
func start(t *testing.T, cfg pgchanges.Config) *pgchanges.Listener {
	t.Helper()
	l, err := pgchanges.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	return l
}

// waitFor polls cond until it holds, failing t after hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after %v", what, hang)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// next calls l.Next with a bound: it reports whether Next returned within
// d (nil) or not (its context's error).
func next(l *pgchanges.Listener, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return l.Next(ctx) == nil
}

// drain consumes a pending return of Next (after a connection, say).
func drain(l *pgchanges.Listener) {
	for next(l, 200*time.Millisecond) {
	}
}

// store opens the database as devid-ca's store does (step's nosql
// driver), with the KRL table created.
func store(t *testing.T, dsn string) nosql.DB {
	t.Helper()
	db, err := nosql.New("postgresql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.CreateTable([]byte(pgchanges.Table)); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestNotified: every kind of write to the KRL table, by step's nosql
// driver on a connection of its own (another devid-ca), wakes Next while
// the listener is connected; with no write, Next does not return (the poll
// interval is an hour: only a notification can wake it). A write to the
// tables the KRL is built from wakes NextRevocations instead; one to
// another table wakes neither.
func TestNotified(t *testing.T) {
	dsn := pgtest.New(t)
	ev := &events{}
	l := start(t, pgchanges.Config{DataSource: dsn, Log: logger(t), Poll: time.Hour, Observer: ev})
	waitFor(t, "connected", l.Connected)
	if !next(l, hang) {
		t.Fatal("Next did not return once after the first connection")
	}
	drain(l)
	if next(l, 300*time.Millisecond) {
		t.Fatal("Next returned with nothing written, while connected")
	}
	db := store(t, dsn)
	tbl := []byte(pgchanges.Table)
	writes := []struct {
		name string
		do   func() error
	}{
		{"set", func() error { return db.Set(tbl, []byte("head"), []byte(`{"version":1}`)) }},
		{"compare-and-swap", func() error {
			_, ok, err := db.CmpAndSwap(tbl, []byte("head"), []byte(`{"version":1}`), []byte(`{"version":2}`))
			if err == nil && !ok {
				err = errors.New("not swapped")
			}
			return err
		}},
		{"delete", func() error { return db.Del(tbl, []byte("head")) }},
	}
	for _, w := range writes {
		if err := w.do(); err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		if !next(l, hang) {
			t.Fatalf("a %s on the KRL table did not wake Next", w.name)
		}
	}
	// A write to a table the KRL is built from wakes NextRevocations, and
	// not Next.
	nextRev := func(d time.Duration) bool {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		return l.NextRevocations(ctx) == nil
	}
	if !nextRev(hang) {
		t.Fatal("NextRevocations did not return once after the first connection")
	}
	if nextRev(300 * time.Millisecond) {
		t.Fatal("NextRevocations returned with nothing written to the revocation tables")
	}
	for _, table := range pgchanges.RevocationTables {
		if err := db.Set([]byte(table), []byte("d"), []byte("x")); err != nil {
			t.Fatal(err)
		}
		if !nextRev(hang) {
			t.Fatalf("a write to %s did not wake NextRevocations", table)
		}
	}
	if next(l, 300*time.Millisecond) {
		t.Fatal("a write to the revocation tables woke Next")
	}
	// Nor does a write to any other table.
	if err := db.CreateTable([]byte("devid_audit")); err != nil {
		t.Fatal(err)
	}
	if err := db.Set([]byte("devid_audit"), []byte("e"), []byte("y")); err != nil {
		t.Fatal(err)
	}
	if next(l, 300*time.Millisecond) || nextRev(300*time.Millisecond) {
		t.Fatal("a write to devid_audit woke Next or NextRevocations")
	}
	if got := ev.list(); len(got) != 1 || got[0] != "up" {
		t.Fatalf("observer heard %v, want [up]", got)
	}
}

// TestInstallIdempotent: installing the trigger again, from many
// connections at once, succeeds and leaves one trigger that notifies once
// per statement.
func TestInstallIdempotent(t *testing.T) {
	dsn := pgtest.New(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(ctx)
			errs <- pgchanges.Install(ctx, conn)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Install: %v", err)
		}
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal", pgchanges.Table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d triggers on %s, want 1", n, pgchanges.Table)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{pgchanges.Channel}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO devid_krl VALUES ('k', 'v'), ('l', 'w')"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, hang)
	defer cancel()
	if _, err := conn.WaitForNotification(wctx); err != nil {
		t.Fatalf("no notification after an insert: %v", err)
	}
	wctx, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if n, err := conn.WaitForNotification(wctx); err == nil {
		t.Fatalf("a second notification for one statement: %+v", n)
	}
}

// TestReconnect: the listening connection is killed (pg_terminate_backend)
// while the database refuses new connections: the listener falls back to
// polling (Next returns on its timer, with nothing written) and retries;
// once connections are allowed again it listens again, Next returns once
// for what it may have missed, and notifications wake it as before.
func TestReconnect(t *testing.T) {
	dsn := pgtest.New(t)
	ctx := context.Background()
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	dbname := cc.Database
	// The server's maintenance database: a database cannot refuse the
	// connection that tells it to.
	admin, err := pgx.Connect(ctx, pgtest.Need(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	writer, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close(ctx)
	ev := &events{}
	l := start(t, pgchanges.Config{DataSource: dsn, Log: logger(t), Poll: 20 * time.Millisecond,
		Backoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Observer: ev})
	waitFor(t, "connected", l.Connected)
	drain(l)

	db := pgx.Identifier{dbname}.Sanitize()
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+db+" ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	var killed int
	if err := admin.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1 AND datname = $2",
		pgchanges.ApplicationName, dbname).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed != 1 {
		t.Fatalf("terminated %d listening connections, want 1", killed)
	}
	waitFor(t, "disconnected", func() bool { return !l.Connected() })
	// Polling: Next returns though nothing is written.
	for i := range 5 {
		if !next(l, hang) {
			t.Fatalf("Next did not return while disconnected (return %d)", i)
		}
	}
	if l.Connected() {
		t.Fatal("connected while the database refuses connections")
	}
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+db+" ALLOW_CONNECTIONS true"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reconnected", l.Connected)
	got := ev.list()
	if len(got) != 4 || got[0] != "up" || got[1] != "down" || got[2] != "up" || got[3] != "reconnected" {
		t.Fatalf("observer heard %v, want [up down up reconnected]", got)
	}
	drain(l)
	if next(l, 300*time.Millisecond) {
		t.Fatal("Next returned with nothing written, while connected again")
	}
	if _, err := writer.Exec(ctx, "INSERT INTO devid_krl VALUES ('head', 'x')"); err != nil {
		t.Fatal(err)
	}
	if !next(l, hang) {
		t.Fatal("a write after the reconnect did not wake Next")
	}
}

// TestNextAfterConnect: Next returns once after a connection even with
// nothing written, since a change may have come while none listened.
func TestNextAfterConnect(t *testing.T) {
	dsn := pgtest.New(t)
	l := start(t, pgchanges.Config{DataSource: dsn, Log: logger(t), Poll: time.Hour})
	waitFor(t, "connected", l.Connected)
	if !next(l, hang) {
		t.Fatal("no return after the connection")
	}
}

// TestBadDataSource: a data source pgx cannot parse is an error from New,
// naming it.
func TestBadDataSource(t *testing.T) {
	_, err := pgchanges.New(pgchanges.Config{DataSource: "postgres://[::1", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil {
		t.Fatal("New accepted a malformed data source")
	}
	if _, err := pgchanges.New(pgchanges.Config{DataSource: "host=x"}); err == nil {
		t.Fatal("New accepted a config without a logger")
	}
}
