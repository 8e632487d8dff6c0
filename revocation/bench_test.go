package revocation_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/fakeclock"
	"github.com/devid-ssh/devid/internal/pgtest"
	"github.com/devid-ssh/devid/inventory"
	"github.com/smallstep/nosql"
	"github.com/smallstep/nosql/database"
)

// benchDevices are the sizes of the inventory of BenchmarkStatusChange: up
// to the 80,000 devices of the fleet that found a status change took
// 0.84 s.
var benchDevices = []int{1_000, 80_000}

// fillInventory writes n devices (half of them workstations owned by one
// of 1,000 users) straight into the inventory's tables, in one
// transaction: adding them one by one would take hours.
func fillInventory(b *testing.B, db nosql.DB, n int, now time.Time) {
	b.Helper()
	for _, t := range []string{"devid_devices", "devid_users"} {
		if err := db.CreateTable([]byte(t)); err != nil {
			b.Fatal(err)
		}
	}
	tx := new(database.Tx)
	for i := range 1000 {
		u := inventory.User{Email: fmt.Sprintf("user%d@example.com", i), Login: fmt.Sprintf("user%d", i), Created: now, Updated: now}
		v, _ := json.Marshal(u)
		tx.Set([]byte("devid_users"), []byte(u.Email), v)
	}
	for i := range n {
		h := sha256.Sum256([]byte(fmt.Sprint(i)))
		d := inventory.Device{ID: "urn:ek:sha256:" + base64.StdEncoding.EncodeToString(h[:]), Name: fmt.Sprintf("dev%06d", i),
			Kind: inventory.KindHost, Status: inventory.StatusActive, StatusChanged: now, EKPublic: h[:], Created: now, Updated: now}
		if i%2 == 1 {
			d.Kind, d.Owner = inventory.KindWorkstation, fmt.Sprintf("user%d@example.com", i%1000)
		}
		v, _ := json.Marshal(d)
		tx.Set([]byte("devid_devices"), []byte(d.ID), v)
	}
	if err := db.Update(tx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkStatusChange: one device status change (quarantine, then
// activate, alternately), with the KRL rebuild it triggers, in an
// inventory of 1,000 and 80,000 devices; and a rebuild alone. On bbolt and
// on a real PostgreSQL.
//
//	go test -run '^$' -bench StatusChange -benchtime 20x ./revocation
func BenchmarkStatusChange(b *testing.B) {
	for _, run := range []struct {
		backend string
		devices int
	}{{"bbolt", benchDevices[0]}, {"bbolt", benchDevices[1]}, {"postgresql", benchDevices[0]}, {"postgresql", benchDevices[1]}} {
		backend := run.backend
		b.Run(fmt.Sprintf("%s/%d", backend, run.devices), func(b *testing.B) {
			var db nosql.DB
			var err error
			if backend == "bbolt" {
				db, err = nosql.New("bbolt", filepath.Join(b.TempDir(), "db"))
			} else {
				db, err = nosql.New("postgresql", pgtest.New(b))
			}
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { db.Close() })
			f := &fixture{db: db, clk: fakeclock.New(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)), hostCA: signer(nil), userCA: signer(nil), serial: 100}
			fillInventory(b, db, run.devices, f.clk.Now())
			if err := f.open(db); err != nil {
				b.Fatal(err)
			}
			devs := make([]string, 6)
			for i := range devs {
				h := sha256.Sum256([]byte(fmt.Sprint(i * (run.devices / len(devs)))))
				devs[i] = "urn:ek:sha256:" + base64.StdEncoding.EncodeToString(h[:])
			}
			b.Run("change", func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					f.clk.Advance(time.Second)
					d := devs[(i/2)%len(devs)]
					var err error
					if i%2 == 0 {
						_, err = f.inv.Quarantine("bench", d, "bench", 0)
					} else {
						_, err = f.inv.SetStatus("bench", d, inventory.StatusActive, "bench")
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("rebuild", func(b *testing.B) {
				for b.Loop() {
					if err := f.rev.Rebuild(); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
