package caserver_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/caserver"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/internal/storebackup"
	"github.com/devid-ssh/devid/inventory"
)

// deviceNames lists the CA's devices through the admin API: name, kind,
// status, and ID, one string each, sorted.
func deviceNames(t *testing.T, cl *adminapi.Client) []string {
	t.Helper()
	devs, err := cl.Devices(nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range devs {
		out = append(out, fmt.Sprintf("%s %s %s %s", d.Name, d.Kind, d.Status, d.ID))
	}
	slices.Sort(out)
	return out
}

// copyCA copies a CA directory without its store: a fresh machine with the
// CA's keys and configuration, for a restore.
func copyCA(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if rel == "db" || strings.HasPrefix(rel, "db"+string(filepath.Separator)) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), fi.Mode().Perm())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	return to
}

// TestBackupRestore: a real CA with devices, one quarantined (in the KRL),
// is backed up through the admin API while an admin keeps adding devices;
// the backup checks, and restoring it over the store the CA serves from is
// refused. Restored into a copy of the CA without its store, the CA serves
// the inventory as it was at some moment of the backup (the devices before
// it, and a prefix of those added meanwhile, nothing torn), and a KRL
// version past the one served before the backup.
func TestBackupRestore(t *testing.T) {
	ca := catest.Start(t, nil)
	cl, err := adminapi.NewClient(ca.URL, ca.Roots, &ca.AdminCert)
	if err != nil {
		t.Fatal(err)
	}
	inv := ca.Server.Inventory()
	var ids []string
	for i := range 3 {
		k, _ := rsa.GenerateKey(rand.Reader, 2048)
		der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		d, err := inv.AddDevice("test", inventory.NewDevice{EK: base64.StdEncoding.EncodeToString(der), Name: fmt.Sprintf("host-%d", i), Kind: "host"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.ID)
	}
	if _, err := cl.SetStatus(ids[1], adminapi.StatusQuarantined, "stolen"); err != nil {
		t.Fatal(err)
	}
	before := deviceNames(t, cl)
	krlBefore := ca.Server.PublishedKRL().Version

	// Writes go on during the backup: devices extra-0, extra-1, … in order.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var added []string
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			d, err := cl.AddDevice(adminapi.NewDevice{Name: fmt.Sprintf("extra-%03d", i), Kind: "workstation", Serial: fmt.Sprintf("SN-%03d", i)})
			if err != nil {
				t.Errorf("add a device during the backup: %v", err)
				return
			}
			added = append(added, d.Name)
		}
	})
	// Back up once a write has gone in, so that the copy is taken while
	// they go on.
	waitFor(t, "a device added", func() bool { return len(deviceNames(t, cl)) > len(before) })
	file := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	n, err := cl.Backup(context.Background(), f)
	f.Close()
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	info, err := storebackup.Check(file)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != n || info.Entries["devid_devices"] < len(before) {
		t.Errorf("backup of %d bytes: %+v", n, info)
	}

	// Not over the store a CA serves from.
	_, err = caserver.Restore(caserver.RestoreOptions{Config: ca.Config, From: file, KRLVersionSkip: 1000})
	if !errors.Is(err, storebackup.ErrInUse) {
		t.Errorf("restore over the serving CA's store: %v, want ErrInUse", err)
	}
	// Nor a file that is not a devid-ca store.
	bogus := filepath.Join(t.TempDir(), "bogus.db")
	os.WriteFile(bogus, []byte("not a database"), 0o600)
	if _, err := caserver.Restore(caserver.RestoreOptions{Config: ca.Config, From: bogus, KRLVersionSkip: 1000}); err == nil || !strings.Contains(err.Error(), "not a bbolt database") {
		t.Errorf("restore of a file that is no database: %v", err)
	}
	// Backups are for admins only.
	device, _, _ := leaf(t, ca, "a-device")
	for name, want := range map[string]int{"no certificate": http.StatusUnauthorized, "a device certificate": http.StatusForbidden} {
		var cert *tls.Certificate
		if want == http.StatusForbidden {
			cert = &device
		}
		if code, _, err := get(t, ca.TLSConfig(cert), ca.URL+adminapi.BackupPath); err != nil || code != want {
			t.Errorf("GET %s with %s: HTTP %d %v, want %d", adminapi.BackupPath, name, code, err, want)
		}
	}
	ca.Stop()

	dir := copyCA(t, ca.Dir)
	res, err := caserver.Restore(caserver.RestoreOptions{Config: filepath.Join(dir, caserver.ConfigFile), From: file, KRLVersionSkip: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if res.KRLFrom < krlBefore || res.KRLNext != res.KRLFrom+1001 || res.Kept != "" {
		t.Errorf("restore: %+v; the KRL was at version %d before the backup", res, krlBefore)
	}
	// The restored CA, served from its copied directory, answers the
	// original's admin and trust in its root.
	rca := catest.StartDir(t, dir)
	srv := rca.Server
	rcl, err := adminapi.NewClient(rca.URL, ca.Roots, &ca.AdminCert)
	if err != nil {
		t.Fatal(err)
	}
	restored := deviceNames(t, rcl)
	var extras, rest []string
	for _, d := range restored {
		if strings.HasPrefix(d, "extra-") {
			extras = append(extras, strings.Fields(d)[0])
		} else {
			rest = append(rest, d)
		}
	}
	if !slices.Equal(rest, before) {
		t.Errorf("restored devices:\n%s\nwant, besides extra-*:\n%s", strings.Join(rest, "\n"), strings.Join(before, "\n"))
	}
	if len(extras) > len(added) || !slices.Equal(extras, added[:len(extras)]) {
		t.Errorf("restored extra devices %q: not a prefix of those added in order, %q", extras, added)
	}
	if v := srv.PublishedKRL().Version; v < krlBefore || v < res.KRLNext {
		t.Errorf("restored CA serves KRL version %d; %d before the backup, %d promised", v, krlBefore, res.KRLNext)
	}
	// The restored CA still revokes the quarantined device.
	if d, err := rcl.Device(ids[1]); err != nil || d.Status != adminapi.StatusQuarantined {
		t.Errorf("restored %s: %+v %v", ids[1], d, err)
	}
	if _, err := rcl.SetStatus(ids[0], adminapi.StatusRetired, "after restore"); err != nil {
		t.Errorf("a change after the restore: %v", err)
	}
}
