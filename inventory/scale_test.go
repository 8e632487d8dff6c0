package inventory_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/pgtest"
	"github.com/devid-ssh/devid/inventory"
	"github.com/smallstep/nosql"
	"github.com/smallstep/nosql/database"
)

// Benchmarks of the inventory at fleet size. They use only the exported
// API, so that the same file measures an older devid (go test -bench).
//
//	go test -run '^$' -bench 'StatusChange80k' -benchtime 200x ./inventory
//	go test -run '^$' -bench 'Import100k' -benchtime 1x ./inventory

const fleet = 80_000

var (
	toggles   = map[string]int{} // status changes made to the bench device
	bigMu     sync.Mutex
	bigStores = map[string]*inventory.Store{}
)

// openBackend opens a fresh database of the backend for b.
func openBackend(b *testing.B, backend string) database.DB {
	b.Helper()
	var db database.DB
	var err error
	switch backend {
	case "bbolt":
		db, err = nosql.New("bbolt", filepath.Join(b.TempDir(), "db"))
	case "postgresql":
		db, err = nosql.New("postgresql", pgtest.New(b))
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

// bigStore is a store with fleet devices, written as records (as a
// devid-ca that registered them over time would have), then opened.
func bigStore(b *testing.B, backend string) *inventory.Store {
	bigMu.Lock()
	defer bigMu.Unlock()
	if s := bigStores[backend]; s != nil {
		return s
	}
	db := openBackend(b, backend)
	if err := db.CreateTable([]byte("devid_devices")); err != nil {
		b.Fatal(err)
	}
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	const batch = 5000
	for i := 0; i < fleet; i += batch {
		tx := new(database.Tx)
		for j := i; j < i+batch; j++ {
			d := inventory.Device{ID: fmt.Sprintf("urn:ek:sha256:%064x", j), Name: fmt.Sprintf("host-%05d", j), Kind: inventory.KindHost,
				Status: inventory.StatusActive, StatusChanged: now, EKPublic: []byte("ek"), Serial: fmt.Sprintf("SER%05d", j), Created: now, Updated: now}
			raw, _ := json.Marshal(d)
			tx.Set([]byte("devid_devices"), []byte(d.ID), raw)
		}
		if err := db.Update(tx); err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now()
	s, err := inventory.Open(db, time.Now)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%s: Open with %d devices: %v", backend, fleet, time.Since(start).Round(time.Millisecond))
	bigStores[backend] = s
	return s
}

// BenchmarkStatusChange80k: one status change (quarantine, then activate,
// by name) with 80,000 devices in the inventory; the inventory alone (no
// KRL rebuild hooked).
func BenchmarkStatusChange80k(b *testing.B) {
	parent := b // lives across the runs of each sub-benchmark: the store is made once
	for _, backend := range []string{"bbolt", "postgresql"} {
		b.Run(backend, func(b *testing.B) {
			s := bigStore(parent, backend)
			name := "host-04242"
			b.ResetTimer()
			for range b.N {
				var err error
				toggles[backend]++
				if toggles[backend]%2 == 1 {
					_, err = s.Quarantine("bench", name, "bench", 0)
				} else {
					_, err = s.SetStatus("bench", name, inventory.StatusActive, "bench")
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// importRows is a device import of n rows: pending devices by serial.
func importRows(n int) []byte {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	w.WriteString("name,kind,serial,os,source,sourceid\n")
	for i := range n {
		fmt.Fprintf(w, "mac-%06d,workstation,C02%07d,macOS 15.1,jamf,%d\n", i, i, i)
	}
	w.Flush()
	return buf.Bytes()
}

// vmHWM reads the process's peak resident set (VmHWM), in bytes, and
// resets it when reset is set (/proc/self/clear_refs, 5).
func vmHWM(b *testing.B, reset bool) int64 {
	b.Helper()
	if reset {
		debug.FreeOSMemory()
		if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
			b.Fatalf("reset VmHWM: %v", err)
		}
	}
	st, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmHWM in /proc/self/status")
	return 0
}

// BenchmarkImport100k: a 100,000-row device import (CSV, 6.2 MB) into an
// empty inventory; reports the peak RSS above the process's before it
// (peak-MB), and the rows per second.
func BenchmarkImport100k(b *testing.B) {
	for _, backend := range []string{"bbolt", "postgresql"} {
		b.Run(backend, func(b *testing.B) {
			data := importRows(100_000)
			var peak int64
			var secs float64
			for range b.N {
				b.StopTimer()
				db := openBackend(b, backend)
				s, err := inventory.Open(db, time.Now)
				if err != nil {
					b.Fatal(err)
				}
				base := vmHWM(b, true)
				start := time.Now()
				b.StartTimer()
				rep, err := importReader(s, data)
				b.StopTimer()
				secs += time.Since(start).Seconds()
				if err != nil {
					b.Fatal(err)
				}
				if rep.Counts[inventory.Added] != 100_000 {
					b.Fatalf("report: %v", rep.Counts)
				}
				peak = max(peak, vmHWM(b, false)-base)
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-MB")
			b.ReportMetric(float64(100_000*b.N)/secs, "rows/s")
		})
	}
}
