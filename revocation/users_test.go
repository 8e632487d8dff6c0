package revocation_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/fakeclock"
	"github.com/devid-ssh/devid/inventory"
	"github.com/smallstep/nosql"
	"golang.org/x/crypto/ssh"
)

// ownedDevice registers a device owned by owner ("" for none).
func (f *fixture) ownedDevice(t *testing.T, name string, kind inventory.Kind, owner string) *inventory.Device {
	t.Helper()
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	d, err := f.inv.AddDevice("test", inventory.NewDevice{EK: base64.StdEncoding.EncodeToString(der), Name: name, Kind: string(kind), Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// issueWith signs a certificate for d with these principals, valid from a
// minute ago (step-ca's backdate) for lifetime, and stores it where
// step-ca does.
func (f *fixture) issueWith(t *testing.T, d *inventory.Device, lifetime time.Duration, principals ...string) *ssh.Certificate {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := ssh.NewPublicKey(k.Public())
	f.serial++
	now := f.clk.Now()
	c := &ssh.Certificate{Key: pub, Serial: f.serial, KeyId: d.ID, ValidPrincipals: append([]string{d.ID}, principals...),
		ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(lifetime).Unix()), CertType: ssh.UserCert}
	ca := f.userCA
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

// revokedSerials are the serials the cert.revoke audit entries name,
// by actor.
func (f *fixture) revokedSerials(t *testing.T) map[string][]string {
	t.Helper()
	entries, err := f.inv.Audit("")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, e := range entries {
		if e.Action == "cert.revoke" {
			var rc struct{ Serial string }
			if err := json.Unmarshal(e.After, &rc); err != nil {
				t.Fatal(err)
			}
			out[e.Actor] = append(out[e.Actor], rc.Serial+" "+e.Reason)
		}
	}
	return out
}

// TestDisableUser: disabling a user revokes, at once, every unexpired
// user certificate of their devices and every one naming them, by serial,
// audited with the actor; not other users' certificates, nor their host's
// host certificate. Enabling them does not bring those back, and what
// their devices get after is good.
func TestDisableUser(t *testing.T) {
	f := newFixture(t)
	for _, u := range []inventory.NewUser{{Email: "alice@example.com", Login: "alice"}, {Email: "bob@example.com", Login: "bob"}} {
		if _, err := f.inv.AddUser("test", u); err != nil {
			t.Fatal(err)
		}
	}
	laptopA := f.ownedDevice(t, "laptop-a", inventory.KindWorkstation, "alice@example.com")
	webA := f.ownedDevice(t, "web-a", inventory.KindHost, "alice@example.com")
	laptopB := f.ownedDevice(t, "laptop-b", inventory.KindWorkstation, "bob@example.com")
	shared := f.ownedDevice(t, "shared", inventory.KindWorkstation, "")

	a1 := f.issueWith(t, laptopA, 16*time.Hour, "user:alice@example.com", "login:alice")
	a2 := f.issueWith(t, laptopA, 16*time.Hour) // issued before alice owned it: its key ID is enough
	// laptop-b was alice's until recently: a certificate naming her.
	b1 := f.issueWith(t, laptopB, 16*time.Hour, "user:alice@example.com", "login:alice")
	b2 := f.issueWith(t, laptopB, 16*time.Hour, "user:bob@example.com", "login:bob")
	s1 := f.issueWith(t, shared, 16*time.Hour, "login:alice") // the login alone
	h1 := f.issueWith(t, webA, 24*time.Hour, "web-a.example.com")
	gone := f.issueWith(t, laptopA, time.Hour, "user:alice@example.com") // expires before the disable
	f.clk.Advance(2 * time.Hour)
	p0, _ := f.current(t)

	if _, err := f.inv.SetUserDisabled("carol", "alice@example.com", true, "left"); err != nil {
		t.Fatal(err)
	}
	p1, _ := f.current(t)
	if p1.Version <= p0.Version {
		t.Fatalf("KRL version %d → %d: not rebuilt after the disable", p0.Version, p1.Version)
	}
	f.wantRevoked(t, "disabled", []*ssh.Certificate{a1, a2, b1, s1}, []*ssh.Certificate{b2, h1})
	got := f.revokedSerials(t)["carol"]
	want := []string{}
	for _, c := range []*ssh.Certificate{a1, a2, b1, s1} {
		want = append(want, fmt.Sprintf("%d user alice@example.com disabled", c.Serial))
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("cert.revoke entries by carol:\n%q\nwant\n%q", got, want)
	}
	for _, c := range []*ssh.Certificate{gone, b2, h1} {
		if _, err := f.db.Get([]byte("devid_revoked_serials"), []byte(certKey(c))); err == nil {
			t.Errorf("certificate %d (%s) revoked by serial", c.Serial, c.KeyId)
		}
	}

	// A certificate step-ca recorded just after the revocation read the
	// issued certificates (its issuance check had passed before the
	// disable committed): revoked all the same, by its key ID, while alice
	// is disabled.
	late := f.issueWith(t, laptopA, 16*time.Hour, "user:alice@example.com")
	f.wantRevoked(t, "a late certificate", []*ssh.Certificate{late}, nil)

	// Enabled again: the old certificates stay revoked, the late one is
	// revoked by serial, and what is issued from now on is good.
	f.clk.Advance(time.Hour)
	if _, err := f.inv.SetUserDisabled("carol", "alice@example.com", false, "back"); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(time.Minute)
	fresh := f.issueWith(t, laptopA, 16*time.Hour, "user:alice@example.com", "login:alice")
	p2, _ := f.current(t)
	if p2.Version <= p1.Version {
		t.Fatalf("KRL version %d → %d: not rebuilt after the enable", p1.Version, p2.Version)
	}
	f.wantRevoked(t, "enabled again", []*ssh.Certificate{a1, a2, b1, s1, late}, []*ssh.Certificate{fresh, b2, h1})
	if got := f.revokedSerials(t)["carol"]; len(got) != 5 || got[4] != fmt.Sprintf("%d certificate from before user alice@example.com was disabled", late.Serial) {
		t.Fatalf("cert.revoke entries by carol after the enable: %q", got)
	}

	// Disabled again: the fresh certificate goes too; once alice's last
	// certificates have expired, nothing of hers is left in the KRL.
	if _, err := f.inv.SetUserDisabled("carol", "alice@example.com", true, "left again"); err != nil {
		t.Fatal(err)
	}
	f.wantRevoked(t, "disabled again", []*ssh.Certificate{fresh}, nil)
	f.clk.Advance(25 * time.Hour)
	if err := f.rev.Rebuild(); err != nil {
		t.Fatal(err)
	}
	_, k := f.current(t)
	if s := k.CertsFor(f.userCA.PublicKey()); s.Serials.Contains(fresh.Serial) || len(s.KeyIDs) > 0 {
		t.Errorf("after every certificate expired: serials %v key IDs %q", s.Serials, s.KeyIDs)
	}
}

func certKey(c *ssh.Certificate) string {
	typ := "user"
	if c.CertType == ssh.HostCert {
		typ = "host"
	}
	return typ + ":" + strconv.FormatUint(c.Serial, 10)
}

// TestDeleteUserRevokes: deleting a user revokes their certificates by
// serial, and quarantines their workstation: its key ID is in the KRL.
func TestDeleteUserRevokes(t *testing.T) {
	f := newFixture(t)
	if _, err := f.inv.AddUser("test", inventory.NewUser{Email: "alice@example.com", Login: "alice"}); err != nil {
		t.Fatal(err)
	}
	laptopA := f.ownedDevice(t, "laptop-a", inventory.KindWorkstation, "alice@example.com")
	other := f.ownedDevice(t, "shared", inventory.KindWorkstation, "")
	a1 := f.issueWith(t, laptopA, 16*time.Hour, "user:alice@example.com")
	o1 := f.issueWith(t, other, 16*time.Hour, "login:alice")
	o2 := f.issueWith(t, other, 16*time.Hour)
	f.clk.Advance(time.Hour)
	if _, err := f.inv.DeleteUser("carol", "alice@example.com", "left"); err != nil {
		t.Fatal(err)
	}
	f.wantRevoked(t, "deleted", []*ssh.Certificate{a1, o1}, []*ssh.Certificate{o2})
	_, k := f.current(t)
	if s := k.CertsFor(f.userCA.PublicKey()); len(s.KeyIDs) != 1 || s.KeyIDs[0] != laptopA.ID {
		t.Errorf("key IDs %q, want the quarantined workstation's", s.KeyIDs)
	}
	if got := f.revokedSerials(t)["carol"]; len(got) != 2 || !strings.HasSuffix(got[0], " user alice@example.com deleted") {
		t.Errorf("cert.revoke entries: %q", got)
	}
}

// TestDisableCrash kills devid-ca at every write of `devid user disable`
// in turn, restarts it on the same database, and checks that the user's
// certificates are revoked in the KRL served after the restart whenever
// the user is disabled (the disable and the revocations are one
// transaction), and after the operator retries the disable otherwise.
func TestDisableCrash(t *testing.T) {
	for n := 1; ; n++ {
		var finished bool
		t.Run(fmt.Sprintf("crash at write %d", n), func(t *testing.T) {
			raw, err := nosql.New("bbolt", t.TempDir()+"/db")
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			db := &crashDB{DB: raw}
			f := &fixture{db: raw, clk: fakeclock.New(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)), hostCA: signer(t), userCA: signer(t), serial: 100}
			if err := f.open(db); err != nil {
				t.Fatal(err)
			}
			if _, err := f.inv.AddUser("test", inventory.NewUser{Email: "alice@example.com", Login: "alice"}); err != nil {
				t.Fatal(err)
			}
			laptop := f.ownedDevice(t, "laptop", inventory.KindWorkstation, "alice@example.com")
			other := f.ownedDevice(t, "shared", inventory.KindWorkstation, "")
			old := []*ssh.Certificate{f.issueWith(t, laptop, 16*time.Hour, "user:alice@example.com"), f.issueWith(t, other, 16*time.Hour, "login:alice")}
			f.clk.Advance(time.Hour)

			db.crashAfter(n)
			_, derr := f.inv.SetUserDisabled("test", "alice@example.com", true, "left")
			if !db.crashed() {
				if derr != nil {
					t.Fatalf("disable without a crash: %v", derr)
				}
				finished = true
			}
			if err := f.open(raw); err != nil {
				t.Fatalf("restart: %v", err)
			}
			u, err := f.inv.User("alice@example.com")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("write %d crashed: %v; after the restart alice is disabled: %v", n, db.crashed(), u.Disabled)
			if u.Disabled {
				f.wantRevoked(t, "disabled, after the restart", old, nil)
			} else {
				f.wantRevoked(t, "enabled, after the restart", nil, old)
				if _, err := f.inv.SetUserDisabled("test", "alice@example.com", true, "left"); err != nil {
					t.Fatalf("retried disable: %v", err)
				}
				f.wantRevoked(t, "after the retried disable", old, nil)
			}
		})
		if finished || t.Failed() || n > 50 {
			return
		}
	}
}
