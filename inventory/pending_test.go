package inventory_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

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
	if len(audit) != 1 || audit[0].Action != "device.bind" || audit[0].Actor != "devid-ca" || !strings.Contains(string(audit[0].Before), d.ID) {
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
