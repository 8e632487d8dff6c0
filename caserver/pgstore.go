package caserver

import (
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"strings"

	stepdb "github.com/smallstep/certificates/db"
	"github.com/smallstep/nosql"
	"github.com/smallstep/nosql/database"
	nosqlpg "github.com/smallstep/nosql/postgresql"
)

// A compare-and-swap that is one on PostgreSQL.
//
// smallstep/nosql's PostgreSQL CmpAndSwap reads the row FOR UPDATE, then
// compares in Go and writes with an upsert. When there is no row yet (the
// old value nil: "store if absent") there is nothing to lock, so two
// concurrent calls both find none and both report that they swapped, the
// second overwriting the first: step-ca's one-time token check
// (db.UseToken), its revocation records, and any devid record created by a
// compare-and-swap from nil would accept twice what must be accepted once,
// across replicas and even within one process. pgCAS replaces it, for
// step-ca's own use and devid's, by single statements PostgreSQL makes
// atomic: an INSERT … ON CONFLICT DO NOTHING from nil, an UPDATE … WHERE
// nvalue = old otherwise. (A compare-and-swap inside a database.Tx is
// still the driver's; devid's compare with a record that exists, which
// FOR UPDATE does lock.)
//
// The store's *sql.DB is read from smallstep/nosql's unexported field by
// reflection, as backup.go reads bbolt's: its type is checked, and a
// nosql release that changes it makes devid-ca refuse to start on
// PostgreSQL rather than run without the fix (TestPGCompareAndSwap).
//
// The same pool gets the limits of Config.DB (database/sql has none by
// default, and each replica would open as many connections as it has
// concurrent requests, past the server's max_connections).

// pgCAS is the store with pgCAS's CmpAndSwap.
type pgCAS struct {
	nosql.DB
	sql *sql.DB
}

// pgSQL returns the *sql.DB inside smallstep/nosql's PostgreSQL driver.
func pgSQL(db nosql.DB) (*sql.DB, error) {
	pg, ok := db.(*nosqlpg.DB)
	if !ok || pg == nil {
		return nil, fmt.Errorf("devid-ca: the store is a %T, not smallstep/nosql's PostgreSQL driver", db)
	}
	f := reflect.ValueOf(pg).Elem().FieldByName("db")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*sql.DB]() || f.IsNil() {
		return nil, errors.New("devid-ca: cannot reach the *sql.DB inside smallstep/nosql's PostgreSQL driver (its layout changed)")
	}
	return (*sql.DB)(f.UnsafePointer()), nil
}

// wrapPG puts pgCAS under step-ca's database (so that step-ca's own
// compare-and-swaps are atomic too) and sets the pool's limits; it returns
// the store for devid's packages.
func wrapPG(adb any, c DBConfig) (nosql.DB, error) {
	sdb, ok := adb.(*stepdb.DB)
	if !ok {
		return nil, fmt.Errorf("devid-ca: step-ca's database is a %T", adb)
	}
	if _, done := sdb.DB.(pgCAS); done {
		return sdb.DB, nil
	}
	q, err := pgSQL(sdb.DB)
	if err != nil {
		return nil, err
	}
	q.SetMaxOpenConns(c.maxConns())
	q.SetMaxIdleConns(c.maxConns())
	w := pgCAS{DB: sdb.DB, sql: q}
	sdb.DB = w
	return w, nil
}

// DefaultMaxConns is the default of DBConfig.MaxConns.
const DefaultMaxConns = 20

func (c DBConfig) maxConns() int {
	if c.MaxConns > 0 {
		return c.MaxConns
	}
	return DefaultMaxConns
}

func quoteTable(bucket []byte) string {
	// As smallstep/nosql quotes it: a dot separates schema and table.
	parts := strings.Split(string(bucket), ".")
	for i, p := range parts {
		parts[i] = `"` + strings.ReplaceAll(p, `"`, `""`) + `"`
	}
	return strings.Join(parts, ".")
}

// CmpAndSwap stores newValue at bucket/key if the stored value is
// oldValue (nil: no row), atomically, and reports whether it did; if not,
// it returns the value stored (nil for none), as smallstep/nosql does.
func (d pgCAS) CmpAndSwap(bucket, key, oldValue, newValue []byte) ([]byte, bool, error) {
	t := quoteTable(bucket)
	var res sql.Result
	var err error
	if len(oldValue) == 0 {
		res, err = d.sql.Exec("INSERT INTO "+t+" (nkey, nvalue) VALUES ($1, $2) ON CONFLICT (nkey) DO NOTHING", key, newValue)
	} else {
		res, err = d.sql.Exec("UPDATE "+t+" SET nvalue = $3 WHERE nkey = $1 AND nvalue = $2", key, oldValue, newValue)
	}
	if err != nil {
		return nil, false, fmt.Errorf("compare-and-swap %s/%s: %w", bucket, key, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return nil, false, fmt.Errorf("compare-and-swap %s/%s: %w", bucket, key, err)
	} else if n == 1 {
		return newValue, true, nil
	}
	var cur []byte
	err = d.sql.QueryRow("SELECT nvalue FROM "+t+" WHERE nkey = $1", key).Scan(&cur)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	} else if err != nil {
		return nil, false, fmt.Errorf("compare-and-swap %s/%s: read the stored value: %w", bucket, key, err)
	}
	return cur, false, nil
}

var _ database.DB = pgCAS{}
