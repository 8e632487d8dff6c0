package revocation_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strconv"
	"testing"
	"time"

	"github.com/devid-ssh/devid/inventory"
	"golang.org/x/crypto/ssh"
)

// issueFuture records a user certificate of d valid from start to end
// after now: step-ca signs one whose validity starts later when the
// request asks for it.
func (f *fixture) issueFuture(t *testing.T, d *inventory.Device, start, end time.Duration, principals ...string) *ssh.Certificate {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := ssh.NewPublicKey(k.Public())
	f.serial++
	now := f.clk.Now()
	c := &ssh.Certificate{Key: pub, Serial: f.serial, KeyId: d.ID, ValidPrincipals: append([]string{d.ID}, principals...),
		ValidAfter: uint64(now.Add(start).Unix()), ValidBefore: uint64(now.Add(end).Unix()), CertType: ssh.UserCert}
	if err := c.SignCert(rand.Reader, f.userCA); err != nil {
		t.Fatal(err)
	}
	if err := f.db.Set([]byte("ssh_certs"), []byte(strconv.FormatUint(c.Serial, 10)), c.Marshal()); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFutureCertificatesStayRevoked: a certificate whose validity starts
// after the device was quarantined, or its owner disabled, is revoked by
// serial when the device or the owner is brought back, as every other one
// it held: it cannot come back to life.
func TestFutureCertificatesStayRevoked(t *testing.T) {
	f := newFixture(t)
	laptop := f.device(t, "laptop", inventory.KindWorkstation)
	later := f.issueFuture(t, laptop, 2*time.Hour, 12*time.Hour)
	f.clk.Advance(time.Minute)
	if _, err := f.inv.SetStatus("test", laptop.ID, inventory.StatusQuarantined, "lost"); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(time.Minute)
	if _, err := f.inv.SetStatus("test", laptop.ID, inventory.StatusActive, "found"); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(3 * time.Hour) // into the certificate's validity
	if err := f.rev.Rebuild(); err != nil {
		t.Fatal(err)
	}
	if _, k := f.current(t); !k.IsRevoked(later) {
		t.Fatal("a certificate starting after the quarantine is good again after the device came back")
	}

	if _, err := f.inv.AddUser("test", inventory.NewUser{Email: "bob@example.com", Login: "bob"}); err != nil {
		t.Fatal(err)
	}
	bobs := f.ownedDevice(t, "bob-laptop", inventory.KindWorkstation, "bob@example.com")
	elsewhere := f.device(t, "shared", inventory.KindWorkstation)
	own := f.issueFuture(t, bobs, 2*time.Hour, 12*time.Hour, "user:bob@example.com")
	naming := f.issueFuture(t, elsewhere, 2*time.Hour, 12*time.Hour, "login:bob")
	f.clk.Advance(time.Minute)
	if _, err := f.inv.SetUserDisabled("test", "bob@example.com", true, "left"); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(time.Minute)
	if _, err := f.inv.SetUserDisabled("test", "bob@example.com", false, "back"); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(3 * time.Hour)
	if err := f.rev.Rebuild(); err != nil {
		t.Fatal(err)
	}
	_, k := f.current(t)
	if !k.IsRevoked(own) || !k.IsRevoked(naming) {
		t.Fatalf("after disable and enable: own revoked %v, naming revoked %v", k.IsRevoked(own), k.IsRevoked(naming))
	}
}
