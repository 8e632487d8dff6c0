package caserver_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/internal/storebackup"
	"github.com/smallstep/nosql"
)

// pipeListener serves connections made by its dial over net.Pipe, which
// buffers nothing: a server writing to a client that does not read waits
// at once, whatever socket buffers a TCP connection would have.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error { l.once.Do(func() { close(l.done) }); return nil }

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

// warnings is a slog handler that keeps the messages of warnings and
// errors.
type warnings struct {
	mu   *sync.Mutex
	msgs *[]string
}

func (w warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w warnings) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	*w.msgs = append(*w.msgs, r.Message)
	return nil
}
func (w warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w warnings) WithGroup(string) slog.Handler      { return w }

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// TestBackupDoesNotHoldTheStore: while an admin's client reads a backup
// slowly (a few bytes, then nothing until the test says), the store goes
// on: a write that grows it past its memory map (which waits for every
// read transaction bbolt has open) and then a read (the watchdog's health
// check) complete. The backup, read to its end, is the store from before
// that write, and is recorded in the audit trail with the admin's name; no
// temporary file is left beside the store, even by a download given up
// half way. The download had a write deadline of its own, past the
// server's.
func TestBackupDoesNotHoldTheStore(t *testing.T) {
	var mu sync.Mutex
	var warned []string
	ca := catest.StartLogged(t, nil, slog.New(warnings{&mu, &warned}))
	tc, err := ca.Server.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	// The CA's handler, served over pipes.
	pl := newPipeListener()
	hs := &http.Server{Handler: ca.Server.Handler()}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(tls.NewListener(pl, tc)) }()
	t.Cleanup(func() {
		hs.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve over pipes: %v", err)
		}
	})
	hc := &http.Client{Transport: &http.Transport{DialContext: pl.dial, TLSClientConfig: ca.TLSConfig(&ca.AdminCert)}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	get := func(ctx context.Context) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ca.URL+adminapi.BackupPath, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("GET %s: HTTP %d %s", adminapi.BackupPath, resp.StatusCode, b)
		}
		return resp
	}
	db, ok := ca.Server.Authority().GetDatabase().(nosql.DB)
	if !ok {
		t.Fatalf("the store is a %T", ca.Server.Authority().GetDatabase())
	}
	if err := db.CreateTable([]byte("test_big")); err != nil {
		t.Fatal(err)
	}
	resp := get(ctx)
	defer resp.Body.Close()
	head := make([]byte, 100)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}

	store := filepath.Join(ca.Dir, "db", "devid.db")
	st, err := os.Stat(store)
	if err != nil {
		t.Fatal(err)
	}
	// bbolt maps at most twice the file: a value of more needs a new map.
	wrote := make(chan error, 1)
	go func() { wrote <- db.Set([]byte("test_big"), []byte("k"), make([]byte, 2*st.Size()+1<<20)) }()
	hctx, hcancel := context.WithTimeout(context.Background(), time.Minute) // bounds a hang only
	defer hcancel()
	healthy := make(chan error, 1)
	go func() { healthy <- ca.Server.Healthy(hctx) }()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("a write that grows the store did not complete within a minute while a backup was being read")
	}
	if err := <-healthy; err != nil {
		t.Fatalf("the health check while a backup was being read: %v", err)
	}
	if grown, err := os.Stat(store); err != nil || grown.Size() <= 2*st.Size() {
		t.Fatalf("the store did not grow from %d bytes: %v %v", st.Size(), grown, err)
	}

	// The rest of the backup: the store before the write.
	file := filepath.Join(t.TempDir(), "backup.db")
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, append(head, b...), 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := storebackup.Check(file)
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := info.Entries["test_big"]; !ok || n != 0 {
		t.Errorf("the backup's test_big table has %d keys (%v), want 0: the write came after it", n, ok)
	}

	cl, err := adminapi.NewClient(ca.URL, ca.Roots, &ca.AdminCert)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := cl.Audit("store")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Action != "store.backup" || entries[0].Actor != "admin" {
		t.Errorf("the audit trail of the store: %+v, want one store.backup by admin", entries)
	}

	// A download given up half way.
	ctx2, cancel2 := context.WithCancel(context.Background())
	resp2 := get(ctx2)
	if _, err := io.ReadFull(resp2.Body, head); err != nil {
		t.Fatal(err)
	}
	cancel2()
	resp2.Body.Close()
	// Only the store and the lock restores take, whenever one looks.
	waitFor(t, "the second backup recorded", func() bool {
		entries, err := cl.Audit("store")
		return err == nil && len(entries) == 2
	})
	ents, err := os.ReadDir(filepath.Dir(store))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{".devid.db.restore.lock", "devid.db"}) {
		t.Errorf("beside the store: %q", names)
	}
	mu.Lock()
	defer mu.Unlock()
	if slices.Contains(warned, "backup: no write deadline of its own") {
		t.Errorf("the backup route cannot set its write deadline: %q", warned)
	}
}
