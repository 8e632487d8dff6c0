// Package storebackup copies devid-ca's embedded store (a bbolt file) while
// the CA serves from it, checks a copy, and puts one in place of a store no
// CA serves from.
//
//   - Snapshot writes a consistent copy of an open database to an unnamed
//     file beside it: bbolt's own Tx.WriteTo in a short read transaction
//     (a long one would hold up writes that grow the store), to be sent
//     from the file afterwards.
//   - Check opens a file read-only and checks it is a bbolt database which
//     holds devid-ca's tables, every key of which can be read.
//   - LockRestore and LockServe keep a restore and a devid-ca serving from
//     the store apart, by a lock file of their own beside it; Lock takes
//     the lock bbolt takes on a database file it opens for writing (flock),
//     so that a store a devid-ca has open is refused, and none can open it
//     until the lock is released. Stage copies a backup beside the store,
//     to be checked, and Install then puts the checked copy in its place
//     by rename, keeping the store it replaces.
//
// A PostgreSQL store is backed up with pg_dump, not here.
package storebackup

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Tables are the tables every devid-ca store holds from its first start:
// devid's inventory and revocation, and step-ca's certificate tables.
// Check refuses a file without them.
func Tables() []string {
	return []string{
		"devid_devices", "devid_users", "devid_audit", "devid_collections",
		"devid_krl", "devid_revoked_serials",
		"x509_certs", "ssh_certs",
	}
}

// Snapshot writes a consistent copy of db to a new file beside it, in one
// read transaction that ends with the copy, and returns the file, open at
// its start, for the caller to read and close. A read transaction held
// open for long stops the store: a write that must grow bbolt's memory map
// waits for every open read transaction, and every new one waits behind
// that write. So a backup sent to a client over the network, at the
// client's pace, is sent from a snapshot, never from the transaction.
//
// The file (mode 0600) is unlinked as soon as it is created: nothing is
// left beside the store whether the copy fails, the caller's client goes
// away, or the process dies; closing it frees its space.
func Snapshot(db *bolt.DB) (*os.File, error) {
	f, err := os.CreateTemp(filepath.Dir(db.Path()), "."+filepath.Base(db.Path())+".backup-*")
	if err != nil {
		return nil, fmt.Errorf("storebackup: snapshot: %w", err)
	}
	err = os.Remove(f.Name())
	if err == nil {
		err = db.View(func(tx *bolt.Tx) error {
			_, err := tx.WriteTo(f)
			return err
		})
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("storebackup: snapshot of %s in %s: %w", db.Path(), f.Name(), err)
	}
	return f, nil
}

// Info describes a store Check read.
type Info struct {
	Size    int64          // bytes
	Entries map[string]int // keys of each table
}

// Check checks that file is a bbolt database that holds every one of
// Tables(), every key of which can be read. It waits at most a few seconds
// for a database another process holds for writing.
//
// bbolt trusts the pages it reads: a damaged one makes it panic, read past
// its memory map, or loop forever. So Check first checks, in plain Go, that
// the pages bbolt will walk form trees within the file (checkPages), then
// has bbolt read every key in a goroutine of its own, with panics and
// faults turned into errors (recover, debug.SetPanicOnFault); not with
// bbolt's Tx.Check, whose own goroutine would crash the program.
func Check(file string) (*Info, error) { return checkAs(file, file) }

// CheckCopy is Check of staged, a copy of the file named (Stage's), which
// its errors name.
func CheckCopy(staged, named string) (*Info, error) { return checkAs(staged, named) }

func checkAs(file, name string) (*Info, error) {
	st, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("storebackup: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("storebackup: %s is not a regular file", name)
	}
	type result struct {
		info *Info
		err  error
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				done <- result{err: fmt.Errorf("storebackup: %s is a damaged bbolt database: %v", name, v)}
			}
		}()
		debug.SetPanicOnFault(true)
		info, err := check(file, name)
		done <- result{info, err}
	}()
	r := <-done
	if r.err != nil {
		return nil, r.err
	}
	r.info.Size = st.Size()
	return r.info, nil
}

func check(file, name string) (*Info, error) {
	if err := checkPages(file); err != nil {
		return nil, fmt.Errorf("storebackup: %s is not a bbolt database devid-ca can read: %w", name, err)
	}
	db, err := bolt.Open(file, 0, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("storebackup: %s is not a bbolt database devid-ca can read: %w", name, err)
	}
	defer db.Close()
	info := &Info{Entries: map[string]int{}}
	err = db.View(func(tx *bolt.Tx) error {
		for _, t := range Tables() {
			if tx.Bucket([]byte(t)) == nil {
				return fmt.Errorf("no table %s: not a devid-ca store", t)
			}
		}
		return tx.ForEach(func(table []byte, b *bolt.Bucket) error {
			n := 0
			err := b.ForEach(func(k, v []byte) error { n++; return nil })
			info.Entries[string(table)] = n
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("storebackup: %s: %w", name, err)
	}
	return info, nil
}

// ErrInUse is returned by Lock and LockRestore when a process holds the
// store open for writing, or serves from it: a devid-ca.
var ErrInUse = errors.New("the store is open in another process (a devid-ca serving from it?)")

// ErrRestoring is returned by LockServe while a restore holds the store.
var ErrRestoring = errors.New("a restore (devid-ca restore) is replacing the store")

// Lock takes, without waiting, the exclusive lock bbolt takes on a
// database file it opens for writing: while it is held no process can
// open the store for writing, and it is refused (ErrInUse) while one has
// it open. A missing file is created empty (mode 0600) to hold the lock,
// and created says so: Install replaces it, and a restore that fails
// removes it. unlock releases the lock.
func Lock(file string) (unlock func(), created bool, err error) {
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		created = true
	} else if errors.Is(err, os.ErrExist) {
		f, err = os.OpenFile(file, os.O_RDWR, 0)
	}
	if err != nil {
		return nil, false, fmt.Errorf("storebackup: %w", err)
	}
	if err := flock(f, syscall.LOCK_EX); err != nil {
		f.Close()
		if created {
			os.Remove(file)
		}
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, fmt.Errorf("storebackup: %s: %w", file, ErrInUse)
		}
		return nil, false, fmt.Errorf("storebackup: lock %s: %w", file, err)
	}
	return func() { f.Close() }, created, nil
}

// RestoreLockFile is the file beside store that a restore locks
// (LockRestore) and a CA serving from store locks too (LockServe):
// .STORE.restore.lock, created (mode 0600) by whichever comes first, and
// never removed.
//
// bbolt's own lock (Lock) is not enough: a devid-ca started during a
// restore waits up to 5 seconds for it, on the file it opened; should the
// restore put a new store in place meanwhile, that devid-ca would serve
// the old one, linked only as STORE.before-restore-TIME.
func RestoreLockFile(store string) string {
	return filepath.Join(filepath.Dir(store), "."+filepath.Base(store)+".restore.lock")
}

// LockRestore takes, without waiting, the exclusive lock on
// RestoreLockFile(store), for a restore: refused (ErrInUse) while a CA
// serves from the store. unlock releases it.
func LockRestore(store string) (unlock func(), err error) {
	return lockRestoreFile(store, syscall.LOCK_EX, ErrInUse)
}

// LockServe takes, without waiting, a shared lock on
// RestoreLockFile(store), for a CA about to open the store and serve from
// it: refused (ErrRestoring) while a restore holds the store. Hold it
// until the store is closed; unlock releases it.
func LockServe(store string) (unlock func(), err error) {
	return lockRestoreFile(store, syscall.LOCK_SH, ErrRestoring)
}

func lockRestoreFile(store string, how int, busy error) (func(), error) {
	file := RestoreLockFile(store)
	f, err := os.OpenFile(file, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("storebackup: %w", err)
	}
	if err := flock(f, how); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("storebackup: %s: %w", store, busy)
		}
		return nil, fmt.Errorf("storebackup: lock %s: %w", file, err)
	}
	return func() { f.Close() }, nil
}

// flock takes a lock on f without waiting (EWOULDBLOCK if another holds
// one that conflicts), retrying a call an interrupt cut short.
func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err != syscall.EINTR {
			return err
		}
	}
}

// Stage copies from into a new temporary file beside to (mode 0600),
// flushed to disk, and returns its path: the copy to check, and then
// Install in place, after any change the caller makes to it. from is read
// once, from its start to its end: it may be a pipe.
func Stage(from, to string) (string, error) {
	src, err := os.Open(from)
	if err != nil {
		return "", fmt.Errorf("storebackup: %w", err)
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Dir(to), "."+filepath.Base(to)+".restore-*")
	if err != nil {
		return "", fmt.Errorf("storebackup: %w", err)
	}
	_, err = io.Copy(tmp, src)
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("storebackup: copy %s: %w", from, err)
	}
	return tmp.Name(), nil
}

// Install puts staged (from Stage, beside to) in place of to by rename, so
// that to is always either the old store or the new one, whole. The old
// store, if it has any content, is kept as TO.before-restore-TIME; Install
// returns its path ("" if none). Hold Lock on to meanwhile.
func Install(staged, to string, now time.Time) (kept string, err error) {
	if st, err := os.Stat(to); err == nil && st.Size() > 0 {
		kept = to + ".before-restore-" + now.UTC().Format("20060102T150405Z")
		if err := os.Link(to, kept); err != nil {
			return "", fmt.Errorf("storebackup: keep the old store: %w", err)
		}
	}
	if err := os.Rename(staged, to); err != nil {
		return kept, fmt.Errorf("storebackup: %w", err)
	}
	if d, err := os.Open(filepath.Dir(to)); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return kept, fmt.Errorf("storebackup: sync %s: %w", filepath.Dir(to), err)
		}
	}
	return kept, nil
}
