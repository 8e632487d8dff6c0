package inventory_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/fakeclock"
	"github.com/devid-ssh/devid/inventory"
	"github.com/smallstep/nosql"
	"github.com/smallstep/nosql/database"
)

func mustAdd(t *testing.T, s *inventory.Store, i int, name string) *inventory.Device {
	t.Helper()
	pem, _ := ek(t, i)
	d, err := s.AddDevice("op", inventory.NewDevice{EK: pem, Name: name, Kind: "workstation"})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestTemporaryQuarantine: a quarantine for 2h has its end in the device's
// record and among the ends; lifting it does nothing before the end, and
// at the end makes the device active, audited as devid-ca with a reason
// saying the temporary quarantine ended, the revocation hook seeing the
// change from quarantined, in one transaction; a second lift does
// nothing.
func TestTemporaryQuarantine(t *testing.T) {
	s, clk := newStore(t)
	d := mustAdd(t, s, 0, "laptop")
	var seen []inventory.DeviceChange
	s.BeforeDeviceCommit(func(ch []inventory.DeviceChange, _ *database.Tx) error {
		seen = append(seen, ch...)
		return nil
	})
	t0 := clk.Now()
	q, err := s.Quarantine("alice", "laptop", "suspicious login", 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	until := t0.Add(2 * time.Hour)
	if q.Status != inventory.StatusQuarantined || q.QuarantineUntil == nil || !q.QuarantineUntil.Equal(until) || !q.StatusChanged.Equal(t0) {
		t.Fatalf("quarantined: %+v", q)
	}
	if got, _ := s.Device("laptop"); got.QuarantineUntil == nil || !got.QuarantineUntil.Equal(until) {
		t.Fatalf("stored: %+v", got)
	}
	ends, err := s.QuarantineEnds()
	if err != nil || len(ends) != 1 || ends[0].DeviceID != d.ID || !ends[0].Until.Equal(until) {
		t.Fatalf("ends %+v %v", ends, err)
	}
	clk.Advance(2*time.Hour - time.Second)
	if got, err := s.LiftQuarantine("devid-ca", d.ID, until); got != nil || err != nil {
		t.Fatalf("lift a second early: %+v %v", got, err)
	}
	clk.Advance(time.Second)
	got, err := s.LiftQuarantine("devid-ca", d.ID, until)
	if err != nil || got == nil || got.Status != inventory.StatusActive || got.QuarantineUntil != nil || !got.StatusChanged.Equal(clk.Now()) {
		t.Fatalf("lift at the end: %+v %v", got, err)
	}
	if !strings.HasPrefix(got.StatusReason, "temporary quarantine ended at 2026-11-01T14:00:00Z (quarantined: suspicious login)") {
		t.Errorf("reason %q", got.StatusReason)
	}
	if len(seen) != 2 || seen[1].Before.Status != inventory.StatusQuarantined || seen[1].After.Status != inventory.StatusActive || !seen[1].Before.StatusChanged.Equal(t0) {
		t.Errorf("revocation hook saw %+v", seen)
	}
	entries, _ := s.Audit(d.ID)
	last := entries[len(entries)-1]
	if last.Action != "device.activate" || last.Actor != "devid-ca" || last.Reason != got.StatusReason || entries[len(entries)-2].Actor != "alice" {
		t.Errorf("audit %+v", entries)
	}
	if ends, _ := s.QuarantineEnds(); len(ends) != 0 {
		t.Errorf("ends after the lift: %+v", ends)
	}
	if again, err := s.LiftQuarantine("devid-ca", d.ID, until); again != nil || err != nil {
		t.Fatalf("second lift: %+v %v", again, err)
	}
	if n, _ := s.Audit(d.ID); len(n) != len(entries) {
		t.Errorf("second lift wrote %d audit entries", len(n)-len(entries))
	}
}

// TestTemporaryQuarantineCancelled: an activation or a retirement before
// the end cancels it; a second quarantine replaces it (keeping the time
// the device left active), and one with no end makes it for good.
func TestTemporaryQuarantineCancelled(t *testing.T) {
	s, clk := newStore(t)
	a := mustAdd(t, s, 0, "a")
	b := mustAdd(t, s, 1, "b")
	c := mustAdd(t, s, 2, "c")
	t0 := clk.Now()
	for _, n := range []string{"a", "b", "c"} {
		if _, err := s.Quarantine("op", n, "", time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(time.Minute)
	if _, err := s.SetStatus("op", "a", inventory.StatusActive, "false alarm"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetStatus("op", "b", inventory.StatusRetired, "stolen"); err != nil {
		t.Fatal(err)
	}
	q, err := s.Quarantine("op", "c", "longer", 3*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !q.QuarantineUntil.Equal(clk.Now().Add(3*time.Hour)) || !q.StatusChanged.Equal(t0) || q.StatusReason != "longer" {
		t.Fatalf("replaced: %+v", q)
	}
	ends, _ := s.QuarantineEnds()
	if len(ends) != 1 || ends[0].DeviceID != c.ID || !ends[0].Until.Equal(*q.QuarantineUntil) {
		t.Fatalf("ends %+v", ends)
	}
	clk.Advance(2 * time.Hour)
	for _, d := range []*inventory.Device{a, b, c} {
		if got, err := s.LiftQuarantine("devid-ca", d.ID, t0.Add(time.Hour)); got != nil || err != nil {
			t.Errorf("lift %s at its first end: %+v %v", d.Name, got, err)
		}
	}
	for name, want := range map[string]inventory.Status{"a": inventory.StatusActive, "b": inventory.StatusRetired, "c": inventory.StatusQuarantined} {
		if d, _ := s.Device(name); d.Status != want || d.QuarantineUntil != nil && want != inventory.StatusQuarantined {
			t.Errorf("%s: %+v, want %s", name, d, want)
		}
	}
	// With no end: quarantined for good; again with no end: a conflict.
	if q, err := s.SetStatus("op", "c", inventory.StatusQuarantined, "for good"); err != nil || q.QuarantineUntil != nil || !q.StatusChanged.Equal(t0) {
		t.Fatalf("quarantine for good: %+v %v", q, err)
	}
	if ends, _ := s.QuarantineEnds(); len(ends) != 0 {
		t.Fatalf("ends %+v", ends)
	}
	if _, err := s.Quarantine("op", "c", "", 0); !errors.Is(err, inventory.ErrConflict) {
		t.Fatalf("quarantine again: %v", err)
	}
	// A temporary quarantine of a quarantined device gives it an end.
	if q, err := s.Quarantine("op", "c", "", time.Hour); err != nil || q.QuarantineUntil == nil {
		t.Fatalf("end for a quarantined device: %+v %v", q, err)
	}
	// Bounds, and statuses that cannot be quarantined.
	for _, dur := range []time.Duration{time.Second, -time.Hour, 367 * 24 * time.Hour} {
		if _, err := s.Quarantine("op", "a", "", dur); !errors.Is(err, inventory.ErrInvalid) || !strings.Contains(err.Error(), "for: ") {
			t.Errorf("for %v: %v", dur, err)
		}
	}
	if _, err := s.Quarantine("op", "b", "", time.Hour); !errors.Is(err, inventory.ErrConflict) {
		t.Errorf("retired: %v", err)
	}
	if _, err := s.AddDevice("op", inventory.NewDevice{Name: "p", Kind: "host", Serial: "P1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Quarantine("op", "p", "", time.Hour); !errors.Is(err, inventory.ErrConflict) {
		t.Errorf("pending: %v", err)
	}
}

// TestLiftOnceAcrossInstances: two devid-ca sharing a database both lift a
// quarantine: one does, the other finds the device active, or, when it
// read the device before the first one's lift (a stale read), its
// transaction fails on the end that went and writes nothing.
func TestLiftOnceAcrossInstances(t *testing.T) {
	db, err := nosql.New("bbolt", filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clk := fakeclock.New(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
	s1, err := inventory.Open(db, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := inventory.Open(db, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	d := mustAdd(t, s1, 0, "laptop")
	q, err := s1.Quarantine("op", "laptop", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	until := *q.QuarantineUntil
	clk.Advance(time.Hour)
	stale, err := s2.Device(d.ID) // s2 reads, then s1 lifts
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s1.LiftQuarantine("devid-ca", d.ID, until); err != nil || got == nil {
		t.Fatalf("first lift: %+v %v", got, err)
	}
	before, _ := s1.Audit(d.ID)
	clk.Advance(time.Second)
	if got, err := inventory.LiftRead(s2, "devid-ca", stale, until); got != nil || err != nil {
		t.Fatalf("lift from a stale read: %+v %v", got, err)
	}
	if got, err := s2.LiftQuarantine("devid-ca", d.ID, until); got != nil || err != nil {
		t.Fatalf("second lift: %+v %v", got, err)
	}
	after, _ := s1.Audit(d.ID)
	if len(after) != len(before) {
		t.Fatalf("the second instance wrote %d audit entries", len(after)-len(before))
	}
	now, _ := s1.Device(d.ID)
	if now.Status != inventory.StatusActive || !now.StatusChanged.Equal(clk.Now().Add(-time.Second)) {
		t.Fatalf("device %+v: want active since the first lift", now)
	}
}
