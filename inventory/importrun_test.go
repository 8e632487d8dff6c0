package inventory_test

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/devid-ssh/devid/inventory"
)

func csvRows(n int, extra string) string {
	var b strings.Builder
	b.WriteString("name,kind,serial,os\n")
	for i := range n {
		fmt.Fprintf(&b, "m-%04d,workstation,SER%04d,%s\n", i, i, extra)
	}
	return b.String()
}

// A large import is applied in batches, each its own transaction: the
// result is what one transaction gives, one audit entry per change, and
// running it again changes nothing.
func TestImportBatches(t *testing.T) {
	s, _ := newStore(t)
	opts := inventory.ImportOptions{Batch: 40}
	rep, err := s.ImportDevicesFrom("op", "a.csv", strings.NewReader(csvRows(333, "macOS 14")), opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Counts[inventory.Added] != 333 || len(rep.Results) != 333 || rep.Results[332].Line != 334 {
		t.Fatalf("report: %v, %d results", rep.Counts, len(rep.Results))
	}
	devs, _ := s.Devices()
	if len(devs) != 333 {
		t.Fatalf("%d devices", len(devs))
	}
	audit, _ := s.Audit("")
	if len(audit) != 333 {
		t.Fatalf("%d audit entries", len(audit))
	}
	// Again, with a change of every row's OS, then unchanged.
	rep, err = s.ImportDevicesFrom("op", "a.csv", strings.NewReader(csvRows(333, "macOS 15")), opts)
	if err != nil || rep.Counts[inventory.Updated] != 333 {
		t.Fatalf("update: %v %v", rep.Counts, err)
	}
	rep, err = s.ImportDevicesFrom("op", "a.csv", strings.NewReader(csvRows(333, "macOS 15")), opts)
	if err != nil || rep.Counts[inventory.Unchanged] != 333 {
		t.Fatalf("re-run: %v %v", rep.Counts, err)
	}
	if d, _ := s.Device("m-0332"); d.OS != "macOS 15" {
		t.Fatalf("last row: %+v", d)
	}
	if audit, _ := s.Audit(""); len(audit) != 666 {
		t.Fatalf("%d audit entries after the update and the re-run, want 666", len(audit))
	}
}

// A bad row anywhere fails the import before any batch is written, naming
// its line and field.
func TestImportBatchesCheckFirst(t *testing.T) {
	s, _ := newStore(t)
	data := csvRows(300, "x") + "bad name,workstation,SERX,x\n"
	_, err := s.ImportDevicesFrom("op", "a.csv", strings.NewReader(data), inventory.ImportOptions{Batch: 50})
	if err == nil || !strings.Contains(err.Error(), "a.csv:302: name:") {
		t.Fatalf("bad last row: %v", err)
	}
	if devs, _ := s.Devices(); len(devs) != 0 {
		t.Fatalf("%d devices written", len(devs))
	}
	// A duplicate across batches too.
	data = csvRows(300, "x") + "m-0001,workstation,SERY,x\n"
	if _, err := s.ImportDevicesFrom("op", "a.csv", strings.NewReader(data), inventory.ImportOptions{Batch: 50}); err == nil || !strings.Contains(err.Error(), "a.csv:302: name:") {
		t.Fatalf("a name twice: %v", err)
	}
	if devs, _ := s.Devices(); len(devs) != 0 {
		t.Fatalf("%d devices written", len(devs))
	}
}

// The bounds: more rows, or more bytes, than allowed fail the import with
// its file (and the line past the bound), before anything is written.
func TestImportLimits(t *testing.T) {
	s, _ := newStore(t)
	_, err := s.ImportDevicesFrom("op", "a.csv", strings.NewReader(csvRows(11, "x")), inventory.ImportOptions{MaxRows: 10})
	if err == nil || !strings.Contains(err.Error(), "a.csv:12: more than 10 rows") {
		t.Fatalf("rows: %v", err)
	}
	_, err = s.ImportDevicesFrom("op", "a.json", strings.NewReader(`[{"name":"a","kind":"host","serial":"S1"},{"name":"b","kind":"host","serial":"S2"}]`), inventory.ImportOptions{MaxRows: 1})
	if err == nil || !strings.Contains(err.Error(), "a.json:1: more than 1 rows") {
		t.Fatalf("JSON rows: %v", err)
	}
	data := csvRows(1000, "x")
	_, err = s.ImportDevicesFrom("op", "a.csv", strings.NewReader(data), inventory.ImportOptions{MaxBytes: 1000})
	if err == nil || !strings.Contains(err.Error(), "a.csv: larger than 1000 bytes") || !errors.Is(err, inventory.ErrTooLarge) {
		t.Fatalf("bytes: %v", err)
	}
	_, err = s.ImportMDMFrom("op", "j.csv", strings.NewReader("Computer Name,Serial Number\n"+strings.Repeat("mac,S1\n", 500)), inventory.MDMOptions{Format: "jamf"}, inventory.ImportOptions{MaxBytes: 100})
	if err == nil || !strings.Contains(err.Error(), "j.csv: larger than 100 bytes") {
		t.Fatalf("MDM bytes: %v", err)
	}
	if devs, _ := s.Devices(); len(devs) != 0 {
		t.Fatalf("%d devices written", len(devs))
	}
	if _, err := s.ImportDevicesFrom("op", "a.csv", strings.NewReader(data), inventory.ImportOptions{MaxBytes: int64(len(data)), MaxRows: 1000}); err != nil {
		t.Fatalf("at the bounds: %v", err)
	}
}

// An MDM import in batches quarantines the devices its export no longer
// lists, once every listed one is applied.
func TestImportMDMBatches(t *testing.T) {
	s, _ := newStore(t)
	jamf := func(n int) string {
		var b strings.Builder
		b.WriteString("Computer Name,Serial Number,Jamf Pro Computer ID\n")
		for i := range n {
			fmt.Fprintf(&b, "Mac %d,C02%04d,%d\n", i, i, i)
		}
		return b.String()
	}
	opts := inventory.MDMOptions{Format: "jamf", Missing: inventory.MissingQuarantine}
	if _, err := s.ImportMDMFrom("op", "j.csv", strings.NewReader(jamf(120)), opts, inventory.ImportOptions{Batch: 25}); err != nil {
		t.Fatal(err)
	}
	// Bind one, so that it can be quarantined.
	if _, err := s.BindEK("op", "mac-7", ekKey(t, 0), "device.bind", "", nil); err != nil {
		t.Fatal(err)
	}
	rep, err := s.ImportMDMFrom("op", "j.csv", strings.NewReader(jamf(100)), opts, inventory.ImportOptions{Batch: 25})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Counts[inventory.Unchanged] != 100 || rep.Counts[inventory.Missing] != 20 || len(rep.Results) != 120 {
		t.Fatalf("report: %v", rep.Counts)
	}
	rep, err = s.ImportMDMFrom("op", "j.csv", strings.NewReader(jamf(7)), opts, inventory.ImportOptions{Batch: 3})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Counts[inventory.MissingQuarantined] != 1 || rep.Counts[inventory.Missing] != 112 {
		t.Fatalf("report: %v", rep.Counts)
	}
	if d, _ := s.Device("mac-7"); d.Status != inventory.StatusQuarantined {
		t.Fatalf("mac-7: %s", d.Status)
	}
}

// A batched import and another Store's status changes of the devices it
// updates, at once: every change of both is there in the end.
func TestReplicasBatchedImport(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		s1, s2, _ := replicas(t, backend)
		if _, err := s1.ImportDevices("op", "a.csv", []byte(csvRows(300, "macOS 14")), false); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(2)
		var ierr, serr error
		var rep *inventory.ImportReport
		go func() {
			defer wg.Done()
			rep, ierr = s1.ImportDevicesFrom("op", "b.csv", strings.NewReader(csvRows(300, "macOS 15")), inventory.ImportOptions{Batch: 20})
		}()
		go func() {
			defer wg.Done()
			serr = retireEach(s2, 30, func(i int) string { return fmt.Sprintf("m-%04d", i*10) })
		}()
		wg.Wait()
		if ierr != nil || serr != nil {
			t.Fatal(ierr, serr)
		}
		if rep.Counts[inventory.Updated] != 300 {
			t.Fatalf("import: %v", rep.Counts)
		}
		devs, _ := s2.Devices()
		retired := 0
		for _, d := range devs {
			if d.OS != "macOS 15" {
				t.Fatalf("%s: os %q: the import's change was lost", d.Name, d.OS)
			}
			if d.Status == inventory.StatusRetired {
				retired++
			}
		}
		if retired != 30 {
			t.Fatalf("%d retired, want 30", retired)
		}
	})
}

// pendingRE matches provisional IDs, random at each import.
var pendingRE = regexp.MustCompile(`urn:devid:pending:[a-z2-7]+`)

// FuzzImportStream: an import read from a stream one byte at a time, in
// batches, checks (dry run) exactly as one read whole: the same report, or
// the same error.
func FuzzImportStream(f *testing.F) {
	s, _ := newStore(f)
	mustUser(f, s, "alice@example.com", "alice")
	f.Add([]byte(csvRows(3, "x")))
	f.Add([]byte("\ufeff# comment\nname,kind,serial\n\"a\nb\",host,S1\n"))
	f.Add([]byte(" \n[{\"name\":\"a\",\"kind\":\"host\",\"serial\":\"S1\"},\n {\"name\":\"b\",\"kind\":\"host\",\"serial\":\"S2\",\"owner\":\"alice@example.com\"}]"))
	f.Add([]byte("[{\"name\":\"a\",\"kind\":\"host\"\n,\"serial\":1}]"))
	f.Add([]byte("name,kind,serial\na,host,S1\na,host,S2\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		whole, werr := s.ImportDevices("fuzz", "f", data, true)
		streamed, serr := s.ImportDevicesFrom("fuzz", "f", iotest.OneByteReader(bytes.NewReader(data)), inventory.ImportOptions{DryRun: true, Batch: 2})
		if (werr == nil) != (serr == nil) || werr != nil && pendingRE.ReplaceAllString(werr.Error(), "P") != pendingRE.ReplaceAllString(serr.Error(), "P") {
			t.Fatalf("whole: %v\nstreamed: %v", werr, serr)
		}
		if werr != nil {
			var ie *inventory.Error
			if !errors.As(werr, &ie) {
				t.Fatalf("error %v is not an *inventory.Error", werr)
			}
			return
		}
		if pendingRE.ReplaceAllString(fmt.Sprint(whole), "P") != pendingRE.ReplaceAllString(fmt.Sprint(streamed), "P") {
			t.Fatalf("whole: %+v\nstreamed: %+v", whole, streamed)
		}
	})
}
