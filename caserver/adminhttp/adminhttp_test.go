package adminhttp

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/revocation"
)

// TestAuditSerialsAsStrings: a cert.revoke entry written before serials
// were strings is answered with its serial as a string, exactly.
func TestAuditSerialsAsStrings(t *testing.T) {
	old := inventory.AuditEntry{Action: "cert.revoke", After: json.RawMessage(`{"serial":10071804687342786553,"type":"user","keyId":"k","notAfter":"2026-11-01T12:00:00Z","revokedAt":"2026-11-01T11:00:00Z","reason":"key leaked"}`)}
	got := string(serialsAsStrings(old))
	if !strings.Contains(got, `"serial":"10071804687342786553"`) || !strings.Contains(got, `"reason":"key leaked"`) {
		t.Errorf("old cert.revoke entry: %s", got)
	}
	dev := inventory.AuditEntry{Action: "device.add", After: json.RawMessage(`{"id":"x"}`)}
	if got := string(serialsAsStrings(dev)); got != `{"id":"x"}` {
		t.Errorf("device entry changed: %s", got)
	}
}

// sameJSON fails unless store and wire, every field set (fill checks
// that), marshal to the same bytes, as the admin API wrote before it had
// wire types of its own.
func sameJSON(t *testing.T, store, wire any) {
	t.Helper()
	for _, v := range []any{store, wire} {
		rv := reflect.ValueOf(v).Elem()
		for i := range rv.NumField() {
			if rv.Field(i).IsZero() {
				t.Errorf("%T.%s is not set: the test would not check it", v, rv.Type().Field(i).Name)
			}
		}
	}
	if n, m := reflect.TypeOf(store).Elem().NumField(), reflect.TypeOf(wire).Elem().NumField(); n != m {
		t.Errorf("%T has %d fields, %T %d", store, n, wire, m)
	}
	a, err := json.MarshalIndent(store, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(wire, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Errorf("%T marshals to\n%s\n%T to\n%s", store, a, wire, b)
	}
}

func TestWireJSON(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	d := &inventory.Device{ID: "urn:ek:sha256:x", Name: "web-1", Kind: inventory.KindHost, Collection: "web", Owner: "a@example.com",
		Status: inventory.StatusQuarantined, StatusReason: "lost", StatusChanged: t0, EKPublic: []byte{1}, EKCert: []byte{2},
		Created: t0.Add(-time.Hour), Updated: t0}
	sameJSON(t, d, device(d))
	u := &inventory.User{Email: "a@example.com", Login: "a", Groups: []string{"sre"}, Created: t0, Updated: t0}
	sameJSON(t, u, user(u))
	e := &inventory.AuditEntry{ID: "1", Time: t0, Actor: "admin", Action: "device.quarantine", Subject: d.ID, SubjectName: d.Name,
		Reason: "lost", Before: json.RawMessage(`{"a":1}`), After: json.RawMessage(`{"a":2}`)}
	we := adminapi.AuditEntry(*e)
	sameJSON(t, e, &we)
	res := inventory.ImportResult{Line: 2, Subject: d.ID, Name: d.Name, Result: inventory.Held, Changes: []string{"x"}, Note: "n"}
	rep := &inventory.ImportReport{DryRun: true, Counts: map[string]int{inventory.Held: 1}, Results: []inventory.ImportResult{res}}
	sameJSON(t, rep, importReport(rep))
	wres := adminapi.ImportResult(res)
	sameJSON(t, &res, &wres)
	rc := &revocation.RevokedCert{Serial: 10071804687342786553, Type: "user", KeyID: d.ID, NotAfter: t0, RevokedAt: t0, Reason: "leaked"}
	sameJSON(t, rc, revokedCert(rc))
	nd := &adminapi.NewDevice{ID: "i", EK: "e", Name: "n", Kind: "k", Collection: "c", Owner: "o", Status: "s"}
	snd := inventory.NewDevice(*nd)
	sameJSON(t, &snd, nd)
	nu := &adminapi.NewUser{Email: "e", Login: "l", Groups: []string{"g"}}
	snu := inventory.NewUser(*nu)
	sameJSON(t, &snu, nu)
}

// TestWireVocabulary: the wire package's kinds, statuses and import
// results are the inventory's, and the client checks a flag as the CA
// checks a field.
func TestWireVocabulary(t *testing.T) {
	for _, s := range []string{"active", "quarantined", "retired", "Active", "stolen", ""} {
		st, err := inventory.ParseStatus(s)
		wst, werr := adminapi.ParseStatus(s)
		if string(st) != string(wst) || (err == nil) != (werr == nil) || err != nil && err.Error() != werr.Error() {
			t.Errorf("status %q: inventory %q %v, adminapi %q %v", s, st, err, wst, werr)
		}
	}
	for _, s := range []string{"host", "workstation", "desktop", ""} {
		k, err := inventory.ParseKind(s)
		wk, werr := adminapi.ParseKind(s)
		if string(k) != string(wk) || (err == nil) != (werr == nil) || err != nil && err.Error() != werr.Error() {
			t.Errorf("kind %q: inventory %q %v, adminapi %q %v", s, k, err, wk, werr)
		}
	}
	for _, p := range [][2]string{{inventory.Added, adminapi.Added}, {inventory.Updated, adminapi.Updated},
		{inventory.Unchanged, adminapi.Unchanged}, {inventory.Held, adminapi.Held}} {
		if p[0] != p[1] {
			t.Errorf("import result %q is %q on the wire", p[0], p[1])
		}
	}
}
