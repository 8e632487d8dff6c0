package caserver

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"time"

	"github.com/devid-ssh/devid/caserver/adminhttp"
	"github.com/devid-ssh/devid/internal/storebackup"
	"github.com/devid-ssh/devid/revocation"
	stepdb "github.com/smallstep/certificates/db"
	"github.com/smallstep/nosql"
	nosqlbolt "github.com/smallstep/nosql/bolt"
	bolt "go.etcd.io/bbolt"
)

// ErrNotBBolt: the store is PostgreSQL, which devid-ca neither backs up
// nor restores: use pg_dump and pg_restore.
var ErrNotBBolt = errors.New("the store is PostgreSQL: back it up with pg_dump, restore it with pg_restore")

// boltDB returns the bbolt database step-ca opened for the store.
//
// smallstep/nosql keeps its *bbolt.DB in an unexported field and offers no
// snapshot of its own, and a second bolt.Open of the file would wait for
// the lock step-ca holds. So the field is read by reflection: its type is
// checked, and should a nosql release rename or retype it, backups fail
// with this error (and TestBackupRestore with them) rather than read
// anything else.
func boltDB(db nosql.DB) (*bolt.DB, error) {
	if sdb, ok := db.(*stepdb.DB); ok {
		db = sdb.DB
	}
	nb, ok := db.(*nosqlbolt.DB)
	if !ok || nb == nil {
		return nil, ErrNotBBolt
	}
	f := reflect.ValueOf(nb).Elem().FieldByName("db")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*bolt.DB]() || f.IsNil() {
		return nil, errors.New("devid-ca: cannot reach the bbolt database inside smallstep/nosql (its layout changed): no backup")
	}
	return (*bolt.DB)(f.UnsafePointer()), nil
}

// serveBackup answers GET /devid/v1/backup (adminapi.BackupPath), for an
// admin only: a consistent copy of the bbolt store, taken in one read
// transaction while the CA goes on serving and writing.
func (s *Server) serveBackup(w http.ResponseWriter, r *http.Request) {
	admin, ok := adminhttp.AdminName(r, s.adminRoot)
	switch {
	case ok:
	case r.TLS == nil || len(r.TLS.PeerCertificates) == 0:
		writeBackupError(w, http.StatusUnauthorized, "authentication required: present an admin client certificate")
		return
	default:
		writeBackupError(w, http.StatusForbidden, "this client certificate is not an admin certificate")
		return
	}
	if r.Method != http.MethodGet {
		writeBackupError(w, http.StatusMethodNotAllowed, "use GET")
		return
	}
	db, err := boltDB(s.db)
	if errors.Is(err, ErrNotBBolt) {
		writeBackupError(w, http.StatusNotImplemented, err.Error())
		return
	} else if err != nil {
		s.log.Error("backup", "admin", admin, "err", err)
		writeBackupError(w, http.StatusInternalServerError, "internal error; see the CA's log")
		return
	}
	start := time.Now()
	name := "devid-ca-" + s.now().UTC().Format("20060102T150405Z") + ".db"
	n, err := storebackup.WriteTo(db, w, func(size int64) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusOK)
	})
	if err != nil {
		// The status is sent: the client sees a body shorter than its
		// Content-Length.
		s.log.Error("backup failed", "admin", admin, "bytes", n, "err", err)
		return
	}
	s.log.Info("store backed up", "admin", admin, "bytes", n, "duration", time.Since(start).Round(time.Millisecond))
}

func writeBackupError(w http.ResponseWriter, code int, msg string) {
	refuseBody(w, code, msg)
}

// RestoreOptions say what Restore restores, and where.
type RestoreOptions struct {
	// Config is the CA's config file: the store restored is its
	// db.dataSource, which must be bbolt.
	Config string
	// From is the backup: a file GET /devid/v1/backup (devid backup) wrote.
	From string
	// KRLVersionSkip is how far the restored store's next KRL version
	// jumps past the backup's (revocation.SkipVersions): hosts installed
	// the versions published since the backup, and accept only newer ones.
	KRLVersionSkip uint64
	Now            time.Time
}

// RestoreResult says what Restore did.
type RestoreResult struct {
	Store   string            // the store restored
	Kept    string            // where the store it replaced is kept ("" if there was none)
	Info    *storebackup.Info // the backup's tables
	KRLFrom uint64            // the backup's KRL version
	KRLNext uint64            // the version the restored store publishes next, at least
}

// Restore puts a backup in place of a CA's store: it checks the backup
// (storebackup.Check), refuses while a devid-ca serves from the store (or
// has it open), and swaps the store for a copy of the backup by rename,
// keeping the old one beside it. The copy's KRL version jumps by
// KRLVersionSkip first.
func Restore(o RestoreOptions) (*RestoreResult, error) {
	cfg, err := LoadConfig(o.Config)
	if err != nil {
		return nil, err
	}
	if cfg.DB.Type != "bbolt" {
		return nil, fmt.Errorf("devid-ca restore: %s: %w", o.Config, ErrNotBBolt)
	}
	target := cfg.path(cfg.DB.DataSource)
	info, err := storebackup.Check(o.From)
	if err != nil {
		return nil, fmt.Errorf("devid-ca restore: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		return nil, fmt.Errorf("devid-ca restore: %w", err)
	}
	unlock, err := storebackup.Lock(target)
	if err != nil {
		return nil, fmt.Errorf("devid-ca restore: %w: stop it first (systemctl stop devid-ca)", err)
	}
	defer unlock()
	staged, err := storebackup.Stage(o.From, target)
	if err != nil {
		return nil, fmt.Errorf("devid-ca restore: %w", err)
	}
	res := &RestoreResult{Store: target, Info: info}
	err = func() error {
		db, err := nosql.New("bbolt", staged)
		if err != nil {
			return fmt.Errorf("open the copy: %w", err)
		}
		defer db.Close()
		from, to, err := revocation.SkipVersions(db, o.KRLVersionSkip)
		res.KRLFrom, res.KRLNext = from, to+1
		return err
	}()
	if err == nil {
		res.Kept, err = storebackup.Install(staged, target, o.Now)
	}
	if err != nil {
		os.Remove(staged)
		return nil, fmt.Errorf("devid-ca restore: %w", err)
	}
	return res, nil
}
