package revocation_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/caserver/adminhttp"
	"github.com/devid-ssh/devid/internal/fakeclock"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/krl"
	"github.com/devid-ssh/devid/krldist"
	"github.com/devid-ssh/devid/revocation"
	"github.com/smallstep/nosql"
	"golang.org/x/crypto/ssh"
)

type fixture struct {
	db             nosql.DB
	inv            *inventory.Store
	rev            *revocation.Store
	clk            *fakeclock.Clock
	hostCA, userCA ssh.Signer
	serial         uint64
	log            *slog.Logger // the revocation store's; nil: discarded
}

func signer(t *testing.T) ssh.Signer {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := ssh.NewSignerFromKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newFixture(t *testing.T) *fixture {
	db, err := nosql.New("bbolt", filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f := &fixture{db: db, clk: fakeclock.New(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)), hostCA: signer(t), userCA: signer(t), serial: 100}
	if err := f.open(db); err != nil {
		t.Fatal(err)
	}
	return f
}

// open opens the inventory and the revocation store on db, as devid-ca
// does at start.
func (f *fixture) open(db nosql.DB) error {
	var err error
	if f.inv, err = inventory.Open(db, f.clk.Now); err != nil {
		return err
	}
	log := f.log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if f.rev, err = revocation.Open(revocation.Config{HostCA: f.hostCA.PublicKey(), UserCA: f.userCA.PublicKey(), Signer: f.userCA,
		MaxLifetime: 24 * time.Hour, Now: f.clk.Now, Log: log}, db, f.inv); err != nil {
		return err
	}
	return nil
}

func (f *fixture) device(t *testing.T, name string, kind inventory.Kind) *inventory.Device {
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	d, err := f.inv.AddDevice("test", inventory.NewDevice{EK: base64.StdEncoding.EncodeToString(der), Name: name, Kind: string(kind)})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// issue signs a certificate for d as step-ca would, and stores it where
// step-ca does (table ssh_certs).
func (f *fixture) issue(t *testing.T, d *inventory.Device, lifetime time.Duration) *ssh.Certificate {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := ssh.NewPublicKey(k.Public())
	f.serial++
	now := f.clk.Now()
	c := &ssh.Certificate{Key: pub, Serial: f.serial, KeyId: d.ID, ValidPrincipals: []string{d.Name},
		ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(lifetime).Unix())}
	ca := f.userCA
	c.CertType = ssh.UserCert
	if d.Kind == inventory.KindHost {
		c.CertType, ca = ssh.HostCert, f.hostCA
	}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	if err := f.db.Set([]byte("ssh_certs"), []byte(strconv.FormatUint(c.Serial, 10)), c.Marshal()); err != nil {
		t.Fatal(err)
	}
	return c
}

// current parses the KRL being served and checks its signature.
func (f *fixture) current(t *testing.T) (*revocation.Published, *krl.KRL) {
	t.Helper()
	p := f.rev.Current()
	if err := krldist.Verify(p.Version, p.Body, p.Signature, []ssh.PublicKey{f.userCA.PublicKey()}); err != nil {
		t.Fatal(err)
	}
	k, err := krl.Parse(p.Body)
	if err != nil {
		t.Fatal(err)
	}
	if k.Version != p.Version {
		t.Fatalf("KRL version %d, published as %d", k.Version, p.Version)
	}
	return p, k
}

func TestQuarantineAndBack(t *testing.T) {
	f := newFixture(t)
	host := f.device(t, "web-1", inventory.KindHost)
	laptop := f.device(t, "laptop", inventory.KindWorkstation)
	h1 := f.issue(t, host, 24*time.Hour)
	u1 := f.issue(t, laptop, 16*time.Hour)
	p0, k := f.current(t)
	if k.IsRevoked(h1) || k.IsRevoked(u1) {
		t.Fatal("nothing should be revoked yet")
	}

	// Quarantine: every certificate of the device, by key ID.
	f.clk.Advance(time.Hour)
	if _, err := f.inv.SetStatus("test", laptop.ID, inventory.StatusQuarantined, "lost"); err != nil {
		t.Fatal(err)
	}
	p1, k := f.current(t)
	if p1.Version <= p0.Version {
		t.Fatalf("version did not grow: %d → %d", p0.Version, p1.Version)
	}
	if !k.IsRevoked(u1) || k.IsRevoked(h1) {
		t.Fatalf("after quarantine: laptop revoked %v, host revoked %v", k.IsRevoked(u1), k.IsRevoked(h1))
	}

	// Back to active: the old certificate stays revoked (now by serial), a
	// new one is good.
	f.clk.Advance(time.Hour)
	if _, err := f.inv.SetStatus("test", laptop.ID, inventory.StatusActive, "found"); err != nil {
		t.Fatal(err)
	}
	u2 := f.issue(t, laptop, 16*time.Hour)
	_, k = f.current(t)
	if !k.IsRevoked(u1) {
		t.Fatal("bringing the device back brought back its earlier certificate")
	}
	if k.IsRevoked(u2) {
		t.Fatal("a certificate issued after reactivation is revoked")
	}

	// Pruning: once u1 has expired its serial goes; the KRL shrinks.
	f.clk.Advance(15 * time.Hour)
	if err := f.rev.Rebuild(); err != nil {
		t.Fatal(err)
	}
	_, k = f.current(t)
	if s := k.CertsFor(f.userCA.PublicKey()); s.Serials.Contains(u1.Serial) {
		t.Fatal("an expired certificate's serial was not pruned")
	}
}

func TestRetiredPrunedAfterLifetime(t *testing.T) {
	f := newFixture(t)
	host := f.device(t, "old", inventory.KindHost)
	c := f.issue(t, host, 24*time.Hour)
	if _, err := f.inv.SetStatus("test", host.ID, inventory.StatusRetired, ""); err != nil {
		t.Fatal(err)
	}
	_, k := f.current(t)
	if !k.IsRevoked(c) {
		t.Fatal("retired device's certificate not revoked")
	}
	f.clk.Advance(25 * time.Hour)
	if err := f.rev.Rebuild(); err != nil {
		t.Fatal(err)
	}
	_, k = f.current(t)
	if len(k.Certs) != 0 {
		t.Fatalf("a key ID that can only match expired certificates was kept: %+v", k.Certs[0].KeyIDs)
	}
}

func TestRevokeSerial(t *testing.T) {
	f := newFixture(t)
	host := f.device(t, "web-1", inventory.KindHost)
	c1, c2 := f.issue(t, host, time.Hour), f.issue(t, host, time.Hour)
	if _, err := f.rev.RevokeSerial("root", c1.Serial, "key leaked"); err != nil {
		t.Fatal(err)
	}
	_, k := f.current(t)
	if !k.IsRevoked(c1) || k.IsRevoked(c2) {
		t.Fatalf("serial revocation: c1 %v c2 %v", k.IsRevoked(c1), k.IsRevoked(c2))
	}
	if _, err := f.rev.RevokeSerial("root", 999999, ""); !errors.Is(err, revocation.ErrUnknownCertificate) {
		t.Fatalf("unknown serial: %v", err)
	}
	// A certificate from another CA is refused.
	other := &ssh.Certificate{Key: c2.Key, Serial: 5, KeyId: "x", CertType: ssh.HostCert, ValidBefore: ssh.CertTimeInfinity}
	other.SignCert(rand.Reader, signer(t))
	var wrongCA *revocation.WrongCAError
	if _, err := f.rev.RevokeCert("root", other, ""); !errors.As(err, &wrongCA) || wrongCA.Serial != 5 || wrongCA.Type != "host" {
		t.Fatalf("revoking a certificate this CA did not sign: %v, want a *WrongCAError", err)
	}
	audit, _ := f.inv.Audit(host.ID)
	if len(audit) == 0 || audit[len(audit)-1].Action != "cert.revoke" || audit[len(audit)-1].Actor != "root" {
		t.Fatalf("revocation not audited: %+v", audit)
	}
}

// TestRevokeWhenRebuildFails: a revocation committed is a success through
// the admin API (200 and the record) even when the KRL rebuild after it
// fails (here every compare-and-swap on the KRL's records loses, as if
// other instances published under each attempt); the failure is logged as
// an error, the previous KRL is still served, and the next rebuild
// publishes the revocation.
func TestRevokeWhenRebuildFails(t *testing.T) {
	f := newFixture(t)
	var logs bytes.Buffer
	f.log = slog.New(slog.NewTextHandler(&logs, nil))
	fdb := &faultDB{DB: f.db}
	if err := f.open(fdb); err != nil {
		t.Fatal(err)
	}
	host := f.device(t, "web-1", inventory.KindHost)
	c := f.issue(t, host, time.Hour)
	v0 := f.rev.Current().Version
	fdb.arm(func(bucket, key []byte) (bool, error) { return string(bucket) == "devid_krl", nil })

	root := &x509.Certificate{Raw: []byte("admin root"), Subject: pkix.Name{CommonName: "root"}}
	admin := &x509.Certificate{Raw: []byte("admin"), Subject: pkix.Name{CommonName: "alice"}}
	h := adminhttp.NewHandler(f.inv, f.rev, root, slog.New(slog.NewTextHandler(io.Discard, nil)))
	req := httptest.NewRequest("POST", adminapi.Prefix+"certs/revoke",
		strings.NewReader(`{"serial": "`+strconv.FormatUint(c.Serial, 10)+`", "reason": "key leaked"}`))
	req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{admin}, VerifiedChains: [][]*x509.Certificate{{admin, root}}}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var got adminapi.RevokedCert
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &got) != nil ||
		uint64(got.Serial) != c.Serial || got.Type != "host" || got.KeyID != host.ID || got.Reason != "key leaked" {
		t.Fatalf("revoke with the KRL rebuild failing: HTTP %d %s, want 200 and the revocation", rec.Code, rec.Body)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "KRL rebuild failed") {
		t.Errorf("the failed rebuild is not logged as an error; log:\n%s", &logs)
	}
	audit, err := f.inv.Audit(host.ID)
	if err != nil {
		t.Fatal(err)
	}
	if e := audit[len(audit)-1]; e.Action != "cert.revoke" || e.Actor != "alice" {
		t.Fatalf("last audit entry %+v, want alice's cert.revoke", e)
	}
	if p, k := f.current(t); p.Version != v0 || k.IsRevoked(c) {
		t.Fatalf("while rebuilds fail: serving version %d (revokes the certificate: %v), want %d as before", p.Version, k.IsRevoked(c), v0)
	}

	if !f.rev.Behind() {
		t.Error("the store is not Behind after a failed rebuild: nothing would retry it soon")
	}
	// devid-ca restarted meanwhile: it serves the stored KRL, Behind.
	if err := f.open(fdb); err != nil {
		t.Fatalf("open with the KRL rebuild failing and a KRL stored: %v", err)
	}
	if p, _ := f.current(t); p.Version != v0 || !f.rev.Behind() {
		t.Fatalf("after a restart with rebuilds failing: serving version %d (behind: %v), want %d, behind", p.Version, f.rev.Behind(), v0)
	}

	fdb.arm(nil)
	if err := f.rev.Rebuild(); err != nil { // the krl-rebuild task's retry, or a change
		t.Fatal(err)
	}
	if f.rev.Behind() {
		t.Error("the store is still Behind after a rebuild succeeded")
	}
	p, k := f.current(t)
	if p.Version != v0+1 || !k.IsRevoked(c) {
		t.Fatalf("after the next rebuild: version %d, certificate revoked %v; want version %d revoking it", p.Version, k.IsRevoked(c), v0+1)
	}
	if !samePublished(p, storedKRL(t, f.db)) {
		t.Fatal("the KRL served is not the one stored")
	}
}

// TestLongPoll: ?after=V waits for the next version, and answers 304 when
// none comes in time.
func TestLongPoll(t *testing.T) {
	f := newFixture(t)
	srv := httptest.NewServer(f.rev)
	defer srv.Close()
	cur := f.rev.Current().Version
	got := make(chan *krldist.Signed, 1)
	go func() {
		k, err := krldist.Fetch(context.Background(), srv.Client(), srv.URL, cur, 10*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- k
	}()
	d := f.device(t, "x", inventory.KindHost)
	if _, err := f.inv.SetStatus("test", d.ID, inventory.StatusQuarantined, ""); err != nil {
		t.Fatal(err)
	}
	k := <-got
	if k == nil || k.Version <= cur {
		t.Fatalf("long-poll answer: %+v", k)
	}
	if err := krldist.Verify(k.Version, k.Body, k.Signature, []ssh.PublicKey{f.userCA.PublicKey()}); err != nil {
		t.Fatal(err)
	}
	if err := krldist.Verify(k.Version+1, k.Body, k.Signature, []ssh.PublicKey{f.userCA.PublicKey()}); err == nil {
		t.Fatal("the signature does not bind the version")
	}
	_, err := krldist.Fetch(context.Background(), srv.Client(), srv.URL, k.Version, 100*time.Millisecond)
	if !errors.Is(err, krldist.ErrNotModified) {
		t.Fatalf("no new version: %v", err)
	}
	resp, _ := http.Get(srv.URL + "?after=x")
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad after: %d", resp.StatusCode)
	}
}

// A reason devid audit could not print as one line is refused before
// anything is revoked.
func TestRevokeReasonChecked(t *testing.T) {
	f := newFixture(t)
	host := f.device(t, "web-1", inventory.KindHost)
	c, c2 := f.issue(t, host, time.Hour), f.issue(t, host, time.Hour)
	_, err := f.rev.RevokeSerial("root", c.Serial, "leaked\n2026-01-01T00:00:00Z  root  cert.unrevoke")
	var ie *inventory.Error
	if !errors.As(err, &ie) || ie.Field != "reason" || !errors.Is(err, inventory.ErrInvalid) {
		t.Fatalf("err = %v, want an invalid reason", err)
	}
	// The next KRL, built after a good revocation, has only that one.
	if _, err := f.rev.RevokeSerial("root", c2.Serial, "leaked"); err != nil {
		t.Fatal(err)
	}
	if _, k := f.current(t); k.IsRevoked(c) || !k.IsRevoked(c2) {
		t.Fatalf("revoked: refused one %v, good one %v", k.IsRevoked(c), k.IsRevoked(c2))
	}
}

// TestRevokeTwice: a second revocation of a serial, by hand or by bringing
// the device back, keeps the first one's reason and time, and is not
// audited again.
func TestRevokeTwice(t *testing.T) {
	f := newFixture(t)
	laptop := f.device(t, "laptop", inventory.KindWorkstation)
	c := f.issue(t, laptop, 16*time.Hour)
	first, err := f.rev.RevokeSerial("root", c.Serial, "key leaked")
	if err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(time.Hour)
	_, err = f.rev.RevokeSerial("root", c.Serial, "again")
	var already *revocation.AlreadyRevokedError
	if !errors.As(err, &already) || already.Revoked.Reason != "key leaked" || !already.Revoked.RevokedAt.Equal(first.RevokedAt) {
		t.Fatalf("second revocation: %v, want an AlreadyRevokedError with the first reason and time", err)
	}
	if want := "was already revoked at 2026-11-01T12:00:00Z (key leaked); nothing changed"; !strings.Contains(err.Error(), want) {
		t.Errorf("second revocation: %q, want %q", err, want)
	}
	// Quarantined and back: the revocation by hand stays as it was.
	if _, err := f.inv.SetStatus("test", laptop.ID, inventory.StatusQuarantined, "lost"); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(time.Hour)
	if _, err := f.inv.SetStatus("test", laptop.ID, inventory.StatusActive, "found"); err != nil {
		t.Fatal(err)
	}
	_, err = f.rev.RevokeCert("root", c, "third")
	if !errors.As(err, &already) || already.Revoked.Reason != "key leaked" {
		t.Fatalf("after reactivation: %v, want the first reason", err)
	}
	if _, k := f.current(t); !k.IsRevoked(c) {
		t.Fatal("not revoked")
	}
	audit, _ := f.inv.Audit(laptop.ID)
	var revokes []inventory.AuditEntry
	for _, e := range audit {
		if e.Action == "cert.revoke" {
			revokes = append(revokes, e)
		}
	}
	if len(revokes) != 1 || revokes[0].Reason != "key leaked" || !strings.Contains(string(revokes[0].After), `"serial":"`+strconv.FormatUint(c.Serial, 10)+`"`) {
		t.Fatalf("cert.revoke audit entries: %+v, want one, with the serial and the first reason", revokes)
	}
}
