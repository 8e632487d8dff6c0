package inventory_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/inventory"
)

func readMDM(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "mdm", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantDevice is what an MDM import should make of one device.
type wantDevice struct {
	name, serial, assetTag, owner, os, sourceID string
}

func checkDevices(t *testing.T, s *inventory.Store, source string, want []wantDevice) {
	t.Helper()
	for _, w := range want {
		d, err := s.Device(w.name)
		if err != nil {
			t.Errorf("device %s: %v", w.name, err)
			continue
		}
		got := wantDevice{d.Name, d.Serial, d.AssetTag, d.Owner, d.OS, d.SourceID}
		if got != w || d.Source != source || d.Status != inventory.StatusPending || d.Kind != inventory.KindWorkstation {
			t.Errorf("device %s: %+v (source %q, %s, %s), want %+v from %s, pending workstation", w.name, got, d.Source, d.Status, d.Kind, w, source)
		}
	}
}

var jamfFleet = []wantDevice{
	{"alice-s-macbook-pro", "C02XK1ABJG5H", "IT-0042", "alice@example.com", "macOS 14.4.1", "1"},
	{"build-mac-01", "H4TX90PQ1B", "", "", "macOS 15.1", "2"},
	{"bob-s-macbook-air", "FVFHX3Q7Q6L4", "IT-0077", "bob@example.com", "macOS 15.0.1", "3"},
}

var intuneFleet = []wantDevice{
	{"desktop-carol01", "5CG3281XYZ", "", "carol@example.com", "Windows 10.0.22631.4460", "0f3c4b1e-7d2a-4c55-9b1e-2a6f8e000001"},
	// The UPN is no user; the email address is.
	{"dave-s-thinkpad", "PF4ABC12", "", "dave.smith@example.com", "Windows 10.0.26100.2314", "0f3c4b1e-7d2a-4c55-9b1e-2a6f8e000002"},
	{"kiosk-lobby", "MXL1234ABC", "", "", "Windows 10.0.19045.5131", "0f3c4b1e-7d2a-4c55-9b1e-2a6f8e000003"},
}

// TestImportMDMExports imports each MDM's JSON and CSV export of one fleet:
// the devices are added pending, with normalised names (said in the note),
// owners matched to users without regard to case, OS, source and the
// MDM's ID; importing the other format of the same MDM, and the same file
// again, changes nothing and writes no audit entry.
func TestImportMDMExports(t *testing.T) {
	for _, tc := range []struct {
		format, first, second string
		want                  []wantDevice
		renamed               []string
	}{
		{"jamf", "jamf-computers-inventory.json", "jamf-advanced-search.csv", jamfFleet, []string{`"Alice's MacBook Pro" normalised to "alice-s-macbook-pro"`, `"Bob’s MacBook Air" normalised to "bob-s-macbook-air"`}},
		{"jamf", "jamf-advanced-search.csv", "jamf-computers-inventory.json", jamfFleet, nil},
		{"intune", "intune-managed-devices.json", "intune-all-devices.csv", intuneFleet, []string{`"DESKTOP-CAROL01" normalised to "desktop-carol01"`, `"Dave's ThinkPad" normalised to "dave-s-thinkpad"`}},
		{"intune", "intune-all-devices.csv", "intune-managed-devices.json", intuneFleet, nil},
	} {
		t.Run(tc.first, func(t *testing.T) {
			s, _ := newStore(t)
			for _, u := range []string{"alice@example.com", "bob@example.com", "carol@example.com", "dave.smith@example.com"} {
				mustUser(t, s, u, strings.NewReplacer("@example.com", "", ".", "").Replace(u))
			}
			opts := inventory.MDMOptions{Format: tc.format}
			dry, err := s.ImportMDM("op", tc.first, readMDM(t, tc.first), opts, true)
			if err != nil {
				t.Fatal(err)
			}
			if devs, _ := s.Devices(); len(devs) != 0 || !dry.DryRun || dry.Counts[inventory.Added] != 3 {
				t.Fatalf("dry run: %d devices written, report %+v", len(devs), dry.Counts)
			}
			rep, err := s.ImportMDM("op", tc.first, readMDM(t, tc.first), opts, false)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Counts[inventory.Added] != 3 || rep.Counts[inventory.Missing] != 0 || len(rep.Results) != 3 {
				t.Fatalf("report %+v", rep)
			}
			notes := ""
			for _, r := range rep.Results {
				if r.Line < 2 {
					t.Errorf("result %+v: no line", r)
				}
				notes += r.Note + "\n"
			}
			for _, want := range tc.renamed {
				if !strings.Contains(notes, want) {
					t.Errorf("notes lack %s:\n%s", want, notes)
				}
			}
			checkDevices(t, s, tc.format, tc.want)
			audit, _ := s.Audit("")
			for _, again := range []string{tc.first, tc.second} {
				rep, err := s.ImportMDM("op", again, readMDM(t, again), opts, false)
				if err != nil {
					t.Fatal(err)
				}
				if rep.Counts[inventory.Unchanged] != 3 || len(rep.Results) != 3 {
					t.Errorf("import of %s after %s: %+v, want everything unchanged", again, tc.first, rep.Results)
				}
			}
			if after, _ := s.Audit(""); len(after) != len(audit) {
				t.Errorf("unchanged imports wrote %d audit entries", len(after)-len(audit))
			}
		})
	}
}

// TestImportMDMKeepsAndAdopts: a device registered by hand (with its EK,
// active) whose serial the export has is adopted: its name, source and
// the MDM's ID are the export's, its status, kind, EK and what the export
// leaves empty are kept. --kind and --collection set every listed device.
func TestImportMDMKeepsAndAdopts(t *testing.T) {
	s, _ := newStore(t)
	mustUser(t, s, "alice@example.com", "alice")
	mustUser(t, s, "bob@example.com", "bob")
	pemA, idA := ek(t, 0)
	if _, err := s.AddDevice("op", inventory.NewDevice{EK: pemA, Name: "ci-runner", Kind: "host", Serial: "h4tx90pq1b", OS: "macOS 15.1 (hand)", Owner: "bob@example.com"}); err != nil {
		t.Fatal(err)
	}
	rep, err := s.ImportMDM("op", "jamf.json", readMDM(t, "jamf-computers-inventory.json"), inventory.MDMOptions{Format: "jamf"}, false)
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.Device(idA)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "build-mac-01" || d.Status != inventory.StatusActive || d.Kind != inventory.KindHost || d.Owner != "bob@example.com" ||
		d.Source != "jamf" || d.SourceID != "2" || d.OS != "macOS 15.1" || d.EKPublic == nil || d.Serial != "H4TX90PQ1B" {
		t.Fatalf("adopted device: %+v", d)
	}
	if rep.Counts[inventory.Updated] != 1 || rep.Counts[inventory.Added] != 2 {
		t.Fatalf("report %+v", rep.Counts)
	}
	// --kind and --collection: every listed device.
	rep, err = s.ImportMDM("op", "jamf.json", readMDM(t, "jamf-computers-inventory.json"), inventory.MDMOptions{Format: "jamf", Kind: "workstation", Collection: "macs"}, false)
	if err != nil {
		t.Fatal(err)
	}
	devs, _ := s.Devices()
	for _, d := range devs {
		if d.Kind != inventory.KindWorkstation || d.Collection != "macs" {
			t.Errorf("%s: kind %s collection %q, want workstation in macs", d.Name, d.Kind, d.Collection)
		}
	}
	if rep.Counts[inventory.Updated] != 3 {
		t.Errorf("report %+v", rep.Counts)
	}
}

// TestImportMDMRefusals: what an MDM import refuses, naming the file, the
// line and the export's field; nothing is written.
func TestImportMDMRefusals(t *testing.T) {
	s, _ := newStore(t)
	mustUser(t, s, "alice@example.com", "alice")
	jamfJSON := string(readMDM(t, "jamf-computers-inventory.json"))
	intuneCSV := string(readMDM(t, "intune-all-devices.csv"))
	for _, tc := range []struct {
		name, format, data, want string
	}{
		{"unknown owner", "jamf", jamfJSON, `f:75: userAndLocation.username: no user "bob@example.com"`},
		{"unknown UPN and email", "intune", intuneCSV, `f:2: Primary user UPN: no user "Carol@Example.com", nor Primary user email address "carol@example.com"`},
		{"name collision", "jamf", "Computer Name,Serial Number\nAlice's Mac,S1\nalice-s  mac,S2\n",
			`f:3: Computer Name: "alice-s  mac" and line 2's "Alice's Mac" are both "alice-s-mac"`},
		{"nothing left of the name", "jamf", "Computer Name,Serial Number\n'''',S1\n", `f:2: Computer Name: "''''" has no letter or digit`},
		{"no serial", "intune", "Device name,Serial number\nkiosk,\n", `f:2: Serial number: empty: devid matches`},
		{"bad serial", "intune", "Device name,Serial number\nkiosk,VMware-56 4d\n", `f:2: Serial number: "VMware-56 4d": want`},
		{"missing column", "jamf", "Computer Name,Asset Tag\nm,A\n", `f:1: missing column "Serial Number": not a Jamf Pro export`},
		{"the other MDM's CSV", "jamf", intuneCSV, `it looks like Intune (--format intune)'s`},
		{"one page of Jamf", "jamf", `{"totalCount": 250, "results": [{"general": {"name": "m"}, "hardware": {"serialNumber": "S"}}]}`,
			"f:1: the file holds 1 of the 250 computers"},
		{"one page of Graph", "intune", `{"value": [{"deviceName": "m", "serialNumber": "S"}], "@odata.nextLink": "https://graph.microsoft.com/v1.0/deviceManagement/managedDevices?$skiptoken=x"}`,
			"f:1: the file is one page of the list"},
		{"no results", "jamf", `{"totalCount": 0}`, `f:1: no "results" array`},
		{"section not asked for", "jamf", "[\n{\"id\": \"1\", \"general\": {\"name\": \"m\"}}\n]", "f:2: hardware.serialNumber: missing (ask for the HARDWARE section"},
		{"not an object", "intune", `{"value": [1]}`, "f:1: a managedDevice is a JSON object, not a number"},
		{"wrong type", "intune", "{\"value\": [\n{\"deviceName\": 7}]}", "f:2: managedDevice: json: cannot unmarshal number"},
		{"trailing data", "intune", `[{"deviceName": "m", "serialNumber": "S"}] x`, "f:1: trailing data"},
		{"bad format", "airwatch", "x", `format: "airwatch": want jamf or intune`},
		{"empty", "jamf", " \n", "f: empty Jamf Pro export"},
		{"header only", "intune", "Device name,Serial number\n", "f: no managedDevice in the Intune export"},
		{"control character", "intune", "Device name,Serial number\n\"a\x1bb\",S\n", "f:2: Device name: control character U+001B"},
		{"long OS", "intune", "Device name,Serial number,OS\nm,S," + strings.Repeat("x", 200) + "\n", "f:2: OS: 200 bytes (os)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.ImportMDM("op", "f", []byte(tc.data), inventory.MDMOptions{Format: tc.format}, false)
			var ie *inventory.Error
			if !errors.As(err, &ie) || !errors.Is(err, inventory.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an invalid-input error with %q", err, tc.want)
			}
		})
	}
	for _, opts := range []inventory.MDMOptions{{Format: "jamf", Missing: "delete"}, {Format: "jamf", Kind: "laptop"}, {Format: "jamf", Collection: "a b"}} {
		if _, err := s.ImportMDM("op", "f", []byte(jamfJSON), opts, false); !errors.Is(err, inventory.ErrInvalid) {
			t.Errorf("options %+v: %v, want refused", opts, err)
		}
	}
	if devs, _ := s.Devices(); len(devs) != 0 {
		t.Fatalf("%d devices written by refused imports", len(devs))
	}
}

// TestImportMDMMissing: the devices of the export's source that it no
// longer lists are reported before anything changes (a dry run too); with
// quarantine an active one is quarantined in the import's transaction,
// audited with the file; a pending one is left pending; one quarantined
// with an end loses the end; other sources, retired devices and, with
// --collection, other collections are left alone.
func TestImportMDMMissing(t *testing.T) {
	s, _ := newStore(t)
	mustUser(t, s, "alice@example.com", "alice")
	mustUser(t, s, "bob@example.com", "bob")
	full := readMDM(t, "jamf-advanced-search.csv")
	if _, err := s.ImportMDM("op", "full.csv", full, inventory.MDMOptions{Format: "jamf"}, false); err != nil {
		t.Fatal(err)
	}
	// Bind two of them, as their first attestation would; quarantine one
	// of those for an hour. Add a device by hand and one from Intune.
	for i, name := range []string{"alice-s-macbook-pro", "build-mac-01"} {
		k, _ := ek(t, i)
		if _, err := s.ImportDevices("op", "bind.csv", []byte("name,kind,serial,ek\n"+name+",workstation,"+map[int]string{0: "C02XK1ABJG5H", 1: "H4TX90PQ1B"}[i]+","+jsonlessPEM(k)+"\n"), false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Quarantine("op", "build-mac-01", "updating", time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddDevice("op", inventory.NewDevice{Name: "by-hand", Kind: "host", Serial: "HAND1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImportMDM("op", "i.json", readMDM(t, "intune-managed-devices.json"), inventory.MDMOptions{Format: "intune"}, false); !errors.Is(err, inventory.ErrInvalid) {
		t.Fatalf("intune import with unknown users: %v", err)
	}
	// Only the header and an unknown Mac: the three Jamf devices are missing.
	only := []byte("Computer Name,Serial Number\nnew-mac,NEW1\n")
	audit, _ := s.Audit("")
	for _, dry := range []bool{true, false} {
		rep, err := s.ImportMDM("op", "only.csv", only, inventory.MDMOptions{Format: "jamf", Missing: "keep"}, dry)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Counts[inventory.Missing] != 3 || rep.Counts[inventory.MissingQuarantined] != 0 || rep.Counts[inventory.Added] != 1 {
			t.Fatalf("keep, dry run %v: %+v", dry, rep.Counts)
		}
		for _, r := range rep.Results {
			if r.Result == inventory.Missing && (r.Line != 0 || r.Note == "" || len(r.Changes) != 0) {
				t.Errorf("missing result %+v", r)
			}
		}
	}
	if after, _ := s.Audit(""); len(after) != len(audit)+1 { // new-mac's device.add
		t.Fatalf("--missing keep wrote %d audit entries, want 1", len(after)-len(audit))
	}
	only = []byte("Computer Name,Serial Number\nnew-mac,NEW1\n")
	dry, err := s.ImportMDM("op", "only.csv", only, inventory.MDMOptions{Format: "jamf", Missing: "quarantine"}, true)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.ImportMDM("op", "only.csv", only, inventory.MDMOptions{Format: "jamf", Missing: "quarantine"}, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*inventory.ImportReport{dry, rep} {
		if r.Counts[inventory.Missing] != 1 || r.Counts[inventory.MissingQuarantined] != 2 || r.Counts[inventory.Unchanged] != 1 {
			t.Fatalf("quarantine (dry run %v): %+v", r.DryRun, r.Results)
		}
	}
	byName := map[string]inventory.ImportResult{}
	for _, r := range rep.Results {
		byName[r.Name] = r
	}
	if r := byName["bob-s-macbook-air"]; r.Result != inventory.Missing || !strings.Contains(r.Note, "left pending") || !strings.Contains(r.Note, "devid device retire bob-s-macbook-air") {
		t.Errorf("pending device: %+v", r)
	}
	if r := byName["build-mac-01"]; r.Result != inventory.MissingQuarantined || !strings.Contains(strings.Join(r.Changes, ","), "quarantineUntil: ") {
		t.Errorf("device quarantined with an end: %+v", r)
	}
	for name, want := range map[string]inventory.Status{"alice-s-macbook-pro": inventory.StatusQuarantined, "build-mac-01": inventory.StatusQuarantined,
		"bob-s-macbook-air": inventory.StatusPending, "by-hand": inventory.StatusPending, "new-mac": inventory.StatusPending} {
		d, err := s.Device(name)
		if err != nil || d.Status != want || d.QuarantineUntil != nil {
			t.Errorf("%s: %+v %v, want %s with no end", name, d, err, want)
			continue
		}
		if want == inventory.StatusQuarantined && d.StatusReason != "not in jamf export only.csv" {
			t.Errorf("%s: reason %q", name, d.StatusReason)
		}
	}
	if ends, _ := s.QuarantineEnds(); len(ends) != 0 {
		t.Errorf("ends left: %+v", ends)
	}
	d, _ := s.Device("alice-s-macbook-pro")
	entries, _ := s.Audit(d.ID)
	if last := entries[len(entries)-1]; last.Action != "device.quarantine" || last.Actor != "op" || last.Reason != "not in jamf export only.csv" {
		t.Errorf("audit: %+v", last)
	}
	// Again: the two are quarantined already, nothing more to do.
	rep, err = s.ImportMDM("op", "only.csv", only, inventory.MDMOptions{Format: "jamf", Missing: "quarantine"}, false)
	if err != nil || rep.Counts[inventory.Missing] != 3 || rep.Counts[inventory.MissingQuarantined] != 0 {
		t.Fatalf("again: %+v %v", rep, err)
	}
	// --collection limits the missing to that collection.
	rep, err = s.ImportMDM("op", "site.csv", []byte("Computer Name,Serial Number\nother-mac,NEW2\n"), inventory.MDMOptions{Format: "jamf", Missing: "quarantine", Collection: "site-b"}, false)
	if err != nil || rep.Counts[inventory.Missing]+rep.Counts[inventory.MissingQuarantined] != 0 {
		t.Fatalf("--collection site-b: %+v %v", rep, err)
	}
}

// jsonlessPEM is a PEM block as one CSV cell (quoted).
func jsonlessPEM(p string) string { return `"` + p + `"` }
