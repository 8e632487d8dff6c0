package caserver

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"syscall"
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
// admin only: a consistent copy of the bbolt store, taken in one short
// read transaction into a file beside the store (storebackup.Snapshot)
// while the CA goes on serving and writing, then sent from that file, and
// recorded in the audit trail (action store.backup, subject store, after
// {"bytes": N}).
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
	// From a snapshot beside the store: the store's read transaction lasts
	// as long as the copy to disk, not as long as the client takes.
	snap, err := storebackup.Snapshot(db)
	if err != nil {
		s.log.Error("backup", "admin", admin, "err", err)
		writeBackupError(w, http.StatusInternalServerError, "the CA could not copy its store; see its log")
		return
	}
	defer snap.Close()
	st, err := snap.Stat()
	if err == nil {
		err = s.inv.RecordAudit(admin, "store.backup", "store", "", nil, map[string]int64{"bytes": st.Size()})
	}
	if err != nil {
		s.log.Error("backup", "admin", admin, "err", err)
		writeBackupError(w, http.StatusInternalServerError, "internal error; see the CA's log")
		return
	}
	name := "devid-ca-" + s.now().UTC().Format("20060102T150405Z") + ".db"
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("Content-Length", strconv.FormatInt(st.Size(), 10))
	w.WriteHeader(http.StatusOK)
	// However long the download takes, so long as the client reads: the
	// server's WriteTimeout (writeTimeout from the request) would cut a
	// large store's backup short; writeTimeout without progress ends it.
	pw := &progressWriter{w: w, rc: http.NewResponseController(w), idle: writeTimeout}
	n, err := io.Copy(pw, snap)
	if pw.err != nil {
		s.log.Warn("backup: no write deadline of its own", "admin", admin, "err", pw.err)
	}
	if err != nil {
		// The status is sent: the client sees a body shorter than its
		// Content-Length.
		s.log.Error("backup failed", "admin", admin, "bytes", n, "of", st.Size(), "err", err)
		return
	}
	s.log.Info("store backed up", "admin", admin, "bytes", n, "duration", time.Since(start).Round(time.Millisecond))
}

// progressWriter writes to w with a write deadline idle after each write's
// start: a transfer goes on for as long as the client keeps reading. err
// is the first error setting the deadline (none but http.ErrNotSupported
// is expected).
type progressWriter struct {
	w    io.Writer
	rc   *http.ResponseController
	idle time.Duration
	err  error
}

func (p *progressWriter) Write(b []byte) (int, error) {
	// A connection's deadline is by the wall clock, not the CA's clock.
	if err := p.rc.SetWriteDeadline(time.Now().Add(p.idle)); err != nil && p.err == nil {
		p.err = err
	}
	return p.w.Write(b)
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
	// Owner is who the restored store was given to, run as root: the
	// owner of the CA directory. nil when not run as root.
	Owner *Owner
}

// Owner is a file's owner.
type Owner struct{ UID, GID int }

// Restore puts a backup in place of a CA's store. It copies the backup
// beside the store (reading it once: it may be a pipe) and checks the copy
// (storebackup.CheckCopy); it refuses while a devid-ca serves from the store
// (or has it open) and keeps one from starting meanwhile
// (storebackup.LockRestore); it makes the copy's next KRL version jump by
// KRLVersionSkip, and swaps it in by rename, keeping the old store beside
// it.
//
// Run as root, it gives what it makes (the store's directory if missing,
// the restored store, the lock file) to the owner of the CA directory
// (the config file's), which devid-ca runs as.
func Restore(o RestoreOptions) (*RestoreResult, error) {
	res, err := restore(o)
	if err != nil {
		return nil, fmt.Errorf("devid-ca restore: %w", err)
	}
	return res, nil
}

func restore(o RestoreOptions) (res *RestoreResult, err error) {
	cfg, err := LoadConfig(o.Config)
	if err != nil {
		return nil, err
	}
	if cfg.DB.Type != "bbolt" {
		return nil, fmt.Errorf("%s: %w", o.Config, ErrNotBBolt)
	}
	store := cfg.path(cfg.DB.DataSource)
	res = &RestoreResult{Store: store}
	if os.Geteuid() == 0 {
		if res.Owner, err = ownerOf(filepath.Dir(o.Config)); err != nil {
			return nil, err
		}
	}
	if err := mkdirOwned(filepath.Dir(store), res.Owner); err != nil {
		return nil, err
	}
	staged, err := storebackup.Stage(o.From, store)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.Remove(staged)
		}
	}()
	// The copy is checked, and only it is used: From is not read again.
	if res.Info, err = storebackup.CheckCopy(staged, o.From); err != nil {
		return nil, err
	}

	unlockRestore, err := storebackup.LockRestore(store)
	if err != nil {
		return nil, fmt.Errorf("%w: stop it first (systemctl stop devid-ca)", err)
	}
	defer unlockRestore()
	if err := chown(storebackup.RestoreLockFile(store), res.Owner); err != nil {
		return nil, err
	}
	unlock, created, err := storebackup.Lock(store)
	if err != nil {
		return nil, fmt.Errorf("%w: stop it first (systemctl stop devid-ca)", err)
	}
	defer unlock()
	defer func() {
		if err != nil && created {
			os.Remove(store) // Lock made it, empty, to hold the lock
		}
	}()

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
	if err != nil {
		return nil, err
	}
	if err := chown(staged, res.Owner); err != nil {
		return nil, err
	}
	if res.Kept, err = storebackup.Install(staged, store, o.Now); err != nil {
		return nil, err
	}
	return res, nil
}

func ownerOf(path string) (*Owner, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fmt.Errorf("%s: no owner", path)
	}
	return &Owner{UID: int(sys.Uid), GID: int(sys.Gid)}, nil
}

// chown gives file to owner, if not nil.
func chown(file string, owner *Owner) error {
	if owner == nil {
		return nil
	}
	return os.Lchown(file, owner.UID, owner.GID)
}

// mkdirOwned makes dir (mode 0700) and any missing parent, each given to
// owner if not nil; directories that exist are left as they are.
func mkdirOwned(dir string, owner *Owner) error {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, d := range missing {
		if err := chown(d, owner); err != nil {
			return err
		}
	}
	return nil
}
