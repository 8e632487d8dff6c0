package inventory_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/deviceid"
	"github.com/devid-ssh/devid/inventory"
)

func TestPendingDeviceAddAndBind(t *testing.T) {
	s, _ := newStore(t)
	d, err := s.AddDevice("op", inventory.NewDevice{Name: "laptop-7", Kind: "workstation", Serial: "C02XK1ABJG5H", OS: "macOS 15.1"})
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != inventory.StatusPending || !inventory.IsPendingID(d.ID) || d.EKPublic != nil {
		t.Fatalf("added without an EK: %+v, want pending with a provisional ID", d)
	}
	// Not usable: the refusal names the device and what to do.
	_, err = inventory.CheckUsable(s, "laptop-7")
	if !errors.Is(err, inventory.ErrNotUsable) || !strings.Contains(err.Error(), "devid device token laptop-7") {
		t.Fatalf("CheckUsable(pending) = %v", err)
	}
	// The serial is unique, in any case.
	if _, err := s.AddDevice("op", inventory.NewDevice{Name: "laptop-8", Kind: "workstation", Serial: "c02xk1abjg5h"}); !errors.Is(err, inventory.ErrConflict) {
		t.Fatalf("second device with the serial: %v, want a conflict", err)
	}
	// Neither EK nor serial nor asset tag: refused, naming the field.
	if _, err := s.AddDevice("op", inventory.NewDevice{Name: "x", Kind: "host"}); !errors.Is(err, inventory.ErrInvalid) || !strings.Contains(err.Error(), "ek:") {
		t.Fatalf("no EK, serial or asset tag: %v", err)
	}
	// A device without an EK cannot start active.
	if _, err := s.AddDevice("op", inventory.NewDevice{Name: "y", Kind: "host", AssetTag: "A-1", Status: "active"}); !errors.Is(err, inventory.ErrInvalid) {
		t.Fatalf("pending device added as active: %v", err)
	}
	// Nor be quarantined: it only leaves pending by binding or retiring.
	if _, err := s.SetStatus("op", "laptop-7", inventory.StatusQuarantined, ""); !errors.Is(err, inventory.ErrConflict) {
		t.Fatalf("quarantine pending: %v", err)
	}

	pemEK, id := ek(t, 0)
	key, err := deviceid.ParseEKText(pemEK)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.BindEK("devid-ca", "laptop-7", key, "device.bind", "token", nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.ID != id || b.Status != inventory.StatusActive || b.Serial != "C02XK1ABJG5H" || b.OS != "macOS 15.1" || b.Created != d.Created {
		t.Fatalf("bound: %+v", b)
	}
	if _, err := s.Device(d.ID); !errors.Is(err, inventory.ErrNotFound) {
		t.Fatalf("the provisional ID still resolves: %v", err)
	}
	if got, err := inventory.CheckUsable(s, id); err != nil || got.Name != "laptop-7" {
		t.Fatalf("CheckUsable(bound) = %v, %v", got, err)
	}
	// Binding again, to this TPM or another, is refused.
	if _, err := s.BindEK("devid-ca", "laptop-7", key, "device.bind", "", nil); !errors.Is(err, inventory.ErrConflict) {
		t.Fatalf("second bind: %v", err)
	}
	// A TPM already registered cannot be bound to another pending device.
	if _, err := s.AddDevice("op", inventory.NewDevice{Name: "laptop-9", Kind: "workstation", Serial: "S9"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BindEK("devid-ca", "laptop-9", key, "device.bind", "", nil); !errors.Is(err, inventory.ErrConflict) || !strings.Contains(err.Error(), "laptop-7") {
		t.Fatalf("bind a registered TPM: %v", err)
	}
	audit, err := s.Audit(id)
	if err != nil {
		t.Fatal(err)
	}
	// Its history includes what happened while it was pending.
	if len(audit) != 2 || audit[0].Action != "device.add" || audit[0].Subject != d.ID ||
		audit[1].Action != "device.bind" || audit[1].Actor != "devid-ca" || !strings.Contains(string(audit[1].Before), d.ID) {
		t.Fatalf("audit of the bound device: %+v", audit)
	}
}

func TestImportPendingDevices(t *testing.T) {
	s, _ := newStore(t)
	if _, err := s.AddUser("op", inventory.NewUser{Email: "ann@example.com", Login: "ann"}); err != nil {
		t.Fatal(err)
	}
	csv := "name,kind,serial,owner,os,source,sourceid\n" +
		"ann-mbp,workstation,C02AAA,ann@example.com,macOS,jamf,17\n" +
		"web-1,host,VMW-1,,Debian 12,jamf,18\n"
	rep, err := s.ImportDevices("op", "jamf.csv", []byte(csv), false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Counts[inventory.Added] != 2 {
		t.Fatalf("first import: %+v", rep.Counts)
	}
	ann, err := s.Device("ann-mbp")
	if err != nil || ann.Status != inventory.StatusPending || ann.Owner != "ann@example.com" || ann.Source != "jamf" || ann.SourceID != "17" {
		t.Fatalf("imported pending device: %+v, %v", ann, err)
	}
	// Again: matched by serial, nothing changes.
	rep, err = s.ImportDevices("op", "jamf.csv", []byte(csv), false)
	if err != nil || rep.Counts[inventory.Unchanged] != 2 {
		t.Fatalf("second import: %+v, %v", rep, err)
	}
	if again, _ := s.Device("ann-mbp"); again.ID != ann.ID {
		t.Fatalf("re-import changed the provisional ID: %s → %s", ann.ID, again.ID)
	}
	// A rename by serial; the os column absent keeps the OS.
	rep, err = s.ImportDevices("op", "jamf2.csv", []byte("name,kind,serial\nann-laptop,workstation,c02aaa\n"), false)
	if err != nil || rep.Counts[inventory.Updated] != 1 {
		t.Fatalf("rename import: %+v, %v", rep, err)
	}
	if d, err := s.Device("ann-laptop"); err != nil || d.OS != "macOS" || d.ID != ann.ID {
		t.Fatalf("renamed: %+v, %v", d, err)
	}
	// Two rows for one serial: the whole import fails, naming the line.
	_, err = s.ImportDevices("op", "dup.csv", []byte("name,kind,serial\na,host,Z1\nb,host,z1\n"), false)
	if !errors.Is(err, inventory.ErrInvalid) || !strings.Contains(err.Error(), "dup.csv:3") {
		t.Fatalf("duplicate serial: %v", err)
	}
	if _, err := s.Device("a"); !errors.Is(err, inventory.ErrNotFound) {
		t.Fatalf("a failed import wrote a row: %v", err)
	}
	// A row with the EK binds the pending device with that serial.
	pemEK, id := ek(t, 1)
	j := `[{"name":"ann-laptop","kind":"workstation","serial":"C02AAA","ek":` + jsonString(pemEK) + `}]`
	rep, err = s.ImportDevices("op", "eks.json", []byte(j), false)
	if err != nil || rep.Counts[inventory.Updated] != 1 || rep.Results[0].Subject != id {
		t.Fatalf("binding import: %+v, %v", rep, err)
	}
	if d, err := s.Device("ann-laptop"); err != nil || d.ID != id || d.Status != inventory.StatusActive || d.Owner != "ann@example.com" {
		t.Fatalf("bound by import: %+v, %v", d, err)
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestImportAssetTagMatch: asset tags are not unique, so a row is matched
// by one only when it has no serial, to the one device (not retired) that
// has it; a row with a serial that no device has is a new device, whatever
// its asset tag; several devices with the tag fail the import.
func TestImportAssetTagMatch(t *testing.T) {
	s, _ := newStore(t)
	for _, u := range []string{"alice", "bob"} {
		if _, err := s.AddUser("op", inventory.NewUser{Email: u + "@example.com", Login: u}); err != nil {
			t.Fatal(err)
		}
	}
	pemEK, _ := ek(t, 0)
	alice, err := s.AddDevice("op", inventory.NewDevice{EK: pemEK, Name: "alice-mbp", Kind: "workstation", Owner: "alice@example.com", Serial: "C02A", AssetTag: "N/A"})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.ImportDevices("op", "jamf.csv", []byte("name,kind,serial,assettag,owner\nbob-mbp,workstation,C02B,N/A,bob@example.com\n"), false)
	if err != nil || rep.Counts[inventory.Added] != 1 {
		t.Fatalf("row with another serial and the same asset tag: %+v, %v", rep, err)
	}
	if a, _ := s.Device(alice.ID); a.Name != "alice-mbp" || a.Owner != "alice@example.com" || a.Serial != "C02A" {
		t.Fatalf("alice's device changed by bob's row: %+v", a)
	}
	// A row with only the tag, now on two devices: refused, naming both.
	_, err = s.ImportDevices("op", "tags.csv", []byte("name,kind,assettag\nx,workstation,n/a\n"), false)
	if !errors.Is(err, inventory.ErrConflict) || !strings.Contains(err.Error(), `tags.csv:2: assetTag: asset tag "n/a" is on 2 devices ("alice-mbp", "bob-mbp")`) {
		t.Fatalf("ambiguous asset tag: %v", err)
	}
	// With one device left holding it (bob's retired), the tag matches it.
	if _, err := s.SetStatus("op", "bob-mbp", inventory.StatusRetired, "gone"); err != nil {
		t.Fatal(err)
	}
	rep, err = s.ImportDevices("op", "tags.csv", []byte("name,kind,assettag,os\nalice-mbp,workstation,N/A,macOS 15\n"), false)
	if err != nil || rep.Counts[inventory.Updated] != 1 || rep.Results[0].Subject != alice.ID {
		t.Fatalf("unique asset tag: %+v, %v", rep, err)
	}
}

// TestImportQuarantinedEndsTemporary: a row saying quarantined for a device
// in a temporary quarantine makes it one for good, as --missing quarantine
// does, so it is not lifted at the old end.
func TestImportQuarantinedEndsTemporary(t *testing.T) {
	s, _ := newStore(t)
	pemEK, _ := ek(t, 0)
	if _, err := s.AddDevice("op", inventory.NewDevice{EK: pemEK, Name: "h", Kind: "host", Serial: "S1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Quarantine("op", "h", "odd", time.Hour); err != nil {
		t.Fatal(err)
	}
	rep, err := s.ImportDevices("op", "m.csv", []byte("name,kind,serial,status\nh,host,S1,quarantined\n"), false)
	if err != nil || rep.Counts[inventory.Updated] != 1 || !strings.Contains(strings.Join(rep.Results[0].Changes, ";"), "quarantineUntil:") {
		t.Fatalf("import: %+v, %v", rep, err)
	}
	d, _ := s.Device("h")
	ends, err := s.QuarantineEnds()
	if err != nil || d.Status != inventory.StatusQuarantined || d.QuarantineUntil != nil || len(ends) != 0 {
		t.Fatalf("after the import: %+v, ends %v, %v", d, ends, err)
	}
}

// TestBindOnceAcrossInstances: two devid-ca sharing a database bind one
// pending device to two TPMs from reads made before either bound it: the
// second transaction fails on the pending record that went, and writes
// nothing.
func TestBindOnceAcrossInstances(t *testing.T) {
	s1, _, db := newStoreDB(t)
	s2, err := inventory.Open(db, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	p, err := s1.AddDevice("op", inventory.NewDevice{Name: "laptop", Kind: "workstation", Serial: "S1"})
	if err != nil {
		t.Fatal(err)
	}
	stale, err := s2.Device(p.ID)
	if err != nil {
		t.Fatal(err)
	}
	pem0, id0 := ek(t, 0)
	pem1, id1 := ek(t, 1)
	ek0, _ := deviceid.ParseEKText(pem0)
	ek1, _ := deviceid.ParseEKText(pem1)
	if _, err := s1.BindEK("devid-ca", "laptop", ek0, "device.bind", "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := inventory.BindRead(s2, "devid-ca", stale, ek1); !errors.Is(err, inventory.ErrConflict) || !strings.Contains(err.Error(), "meanwhile") {
		t.Fatalf("second bind from a stale read: %v", err)
	}
	devs, _ := s1.Devices()
	if len(devs) != 1 || devs[0].ID != id0 {
		t.Fatalf("devices after two binds: %+v", devs)
	}
	if _, err := s1.Device(id1); !errors.Is(err, inventory.ErrNotFound) {
		t.Fatalf("the losing TPM was written: %v", err)
	}
}
