package inventory_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/inventory"
)

// A column absent from a device import keeps the field; an empty cell
// clears it; the dry run reports exactly what the real import then does.
func TestImportDevicesKeepsAbsentColumns(t *testing.T) {
	s, _ := newStore(t)
	mustUser(t, s, "alice@example.com", "alice")
	a, idA := ekB64(t, 0)
	b, idB := ekB64(t, 1)
	full := "ek,name,kind,collection,owner\n" +
		a + ",laptop-a,workstation,sre-laptops,alice@example.com\n" +
		b + ",laptop-b,workstation,web,alice@example.com\n"
	if _, err := s.ImportDevices("root", "full.csv", []byte(full), false); err != nil {
		t.Fatal(err)
	}
	want := func(id, collection, owner string) {
		t.Helper()
		d, err := s.Device(id)
		if err != nil || d.Collection != collection || d.Owner != owner {
			t.Fatalf("device %s = %+v, %v; want collection %q owner %q", id, d, err, collection, owner)
		}
	}

	// An MDM export without owner and collection columns: a rename of
	// laptop-a only, and laptop-b untouched.
	slim := "ek,name,kind\n" + a + ",laptop-a2,workstation\n" + b + ",laptop-b,workstation\n"
	for _, dry := range []bool{true, false} {
		rep, err := s.ImportDevices("root", "slim.csv", []byte(slim), dry)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Counts[inventory.Updated] != 1 || rep.Counts[inventory.Unchanged] != 1 ||
			strings.Join(rep.Results[0].Changes, ";") != `name: "laptop-a" → "laptop-a2"` {
			t.Fatalf("dry run %v: report %+v", dry, rep)
		}
	}
	want(idA, "sre-laptops", "alice@example.com")
	want(idB, "web", "alice@example.com")

	// The same in JSON: absent keys keep, explicit empty values (and null)
	// clear.
	js := fmt.Sprintf(`[
  {"ek": %q, "name": "laptop-a2", "kind": "workstation"},
  {"ek": %q, "name": "laptop-b", "kind": "workstation", "owner": "", "collection": null}
]`, a, b)
	for _, dry := range []bool{true, false} {
		rep, err := s.ImportDevices("root", "d.json", []byte(js), dry)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Results[0].Result != inventory.Unchanged || rep.Results[1].Result != inventory.Updated ||
			strings.Join(rep.Results[1].Changes, ";") != `collection: "web" → "";owner: "alice@example.com" → ""` {
			t.Fatalf("dry run %v: report %+v", dry, rep.Results)
		}
	}
	want(idA, "sre-laptops", "alice@example.com")
	want(idB, "", "")

	// An explicitly empty CSV cell clears.
	clear := "ek,name,kind,owner\n" + a + ",laptop-a2,workstation,\n"
	if _, err := s.ImportDevices("root", "clear.csv", []byte(clear), false); err != nil {
		t.Fatal(err)
	}
	want(idA, "sre-laptops", "")
}

// A user import without a groups column (or key) keeps everyone's groups.
func TestImportUsersKeepsAbsentGroups(t *testing.T) {
	s, _ := newStore(t)
	mustUser(t, s, "alice@example.com", "alice", "sre", "dev")
	mustUser(t, s, "bob@example.com", "bob", "web")
	groups := func(email, want string) {
		t.Helper()
		u, err := s.User(email)
		if err != nil || strings.Join(u.Groups, ",") != want {
			t.Fatalf("%s: %+v, %v; want groups %s", email, u, err, want)
		}
	}
	for _, dry := range []bool{true, false} {
		rep, err := s.ImportUsers("root", "u.csv", []byte("email,login\nalice@example.com,alice\nbob@example.com,bobby\n"), dry)
		if err != nil || rep.Counts[inventory.Unchanged] != 1 || rep.Counts[inventory.Updated] != 1 ||
			strings.Join(rep.Results[1].Changes, ";") != `login: "bob" → "bobby"` {
			t.Fatalf("dry run %v: %+v, %v", dry, rep, err)
		}
	}
	groups("alice@example.com", "dev,sre")
	groups("bob@example.com", "web")
	rep, err := s.ImportUsers("root", "u.json", []byte(`[{"email":"alice@example.com","login":"alice"},{"email":"bob@example.com","login":"bobby","groups":[]}]`), false)
	if err != nil || rep.Counts[inventory.Unchanged] != 1 || rep.Counts[inventory.Updated] != 1 {
		t.Fatalf("%+v, %v", rep, err)
	}
	groups("alice@example.com", "dev,sre")
	groups("bob@example.com", "")
	// Keys match fields as encoding/json matches them: in any case, with
	// Unicode folding (ſ is s).
	if _, err := s.ImportUsers("root", "u.json", []byte(`[{"EMAIL":"bob@example.com","login":"bobby","groupſ":["web"]}]`), false); err != nil {
		t.Fatal(err)
	}
	groups("bob@example.com", "web")
	// An empty groups cell clears.
	if _, err := s.ImportUsers("root", "u.csv", []byte("email,login,groups\nalice@example.com,alice,\n"), false); err != nil {
		t.Fatal(err)
	}
	groups("alice@example.com", "")
}

// A held row changes nothing at all, in the dry run and for real.
func TestImportHeldRowChangesNothing(t *testing.T) {
	s, clk := newStore(t)
	mustUser(t, s, "alice@example.com", "alice")
	mustUser(t, s, "mallory@example.com", "mallory")
	a, idA := ekB64(t, 0)
	if _, err := s.ImportDevices("root", "d.csv", []byte("ek,name,kind,collection,owner\n"+a+",laptop-a,workstation,sre,alice@example.com\n"), false); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	if _, err := s.SetStatus("root", idA, inventory.StatusQuarantined, "lost"); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Device(idA)
	audit, _ := s.Audit("")
	row := "ek,name,kind,collection,owner,status\n" + a + ",laptop-x,workstation,web,mallory@example.com,active\n"
	for _, dry := range []bool{true, false} {
		rep, err := s.ImportDevices("root", "d.csv", []byte(row), dry)
		if err != nil {
			t.Fatal(err)
		}
		r := rep.Results[0]
		if r.Result != inventory.Held || len(r.Changes) != 0 || rep.Counts[inventory.Held] != 1 || rep.Counts[inventory.Updated] != 0 ||
			!strings.Contains(r.Note, "kept quarantined") || !strings.Contains(r.Note, "owner") || r.Name != "laptop-a" {
			t.Fatalf("dry run %v: %+v", dry, rep)
		}
	}
	after, _ := s.Device(idA)
	if fmt.Sprint(*after) != fmt.Sprint(*before) {
		t.Fatalf("a held row changed the device:\n%+v\n%+v", before, after)
	}
	if audit2, _ := s.Audit(""); len(audit2) != len(audit) {
		t.Fatalf("a held row wrote %d audit entries", len(audit2)-len(audit))
	}
	// The held device's name stays taken.
	b, _ := ekB64(t, 1)
	if _, err := s.ImportDevices("root", "d.csv", []byte(row+b+",laptop-a,host,,,\n"), true); !errors.Is(err, inventory.ErrConflict) {
		t.Fatalf("name of a held device: %v", err)
	}
}
