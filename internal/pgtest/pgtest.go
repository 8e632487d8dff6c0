// Package pgtest gives tests a fresh PostgreSQL database on a real server:
// each call to New creates a database of its own, dropped when the test
// ends (its connections closed by force), so tests never see each other's
// tables.
//
// The server is, in order:
//
//   - the one named by DEVID_TEST_POSTGRES, a connection string (libpq
//     keyword/value or URL) for a role that may create databases;
//   - else the local server on /var/run/postgresql as the current OS user
//     (peer authentication). When it does not answer and Debian's
//     pg_ctlcluster is installed, pgtest starts the newest Debian cluster
//     (as root) and, as root, creates a superuser role of the OS user's
//     name through the postgres account if there is none.
//
// Without a server a test skips, and fails instead when CI=true.
//
//	func TestX(t *testing.T) {
//		dsn := pgtest.New(t) // "host=/var/run/postgresql user=root dbname=devid_test_…"
//		…
//	}
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvServer names the environment variable with the connection string of
// the server to use.
const EnvServer = "DEVID_TEST_POSTGRES"

// socketDir is where Debian's PostgreSQL listens.
const socketDir = "/var/run/postgresql"

var (
	once      sync.Once
	serverDSN string
	serverErr error
)

// Need returns the connection string of a server's maintenance database
// (a role that may create databases), or skips t (fails it when CI=true).
func Need(t testing.TB) string {
	t.Helper()
	dsn, err := Server()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pgtest: %v, and CI=true", err)
		}
		t.Skipf("pgtest: %v", err)
	}
	return dsn
}

// Server finds (or starts) the server once, and returns the connection
// string of its maintenance database.
func Server() (string, error) {
	once.Do(func() { serverDSN, serverErr = server() })
	if serverErr != nil {
		return "", fmt.Errorf("no PostgreSQL server: %w", serverErr)
	}
	return serverDSN, nil
}

// New creates an empty database for t and returns its connection string
// (the server's, with dbname set). The database is dropped when t ends.
func New(t testing.TB) string {
	t.Helper()
	admin := Need(t)
	dsn, drop, err := Create(admin)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := drop(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return dsn
}

// Create creates an empty database on the server admin names, and returns
// its connection string and the function that drops it (closing its
// connections by force).
func Create(admin string) (dsn string, drop func() error, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, err
	}
	name := "devid_test_" + hex.EncodeToString(b[:])
	if err := exec1(ctx, admin, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("create database %s: %w", name, err)
	}
	drop = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := exec1(ctx, admin, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
		return nil
	}
	return WithDatabase(admin, name), drop, nil
}

// WithDatabase returns dsn with its database set to name.
func WithDatabase(dsn, name string) string {
	if strings.Contains(dsn, "://") {
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return dsn // New parsed it already
		}
		return fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=disable",
			quote(cfg.Host), cfg.Port, quote(cfg.User), quote(cfg.Password), quote(name))
	}
	return dsn + " dbname=" + quote(name)
}

// quote quotes a libpq keyword/value connection string value.
func quote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

func exec1(ctx context.Context, dsn, sql string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// server finds or starts the server, and returns its maintenance
// connection string.
func server() (string, error) {
	if dsn := os.Getenv(EnvServer); dsn != "" {
		return dsn, ping(dsn)
	}
	u, err := user.Current()
	if err != nil {
		return "", err
	}
	dsn := fmt.Sprintf("host=%s user=%s dbname=postgres sslmode=disable", socketDir, quote(u.Username))
	if err := ping(dsn); err == nil {
		return dsn, nil
	} else if os.Geteuid() != 0 {
		return "", fmt.Errorf("%s: %w (set %s to a server's connection string)", socketDir, err, EnvServer)
	}
	if err := startDebianCluster(u.Username); err != nil {
		return "", err
	}
	return dsn, ping(dsn)
}

func ping(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return exec1(ctx, dsn, "SELECT 1")
}

// startDebianCluster starts the newest Debian cluster if it is down, and
// gives the OS user a superuser role (root, running as root).
func startDebianCluster(role string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "pg_lsclusters", "--no-header").Output()
	if err != nil {
		return fmt.Errorf("pg_lsclusters (install Debian's postgresql): %w", err)
	}
	var version, name, status string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 {
			version, name, status = f[0], f[1], f[3]
		}
	}
	if version == "" {
		return errors.New("pg_lsclusters lists no cluster (pg_createcluster one)")
	}
	if !strings.HasPrefix(status, "online") {
		if out, err := exec.CommandContext(ctx, "pg_ctlcluster", version, name, "start").CombinedOutput(); err != nil {
			return fmt.Errorf("pg_ctlcluster %s %s start: %w: %s", version, name, err, out)
		}
	}
	create := fmt.Sprintf(`DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = %s) THEN CREATE ROLE %s SUPERUSER LOGIN; END IF; END $$`,
		"'"+strings.ReplaceAll(role, "'", "''")+"'", pgx.Identifier{role}.Sanitize())
	cmd := exec.CommandContext(ctx, "runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", socketDir, "-d", "postgres", "-c", create)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("create role %s: %w: %s", role, err, out)
	}
	return nil
}
