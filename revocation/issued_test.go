package revocation_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"testing"
	"time"

	"github.com/devid-ssh/devid/deviceid"
	"github.com/devid-ssh/devid/inventory"
)

// TestIssuedTo: a device's unexpired SSH certificates, oldest first, with
// those revoked by serial marked; another device's and expired ones left
// out.
func TestIssuedTo(t *testing.T) {
	f := newFixture(t)
	host := f.device(t, "web-1", inventory.KindHost)
	other := f.device(t, "web-2", inventory.KindHost)
	short := f.issue(t, host, time.Hour)
	f.clk.Advance(time.Minute)
	h1 := f.issue(t, host, 24*time.Hour)
	f.clk.Advance(time.Minute)
	h2 := f.issue(t, host, 24*time.Hour)
	f.issue(t, other, 24*time.Hour)
	if _, err := f.rev.RevokeSerial("op", h1.Serial, "key lost"); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(2 * time.Hour) // short has expired
	got, err := f.rev.IssuedTo(host.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || uint64(got[0].Serial) != h1.Serial || uint64(got[1].Serial) != h2.Serial || got[0].Type != "host" ||
		got[0].RevokedAt.IsZero() || !got[1].RevokedAt.IsZero() || got[1].Principals[0] != "web-1" ||
		got[1].ValidBefore.Unix() != int64(h2.ValidBefore) {
		t.Fatalf("IssuedTo = %+v (short %d, h1 %d, h2 %d)", got, short.Serial, h1.Serial, h2.Serial)
	}
	none, err := f.rev.IssuedTo("urn:ek:sha256:none")
	if err != nil || none == nil || len(none) != 0 {
		t.Fatalf("IssuedTo(unknown) = %v, %v; want an empty list", none, err)
	}
}

// TestRebindKeepsOldTPMRevoked: a device rebound to a new TPM: every
// certificate of the old TPM is in the KRL (by the old device ID, the
// retired record's), and the device's new TPM gets good ones.
func TestRebindKeepsOldTPMRevoked(t *testing.T) {
	f := newFixture(t)
	laptop := f.device(t, "laptop", inventory.KindWorkstation)
	old := f.issue(t, laptop, 16*time.Hour)
	f.clk.Advance(time.Hour)
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	ek, err := deviceid.ParseEK(der)
	if err != nil {
		t.Fatal(err)
	}
	retired, dev, err := f.inv.Rebind("op", "laptop", "new motherboard", ek)
	if err != nil {
		t.Fatal(err)
	}
	if retired.ID != laptop.ID || dev.ID != ek.ID() {
		t.Fatalf("rebind: %s, %s", retired.ID, dev.ID)
	}
	fresh := f.issue(t, dev, 16*time.Hour)
	_, krl := f.current(t)
	if !krl.IsRevoked(old) || krl.IsRevoked(fresh) {
		t.Fatalf("after the rebind: old TPM's certificate revoked %v, new TPM's %v", krl.IsRevoked(old), krl.IsRevoked(fresh))
	}
}
