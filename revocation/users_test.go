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
	now := f.clk.Now()
	return f.issueFrom(t, d, now.Add(-time.Minute), now.Add(lifetime), principals...)
}

// issueFrom is issueWith for a validity from..until, as a client may ask
// step-ca for (a start in the future too).
func (f *fixture) issueFrom(t *testing.T, d *inventory.Device, from, until time.Time, principals ...string) *ssh.Certificate {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := ssh.NewPublicKey(k.Public())
	f.serial++
	c := &ssh.Certificate{Key: pub, Serial: f.serial, KeyId: d.ID, ValidPrincipals: append([]string{d.ID}, principals...),
		ValidAfter: uint64(from.Unix()), ValidBefore: uint64(until.Unix()), CertType: ssh.UserCert}
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

// rename gives the user with this email another email and login, as a
// SCIM change of userName does (ChangeUser).
func (f *fixture) rename(actor, email, newEmail, newLogin string) error {
	u, err := f.inv.User(email)
	if err != nil {
		return err
	}
	_, err = f.inv.ChangeUser(actor, u.ID, func(u *inventory.User) error {
		u.Email, u.Login = newEmail, newLogin
		return nil
	})
	return err
}

// TestRenameUserRevokes: alice is renamed asmith (a SCIM change of
// userName: another email and login). Every unexpired user certificate
// naming user:alice@ or login:alice is revoked by serial at once, whatever
// device it is from and whenever its validity starts (one asked to start
// tomorrow too), audited as cert.revoke by the actor of the rename; so a
// new hire given alice@ and the login alice is not logged in as by
// alice's old certificates. Certificates naming neither, bob's, hosts'
// and expired ones are not revoked. An import that changes asmith's login
// alone revokes the certificates naming the old login.
func TestRenameUserRevokes(t *testing.T) {
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

	now := f.clk.Now()
	a1 := f.issueWith(t, laptopA, 16*time.Hour, "user:alice@example.com", "login:alice", "group:sre")
	future := f.issueFrom(t, laptopA, now.Add(12*time.Hour), now.Add(28*time.Hour), "user:alice@example.com", "login:alice")
	s1 := f.issueWith(t, shared, 16*time.Hour, "login:alice")             // the login alone, another device
	b1 := f.issueWith(t, laptopB, 16*time.Hour, "user:alice@example.com") // laptop-b was alice's
	b2 := f.issueWith(t, laptopB, 16*time.Hour, "user:bob@example.com", "login:bob")
	bare := f.issueWith(t, laptopA, 16*time.Hour) // the device ID alone: names no one
	h1 := f.issueWith(t, webA, 24*time.Hour, "web-a.example.com", "login:alice")
	gone := f.issueWith(t, laptopA, time.Hour, "user:alice@example.com", "login:alice")
	f.clk.Advance(2 * time.Hour)
	p0, _ := f.current(t)

	if err := f.rename("scim:okta", "alice@example.com", "asmith@example.com", "asmith"); err != nil {
		t.Fatal(err)
	}
	p1, _ := f.current(t)
	if p1.Version <= p0.Version {
		t.Fatalf("KRL version %d → %d: not rebuilt after the rename", p0.Version, p1.Version)
	}
	f.wantRevoked(t, "renamed", []*ssh.Certificate{a1, future, s1, b1}, []*ssh.Certificate{b2, bare, h1})
	var want []string
	for _, c := range []*ssh.Certificate{a1, future, s1, b1} {
		want = append(want, fmt.Sprintf("%d user renamed: names user:alice@example.com login:alice, now user:asmith@example.com login:asmith", c.Serial))
	}
	if got := f.revokedSerials(t)["scim:okta"]; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("cert.revoke entries by scim:okta:\n%q\nwant\n%q", got, want)
	}
	for _, c := range []*ssh.Certificate{gone, b2, bare, h1} {
		if _, err := f.db.Get([]byte("devid_revoked_serials"), []byte(certKey(c))); err == nil {
			t.Errorf("certificate %d (%s) revoked by serial", c.Serial, c.KeyId)
		}
	}
	// Her devices are hers still: what they get now is good, and the new
	// hire's certificates too.
	fresh := f.issueWith(t, laptopA, 16*time.Hour, "user:asmith@example.com", "login:asmith")
	if _, err := f.inv.AddUser("test", inventory.NewUser{Email: "alice@example.com", Login: "alice"}); err != nil {
		t.Fatalf("the new hire: %v", err)
	}
	hire := f.issueWith(t, f.ownedDevice(t, "laptop-new", inventory.KindWorkstation, "alice@example.com"), 16*time.Hour, "user:alice@example.com", "login:alice")
	f.wantRevoked(t, "after the new hire", []*ssh.Certificate{a1, future, s1, b1}, []*ssh.Certificate{fresh, hire})

	// An import changes asmith's login alone.
	f.clk.Advance(time.Minute)
	rep, err := f.inv.ImportUsers("carol", "users.csv", []byte("email,login\nasmith@example.com,as\n"), false)
	if err != nil || rep.Counts[inventory.Updated] != 1 {
		t.Fatalf("import: %+v %v", rep, err)
	}
	f.wantRevoked(t, "login changed by an import", []*ssh.Certificate{fresh}, []*ssh.Certificate{hire})
	if got := f.revokedSerials(t)["carol"]; len(got) != 1 || got[0] != fmt.Sprintf("%d user renamed: names login:asmith, now login:as", fresh.Serial) {
		t.Fatalf("cert.revoke entries by carol: %q", got)
	}
	// A dry run revokes nothing.
	f.clk.Advance(time.Minute)
	fresh2 := f.issueWith(t, laptopA, 16*time.Hour, "user:asmith@example.com", "login:as")
	if _, err := f.inv.ImportUsers("carol", "users.csv", []byte("email,login\nasmith@example.com,as2\n"), true); err != nil {
		t.Fatal(err)
	}
	f.wantRevoked(t, "after a dry run", nil, []*ssh.Certificate{fresh2})
}

// TestRenameCrash kills devid-ca at every write of a rename in turn,
// restarts it on the same database, and checks that whenever the user is
// renamed after the restart, the certificates naming their old email and
// login are revoked in the KRL served: the rename and the revocations are
// one transaction.
func TestRenameCrash(t *testing.T) {
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
			old := []*ssh.Certificate{f.issueWith(t, laptop, 16*time.Hour, "user:alice@example.com", "login:alice"), f.issueWith(t, other, 16*time.Hour, "login:alice")}
			f.clk.Advance(time.Hour)

			db.crashAfter(n)
			rerr := f.rename("scim:okta", "alice@example.com", "asmith@example.com", "asmith")
			if !db.crashed() {
				if rerr != nil {
					t.Fatalf("rename without a crash: %v", rerr)
				}
				finished = true
			}
			if err := f.open(raw); err != nil {
				t.Fatalf("restart: %v", err)
			}
			_, err = f.inv.User("asmith@example.com")
			renamed := err == nil
			t.Logf("write %d crashed: %v; after the restart alice is renamed: %v", n, db.crashed(), renamed)
			if renamed {
				f.wantRevoked(t, "renamed, after the restart", old, nil)
			} else {
				f.wantRevoked(t, "not renamed, after the restart", nil, old)
				if err := f.rename("scim:okta", "alice@example.com", "asmith@example.com", "asmith"); err != nil {
					t.Fatalf("retried rename: %v", err)
				}
				f.wantRevoked(t, "after the retried rename", old, nil)
			}
		})
		if finished || t.Failed() || n > 50 {
			return
		}
	}
}
