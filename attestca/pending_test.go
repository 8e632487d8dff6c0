package attestca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/devid-ssh/devid/attestca"
	"github.com/devid-ssh/devid/internal/fakeclock"
	"github.com/devid-ssh/devid/internal/pgtest"
	"github.com/devid-ssh/devid/inventory"
	"github.com/smallstep/nosql"
)

// newFixtureDB is newFixture on db (bbolt or PostgreSQL), with clk.
func newFixtureDB(t testing.TB, db nosql.DB, clk *fakeclock.Clock) *fixture {
	t.Helper()
	inv, err := inventory.Open(db, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test Attestation CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	cert, _ := x509.ParseCertificate(der)
	conf := attestca.Config{Cert: cert, Signer: key, Now: clk.Now, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ca, err := attestca.New(conf, inv, db)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{ca: ca, inv: inv, clk: clk, db: db, conf: conf}
}

// replica is another CA over f's database, with its own inventory store:
// another devid-ca process.
func (f *fixture) replica(t testing.TB) *fixture {
	t.Helper()
	inv, err := inventory.Open(f.db, f.clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := attestca.New(f.conf, inv, f.db)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{ca: ca, inv: inv, clk: f.clk, db: f.db, conf: f.conf}
}

func count(t testing.TB, db nosql.DB, table string) int {
	t.Helper()
	entries, err := db.List([]byte(table))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestReplayFlood: 400 replays of one valid attestation request, 8 at a
// time, over two CA instances on one store (replicas), leave at most
// MaxPendingPerDevice pending attestations; the newest challenge is still
// answered, an evicted one is refused; once the secret's lifetime has
// passed, Prune leaves nothing.
func TestReplayFlood(t *testing.T) {
	db, err := nosql.New("bbolt", filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	replayFlood(t, db)
}

// TestReplayFloodPostgreSQL is TestReplayFlood on a real PostgreSQL.
func TestReplayFloodPostgreSQL(t *testing.T) {
	db, err := nosql.New("postgresql", pgtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	replayFlood(t, db)
}

func replayFlood(t *testing.T, db nosql.DB) {
	f := newFixtureDB(t, db, fakeclock.New(time.Now()))
	g := f.replica(t)
	d := newDevice(t)
	d.register(t, f, "a")

	first, err := f.ca.Attest(d.req)
	if err != nil {
		t.Fatal(err)
	}
	const replays, parallel = 400, 8
	var wg sync.WaitGroup
	errs := make(chan error, replays)
	for w := range parallel {
		ca := []*attestca.CA{f.ca, g.ca}[w%2]
		wg.Go(func() {
			for range replays / parallel {
				if _, err := ca.Attest(d.req); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	refusals := 0
	for err := range errs {
		// Eight at once on one device's record, from two instances: one
		// may give up after its compare-and-swaps failed; never an
		// error of another kind.
		wantRefusal(t, err, attestca.ErrRefused, "too many attestations at once")
		refusals++
	}
	if refusals > replays/2 {
		t.Fatalf("%d of %d replays refused: the bound should evict, not refuse", refusals, replays)
	}
	if n := count(t, db, "devid_attest_pending"); n > attestca.MaxPendingPerDevice {
		t.Fatalf("%d pending attestations after %d replays, want at most %d", n, replays, attestca.MaxPendingPerDevice)
	}

	// The first was evicted long ago; the newest is answered, on the
	// other instance.
	_, err = g.ca.Secret(&attestca.SecretRequest{Secret: d.activate(t, first)})
	wantRefusal(t, err, attestca.ErrRefused, "wrong secret, or its attestation expired")
	last, err := f.ca.Attest(d.req)
	if err != nil {
		t.Fatal(err)
	}
	secret := d.activate(t, last)
	if _, err := g.ca.Secret(&attestca.SecretRequest{Secret: secret}); err != nil {
		t.Fatalf("the newest challenge, on the other instance: %v", err)
	}
	_, err = f.ca.Secret(&attestca.SecretRequest{Secret: secret})
	wantRefusal(t, err, attestca.ErrRefused, "already used")

	// Expired: refused, and pruned.
	pending, err := f.ca.Attest(d.req)
	if err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(61 * time.Second)
	st, err := g.ca.Prune(f.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if n, m := count(t, db, "devid_attest_pending"), count(t, db, "devid_attest_by_device"); n != 0 || m != 0 || st.Pending == 0 || st.Devices != 1 {
		t.Fatalf("after the prune: %d pending attestations, %d device records (pruned %+v), want none", n, m, st)
	}
	_, err = f.ca.Secret(&attestca.SecretRequest{Secret: d.activate(t, pending)})
	wantRefusal(t, err, attestca.ErrRefused, "wrong secret, or its attestation expired")
	// And the device attests again.
	again, err := g.ca.Attest(d.req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ca.Secret(&attestca.SecretRequest{Secret: d.activate(t, again)}); err != nil {
		t.Fatalf("after the prune: %v", err)
	}
}
