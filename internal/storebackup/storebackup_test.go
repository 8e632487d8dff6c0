package storebackup

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// newStore makes a bbolt file with devid-ca's tables (all of them, or all
// but skip) and a record in devid_devices.
func newStore(t testing.TB, path, skip string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range Tables() {
			if name == skip {
				continue
			}
			b, err := tx.CreateBucket([]byte(name))
			if err != nil {
				return err
			}
			if name == "devid_devices" {
				if err := b.Put([]byte("urn:ek:sha256:x"), []byte(`{"name":"host-1"}`)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// TestWriteCheckInstall: a snapshot taken while the store is open checks;
// the store open for writing cannot be locked; once closed, Lock, Stage and
// Install swap it for the copy, keeping the old one.
func TestWriteCheckInstall(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "devid.db")
	db := newStore(t, store, "")
	snap, err := Snapshot(db)
	if err != nil {
		t.Fatal(err)
	}
	// Unnamed: nothing but the store in its directory.
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 1 || ents[0].Name() != "devid.db" {
		t.Errorf("beside the snapshot: %v %v", ents, err)
	}
	b, err := io.ReadAll(snap)
	snap.Close()
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(b))
	backup := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(backup, b, 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := Check(backup)
	if err != nil {
		t.Fatal(err)
	}
	if info.Entries["devid_devices"] != 1 || info.Size != n {
		t.Errorf("Check: %+v", info)
	}
	if _, _, err := Lock(store); !errors.Is(err, ErrInUse) {
		t.Errorf("Lock of a store open for writing: %v, want ErrInUse", err)
	}
	// A change after the copy: the installed copy goes back before it.
	db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("devid_devices")).Put([]byte("later"), []byte("{}")) })
	db.Close()
	unlock, created, err := Lock(store)
	if err != nil || created {
		t.Fatalf("Lock of the closed store: created %v, %v", created, err)
	}
	staged, err := Stage(backup, store)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(staged) != dir {
		t.Errorf("staged in %s, not beside the store", staged)
	}
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	kept, err := Install(staged, store, now)
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	if kept != store+".before-restore-20261202T100000Z" {
		t.Errorf("kept the old store as %q", kept)
	}
	if info, err := Check(store); err != nil || info.Entries["devid_devices"] != 1 {
		t.Errorf("the installed store: %+v %v", info, err)
	}
	if info, err := Check(kept); err != nil || info.Entries["devid_devices"] != 2 {
		t.Errorf("the kept store: %+v %v", info, err)
	}
	if st, err := os.Stat(store); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("installed store: %v %v", st.Mode(), err)
	}
	if _, err := os.Stat(staged); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the staged copy is left: %v", err)
	}
}

// TestRestoreLock: a CA serving (LockServe, shared: several may) keeps a
// restore out (LockRestore: ErrInUse), and a restore keeps a CA out
// (LockServe: ErrRestoring), until the other lets go. Lock creates a
// missing store and says so.
func TestRestoreLock(t *testing.T) {
	store := filepath.Join(t.TempDir(), "devid.db")
	serve1, err := LockServe(store)
	if err != nil {
		t.Fatal(err)
	}
	serve2, err := LockServe(store)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockRestore(store); !errors.Is(err, ErrInUse) {
		t.Errorf("LockRestore while a CA serves: %v, want ErrInUse", err)
	}
	serve1()
	if _, err := LockRestore(store); !errors.Is(err, ErrInUse) {
		t.Errorf("LockRestore while a second CA serves: %v, want ErrInUse", err)
	}
	serve2()
	restore, err := LockRestore(store)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockServe(store); !errors.Is(err, ErrRestoring) || !strings.Contains(err.Error(), "devid-ca restore") {
		t.Errorf("LockServe during a restore: %v, want ErrRestoring", err)
	}
	if _, err := LockRestore(store); !errors.Is(err, ErrInUse) {
		t.Errorf("a second LockRestore: %v, want ErrInUse", err)
	}
	unlock, created, err := Lock(store)
	if err != nil || !created {
		t.Fatalf("Lock of a missing store: created %v, %v", created, err)
	}
	unlock()
	restore()
	serve, err := LockServe(store)
	if err != nil {
		t.Fatalf("LockServe after the restore: %v", err)
	}
	serve()
	if st, err := os.Stat(RestoreLockFile(store)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("the restore lock file: %v %v", st, err)
	}
}

// TestCheckRefuses: not a database, a database without devid-ca's tables,
// a damaged one.
func TestCheckRefuses(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, bytes.Repeat([]byte("x"), 8192), 0o600)
	other := filepath.Join(dir, "other.db")
	newStore(t, other, "devid_krl").Close()
	good := filepath.Join(dir, "good.db")
	newStore(t, good, "").Close()
	b, _ := os.ReadFile(good)
	damaged := filepath.Join(dir, "damaged.db")
	for i := 4096 * 2; i < len(b); i++ { // past the meta pages
		b[i] ^= 0xA5
	}
	os.WriteFile(damaged, b, 0o600)
	for file, want := range map[string]string{
		garbage: "not a bbolt database", other: "no table devid_krl", damaged: "storebackup: ",
		filepath.Join(dir, "missing"): "no such file", dir: "not a regular file",
	} {
		if _, err := Check(file); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check(%s): %v, want %q", filepath.Base(file), err, want)
		}
	}
}

// FuzzCheck: whatever a backup file holds, Check answers (an error or a
// store) and does not crash.
func FuzzCheck(f *testing.F) {
	good := filepath.Join(f.TempDir(), "good.db")
	newStore(f, good, "").Close()
	b, err := os.ReadFile(good)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{})
	f.Add(b[:4096])
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "backup.db")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		Check(p)
	})
}
