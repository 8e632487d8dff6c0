package revocation_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/fakeclock"
	"github.com/devid-ssh/devid/internal/sshdtest"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/krl"
	"github.com/smallstep/nosql"
	"github.com/smallstep/nosql/database"
	"golang.org/x/crypto/ssh"
)

// crashDB is a database that dies at its n-th write: that write and every
// later one fail without landing, as if devid-ca had been killed just
// before it. Reads go on working (the process is gone; nothing it does
// after reaches the disk).
type crashDB struct {
	nosql.DB
	mu     sync.Mutex
	writes int // writes so far
	at     int // the write that crashes; 0: never
}

var errCrashed = errors.New("crashDB: the process was killed")

func (c *crashDB) write() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	if c.at > 0 && c.writes >= c.at {
		return errCrashed
	}
	return nil
}

// crashed reports whether the crash happened.
func (c *crashDB) crashed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at > 0 && c.writes >= c.at
}

// crashAfter arms the crash at the n-th write from now.
func (c *crashDB) crashAfter(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at = c.writes + n
}

func (c *crashDB) Set(bucket, key, value []byte) error {
	if err := c.write(); err != nil {
		return err
	}
	return c.DB.Set(bucket, key, value)
}

func (c *crashDB) Del(bucket, key []byte) error {
	if err := c.write(); err != nil {
		return err
	}
	return c.DB.Del(bucket, key)
}

func (c *crashDB) CmpAndSwap(bucket, key, old, new []byte) ([]byte, bool, error) {
	if err := c.write(); err != nil {
		return nil, false, err
	}
	return c.DB.CmpAndSwap(bucket, key, old, new)
}

func (c *crashDB) Update(tx *database.Tx) error {
	if err := c.write(); err != nil {
		return err
	}
	return c.DB.Update(tx)
}

func (c *crashDB) CreateTable(bucket []byte) error {
	if err := c.write(); err != nil {
		return err
	}
	return c.DB.CreateTable(bucket)
}

func (c *crashDB) DeleteTable(bucket []byte) error {
	if err := c.write(); err != nil {
		return err
	}
	return c.DB.DeleteTable(bucket)
}

// TestActivateCrash kills devid-ca at every write of `devid device
// activate` in turn, restarts it on the same database, and checks that the
// certificates the device held before its quarantine are still revoked:
// in the KRL served after the restart (krl.IsRevoked, and ssh-keygen -Q),
// and after the activation is retried. A certificate issued after the
// activation is not revoked.
func TestActivateCrash(t *testing.T) {
	for n := 1; ; n++ {
		var finished bool
		t.Run(fmt.Sprintf("crash at write %d", n), func(t *testing.T) {
			raw, err := nosql.New("bbolt", filepath.Join(t.TempDir(), "db"))
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			db := &crashDB{DB: raw}
			f := &fixture{db: raw, clk: fakeclock.New(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)), hostCA: signer(t), userCA: signer(t), serial: 100}
			if err := f.open(db); err != nil {
				t.Fatal(err)
			}
			laptop := f.device(t, "laptop", inventory.KindWorkstation)
			host := f.device(t, "web-1", inventory.KindHost)
			old := []*ssh.Certificate{f.issue(t, laptop, 16*time.Hour), f.issue(t, host, 24*time.Hour)}
			f.clk.Advance(time.Hour)
			for _, d := range []*inventory.Device{laptop, host} {
				if _, err := f.inv.SetStatus("test", d.ID, inventory.StatusQuarantined, "lost"); err != nil {
					t.Fatal(err)
				}
			}
			f.clk.Advance(time.Hour)

			db.crashAfter(n)
			_, aerr := f.inv.SetStatus("test", laptop.ID, inventory.StatusActive, "found")
			if !db.crashed() {
				if aerr != nil {
					t.Fatalf("activate without a crash: %v", aerr)
				}
				finished = true
			}

			// Restart on the same database.
			if err := f.open(raw); err != nil {
				t.Fatalf("restart: %v", err)
			}
			f.wantRevoked(t, "after the restart", old, nil)
			d, err := f.inv.Device(laptop.ID)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("write %d crashed: %v; after the restart the device is %s", n, db.crashed(), d.Status)
			if d.Status != inventory.StatusActive {
				// The operator retries.
				if _, err := f.inv.SetStatus("test", laptop.ID, inventory.StatusActive, "found"); err != nil {
					t.Fatalf("retried activate: %v", err)
				}
			}
			f.clk.Advance(time.Minute)
			fresh := f.issue(t, laptop, 16*time.Hour)
			f.wantRevoked(t, "once active", old, []*ssh.Certificate{fresh})
		})
		if finished || t.Failed() || n > 50 {
			return
		}
	}
}

// wantRevoked checks the served KRL revokes every certificate in revoked
// and none in good, with the krl package and with ssh-keygen -Q.
func (f *fixture) wantRevoked(t *testing.T, when string, revoked, good []*ssh.Certificate) {
	t.Helper()
	p, _ := f.current(t)
	wantKRL(t, when, p.Body, revoked, good)
}

// wantKRL checks the KRL body revokes every certificate in revoked and
// none in good, with the krl package and with ssh-keygen -Q.
func wantKRL(t *testing.T, when string, body []byte, revoked, good []*ssh.Certificate) {
	t.Helper()
	k, err := krl.Parse(body)
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	for _, c := range revoked {
		if !k.IsRevoked(c) {
			t.Errorf("%s: certificate %d (%s) from before the quarantine is not revoked", when, c.Serial, c.KeyId)
		}
	}
	for _, c := range good {
		if k.IsRevoked(c) {
			t.Errorf("%s: certificate %d issued after the activation is revoked", when, c.Serial)
		}
	}
	sshdtest.Need(t, "ssh-keygen")
	dir := t.TempDir()
	krlFile := filepath.Join(dir, "krl")
	if err := os.WriteFile(krlFile, body, 0o644); err != nil {
		t.Fatal(err)
	}
	for i, c := range append(append([]*ssh.Certificate{}, revoked...), good...) {
		file := filepath.Join(dir, fmt.Sprintf("cert%d.pub", i))
		if err := os.WriteFile(file, ssh.MarshalAuthorizedKey(c), 0o644); err != nil {
			t.Fatal(err)
		}
		out, _ := exec.Command("ssh-keygen", "-Q", "-f", krlFile, file).CombinedOutput()
		got := strings.HasSuffix(strings.TrimSpace(string(out)), ": REVOKED")
		if !got && !strings.HasSuffix(strings.TrimSpace(string(out)), ": ok") {
			t.Fatalf("ssh-keygen -Q: %s", out)
		}
		if want := i < len(revoked); got != want {
			t.Errorf("%s: ssh-keygen -Q says certificate %d revoked: %v, want %v", when, c.Serial, got, want)
		}
	}
}

// TestRepairAtStart: a database left by an earlier devid-ca with a device
// active and the certificates it held before its quarantine not revoked
// (the activation committed, the revocations lost) is repaired when
// devid-ca starts, and the repair is audited once.
func TestRepairAtStart(t *testing.T) {
	f := newFixture(t)
	laptop := f.device(t, "laptop", inventory.KindWorkstation)
	old := f.issue(t, laptop, 16*time.Hour)
	f.clk.Advance(time.Hour)
	if _, err := f.inv.SetStatus("test", laptop.ID, inventory.StatusQuarantined, "lost"); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(time.Hour)
	if _, err := f.inv.SetStatus("test", laptop.ID, inventory.StatusActive, "found"); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(time.Minute)
	fresh := f.issue(t, laptop, 16*time.Hour)
	// The damage: the serial revocation is gone.
	if err := f.db.Del([]byte("devid_revoked_serials"), []byte("user:"+strconv.FormatUint(old.Serial, 10))); err != nil {
		t.Fatal(err)
	}
	for restart := range 2 {
		if err := f.open(f.db); err != nil {
			t.Fatal(err)
		}
		f.wantRevoked(t, fmt.Sprintf("restart %d", restart+1), []*ssh.Certificate{old}, []*ssh.Certificate{fresh})
		audit, err := f.inv.Audit(laptop.ID)
		if err != nil {
			t.Fatal(err)
		}
		var repairs []inventory.AuditEntry
		for _, e := range audit {
			if e.Action == "cert.revoke" {
				repairs = append(repairs, e)
			}
		}
		if len(repairs) != 1 || repairs[0].Actor != "devid-ca" || !strings.Contains(repairs[0].Reason, "repaired") ||
			!strings.Contains(string(repairs[0].After), `"serial":"`+strconv.FormatUint(old.Serial, 10)+`"`) {
			t.Fatalf("restart %d: cert.revoke audit entries %+v, want one repair", restart+1, repairs)
		}
	}
}
