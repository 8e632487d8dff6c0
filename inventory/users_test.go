package inventory_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/inventory"
	"github.com/smallstep/nosql/database"
)

// A user record written before users could be disabled reads as enabled,
// and their device may have certificates.
func TestLegacyUserEnabled(t *testing.T) {
	s, _, db := newStoreDB(t)
	putRaw(t, db, "devid_users", []byte("old@example.com"),
		`{"email":"old@example.com","login":"old","groups":["sre"],"created":"2025-01-01T00:00:00Z","updated":"2025-01-01T00:00:00Z"}`)
	u, err := s.User("old@example.com")
	if err != nil || u.Disabled || !u.StatusChanged.IsZero() {
		t.Fatalf("legacy user: %+v %v", u, err)
	}
	pemA, idA := ek(t, 0)
	if _, err := s.AddDevice("root", inventory.NewDevice{EK: pemA, Name: "laptop-old", Kind: "workstation", Owner: "old@example.com"}); err != nil {
		t.Fatal(err)
	}
	if _, err := inventory.CheckUsable(s, idA); err != nil {
		t.Fatalf("a legacy user's device: %v", err)
	}
	// Written back, the record has no disabled field: an older devid reads
	// it as it wrote it.
	b, _ := json.Marshal(u)
	if strings.Contains(string(b), "disabled") || strings.Contains(string(b), "statusChanged") {
		t.Errorf("enabled user marshals to %s", b)
	}
}

// Disable and enable: audited with the actor and reason; the state is the
// one rule's (CheckUsable); doing it twice is a conflict; bad input
// changes nothing.
func TestSetUserDisabled(t *testing.T) {
	s, clk := newStore(t)
	mustUser(t, s, "alice@example.com", "alice", "sre")
	mustUser(t, s, "bob@example.com", "bob")
	pemA, idA := ek(t, 0)
	pemB, idB := ek(t, 1)
	pemC, idC := ek(t, 2)
	for _, nd := range []inventory.NewDevice{
		{EK: pemA, Name: "laptop-a", Kind: "workstation", Owner: "alice@example.com"},
		{EK: pemB, Name: "web-a", Kind: "host", Owner: "alice@example.com"},
		{EK: pemC, Name: "laptop-b", Kind: "workstation", Owner: "bob@example.com"},
	} {
		if _, err := s.AddDevice("root", nd); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(time.Hour)
	u, err := s.SetUserDisabled("carol", "Alice@Example.com", true, "left the company")
	if err != nil {
		t.Fatal(err)
	}
	if !u.Disabled || u.StatusReason != "left the company" || !u.StatusChanged.Equal(clk.Now()) || !u.Updated.Equal(clk.Now()) {
		t.Fatalf("disabled user: %+v", u)
	}
	if got, _ := s.User("alice@example.com"); !got.Disabled {
		t.Fatalf("stored: %+v", got)
	}
	_, err = inventory.CheckUsable(s, idA)
	var nu *inventory.NotUsableError
	if !errors.As(err, &nu) || !strings.Contains(err.Error(), "owner alice@example.com is disabled") {
		t.Errorf("workstation %s of a disabled user: %v", idA, err)
	}
	// A host's owner looks after it: it keeps its certificates.
	if _, err := inventory.CheckUsable(s, idB); err != nil {
		t.Errorf("a host a disabled user owns: %v", err)
	}
	if _, err := inventory.CheckUsable(s, idC); err != nil {
		t.Errorf("another user's device: %v", err)
	}

	// Twice: a conflict that says so, and nothing written.
	before, _ := s.Audit("")
	if _, err := s.SetUserDisabled("carol", "alice@example.com", true, "again"); !errors.Is(err, inventory.ErrConflict) || !strings.Contains(err.Error(), "user alice@example.com is already disabled") {
		t.Fatalf("disable twice: %v", err)
	}
	if _, err := s.SetUserDisabled("carol", "nobody@example.com", true, ""); !errors.Is(err, inventory.ErrNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
	if _, err := s.SetUserDisabled("carol", "bob@example.com", true, "two\nlines"); !errors.Is(err, inventory.ErrInvalid) {
		t.Fatalf("bad reason: %v", err)
	}
	if after, _ := s.Audit(""); len(after) != len(before) {
		t.Fatalf("refused changes wrote %d audit entries", len(after)-len(before))
	}
	if got, _ := s.User("bob@example.com"); got.Disabled {
		t.Fatal("a refused disable disabled bob")
	}

	// An import of the user keeps them disabled.
	if _, err := s.ImportUsers("root", "u.csv", []byte("email,login,groups\nalice@example.com,alice,sre;dev\n"), false); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.User("alice@example.com"); !got.Disabled || strings.Join(got.Groups, ",") != "dev,sre" {
		t.Fatalf("after an import: %+v", got)
	}

	clk.Advance(time.Hour)
	if u, err = s.SetUserDisabled("carol", "alice@example.com", false, "rehired"); err != nil || u.Disabled || u.StatusReason != "rehired" {
		t.Fatalf("enable: %+v %v", u, err)
	}
	if _, err := inventory.CheckUsable(s, idA); err != nil {
		t.Fatalf("device of an enabled user: %v", err)
	}
	if _, err := s.SetUserDisabled("carol", "alice@example.com", false, ""); !errors.Is(err, inventory.ErrConflict) || !strings.Contains(err.Error(), "already enabled") {
		t.Fatalf("enable twice: %v", err)
	}

	var got []string
	entries, _ := s.Audit("alice@example.com")
	for _, e := range entries {
		got = append(got, e.Actor+" "+e.Action+" "+e.Reason)
	}
	want := []string{"test user.add ", "carol user.disable left the company", "root user.update ", "carol user.enable rehired"}
	if !slices.Equal(got, want) {
		t.Fatalf("audit:\n%q\nwant\n%q", got, want)
	}
	var b, a inventory.User
	if json.Unmarshal(entries[1].Before, &b) != nil || json.Unmarshal(entries[1].After, &a) != nil || b.Disabled || !a.Disabled {
		t.Errorf("user.disable before/after: %s → %s", entries[1].Before, entries[1].After)
	}
}

// Delete: the user is gone, their active workstation is quarantined and
// ownerless, their host keeps its status without an owner, and each
// change is audited.
func TestDeleteUser(t *testing.T) {
	s, clk := newStore(t)
	mustUser(t, s, "alice@example.com", "alice")
	mustUser(t, s, "bob@example.com", "bob")
	pemA, idA := ek(t, 0)
	pemB, idB := ek(t, 1)
	pemC, idC := ek(t, 2)
	pemD, idD := ek(t, 3)
	for _, nd := range []inventory.NewDevice{
		{EK: pemA, Name: "laptop-a", Kind: "workstation", Owner: "alice@example.com"},
		{EK: pemB, Name: "web-a", Kind: "host", Owner: "alice@example.com"},
		{EK: pemC, Name: "laptop-old", Kind: "workstation", Owner: "alice@example.com"},
		{EK: pemD, Name: "laptop-b", Kind: "workstation", Owner: "bob@example.com"},
	} {
		if _, err := s.AddDevice("root", nd); err != nil {
			t.Fatal(err)
		}
	}
	// laptop-old is quarantined for a while: deleting its owner takes the
	// end away, so that it does not come back to active by itself.
	if _, err := s.Quarantine("root", idC, "on a trip", 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	del, err := s.DeleteUser("carol", "alice@example.com", "left")
	if err != nil {
		t.Fatal(err)
	}
	if del.User.Email != "alice@example.com" || len(del.Devices) != 3 {
		t.Fatalf("deletion: %+v", del)
	}
	if _, err := s.User("alice@example.com"); !errors.Is(err, inventory.ErrNotFound) {
		t.Fatalf("deleted user: %v", err)
	}
	want := map[string]inventory.Status{idA: inventory.StatusQuarantined, idB: inventory.StatusActive, idC: inventory.StatusQuarantined}
	for id, st := range want {
		d, _ := s.Device(id)
		if d.Owner != "" || d.Status != st {
			t.Errorf("%s: owner %q status %s, want none and %s", d.Name, d.Owner, d.Status, st)
		}
	}
	if d, _ := s.Device(idA); d.StatusReason != "owner alice@example.com deleted" || !d.StatusChanged.Equal(clk.Now()) {
		t.Errorf("quarantined workstation: %+v", d)
	}
	if d, _ := s.Device(idC); d.QuarantineUntil != nil || d.StatusReason != "owner alice@example.com deleted" || d.StatusChanged.Equal(clk.Now()) {
		t.Errorf("the workstation quarantined for a while: %+v", d)
	}
	if ends, err := s.QuarantineEnds(); err != nil || len(ends) != 0 {
		t.Errorf("quarantine ends left: %+v %v", ends, err)
	}
	if d, _ := s.Device(idD); d.Owner != "bob@example.com" {
		t.Errorf("bob's device: %+v", d)
	}
	if _, err := inventory.CheckUsable(s, idA); !errors.Is(err, inventory.ErrNotUsable) {
		t.Errorf("the deleted user's workstation: %v", err)
	}
	entries, _ := s.Audit("")
	var got []string
	for _, e := range entries[len(entries)-4:] {
		got = append(got, e.Actor+" "+e.Action+" "+e.SubjectName+e.Subject[:min(len(e.Subject), 5)]+" "+e.Reason)
	}
	wantAudit := []string{
		"carol device.quarantine laptop-aurn:e owner alice@example.com deleted",
		"carol device.quarantine laptop-oldurn:e owner alice@example.com deleted",
		"carol device.update web-aurn:e owner alice@example.com deleted",
		"carol user.delete alice left",
	}
	if !slices.Equal(got, wantAudit) {
		t.Fatalf("audit:\n%q\nwant\n%q", got, wantAudit)
	}
	if last := entries[len(entries)-1]; len(last.After) != 0 || !strings.Contains(string(last.Before), `"login":"alice"`) {
		t.Errorf("user.delete entry: before %s after %s", last.Before, last.After)
	}
	if _, err := s.DeleteUser("carol", "alice@example.com", ""); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("delete twice: %v", err)
	}
	// The email and login are free again.
	mustUser(t, s, "alice@example.com", "alice")
}

// The user hooks: BeforeUserCommit sees the change and the user's devices,
// and what it writes and the audit entries it returns are committed with
// it; an error refuses the change. OnUserChange is called after the
// commit.
func TestUserHooks(t *testing.T) {
	s, _ := newStore(t)
	mustUser(t, s, "alice@example.com", "alice")
	pemA, idA := ek(t, 0)
	if _, err := s.AddDevice("root", inventory.NewDevice{EK: pemA, Name: "laptop-a", Kind: "workstation", Owner: "alice@example.com"}); err != nil {
		t.Fatal(err)
	}
	var seen []inventory.UserChange
	s.BeforeUserCommit(func(cs []inventory.UserChange, tx *database.Tx) ([]inventory.AuditEntry, error) {
		seen = cs
		tx.Set([]byte("devid_collections"), []byte("hook"), []byte(`{"name":"hook","allowFileKeys":false,"hostNames":[]}`))
		return []inventory.AuditEntry{{Action: "cert.revoke", Subject: idA, Reason: "hooked"}}, nil
	})
	var delivered []inventory.UserChange
	var disabledThen bool
	s.OnUserChange(func(cs []inventory.UserChange) {
		delivered = cs
		u, _ := s.User("alice@example.com")
		disabledThen = u != nil && u.Disabled
	})
	if _, err := s.SetUserDisabled("root", "alice@example.com", true, ""); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || !seen[0].OffBoards() || seen[0].Reenables() || !slices.Equal(seen[0].Devices, []string{idA}) {
		t.Fatalf("BeforeUserCommit saw %+v", seen)
	}
	if len(delivered) != 1 || !disabledThen {
		t.Fatalf("OnUserChange: %+v, read disabled %v", delivered, disabledThen)
	}
	if _, err := s.Collection("hook"); err != nil {
		t.Errorf("the hook's write was not committed: %v", err)
	}
	entries, _ := s.Audit(idA)
	if e := entries[len(entries)-1]; e.Action != "cert.revoke" || e.Actor != "root" || e.Reason != "hooked" || e.SubjectName != "" && e.SubjectName != "laptop-a" {
		t.Errorf("the hook's audit entry: %+v", e)
	}

	// Refused by the hook: nothing changes, nothing is delivered.
	errNo := errors.New("refused")
	s.BeforeUserCommit(func(cs []inventory.UserChange, tx *database.Tx) ([]inventory.AuditEntry, error) {
		seen = cs
		return nil, errNo
	})
	delivered = nil
	if _, err := s.SetUserDisabled("root", "alice@example.com", false, ""); !errors.Is(err, errNo) {
		t.Fatalf("refused enable: %v", err)
	}
	if !seen[0].Reenables() || delivered != nil {
		t.Fatalf("refused enable: seen %+v, delivered %+v", seen, delivered)
	}
	if u, _ := s.User("alice@example.com"); !u.Disabled {
		t.Fatal("a refused enable enabled")
	}
	if _, err := s.DeleteUser("root", "alice@example.com", ""); !errors.Is(err, errNo) {
		t.Fatalf("refused delete: %v", err)
	}
	if d, _ := s.Device(idA); d.Owner != "alice@example.com" || d.Status != inventory.StatusActive {
		t.Fatalf("a refused delete changed the device: %+v", d)
	}
	if !seen[0].OffBoards() || seen[0].After != nil {
		t.Fatalf("delete seen as %+v", seen[0])
	}
}
