package inventory_test

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devid-ssh/devid/inventory"
	"github.com/smallstep/nosql/database"
)

// A user from before IDs reads with an ID derived from their email, the
// same at every read, and keeps it once the record is written again, even
// when their email changes.
func TestLegacyUserID(t *testing.T) {
	s, clk, db := newStoreDB(t)
	putRaw(t, db, "devid_users", []byte("old@example.com"),
		`{"email":"old@example.com","login":"old","groups":[],"created":"2025-01-01T00:00:00Z","updated":"2025-01-01T00:00:00Z"}`)
	s = reopen(t, db, clk)
	u1, _ := s.User("old@example.com")
	users, _ := s.Users()
	if len(u1.ID) != 32 || users[0].ID != u1.ID {
		t.Fatalf("IDs %q and %q", u1.ID, users[0].ID)
	}
	byID, err := s.UserByID(u1.ID)
	if err != nil || byID.Email != "old@example.com" {
		t.Fatalf("UserByID: %+v %v", byID, err)
	}
	u2, err := s.ChangeUser("scim:okta", u1.ID, func(u *inventory.User) error { u.Email = "new@example.com"; return nil })
	if err != nil || u2.ID != u1.ID {
		t.Fatalf("renamed: %+v %v", u2, err)
	}
	if got, err := s.UserByID(u1.ID); err != nil || got.Email != "new@example.com" {
		t.Fatalf("after the rename: %+v %v", got, err)
	}
	// A new user gets a new, random ID, even with the old email.
	mustUser(t, s, "old@example.com", "old2")
	if u3, _ := s.User("old@example.com"); u3.ID == u1.ID || len(u3.ID) != 32 {
		t.Fatalf("new user's ID %q (the legacy one was %q)", u3.ID, u1.ID)
	}
}

func TestCreateAndChangeUser(t *testing.T) {
	s, clk := newStore(t)
	mustUser(t, s, "bob@example.com", "bob")
	scimID := &inventory.SCIMIdentity{UserName: "Alice@Example.com", ExternalID: "00u1", GivenName: "Alice",
		Emails: []inventory.SCIMEmail{{Value: "Alice@Example.com", Type: "work", Primary: true}}}
	u, err := s.CreateUser("scim:okta", &inventory.User{Email: "Alice@Example.com", Login: "alice", SCIM: scimID, Disabled: true, StatusReason: "created inactive"})
	if err != nil {
		t.Fatal(err)
	}
	if u.Email != "alice@example.com" || u.SCIM.UserName != "Alice@Example.com" || !u.Disabled || !u.StatusChanged.Equal(clk.Now()) || len(u.ID) != 32 {
		t.Fatalf("created: %+v", u)
	}
	for _, c := range []struct {
		u     inventory.User
		field string
		kind  error
	}{
		{inventory.User{Email: "ALICE@example.com", Login: "alice2"}, "email", inventory.ErrConflict},
		{inventory.User{Email: "carol@example.com", Login: "bob"}, "login", inventory.ErrConflict},
		{inventory.User{Email: "carol", Login: "carol"}, "email", inventory.ErrInvalid},
		{inventory.User{Email: "carol@example.com", Login: "carol", SCIM: &inventory.SCIMIdentity{UserName: "x\ny"}}, "userName", inventory.ErrInvalid},
		{inventory.User{Email: "carol@example.com", Login: "carol", SCIM: &inventory.SCIMIdentity{}}, "userName", inventory.ErrInvalid},
	} {
		_, err := s.CreateUser("scim:okta", &c.u)
		var ie *inventory.Error
		if !errors.As(err, &ie) || ie.Field != c.field || !errors.Is(err, c.kind) {
			t.Errorf("%+v: %v, want a %v about %s", c.u, err, c.kind, c.field)
		}
	}

	pemA, idA := ek(t, 0)
	if _, err := s.AddDevice("root", inventory.NewDevice{EK: pemA, Name: "laptop-a", Kind: "workstation", Owner: "alice@example.com"}); err != nil {
		t.Fatal(err)
	}
	var seen []inventory.UserChange
	s.BeforeUserCommit(func(cs []inventory.UserChange, _ *database.Tx) ([]inventory.AuditEntry, error) {
		seen = append(seen, cs...)
		return nil, nil
	})

	// Nothing changed: nothing written.
	before, _ := s.Audit("")
	if _, err := s.ChangeUser("scim:okta", u.ID, func(*inventory.User) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if after, _ := s.Audit(""); len(after) != len(before) || len(seen) != 0 {
		t.Fatalf("a change of nothing wrote %d audit entries", len(after)-len(before))
	}

	// Enabled, renamed and given a new login at once.
	clk.Advance(time.Hour)
	u2, err := s.ChangeUser("scim:okta", u.ID, func(u *inventory.User) error {
		u.Email, u.Login, u.Disabled, u.StatusReason = "alice.smith@example.com", "asmith", false, "SCIM: active"
		u.SCIM.UserName = "alice.smith@example.com"
		u.Groups = []string{"ignored"} // the store's
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if u2.Email != "alice.smith@example.com" || u2.Login != "asmith" || u2.Disabled || len(u2.Groups) != 0 || !u2.StatusChanged.Equal(clk.Now()) {
		t.Fatalf("changed: %+v", u2)
	}
	if _, err := s.User("alice@example.com"); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("the old email still finds a user: %v", err)
	}
	if d, _ := s.Device(idA); d.Owner != "alice.smith@example.com" {
		t.Errorf("the device's owner: %q", d.Owner)
	}
	if _, err := inventory.CheckUsable(s, idA); err != nil {
		t.Errorf("the renamed, enabled user's device: %v", err)
	}
	if len(seen) != 1 || !seen[0].Reenables() || seen[0].Before.Email != "alice@example.com" || !slices.Equal(seen[0].Devices, []string{idA}) {
		t.Fatalf("hook saw %+v", seen)
	}
	entries, _ := s.Audit("")
	var got []string
	for _, e := range entries[len(before):] {
		got = append(got, e.Actor+" "+e.Action+" "+e.Subject[:min(len(e.Subject), 9)]+" "+e.Reason)
	}
	want := []string{"scim:okta device.update urn:ek:sh owner alice@example.com is now alice.smith@example.com",
		"scim:okta user.enable alice.smi SCIM: active"}
	if !slices.Equal(got, want) {
		t.Fatalf("audit:\n%q\nwant\n%q", got, want)
	}

	// Conflicts: another user's email or login; an unknown ID.
	bob, _ := s.User("bob@example.com")
	if _, err := s.ChangeUser("scim:okta", bob.ID, func(u *inventory.User) error { u.Email = "alice.smith@example.com"; return nil }); !errors.Is(err, inventory.ErrConflict) {
		t.Errorf("bob takes alice's email: %v", err)
	}
	if _, err := s.ChangeUser("scim:okta", bob.ID, func(u *inventory.User) error { u.Login = "asmith"; return nil }); !errors.Is(err, inventory.ErrConflict) {
		t.Errorf("bob takes alice's login: %v", err)
	}
	if _, err := s.ChangeUser("scim:okta", "nope", func(*inventory.User) error { return nil }); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("unknown ID: %v", err)
	}
	errNo := errors.New("no")
	if _, err := s.ChangeUser("scim:okta", bob.ID, func(u *inventory.User) error { u.Disabled = true; return errNo }); !errors.Is(err, errNo) {
		t.Errorf("f's error: %v", err)
	}
	if b, _ := s.User("bob@example.com"); b.Disabled {
		t.Error("a change whose f failed was written")
	}
	// Disabled through ChangeUser: off-boards, as SetUserDisabled does.
	seen = nil
	if _, err := s.ChangeUser("scim:okta", bob.ID, func(u *inventory.User) error { u.Disabled = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || !seen[0].OffBoards() {
		t.Fatalf("disable seen as %+v", seen)
	}
}

func TestGroupName(t *testing.T) {
	for in, want := range map[string]string{
		"sre": "sre", "Test SCIMv2": "Test-SCIMv2", "Team (EU)": "Team-EU", "  a  b  ": "a-b", "-x": "x",
		"Ingénieurs": "Ing-nieurs", "a.b_c@d+e-f": "a.b_c@d+e-f", strings.Repeat("x", 200): strings.Repeat("x", 128),
	} {
		if got, err := inventory.GroupName(in); err != nil || got != want {
			t.Errorf("GroupName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "  ", "()", "é"} {
		if got, err := inventory.GroupName(in); err == nil {
			t.Errorf("GroupName(%q) = %q, want an error", in, got)
		}
	}
}

// Groups: members are the users whose groups hold the group's name; a
// rename renames it in every member's groups; the group owns its name;
// deleting it takes the name away.
func TestGroups(t *testing.T) {
	s, _ := newStore(t)
	mustUser(t, s, "alice@example.com", "alice", "sre")
	mustUser(t, s, "bob@example.com", "bob", "dev")
	mustUser(t, s, "carol@example.com", "carol", "Engineering-Team")
	alice, _ := s.User("alice@example.com")
	bob, _ := s.User("bob@example.com")
	groupsOf := func(email string) string {
		u, _ := s.User(email)
		return strings.Join(u.Groups, ",")
	}
	g, err := s.CreateGroup("scim:okta", &inventory.Group{DisplayName: "Engineering Team", ExternalID: "00g1"}, []string{alice.ID})
	if err != nil {
		t.Fatal(err)
	}
	if g.Name != "Engineering-Team" || len(g.ID) != 32 {
		t.Fatalf("group: %+v", g)
	}
	// alice joined; carol, who had the name from an import, lost it.
	if groupsOf("alice@example.com") != "Engineering-Team,sre" || groupsOf("carol@example.com") != "" {
		t.Fatalf("groups: alice %q carol %q", groupsOf("alice@example.com"), groupsOf("carol@example.com"))
	}
	if _, err := s.CreateGroup("scim:okta", &inventory.Group{DisplayName: "engineering team"}, nil); !errors.Is(err, inventory.ErrConflict) {
		t.Errorf("same name in another case: %v", err)
	}
	if _, err := s.CreateGroup("scim:okta", &inventory.Group{DisplayName: "x"}, []string{"nobody"}); !errors.Is(err, inventory.ErrInvalid) || !strings.Contains(err.Error(), `no user with ID "nobody"`) {
		t.Errorf("unknown member: %v", err)
	}

	// Rename and change members at once.
	g2, err := s.ChangeGroup("scim:okta", g.ID, func(g *inventory.Group, members *[]string) error {
		g.DisplayName = "Platform"
		*members = append(*members, bob.ID)
		return nil
	})
	if err != nil || g2.Name != "Platform" || g2.ID != g.ID {
		t.Fatalf("changed: %+v %v", g2, err)
	}
	if groupsOf("alice@example.com") != "Platform,sre" || groupsOf("bob@example.com") != "Platform,dev" {
		t.Fatalf("after the rename: alice %q bob %q", groupsOf("alice@example.com"), groupsOf("bob@example.com"))
	}
	users, _ := s.Users()
	if m := inventory.Members(g2, users); !slices.Equal(m, slices.Sorted(slices.Values([]string{alice.ID, bob.ID}))) {
		t.Fatalf("members %q", m)
	}
	entries, _ := s.Audit(inventory.GroupSubject("Platform"))
	if len(entries) != 1 || entries[0].Action != "group.update" || entries[0].Reason != "1 members added, 0 removed" || entries[0].Actor != "scim:okta" {
		t.Fatalf("group audit: %+v", entries)
	}
	// No change: nothing written.
	before, _ := s.Audit("")
	if _, err := s.ChangeGroup("scim:okta", g.ID, func(*inventory.Group, *[]string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if after, _ := s.Audit(""); len(after) != len(before) {
		t.Fatalf("a change of nothing wrote %d entries", len(after)-len(before))
	}

	if _, err := s.DeleteGroup("scim:okta", g.ID); err != nil {
		t.Fatal(err)
	}
	if groupsOf("alice@example.com") != "sre" || groupsOf("bob@example.com") != "dev" {
		t.Fatalf("after the delete: alice %q bob %q", groupsOf("alice@example.com"), groupsOf("bob@example.com"))
	}
	if _, err := s.GroupByID(g.ID); !errors.Is(err, inventory.ErrNotFound) {
		t.Errorf("deleted group: %v", err)
	}
	if gs, _ := s.Groups(); len(gs) != 0 {
		t.Errorf("groups left: %+v", gs)
	}
}

// scimUser creates a user as a SCIM client does.
func scimUser(t *testing.T, s *inventory.Store, email, login string) *inventory.User {
	t.Helper()
	u, err := s.CreateUser("scim:okta", &inventory.User{Email: email, Login: login, SCIM: &inventory.SCIMIdentity{UserName: email}})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestDeleteUserByIDAfterRename: a SCIM DELETE names a user by ID. Between
// the moment it was sent (or a lookup by ID, the stale read) and the
// deletion, a PATCH renamed the user (alice → asmith) and a POST created
// a new alice@. DeleteUserByID deletes the user the ID names when it runs,
// asmith, with her devices as DeleteUser would; the new alice@ stays.
func TestDeleteUserByIDAfterRename(t *testing.T) {
	s, _ := newStore(t)
	alice := scimUser(t, s, "alice@example.com", "alice")
	pemA, _ := ek(t, 0)
	laptop, err := s.AddDevice("root", inventory.NewDevice{EK: pemA, Name: "laptop-a", Kind: "workstation", Owner: "alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	stale, err := s.UserByID(alice.ID) // what a lookup before the deletion read
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ChangeUser("scim:okta", alice.ID, func(u *inventory.User) error {
		u.Email, u.Login = "asmith@example.com", "asmith"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	hire := scimUser(t, s, stale.Email, stale.Login)

	if _, err := s.DeleteUserByID("scim:okta", alice.ID, "bad\nreason"); err == nil {
		t.Fatal("a reason of two lines accepted")
	}
	del, err := s.DeleteUserByID("scim:okta", alice.ID, "deleted by scim:okta")
	if err != nil {
		t.Fatal(err)
	}
	if del.User.ID != alice.ID || del.User.Email != "asmith@example.com" || len(del.Devices) != 1 || del.Devices[0].ID != laptop.ID ||
		del.Devices[0].Owner != "" || del.Devices[0].Status != inventory.StatusQuarantined {
		t.Fatalf("deleted %+v, devices %+v; want asmith and her laptop, quarantined", del.User, del.Devices)
	}
	if u, err := s.User("alice@example.com"); err != nil || u.ID != hire.ID {
		t.Fatalf("the new alice@: %+v %v; want %s still there", u, err, hire.ID)
	}
	if _, err := s.User("asmith@example.com"); !errors.Is(err, inventory.ErrNotFound) {
		t.Fatalf("asmith after the deletion: %v", err)
	}
	entries, err := s.Audit("")
	if err != nil {
		t.Fatal(err)
	}
	var deletes []string
	for _, e := range entries {
		if e.Action == "user.delete" {
			deletes = append(deletes, e.Subject+" by "+e.Actor+": "+e.Reason)
		}
	}
	if len(deletes) != 1 || deletes[0] != "asmith@example.com by scim:okta: deleted by scim:okta" {
		t.Fatalf("user.delete entries: %q", deletes)
	}
	if _, err := s.DeleteUserByID("scim:okta", alice.ID, "again"); !errors.Is(err, inventory.ErrNotFound) {
		t.Fatalf("deleted again: %v, want not found", err)
	}
}

// TestDeleteUserByIDRace runs a SCIM DELETE of alice's ID beside a PATCH
// that renames her and a POST that then creates a new alice@: whichever
// comes first, the new alice@ is never the one deleted.
func TestDeleteUserByIDRace(t *testing.T) {
	for i := range 20 {
		s, _ := newStore(t)
		alice := scimUser(t, s, "alice@example.com", "alice")
		var wg sync.WaitGroup
		var hireID string
		wg.Go(func() {
			if _, err := s.ChangeUser("scim:okta", alice.ID, func(u *inventory.User) error {
				u.Email, u.Login = "asmith@example.com", "asmith"
				return nil
			}); err != nil && !errors.Is(err, inventory.ErrNotFound) {
				t.Errorf("rename: %v", err)
			}
			u, err := s.CreateUser("scim:okta", &inventory.User{Email: "alice@example.com", Login: "alice", SCIM: &inventory.SCIMIdentity{UserName: "alice@example.com"}})
			if err != nil {
				t.Errorf("round %d: the new alice@: %v", i, err)
				return
			}
			hireID = u.ID
		})
		wg.Go(func() {
			if _, err := s.DeleteUserByID("scim:okta", alice.ID, "deleted by scim:okta"); err != nil {
				t.Errorf("round %d: delete: %v", i, err)
			}
		})
		wg.Wait()
		users, err := s.Users()
		if err != nil {
			t.Fatal(err)
		}
		if len(users) != 1 || users[0].ID != hireID || users[0].Email != "alice@example.com" {
			t.Fatalf("round %d: users %+v; want the new alice@ (%s) alone", i, users, hireID)
		}
	}
}
