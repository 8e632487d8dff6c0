package caserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/devid-ssh/devid/caserver/pgchanges"
	"github.com/devid-ssh/devid/internal/atomicfile"
	"github.com/devid-ssh/devid/internal/conffile"
	"github.com/devid-ssh/devid/internal/storebackup"
	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
)

// MigrateOptions say what Migrate moves, and where.
type MigrateOptions struct {
	// Config is the CA's config file: its store (db.dataSource, which must
	// be bbolt) is what is moved.
	Config string
	// DataSource is the PostgreSQL connection string (keyword/value or
	// URL) of the target; Database, if not empty, the database in place of
	// the one it names. The database must exist.
	DataSource, Database string
	// Replace lets Migrate empty devid-ca tables of the target that hold
	// rows (a failed or earlier migration's, another CA's) before it
	// copies. Without it such a target is refused.
	Replace bool
	// WriteConfig rewrites db in the config file to the target, atomically,
	// once the copy is verified; else the config file is left alone and
	// MigrateResult.ConfigDB says what to set.
	WriteConfig bool
}

// MigrateResult says what Migrate did.
type MigrateResult struct {
	Store    string          `json:"store"`    // the bbolt file copied
	Database string          `json:"database"` // the target database's name
	Tables   []MigratedTable `json:"tables"`   // in name order
	Rows     int             `json:"rows"`     // in all tables
	Bytes    int64           `json:"bytes"`    // of keys and values, in all tables
	Replaced []MigratedTable `json:"replaced,omitempty"`
	// KRLVersion is the version of the KRL the store published last: the
	// CA on PostgreSQL goes on from it.
	KRLVersion uint64 `json:"krlVersion"`
	// ConfigDB is the config's new "db" object; ConfigWritten says whether
	// Migrate wrote it into the config file.
	ConfigDB      DBConfig `json:"configDb"`
	ConfigWritten bool     `json:"configWritten"`
	Config        string   `json:"config"`
}

// MigratedTable is a table copied (or, in Replaced, emptied first).
type MigratedTable struct {
	Name  string `json:"name"`
	Rows  int    `json:"rows"`
	Bytes int64  `json:"bytes"` // keys and values
}

// ErrTargetNotEmpty: the target already holds devid-ca tables with rows.
var ErrTargetNotEmpty = errors.New("the target database holds devid-ca data already")

// Migrate copies a stopped CA's bbolt store, every table (step-ca's and
// devid's), into a PostgreSQL database, in one transaction, and verifies
// the copy row by row (every key and value, byte for byte) before it
// commits, and the row counts and bytes again after.
//
// It refuses while a devid-ca serves from the store or has it open, and
// keeps one from starting on it meanwhile (storebackup.LockRestore, and
// bbolt's own lock). It refuses a target that has devid-ca tables
// (smallstep/nosql's layout: nkey and nvalue, both bytea) holding rows,
// unless Replace, and holds the advisory lock a devid-ca takes to create
// its tables (pgchanges.LockKey), so no devid-ca starting on the target
// meanwhile sees half a copy. Any failure leaves the target as it was
// (the transaction is rolled back) and the config file untouched. The
// bbolt file is never written.
func Migrate(ctx context.Context, o MigrateOptions) (*MigrateResult, error) {
	res, err := migrate(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("devid-ca migrate: %w", err)
	}
	return res, nil
}

// nosqlTableDDL creates a table as smallstep/nosql's PostgreSQL driver
// does.
const nosqlTableDDL = "CREATE TABLE IF NOT EXISTS %s (nkey BYTEA CHECK (octet_length(nkey) <= 255), nvalue BYTEA, PRIMARY KEY (nkey))"

// boltSep separates the names of nested buckets in smallstep/nosql's
// bbolt driver, and so in table names.
const boltSep = "/"

func migrate(ctx context.Context, o MigrateOptions) (*MigrateResult, error) {
	cfg, err := LoadConfig(o.Config)
	if err != nil {
		return nil, err
	}
	if cfg.DB.Type != "bbolt" {
		return nil, fmt.Errorf("%s: db.type is %q: only a bbolt store can be migrated", o.Config, cfg.DB.Type)
	}
	store := cfg.path(cfg.DB.DataSource)
	if st, err := os.Stat(store); err != nil {
		return nil, fmt.Errorf("the store: %w", err)
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("the store %s is not a regular file", store)
	}
	cc, err := pgx.ParseConfig(o.DataSource)
	if err != nil {
		return nil, fmt.Errorf("the target's connection string: %w", err)
	}
	if o.Database != "" {
		cc.Database = o.Database
	}
	cc.RuntimeParams["application_name"] = "devid-ca migrate"

	// No devid-ca serves from the store, and none starts on it until the
	// migration is done.
	unlock, err := storebackup.LockRestore(store)
	if err != nil {
		return nil, fmt.Errorf("%w: stop it first (systemctl stop devid-ca)", err)
	}
	defer unlock()
	if _, err := storebackup.Check(store); err != nil {
		return nil, err
	}
	src, err := bolt.Open(store, 0, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("%s: %w: stop it first (systemctl stop devid-ca)", store, storebackup.ErrInUse)
	} else if err != nil {
		return nil, fmt.Errorf("open %s: %w", store, err)
	}
	defer src.Close()

	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connect to the target: %w", err)
	}
	defer conn.Close(context.Background())

	res := &MigrateResult{Store: store, Database: conn.Config().Database, Config: o.Config,
		ConfigDB: DBConfig{Type: "postgresql", DataSource: o.DataSource, Database: o.Database}}
	err = src.View(func(btx *bolt.Tx) error {
		tables, err := boltTables(btx)
		if err != nil {
			return err
		}
		if res.KRLVersion, err = krlVersion(tables); err != nil {
			return err
		}
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", pgchanges.LockKey); err != nil {
				return fmt.Errorf("lock the target: %w", err)
			}
			if res.Replaced, err = emptyTarget(ctx, tx, tables, o.Replace); err != nil {
				return err
			}
			for _, t := range tables {
				mt, err := copyTable(ctx, tx, t)
				if err != nil {
					return err
				}
				res.Tables = append(res.Tables, *mt)
				res.Rows += mt.Rows
				res.Bytes += mt.Bytes
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	// Committed: counted again, as any client now sees it.
	for _, mt := range res.Tables {
		var rows int
		var size int64
		if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT count(*), coalesce(sum(octet_length(nkey) + coalesce(octet_length(nvalue), 0)), 0) FROM %s", pgx.Identifier{mt.Name}.Sanitize())).Scan(&rows, &size); err != nil {
			return nil, fmt.Errorf("count %s after the copy: %w", mt.Name, err)
		}
		if rows != mt.Rows || size != mt.Bytes {
			return nil, fmt.Errorf("table %s holds %d rows (%d bytes) after the commit, the store %d (%d bytes): the target changed under the migration", mt.Name, rows, size, mt.Rows, mt.Bytes)
		}
	}
	if o.WriteConfig {
		if err := writeDBConfig(o.Config, res.ConfigDB); err != nil {
			return nil, fmt.Errorf("the data is copied and verified, but the config is not changed: %w", err)
		}
		res.ConfigWritten = true
	}
	return res, nil
}

// boltTable is a bucket of the store: its table name (nested buckets'
// names joined by boltSep) and the bucket.
type boltTable struct {
	name string
	b    *bolt.Bucket
}

// boltTables lists the store's buckets, nested ones included, by name.
func boltTables(tx *bolt.Tx) ([]boltTable, error) {
	var out []boltTable
	var walk func(prefix string, b *bolt.Bucket) error
	walk = func(name string, b *bolt.Bucket) error {
		if strings.Contains(name, ".") || len(name) > 63 {
			return fmt.Errorf("table %q: a PostgreSQL table cannot have that name (a dot, or over 63 bytes)", name)
		}
		out = append(out, boltTable{name, b})
		return b.ForEach(func(k, v []byte) error {
			if v != nil {
				if len(k) > 255 {
					return fmt.Errorf("table %s: a key of %d bytes: smallstep/nosql's PostgreSQL tables take 255 at most", name, len(k))
				}
				return nil
			}
			return walk(name+boltSep+string(k), b.Bucket(k))
		})
	}
	err := tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walk(string(name), b) })
	slices.SortFunc(out, func(a, b boltTable) int { return strings.Compare(a.name, b.name) })
	return out, err
}

// krlVersion is the version of the KRL stored in tables ("devid_krl",
// "current"): 0 if none.
func krlVersion(tables []boltTable) (uint64, error) {
	for _, t := range tables {
		if t.name != pgchanges.Table {
			continue
		}
		v := t.b.Get([]byte("current"))
		if v == nil {
			return 0, nil
		}
		var p struct {
			Version uint64 `json:"version"`
		}
		if err := json.Unmarshal(v, &p); err != nil {
			return 0, fmt.Errorf("the store's KRL (%s/current): %w", t.name, err)
		}
		return p.Version, nil
	}
	return 0, nil
}

// emptyTarget finds the target's tables in smallstep/nosql's layout and
// the store's tables, and refuses if any holds rows, unless replace: then
// it empties them and returns them, as they were.
func emptyTarget(ctx context.Context, tx pgx.Tx, tables []boltTable, replace bool) ([]MigratedTable, error) {
	rows, err := tx.Query(ctx, `SELECT c.relname,
		bool_or(a.attname = 'nkey' AND a.atttypid = 'bytea'::regtype) AND bool_or(a.attname = 'nvalue' AND a.atttypid = 'bytea'::regtype) AND count(*) = 2
		FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace
		GROUP BY c.relname ORDER BY c.relname`)
	if err != nil {
		return nil, fmt.Errorf("list the target's tables: %w", err)
	}
	layout := map[string]bool{}
	var names []string
	for rows.Next() {
		var name string
		var ok bool
		if err := rows.Scan(&name, &ok); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list the target's tables: %w", err)
		}
		layout[name] = ok
		names = append(names, name)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list the target's tables: %w", err)
	}
	for _, t := range tables {
		if ok, exists := layout[t.name]; exists && !ok {
			return nil, fmt.Errorf("the target has a table %s that is not in devid-ca's layout (nkey bytea, nvalue bytea): not touching it", t.name)
		}
	}
	var full []MigratedTable
	for _, name := range names {
		if !layout[name] {
			continue
		}
		var mt MigratedTable
		mt.Name = name
		if err := tx.QueryRow(ctx, fmt.Sprintf("SELECT count(*), coalesce(sum(octet_length(nkey) + coalesce(octet_length(nvalue), 0)), 0) FROM %s", pgx.Identifier{name}.Sanitize())).Scan(&mt.Rows, &mt.Bytes); err != nil {
			return nil, fmt.Errorf("count the target's %s: %w", name, err)
		}
		if mt.Rows > 0 {
			full = append(full, mt)
		}
	}
	if len(full) == 0 {
		return nil, nil
	}
	if !replace {
		var list []string
		for _, mt := range full {
			list = append(list, fmt.Sprintf("%s (%d rows)", mt.Name, mt.Rows))
		}
		return nil, fmt.Errorf("%w: %s; migrate into an empty database, or empty these tables with --replace", ErrTargetNotEmpty, strings.Join(list, ", "))
	}
	for _, mt := range full {
		if _, err := tx.Exec(ctx, "DELETE FROM "+pgx.Identifier{mt.Name}.Sanitize()); err != nil {
			return nil, fmt.Errorf("empty the target's %s: %w", mt.Name, err)
		}
	}
	return full, nil
}

// copyTable creates t in the target if missing, copies its rows (COPY),
// and reads them back in key order beside the store's, byte for byte.
func copyTable(ctx context.Context, tx pgx.Tx, t boltTable) (*MigratedTable, error) {
	id := pgx.Identifier{t.name}
	if _, err := tx.Exec(ctx, fmt.Sprintf(nosqlTableDDL, id.Sanitize())); err != nil {
		return nil, fmt.Errorf("create table %s: %w", t.name, err)
	}
	mt := &MigratedTable{Name: t.name}
	n, err := tx.CopyFrom(ctx, id, []string{"nkey", "nvalue"}, &bucketRows{c: t.b.Cursor()})
	if err != nil {
		return nil, fmt.Errorf("copy table %s: %w", t.name, err)
	}
	// Read back in key order: PostgreSQL orders bytea as bbolt orders
	// keys, byte by byte.
	rows, err := tx.Query(ctx, fmt.Sprintf("SELECT nkey, nvalue FROM %s ORDER BY nkey", id.Sanitize()))
	if err != nil {
		return nil, fmt.Errorf("read back table %s: %w", t.name, err)
	}
	defer rows.Close()
	c := t.b.Cursor()
	k, v := c.First()
	for rows.Next() {
		for k != nil && v == nil { // a nested bucket: a table of its own
			k, v = c.Next()
		}
		var pk, pv []byte
		if err := rows.Scan(&pk, &pv); err != nil {
			return nil, fmt.Errorf("read back table %s: %w", t.name, err)
		}
		if k == nil {
			return nil, fmt.Errorf("table %s: the target has a row %q the store has not", t.name, pk)
		}
		if !bytes.Equal(pk, k) || !bytes.Equal(pv, v) {
			return nil, fmt.Errorf("table %s: row %d differs after the copy (key %q)", t.name, mt.Rows+1, k)
		}
		mt.Rows++
		mt.Bytes += int64(len(k) + len(v))
		k, v = c.Next()
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read back table %s: %w", t.name, err)
	}
	for k != nil && v == nil {
		k, v = c.Next()
	}
	if k != nil {
		return nil, fmt.Errorf("table %s: the row with key %q is missing after the copy", t.name, k)
	}
	if int64(mt.Rows) != n {
		return nil, fmt.Errorf("table %s: %d rows copied, %d read back", t.name, n, mt.Rows)
	}
	return mt, nil
}

// bucketRows is a pgx.CopyFromSource over a bucket's keys (nested buckets
// skipped): streamed, never all in memory.
type bucketRows struct {
	c    *bolt.Cursor
	k, v []byte
	read bool
}

func (b *bucketRows) Next() bool {
	if !b.read {
		b.k, b.v = b.c.First()
		b.read = true
	} else {
		b.k, b.v = b.c.Next()
	}
	for b.k != nil && b.v == nil {
		b.k, b.v = b.c.Next()
	}
	return b.k != nil
}

func (b *bucketRows) Values() ([]any, error) { return []any{b.k, b.v}, nil }
func (b *bucketRows) Err() error             { return nil }

// writeDBConfig replaces the "db" object of the config file with db,
// keeping everything else as it is (order, indentation), checks that the
// result loads, and writes it atomically with the file's mode.
func writeDBConfig(file string, db DBConfig) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	st, err := os.Stat(file)
	if err != nil {
		return err
	}
	out, err := conffile.ReplaceTopLevel(data, "db", db)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	// Checked as LoadConfig would read it, from a file beside it (relative
	// paths resolve the same way).
	check, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".check-*")
	if err != nil {
		return err
	}
	defer os.Remove(check.Name())
	_, err = check.Write(out)
	if cerr := check.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if _, err := LoadConfig(check.Name()); err != nil {
		return fmt.Errorf("the config with the new db does not load: %w", err)
	}
	return atomicfile.WriteFile(file, out, st.Mode().Perm())
}
