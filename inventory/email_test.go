package inventory_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/inventory"
)

// Emails are case-insensitive: one user whatever the case, stored in lower
// case.
func TestEmailCaseInsensitive(t *testing.T) {
	s, _ := newStore(t)
	u, err := s.AddUser("root", inventory.NewUser{Email: "Alice@Example.com", Login: "alice"})
	if err != nil || u.Email != "alice@example.com" {
		t.Fatalf("AddUser = %+v, %v; want the email in lower case", u, err)
	}
	if _, err := s.AddUser("root", inventory.NewUser{Email: "alice@EXAMPLE.com", Login: "alice2"}); !errors.Is(err, inventory.ErrConflict) {
		t.Fatalf("second user by case: %v", err)
	}
	if u, err := s.User("ALICE@example.COM"); err != nil || u.Login != "alice" {
		t.Fatalf("User by case = %+v, %v", u, err)
	}
	pemA, idA := ek(t, 0)
	d, err := s.AddDevice("root", inventory.NewDevice{EK: pemA, Name: "a", Kind: "workstation", Owner: "ALICE@example.com"})
	if err != nil || d.Owner != "alice@example.com" {
		t.Fatalf("AddDevice = %+v, %v", d, err)
	}
	rep, err := s.ImportUsers("root", "u.csv", []byte("email,login,groups\nAlice@Example.COM,alice,sre\n"), false)
	if err != nil || rep.Counts[inventory.Updated] != 1 || rep.Results[0].Subject != "alice@example.com" {
		t.Fatalf("import by case: %+v, %v", rep, err)
	}
	if _, err := s.ImportUsers("root", "u.csv", []byte("email,login\nbob@example.com,bob\nBOB@example.com,bob\n"), true); err == nil || !strings.Contains(err.Error(), "u.csv:3: email: same user as line 2") {
		t.Fatalf("the same user twice by case: %v", err)
	}
	a, _ := ekB64(t, 0)
	if rep, err := s.ImportDevices("root", "d.csv", []byte("ek,name,kind,owner\n"+a+",a,workstation,Alice@Example.com\n"), false); err != nil || rep.Counts[inventory.Unchanged] != 1 {
		t.Fatalf("device import, owner by case: %+v, %v", rep, err)
	}
	if users, _ := s.Users(); len(users) != 1 {
		t.Fatalf("%d users, want 1", len(users))
	}
	if audit, _ := s.Audit("ALICE@example.com"); len(audit) != 2 {
		t.Fatalf("audit by email in another case: %d entries", len(audit))
	}
	if audit, _ := s.Audit(strings.ToLower(idA)); len(audit) != 0 {
		t.Fatal("device IDs are case-sensitive, but the audit matched one in lower case")
	}
}

// A store written before emails were folded to lower case keeps working: a
// mixed-case user is found in any case, and is still the one user.
func TestEmailMixedCaseStore(t *testing.T) {
	s, clk, db := newStoreDB(t)
	old := `{"email":"Bob@Example.com","login":"bob","groups":["web"],"created":"2026-01-01T00:00:00Z","updated":"2026-01-01T00:00:00Z"}`
	putRaw(t, db, "devid_users", []byte("Bob@Example.com"), old)
	s = reopen(t, db, clk)
	for _, e := range []string{"Bob@Example.com", "bob@example.com", "BOB@EXAMPLE.COM"} {
		if u, err := s.User(e); err != nil || u.Login != "bob" {
			t.Fatalf("User(%q) = %+v, %v", e, u, err)
		}
	}
	if _, err := s.AddUser("root", inventory.NewUser{Email: "bob@example.com", Login: "bob2"}); !errors.Is(err, inventory.ErrConflict) {
		t.Fatalf("a second bob: %v", err)
	}
	pemA, _ := ek(t, 0)
	d, err := s.AddDevice("root", inventory.NewDevice{EK: pemA, Name: "a", Kind: "workstation", Owner: "bob@example.com"})
	if err != nil || d.Owner != "Bob@Example.com" {
		t.Fatalf("owner = %+v, %v; want the stored user's email", d, err)
	}
	rep, err := s.ImportUsers("root", "u.csv", []byte("email,login,groups\nbob@example.com,bob,sre\n"), false)
	if err != nil || rep.Counts[inventory.Updated] != 1 {
		t.Fatalf("%+v, %v", rep, err)
	}
	if users, _ := s.Users(); len(users) != 1 || users[0].Email != "Bob@Example.com" || strings.Join(users[0].Groups, ",") != "sre" {
		t.Fatalf("users %+v", users)
	}
}
