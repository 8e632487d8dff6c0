package inventory_test

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/devid-ssh/devid/inventory"
)

// Audit entries about a device carry its name beside its ID: the name it
// had then, or for entries written before names were recorded, its name now.
func TestAuditNamesDevices(t *testing.T) {
	s, clk, db := newStoreDB(t)
	pemA, idA := ek(t, 0)
	if _, err := s.AddDevice("root", inventory.NewDevice{EK: pemA, Name: "laptop-a", Kind: "workstation"}); err != nil {
		t.Fatal(err)
	}
	// An entry from an older devid, without the name.
	putRaw(t, db, "devid_audit", binary.BigEndian.AppendUint64(nil, 1), `{"id":"01","time":"2026-01-01T00:00:00Z","actor":"root","action":"device.add","subject":"`+idA+`"}`)
	clk.Advance(time.Minute)
	if _, err := s.SetStatus("root", idA, inventory.StatusQuarantined, "lost"); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordAudit("root", "cert.revoke", idA, "leaked", nil, nil); err != nil {
		t.Fatal(err)
	}
	a, _ := ekB64(t, 0)
	clk.Advance(time.Minute)
	if _, err := s.ImportDevices("root", "d.csv", []byte("ek,name,kind\n"+a+",laptop-b,workstation\n"), false); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordAudit("root", "cert.revoke", "not-a-device", "", nil, nil); err != nil {
		t.Fatal(err)
	}
	audit, err := s.Audit("")
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ action, name string }{
		{"device.add", "laptop-b"}, // older entry: the name now
		{"device.add", "laptop-a"},
		{"device.quarantine", "laptop-a"},
		{"cert.revoke", "laptop-a"},
		{"device.update", "laptop-b"},
		{"cert.revoke", ""},
	}
	if len(audit) != len(want) {
		t.Fatalf("%d entries, want %d: %+v", len(audit), len(want), audit)
	}
	for i, w := range want {
		if e := audit[i]; e.Action != w.action || e.SubjectName != w.name {
			t.Errorf("entry %d: %s %s %q, want %s %q", i, e.Action, e.Subject, e.SubjectName, w.action, w.name)
		}
	}
}
