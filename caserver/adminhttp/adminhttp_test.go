package adminhttp

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/revocation"
	"golang.org/x/crypto/ssh"
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
		Status: inventory.StatusQuarantined, StatusReason: "lost", StatusChanged: t0, QuarantineUntil: &t0, EKPublic: []byte{1}, EKCert: []byte{2},
		HostNames: []string{"web-1.example.com"}, Serial: "C02X", AssetTag: "A-1", OS: "Debian 12", Source: "jamf", SourceID: "17",
		Created: t0.Add(-time.Hour), Updated: t0}
	sameJSON(t, d, device(d))
	c := &inventory.Collection{Name: "web", AllowFileKeys: true, HostNames: []string{"*.web.example.com"}, Created: t0, Updated: t0}
	sameJSON(t, c, collection(c))
	u := &inventory.User{ID: "1", Email: "a@example.com", Login: "a", Groups: []string{"sre"}, Disabled: true, DisabledBy: "admin", StatusReason: "left", StatusChanged: t0,
		SCIM: &inventory.SCIMIdentity{UserName: "A@example.com", ExternalID: "x", DisplayName: "A", GivenName: "a", FamilyName: "b",
			Emails: []inventory.SCIMEmail{{Value: "a@example.com", Type: "work", Primary: true}}}, Created: t0, Updated: t0}
	sameJSON(t, u, user(u))
	sameJSON(t, u.SCIM, user(u).SCIM)
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
	nd := &adminapi.NewDevice{ID: "i", EK: "e", Name: "n", Kind: "k", Collection: "c", Owner: "o", Status: "s", HostNames: []string{"h"},
		Serial: "se", AssetTag: "a", OS: "os", Source: "so", SourceID: "si"}
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
		{inventory.Unchanged, adminapi.Unchanged}, {inventory.Held, adminapi.Held},
		{inventory.Missing, adminapi.Missing}, {inventory.MissingQuarantined, adminapi.MissingQuarantined}} {
		if p[0] != p[1] {
			t.Errorf("import result %q is %q on the wire", p[0], p[1])
		}
	}
}

// fakeRevoker answers every revocation with err.
type fakeRevoker struct{ err error }

func (f fakeRevoker) RevokeSerial(string, uint64, string) (*revocation.RevokedCert, error) {
	return nil, f.err
}

func (f fakeRevoker) RevokeCert(string, *ssh.Certificate, string) (*revocation.RevokedCert, error) {
	return nil, f.err
}

// TestRevokeErrors: the revocation store's errors reach the caller as the
// admin API documents them, mapped by type, not by text.
func TestRevokeErrors(t *testing.T) {
	root := &x509.Certificate{Raw: []byte("admin root"), Subject: pkix.Name{CommonName: "root"}}
	admin := &x509.Certificate{Raw: []byte("admin"), Subject: pkix.Name{CommonName: "alice"}}
	other := &x509.Certificate{Raw: []byte("device root")}
	rc := &revocation.RevokedCert{Serial: 7, Type: "user", RevokedAt: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range []struct {
		err   error
		chain []*x509.Certificate // nil: no client certificate
		code  int
		want  adminapi.ErrorResponse
	}{
		{&revocation.AlreadyRevokedError{Revoked: rc}, []*x509.Certificate{admin, root}, http.StatusConflict,
			adminapi.ErrorResponse{Error: "revocation: user certificate 7 was already revoked at 2026-11-01T12:00:00Z; nothing changed"}},
		{fmt.Errorf("revocation: serial 7: %w", revocation.ErrUnknownCertificate), []*x509.Certificate{admin, root}, http.StatusNotFound,
			adminapi.ErrorResponse{Error: "revocation: serial 7: " + revocation.ErrUnknownCertificate.Error(), Field: "serial"}},
		{&revocation.WrongCAError{Serial: 7, KeyID: "k", Type: "host"}, []*x509.Certificate{admin, root}, http.StatusBadRequest,
			adminapi.ErrorResponse{Error: `revocation: certificate 7 (key ID "k") was not signed by this CA's host CA key`, Field: "certificate"}},
		{errors.New("disk on fire"), []*x509.Certificate{admin, root}, http.StatusInternalServerError,
			adminapi.ErrorResponse{Error: "internal error; see the CA's log"}},
		{nil, nil, http.StatusUnauthorized,
			adminapi.ErrorResponse{Error: "authentication required: present an admin client certificate"}},
		{nil, []*x509.Certificate{admin, other}, http.StatusForbidden,
			adminapi.ErrorResponse{Error: "this client certificate is not an admin certificate"}},
	} {
		h := NewHandler(nil, fakeRevoker{c.err}, root, log)
		req := httptest.NewRequest("POST", adminapi.Prefix+"certs/revoke", strings.NewReader(`{"serial": "7"}`))
		req.TLS = &tls.ConnectionState{}
		if c.chain != nil {
			req.TLS.PeerCertificates = c.chain[:1]
			req.TLS.VerifiedChains = [][]*x509.Certificate{c.chain}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var got adminapi.ErrorResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != c.code || got != c.want {
			t.Errorf("%v: HTTP %d %s, want %d %+v", c.err, rec.Code, rec.Body, c.code, c.want)
		}
	}
}
