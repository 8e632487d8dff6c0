// Package storebackup copies devid-ca's embedded store (a bbolt file) while
// the CA serves from it, checks a copy, and puts one in place of a store no
// CA serves from.
//
//   - WriteTo writes a consistent snapshot from an open database: bbolt's
//     own Tx.WriteTo in a read transaction, which writers do not wait for.
//   - Check opens a file read-only and checks it is a bbolt database which
//     holds devid-ca's tables, every key of which can be read.
//   - Lock takes the lock bbolt takes on a database file it opens for
//     writing (flock), so that a store a devid-ca serves from is refused,
//     and none can open it until the lock is released; Install then puts a
//     checked copy in its place by rename, keeping the store it replaces.
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

// WriteTo writes a consistent copy of db to w, from one read transaction
// (writers go on meanwhile), and returns the bytes written. size, if not
// nil, is told the copy's size before anything is written.
func WriteTo(db *bolt.DB, w io.Writer, size func(int64)) (int64, error) {
	var n int64
	err := db.View(func(tx *bolt.Tx) error {
		if size != nil {
			size(tx.Size())
		}
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("storebackup: write the store: %w", err)
	}
	return n, nil
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
func Check(file string) (*Info, error) {
	st, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("storebackup: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("storebackup: %s is not a regular file", file)
	}
	type result struct {
		info *Info
		err  error
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				done <- result{err: fmt.Errorf("storebackup: %s is a damaged bbolt database: %v", file, v)}
			}
		}()
		debug.SetPanicOnFault(true)
		info, err := check(file)
		done <- result{info, err}
	}()
	r := <-done
	if r.err != nil {
		return nil, r.err
	}
	r.info.Size = st.Size()
	return r.info, nil
}

func check(file string) (*Info, error) {
	if err := checkPages(file); err != nil {
		return nil, fmt.Errorf("storebackup: %s is not a bbolt database devid-ca can read: %w", file, err)
	}
	db, err := bolt.Open(file, 0, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("storebackup: %s is not a bbolt database devid-ca can read: %w", file, err)
	}
	defer db.Close()
	info := &Info{Entries: map[string]int{}}
	err = db.View(func(tx *bolt.Tx) error {
		for _, t := range Tables() {
			if tx.Bucket([]byte(t)) == nil {
				return fmt.Errorf("no table %s: not a devid-ca store", t)
			}
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			n := 0
			err := b.ForEach(func(k, v []byte) error { n++; return nil })
			info.Entries[string(name)] = n
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("storebackup: %s: %w", file, err)
	}
	return info, nil
}

// ErrInUse is returned by Lock when a process holds the store open for
// writing: a devid-ca serves from it.
var ErrInUse = errors.New("the store is open in another process (a devid-ca serving from it?)")

// Lock takes, without waiting, the exclusive lock bbolt takes on a
// database file it opens for writing: while it is held no devid-ca can
// open the store, and it is refused (ErrInUse) while one has it open. A
// missing file is created empty (mode 0600) to hold the lock; Install
// replaces it. unlock releases the lock.
func Lock(file string) (unlock func(), err error) {
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("storebackup: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("storebackup: %s: %w", file, ErrInUse)
		}
		return nil, fmt.Errorf("storebackup: lock %s: %w", file, err)
	}
	return func() { f.Close() }, nil
}

// Stage copies from into a new temporary file beside to (mode 0600, owned,
// when run as root, by the owner of to's directory), flushed to disk, and
// returns its path: the copy Install puts in place,
// after any change the caller makes to it.
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
	if err == nil && os.Geteuid() == 0 {
		// Run as root, the copy is still the service user's (the owner of
		// the store's directory): devid-ca runs as that user.
		if st, serr := os.Stat(filepath.Dir(to)); serr == nil {
			if sys, ok := st.Sys().(*syscall.Stat_t); ok {
				err = tmp.Chown(int(sys.Uid), int(sys.Gid))
			}
		}
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
