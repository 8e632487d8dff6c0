package pgtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/pgtest"
	"github.com/jackc/pgx/v5"
)

// TestNewIsolated: two databases from New are separate and empty, and
// usable through the connection strings New returns.
func TestNewIsolated(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b := pgtest.New(t), pgtest.New(t)
	if a == b {
		t.Fatalf("two databases share a connection string: %s", a)
	}
	ca, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close(ctx)
	if _, err := ca.Exec(ctx, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	cb, err := pgx.Connect(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close(ctx)
	var n int
	if err := cb.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 't'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("a table created in one database is in the other (%d)", n)
	}
}
