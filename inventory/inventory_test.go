package inventory_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/devid-ssh/devid/internal/fakeclock"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devid-ssh/devid/deviceid"
	"github.com/devid-ssh/devid/inventory"
	"github.com/smallstep/nosql"
	"github.com/smallstep/nosql/database"
)

func newStore(t testing.TB) (*inventory.Store, *fakeclock.Clock) {
	s, clk, _ := newStoreDB(t)
	return s, clk
}

// newStoreDB is newStore with its database, to write records as an older
// devid did.
func newStoreDB(t testing.TB) (*inventory.Store, *fakeclock.Clock, database.DB) {
	t.Helper()
	db, err := nosql.New("bbolt", filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clk := fakeclock.New(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
	s, err := inventory.Open(db, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	return s, clk, db
}

// reopen opens the store again on db: what a devid-ca starting on a
// database an older devid wrote does (Open repairs the index).
func reopen(t testing.TB, db database.DB, clk *fakeclock.Clock) *inventory.Store {
	t.Helper()
	s, err := inventory.Open(db, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// putRaw writes a record as it is, as an older devid may have.
func putRaw(t *testing.T, db database.DB, table string, key []byte, value string) {
	t.Helper()
	tx := new(database.Tx)
	tx.Set([]byte(table), key, []byte(value))
	if err := db.Update(tx); err != nil {
		t.Fatal(err)
	}
}

var (
	ekOnce sync.Once
	ekKeys []*rsa.PrivateKey
)

// ek returns the i-th test EK public key as PEM, and its device ID.
func ek(t testing.TB, i int) (string, string) {
	t.Helper()
	ekOnce.Do(func() {
		for range 4 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			ekKeys = append(ekKeys, k)
		}
	})
	der, err := x509.MarshalPKIXPublicKey(&ekKeys[i].PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	id, err := deviceid.FromPublicKey(&ekKeys[i].PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), id
}

func ekB64(t testing.TB, i int) (string, string) {
	p, id := ek(t, i)
	b, _ := pem.Decode([]byte(p))
	return base64.StdEncoding.EncodeToString(b.Bytes), id
}

func mustUser(t testing.TB, s *inventory.Store, email, login string, groups ...string) {
	t.Helper()
	if _, err := s.AddUser("test", inventory.NewUser{Email: email, Login: login, Groups: groups}); err != nil {
		t.Fatal(err)
	}
}

func TestDeviceCRUDAndStatus(t *testing.T) {
	s, clk := newStore(t)
	mustUser(t, s, "alice@example.com", "alice", "sre", "dev", "sre")
	pemA, idA := ek(t, 0)
	d, err := s.AddDevice("root", inventory.NewDevice{EK: pemA, Name: "laptop-a", Kind: "workstation", Collection: "sre-laptops", Owner: "alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != idA || d.Status != inventory.StatusActive || d.Owner != "alice@example.com" {
		t.Fatalf("AddDevice = %+v", d)
	}
	u, err := s.User("alice@example.com")
	if err != nil || strings.Join(u.Groups, ",") != "dev,sre" {
		t.Fatalf("groups not sorted and deduplicated: %+v %v", u, err)
	}
	for _, ref := range []string{idA, "laptop-a"} {
		got, err := s.Device(ref)
		if err != nil || got.ID != idA {
			t.Fatalf("Device(%q) = %+v, %v", ref, got, err)
		}
	}
	if _, err := s.Device("nope"); !errors.Is(err, inventory.ErrNotFound) {
		t.Fatalf("unknown device: %v", err)
	}
	// Same EK again: conflict, whatever the name.
	if _, err := s.AddDevice("root", inventory.NewDevice{EK: pemA, Name: "other", Kind: "host"}); !errors.Is(err, inventory.ErrConflict) {
		t.Fatalf("duplicate EK: %v", err)
	}
	pemB, _ := ek(t, 1)
	if _, err := s.AddDevice("root", inventory.NewDevice{EK: pemB, Name: "laptop-a", Kind: "host"}); !errors.Is(err, inventory.ErrConflict) {
		t.Fatalf("duplicate name: %v", err)
	}
	if _, err := s.AddDevice("root", inventory.NewDevice{EK: pemB, Name: "b", Kind: "host", Owner: "nobody@example.com"}); !errors.Is(err, inventory.ErrInvalid) || !strings.Contains(err.Error(), "owner") {
		t.Fatalf("unknown owner: %v", err)
	}

	// Status machine.
	steps := []struct {
		to inventory.Status
		ok bool
	}{
		{inventory.StatusActive, false}, // already active
		{inventory.StatusQuarantined, true},
		{inventory.StatusQuarantined, false},
		{inventory.StatusActive, true},
		{inventory.StatusRetired, true},
		{inventory.StatusActive, false}, // retired is final
		{inventory.StatusQuarantined, false},
	}
	for i, st := range steps {
		clk.Advance(time.Minute)
		d, err := s.SetStatus("root", "laptop-a", st.to, fmt.Sprintf("step %d", i))
		if st.ok != (err == nil) {
			t.Fatalf("step %d to %s: err = %v, want ok=%v", i, st.to, err, st.ok)
		}
		if err != nil {
			if !errors.Is(err, inventory.ErrConflict) {
				t.Fatalf("step %d: want conflict, got %v", i, err)
			}
			continue
		}
		if d.Status != st.to || !d.StatusChanged.Equal(clk.Now()) || d.StatusReason != fmt.Sprintf("step %d", i) {
			t.Fatalf("step %d: %+v", i, d)
		}
		// Takes effect on the very next read.
		if got, _ := s.Device(idA); got.Status != st.to {
			t.Fatalf("step %d: read back %s", i, got.Status)
		}
	}

	audit, err := s.Audit(idA)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range audit {
		actions = append(actions, e.Action)
		if e.Actor != "root" || e.Subject != idA || len(e.After) == 0 {
			t.Fatalf("audit entry %+v", e)
		}
	}
	if got := strings.Join(actions, " "); got != "device.add device.quarantine device.activate device.retire" {
		t.Fatalf("audit actions = %s", got)
	}
	if audit[0].Before != nil || !strings.Contains(string(audit[1].Before), `"status":"active"`) || !strings.Contains(string(audit[1].After), `"status":"quarantined"`) {
		t.Fatalf("before/after wrong: %s / %s / %s", audit[0].Before, audit[1].Before, audit[1].After)
	}
	if audit[1].Reason != "step 1" {
		t.Fatalf("reason = %q", audit[1].Reason)
	}
}

func TestValidation(t *testing.T) {
	s, _ := newStore(t)
	pemA, _ := ek(t, 0)
	cases := []struct {
		nd    inventory.NewDevice
		field string
	}{
		{inventory.NewDevice{Name: "a", Kind: "host"}, "ek"},
		{inventory.NewDevice{EK: "not base64 !!", Name: "a", Kind: "host"}, "ek"},
		{inventory.NewDevice{EK: base64.StdEncoding.EncodeToString([]byte("garbage")), Name: "a", Kind: "host"}, "ek"},
		{inventory.NewDevice{EK: pemA, Name: "has space", Kind: "host"}, "name"},
		{inventory.NewDevice{EK: pemA, Name: "", Kind: "host"}, "name"},
		{inventory.NewDevice{EK: pemA, Name: "a", Kind: "server"}, "kind"},
		{inventory.NewDevice{EK: pemA, Name: "a", Kind: "host", Collection: "a,b"}, "collection"},
		{inventory.NewDevice{EK: pemA, Name: "a", Kind: "host", Status: "lost"}, "status"},
		{inventory.NewDevice{EK: pemA, Name: "a", Kind: "host", Owner: "Alice <a@example.com>"}, "owner"},
	}
	for _, c := range cases {
		_, err := s.AddDevice("root", c.nd)
		var ie *inventory.Error
		if !errors.As(err, &ie) || ie.Field != c.field || !errors.Is(err, inventory.ErrInvalid) {
			t.Errorf("%+v: err = %v, want invalid %s", c.nd, err, c.field)
		}
	}
	// An ECDSA key is not an EK devid accepts.
	if devs, _ := s.Devices(); len(devs) != 0 {
		t.Fatalf("invalid adds wrote devices: %d", len(devs))
	}
	for _, nu := range []inventory.NewUser{
		{Email: "not-an-email", Login: "x"},
		{Email: "a@example.com", Login: "-x"},
		{Email: "a@example.com", Login: "x", Groups: []string{"has space"}},
	} {
		if _, err := s.AddUser("root", nu); !errors.Is(err, inventory.ErrInvalid) {
			t.Errorf("%+v: err = %v", nu, err)
		}
	}
	mustUser(t, s, "a@example.com", "a")
	if _, err := s.AddUser("root", inventory.NewUser{Email: "b@example.com", Login: "a"}); !errors.Is(err, inventory.ErrConflict) {
		t.Errorf("duplicate login: %v", err)
	}
}

func TestImportDevices(t *testing.T) {
	s, clk := newStore(t)
	mustUser(t, s, "alice@example.com", "alice", "sre")
	a, idA := ekB64(t, 0)
	b, idB := ekB64(t, 1)
	pemC, idC := ek(t, 2)
	quoted := pemC // a PEM block in a quoted, multi-line CSV cell
	csv := "# exported from the MDM\nek,name,kind,collection,owner\n" +
		a + ",laptop-a,workstation,sre-laptops,alice@example.com\n" +
		b + ",host-b,host,web,\n" +
		`"` + quoted + `",host-c,host,web,` + "\n"
	rep, err := s.ImportDevices("root", "mdm.csv", []byte(csv), false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Counts[inventory.Added] != 3 || len(rep.Results) != 3 {
		t.Fatalf("report %+v", rep)
	}
	if rep.Results[0].Line != 3 || rep.Results[1].Line != 4 || rep.Results[2].Line != 5 || rep.Results[2].Subject != idC {
		t.Fatalf("lines/subjects wrong: %+v", rep.Results)
	}

	// Idempotent: the same file again changes nothing and writes no audit.
	before, _ := s.Audit("")
	rep, err = s.ImportDevices("root", "mdm.csv", []byte(csv), false)
	if err != nil || rep.Counts[inventory.Unchanged] != 3 {
		t.Fatalf("second import: %+v, %v", rep, err)
	}
	after, _ := s.Audit("")
	if len(after) != len(before) {
		t.Fatalf("idempotent import wrote %d audit entries", len(after)-len(before))
	}

	// Quarantine laptop-a; an import saying "active" holds it, an import
	// saying "retired" retires host-b, and a changed collection is an update.
	clk.Advance(time.Hour)
	if _, err := s.SetStatus("root", idA, inventory.StatusQuarantined, "lost"); err != nil {
		t.Fatal(err)
	}
	csv2 := "ek,name,kind,collection,owner,status\n" +
		a + ",laptop-a,workstation,sre-laptops,alice@example.com,active\n" +
		b + ",host-b,host,web,,retired\n" +
		`"` + quoted + `",host-c,host,db,,` + "\n"
	rep, err = s.ImportDevices("root", "mdm2.csv", []byte(csv2), false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{inventory.Held, inventory.Updated, inventory.Updated}
	for i, r := range rep.Results {
		if r.Result != want[i] {
			t.Fatalf("row %d: %+v, want %s", i, r, want[i])
		}
	}
	if d, _ := s.Device(idA); d.Status != inventory.StatusQuarantined {
		t.Fatalf("import reactivated a quarantined device")
	}
	if d, _ := s.Device(idB); d.Status != inventory.StatusRetired {
		t.Fatalf("host-b status %s", d.Status)
	}
	if d, _ := s.Device(idC); d.Collection != "db" || d.Status != inventory.StatusActive {
		t.Fatalf("host-c %+v", d)
	}
}

func TestImportFailsWhole(t *testing.T) {
	s, _ := newStore(t)
	a, _ := ekB64(t, 0)
	b, idB := ekB64(t, 1)
	good := a + ",laptop-a,workstation,,\n"
	cases := []struct {
		name, data, want string
	}{
		{"duplicate", "ek,name,kind,collection,owner\n" + good + b + ",x,host,,\n" + a + ",y,host,,\n", "devices.csv:4: ek: same device as line 2"},
		{"duplicate name", "ek,name,kind\n" + a + ",n,host\n" + b + ",n,host\n", "devices.csv:3: name:"},
		{"malformed", "ek,name,kind,collection,owner\n" + good + b + ",x,host\n", "devices.csv:3: wrong number of fields"},
		{"unknown status", "ek,name,kind,status\n" + a + ",a,host,active\n" + b + ",b,host,lost\n", `devices.csv:3: status: unknown status "lost"`},
		{"bad EK", "ek,name,kind\n" + a + ",a,host\nAAAA,b,host\n", "devices.csv:3: ek:"},
		{"unknown owner", "ek,name,kind,owner\n" + a + ",a,host,bob@example.com\n", "devices.csv:2: owner: no user bob@example.com"},
		{"unknown column", "ek,name,kind,colour\n" + a + ",a,host,red\n", `devices.csv:1: unknown column "colour"`},
		{"missing column", "ek,name\n" + a + ",a\n", `devices.csv:1: missing column "kind"`},
		{"id mismatch", "id,ek,name,kind\n" + idB + "," + a + ",a,host\n", "devices.csv:2: id:"},
		{"not text", "ek,name,kind\n\xff\xfe,a,host\n", "devices.csv:2: ek: not valid UTF-8 (byte 0)"},
		{"NUL", "ek,name,kind\n" + a + ",a\x00,host\n", "devices.csv:2: name: control character U+0000"},
		{"empty", "  \n", "devices.csv: empty import"},
		{"header only", "ek,name,kind\n", "no rows"},
		{"json unknown field", "[\n {\"ek\": \"" + a + "\", \"name\": \"a\", \"kind\": \"host\"},\n {\"ek\": \"" + b + "\", \"name\": \"b\", \"kind\": \"host\", \"colour\": 1}\n]", `devices.csv:3: json: unknown field "colour"`},
		{"json bad kind", "[{\"ek\": \"" + a + "\", \"name\": \"a\", \"kind\": \"host\"},\n\n{\"ek\": \"" + b + "\", \"name\": \"b\", \"kind\": \"hots\"}]", `devices.csv:3: kind: unknown kind "hots"`},
		{"json trailing", "[{\"ek\": \"" + a + "\", \"name\": \"a\", \"kind\": \"host\"}] x", "trailing data"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := s.ImportDevices("root", "devices.csv", []byte(c.data), false)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
			if devs, _ := s.Devices(); len(devs) != 0 {
				t.Fatalf("a failed import wrote %d devices", len(devs))
			}
			if audit, _ := s.Audit(""); len(audit) != 0 {
				t.Fatalf("a failed import wrote audit entries")
			}
		})
	}
}

func TestImportJSONAndDryRun(t *testing.T) {
	s, _ := newStore(t)
	a, idA := ekB64(t, 0)
	data := fmt.Sprintf(`[
  {"id": %q, "ek": %q, "name": "a", "kind": "host", "status": "quarantined"}
]`, idA, a)
	rep, err := s.ImportDevices("root", "d.json", []byte(data), true)
	if err != nil || !rep.DryRun || rep.Counts[inventory.Added] != 1 || rep.Results[0].Line != 2 {
		t.Fatalf("dry run: %+v %v", rep, err)
	}
	if devs, _ := s.Devices(); len(devs) != 0 {
		t.Fatal("dry run wrote")
	}
	if _, err := s.ImportDevices("root", "d.json", []byte(data), false); err != nil {
		t.Fatal(err)
	}
	if d, err := s.Device(idA); err != nil || d.Status != inventory.StatusQuarantined {
		t.Fatalf("%+v %v", d, err)
	}
}

func TestImportUsers(t *testing.T) {
	s, _ := newStore(t)
	rep, err := s.ImportUsers("root", "u.csv", []byte("email,login,groups\nalice@example.com,alice,sre;dev\nbob@example.com,bob,\n"), false)
	if err != nil || rep.Counts[inventory.Added] != 2 {
		t.Fatalf("%+v %v", rep, err)
	}
	rep, err = s.ImportUsers("root", "u.json", []byte(`[{"email":"alice@example.com","login":"alice","groups":["sre"]},{"email":"bob@example.com","login":"bob"}]`), false)
	if err != nil || rep.Counts[inventory.Updated] != 1 || rep.Counts[inventory.Unchanged] != 1 {
		t.Fatalf("%+v %v", rep, err)
	}
	if u, _ := s.User("alice@example.com"); strings.Join(u.Groups, ",") != "sre" {
		t.Fatalf("groups %v", u.Groups)
	}
	// Swapping logins within one file is fine; taking another's login is not.
	if _, err := s.ImportUsers("root", "u.csv", []byte("email,login\ncarol@example.com,bob\n"), false); !errors.Is(err, inventory.ErrConflict) || !strings.Contains(err.Error(), "u.csv:2: login") {
		t.Fatalf("login conflict: %v", err)
	}
	audit, _ := s.Audit("alice@example.com")
	if len(audit) != 2 || audit[1].Action != "user.update" {
		t.Fatalf("audit %+v", audit)
	}
}
