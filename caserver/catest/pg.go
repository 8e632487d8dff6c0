package catest

import (
	"testing"

	"github.com/devid-ssh/devid/caserver"
	"github.com/devid-ssh/devid/internal/pgtest"
)

// PostgreSQL is an edit for Start that puts the CA's store in dsn, a
// PostgreSQL database (pgtest.New's, say), in place of the bbolt file.
func PostgreSQL(dsn string) func(*caserver.Config) {
	return func(c *caserver.Config) {
		c.DB = caserver.DBConfig{Type: "postgresql", DataSource: dsn}
	}
}

// StartPG is Start with the store in a fresh PostgreSQL database of the
// test's (pgtest.New: skipped without a server, failed when CI=true); edit,
// if not nil, may change the configuration further. Its Config file still
// names the bbolt store: StartDir on ca.Dir would serve that, not the
// database.
func StartPG(t testing.TB, edit func(*caserver.Config)) *CA {
	t.Helper()
	pg := PostgreSQL(pgtest.New(t))
	return Start(t, func(c *caserver.Config) {
		pg(c)
		if edit != nil {
			edit(c)
		}
	})
}
