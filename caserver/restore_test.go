package caserver_test

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/caserver"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/internal/storebackup"
)

// backedUp starts a CA with a device "before", backs it up (the file is
// the test's, mode 0600), adds a device "after", and stops the CA.
func backedUp(t *testing.T) (*catest.CA, string) {
	t.Helper()
	ca := catest.Start(t, nil)
	cl, err := adminapi.NewClient(ca.URL, ca.Roots, &ca.AdminCert)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.AddDevice(adminapi.NewDevice{Name: "before", Kind: "workstation", Serial: "SN-1"}); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "backup.db")
	ca.Backup(t, file)
	if _, err := cl.AddDevice(adminapi.NewDevice{Name: "after", Kind: "workstation", Serial: "SN-2"}); err != nil {
		t.Fatal(err)
	}
	ca.Stop()
	return ca, file
}

// hasDevice says whether the CA in dir, opened as devid-ca serve opens it,
// has a device of that name.
func hasDevice(t *testing.T, srv *caserver.Server, name string) bool {
	t.Helper()
	_, err := srv.Inventory().Device(name)
	return err == nil
}

func ownerOf(t *testing.T, file string) (uid, gid int, mode os.FileMode) {
	t.Helper()
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	return int(sys.Uid), int(sys.Gid), st.Mode()
}

// TestRestoreAsRoot: restore run as root on a fresh machine (a CA
// directory, owned by the service user, without db/) gives the new db/,
// the restored store and the lock file to the CA directory's owner, from
// a backup only root can read. A restore that fails after the store was
// locked leaves no empty store behind.
func TestRestoreAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("not root: restore's hand-over to the CA directory's owner is untested")
		}
		t.Skip("not root")
	}
	const uid, gid = 4321, 4322
	ca, file := backedUp(t)
	dir := copyCA(t, ca.Dir)
	err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, caserver.ConfigFile)
	store := filepath.Join(dir, "db", "devid.db")

	// Fails once the store is locked: no KRL version past the backup's.
	_, err = caserver.Restore(caserver.RestoreOptions{Config: cfg, From: file, KRLVersionSkip: ^uint64(0)})
	if err == nil || !strings.Contains(err.Error(), "cannot skip") {
		t.Fatalf("restore skipping every KRL version: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Dir(store))
	for _, e := range ents {
		if e.Name() != filepath.Base(storebackup.RestoreLockFile(store)) {
			t.Errorf("left by a failed restore: %s", e.Name())
		}
	}

	res, err := caserver.Restore(caserver.RestoreOptions{Config: cfg, From: file, KRLVersionSkip: 1000, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Owner == nil || *res.Owner != (caserver.Owner{UID: uid, GID: gid}) {
		t.Errorf("restore gave the store to %+v, want %d:%d", res.Owner, uid, gid)
	}
	for file, perm := range map[string]os.FileMode{
		filepath.Dir(store): os.ModeDir | 0o700, store: 0o600, storebackup.RestoreLockFile(store): 0o600,
	} {
		if u, g, mode := ownerOf(t, file); u != uid || g != gid || mode != perm {
			t.Errorf("%s: owner %d:%d mode %v, want %d:%d %v", file, u, g, mode, uid, gid, perm)
		}
	}
	srv := catest.StartDir(t, dir).Server
	if !hasDevice(t, srv, "before") || hasDevice(t, srv, "after") {
		t.Errorf("the restored CA does not serve the backup's devices")
	}
}

// fifo makes a named pipe that gives content to its first reader, and
// nothing to any later one: it waits for a writer that never comes.
func fifo(t *testing.T, content []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "backup.fifo")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f, err := os.OpenFile(p, os.O_WRONLY, 0) // waits for a reader
		if err != nil {
			t.Error(err)
			return
		}
		f.Write(content)
		f.Close()
	}()
	t.Cleanup(func() {
		// A reader lets the writer's open return, if nothing read.
		if f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			<-done
			f.Close()
		}
	})
	return p
}

// TestRestoreReadsTheBackupOnce: restore reads its backup once, checks
// what it read, and installs that: from a pipe, the backup is restored.
func TestRestoreReadsTheBackupOnce(t *testing.T) {
	ca, file := backedUp(t)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dir := copyCA(t, ca.Dir)
	from := fifo(t, b)
	type result struct {
		res *caserver.RestoreResult
		err error
	}
	restored := make(chan result, 1)
	go func() {
		res, err := caserver.Restore(caserver.RestoreOptions{Config: filepath.Join(dir, caserver.ConfigFile),
			From: from, KRLVersionSkip: 1000, Now: time.Now()})
		restored <- result{res, err}
	}()
	var r result
	select {
	case r = <-restored:
	case <-time.After(time.Minute): // bounds a hang only
		// A second reader waits for a writer: this one ends its read.
		if f, err := os.OpenFile(from, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
		t.Fatalf("restore still reads its backup after a minute: a second read? %v", <-restored)
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.res.Info.Size != int64(len(b)) || r.res.Info.Entries["devid_devices"] != 1 {
		t.Errorf("restored %+v from a backup of %d bytes with one device", r.res.Info, len(b))
	}
	if info, err := storebackup.Check(r.res.Store); err != nil || info.Entries["devid_devices"] != 1 {
		t.Errorf("the restored store: %+v %v", info, err)
	}
}

// openedBy counts this process's descriptors open on file.
func openedBy(file string) int {
	fds, _ := os.ReadDir("/proc/self/fd")
	n := 0
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && l == file {
			n++
		}
	}
	return n
}

// TestServeDuringRestore: a CA that starts while a restore holds the store
// refuses at once, saying why, rather than wait for bbolt's lock on the
// store it opened and, once the restore has put the backup in its place,
// serve the old one; started after, it serves the backup. A restore while
// a CA serves is refused.
func TestServeDuringRestore(t *testing.T) {
	ca, file := backedUp(t)
	store := filepath.Join(ca.Dir, "db", "devid.db")
	cfg, err := caserver.LoadConfig(ca.Config)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	// A restore, as Restore does it, with a CA starting half way.
	unlockRestore, err := storebackup.LockRestore(store)
	if err != nil {
		t.Fatal(err)
	}
	unlock, _, err := storebackup.Lock(store)
	if err != nil {
		t.Fatal(err)
	}
	staged, err := storebackup.Stage(file, store)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		srv *caserver.Server
		err error
	}
	started := make(chan result, 1)
	go func() {
		srv, err := caserver.New(cfg, caserver.Options{Logger: log})
		started <- result{srv, err}
	}()
	// Until it gives up, or has the store open (waiting for its lock).
	var r result
	waitFor(t, "the CA to refuse or open the store", func() bool {
		select {
		case r = <-started:
			return true
		default:
			return openedBy(store) > 1
		}
	})
	if _, err := storebackup.Install(staged, store, time.Now()); err != nil {
		t.Fatal(err)
	}
	unlock()
	unlockRestore()
	if r.srv == nil && r.err == nil {
		select {
		case r = <-started:
		case <-time.After(time.Minute): // bounds a hang only
			t.Fatal("caserver.New did not return within a minute")
		}
	}
	if r.err == nil {
		if hasDevice(t, r.srv, "after") {
			t.Errorf("a CA started during a restore serves the store it replaced")
		}
		r.srv.Close()
		t.Fatal("a CA started during a restore: no error")
	}
	if !errors.Is(r.err, storebackup.ErrRestoring) || !strings.Contains(r.err.Error(), "devid-ca restore") {
		t.Errorf("a CA started during a restore: %v, want ErrRestoring", r.err)
	}

	// After it: the backup.
	srv := catest.StartDir(t, ca.Dir).Server
	if !hasDevice(t, srv, "before") || hasDevice(t, srv, "after") {
		t.Errorf("the CA started after the restore does not serve the backup")
	}
	// And no restore while it serves.
	_, err = caserver.Restore(caserver.RestoreOptions{Config: ca.Config, From: file, KRLVersionSkip: 1000})
	if !errors.Is(err, storebackup.ErrInUse) {
		t.Errorf("restore while a CA serves: %v, want ErrInUse", err)
	}
	ents, _ := os.ReadDir(filepath.Dir(store))
	for _, e := range ents {
		if strings.Contains(e.Name(), ".restore-") {
			t.Errorf("left by a refused restore: %s", e.Name())
		}
	}
}
