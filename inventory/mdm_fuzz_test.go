package inventory_test

import (
	"errors"
	"regexp"
	"testing"

	"github.com/devid-ssh/devid/inventory"
)

// fuzzMDM: a dry-run MDM import of any bytes never panics; it fails only
// with an *inventory.Error, and what it accepts is a report whose rows
// each have a line and a devid name, counted once, and whose missing
// devices have no line.
func fuzzMDM(f *testing.F, format string, seeds ...[]byte) {
	s, _ := newStore(f)
	mustUser(f, s, "alice@example.com", "alice")
	mustUser(f, s, "bob@example.com", "bob")
	if _, err := s.ImportMDM("op", "seed", []byte("Computer Name,Serial Number\nold-mac,OLD1\n"), inventory.MDMOptions{Format: "jamf"}, false); err != nil {
		f.Fatal(err)
	}
	if _, err := s.ImportMDM("op", "seed", []byte("Device name,Serial number\nold-pc,OLD2\n"), inventory.MDMOptions{Format: "intune"}, false); err != nil {
		f.Fatal(err)
	}
	for _, seed := range seeds {
		f.Add(seed)
	}
	name := regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,252}$`)
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := s.ImportMDM("fuzz", "f", data, inventory.MDMOptions{Format: format, Missing: inventory.MissingQuarantine}, true)
		if err != nil {
			var ie *inventory.Error
			if !errors.As(err, &ie) {
				t.Fatalf("error %v is not an *inventory.Error", err)
			}
			return
		}
		n := 0
		for _, c := range rep.Counts {
			n += c
		}
		if !rep.DryRun || n != len(rep.Results) || n == 0 {
			t.Fatalf("report %+v", rep)
		}
		for _, r := range rep.Results {
			missing := r.Result == inventory.Missing || r.Result == inventory.MissingQuarantined
			if missing != (r.Line == 0) || r.Subject == "" || !name.MatchString(r.Name) {
				t.Fatalf("result %+v", r)
			}
		}
	})
}

func FuzzJamfExport(f *testing.F) {
	fuzzMDM(f, "jamf", readMDM(f, "jamf-computers-inventory.json"), readMDM(f, "jamf-advanced-search.csv"),
		[]byte(`[{"id": 7, "general": {"name": "M"}, "hardware": {"serialNumber": "S"}, "userAndLocation": {"username": "ALICE@example.com"}}]`),
		[]byte(`{"totalCount": 1, "results": [{"udid": "U", "general": {"name": "Ünïcode Mac", "assetTag": "A-1"}, "hardware": {"serialNumber": ""}}]}`),
		[]byte("Computer Name,Jamf Pro Computer ID,Serial Number,Email Address\n\"a,b\",1,S1,bob@example.com\n"))
}

func FuzzIntuneExport(f *testing.F) {
	fuzzMDM(f, "intune", readMDM(f, "intune-managed-devices.json"), readMDM(f, "intune-all-devices.csv"),
		[]byte(`[{"id": "x", "deviceName": "PC 1", "serialNumber": "S1", "userPrincipalName": "nobody@x", "emailAddress": "alice@example.com"}]`),
		[]byte(`{"value": [], "@odata.nextLink": null}`),
		[]byte("Device name,Serial number,OS,OS version\n\"PC\"\"1\",S1,Windows,\n"))
}
