package enroll_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/internal/sshdtest"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/tpm"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"go.step.sm/crypto/x509util"
	"golang.org/x/crypto/ssh"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// device manufactures a swtpm and registers it in ca's inventory.
func device(t *testing.T, ca *catest.CA, name string, kind inventory.Kind, owner, collection string) (*swtpmtest.Instance, string) {
	return deviceWith(t, ca, name, kind, owner, collection)
}

func deviceTB(t testing.TB, ca *catest.CA, name string, kind inventory.Kind) (*swtpmtest.Instance, string) {
	return deviceWith(t, ca, name, kind, "", "")
}

func deviceWith(t testing.TB, ca *catest.CA, name string, kind inventory.Kind, owner, collection string) (*swtpmtest.Instance, string) {
	return deviceND(t, ca, inventory.NewDevice{Name: name, Kind: string(kind), Owner: owner, Collection: collection})
}

// deviceND manufactures a swtpm and registers it as nd (its EK filled in).
func deviceND(t testing.TB, ca *catest.CA, nd inventory.NewDevice) (*swtpmtest.Instance, string) {
	t.Helper()
	sw := swtpmtest.New(t)
	ek, err := sw.TPM.EK()
	if err != nil {
		t.Fatal(err)
	}
	nd.EK = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ek.Certificate.Raw}))
	d, err := ca.Server.Inventory().AddDevice("test", nd)
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != ek.DeviceID {
		t.Fatalf("inventory device ID %s, TPM device ID %s", d.ID, ek.DeviceID)
	}
	return sw, d.ID
}

// sshKey is a file key: made in Go, outside any TPM.
func sshKey(t testing.TB) ssh.PublicKey {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, err := ssh.NewPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// tpmKey is the SSH form of the device certificate's TPM key: the only key
// the CA signs for a device whose collection does not allow file keys.
func tpmKey(t testing.TB, dc *enroll.DeviceCert) ssh.PublicKey {
	t.Helper()
	pub, err := ssh.NewPublicKey(dc.Key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// deviceCert attests tp and gets a device certificate (for a new TPM
// key), both unloaded when the test ends.
func deviceCert(t testing.TB, c *enroll.Client, tp *tpm.TPM) *enroll.DeviceCert {
	t.Helper()
	ctx := context.Background()
	att, err := c.Attest(ctx, tp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { att.Close() })
	dc, err := c.DeviceCertificate(ctx, att, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dc.Close() })
	return dc
}

func sshKeygenL(t *testing.T, cert *ssh.Certificate) string { return sshdtest.KeygenL(t, cert) }

// TestEnrolHost: a registered host gets an AK certificate, a device
// certificate and an SSH host certificate.
func TestEnrolHost(t *testing.T) {
	ca := catest.Start(t, nil)
	sw, id := deviceND(t, ca, inventory.NewDevice{Name: "web-1", Kind: "host", Collection: "web", HostNames: []string{"web-1.example.com", "10.1.2.3"}})
	ctx := context.Background()
	c := enroll.New(ca.URL, ca.Roots, quiet())

	att, err := c.Attest(ctx, sw.TPM)
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	ak := att.Chain[0]
	sans, err := x509util.ParseSubjectAlternativeNames(ak)
	if err != nil {
		t.Fatal(err)
	}
	if ak.Subject.String() != "" || len(sans.PermanentIdentifiers) != 1 || sans.PermanentIdentifiers[0].Identifier != id ||
		len(ak.URIs) != 1 || ak.URIs[0].String() != id || sans.TPMHardwareDetails.Manufacturer != "id:49424D00" {
		t.Fatalf("AK certificate: subject %q, SANs %+v, URIs %v", ak.Subject, sans, ak.URIs)
	}

	dc, err := c.DeviceCertificate(ctx, att, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	dsans, err := x509util.ParseSubjectAlternativeNames(dc.Chain[0])
	if err != nil || len(dsans.PermanentIdentifiers) != 1 || dsans.PermanentIdentifiers[0].Identifier != id {
		t.Fatalf("device certificate SANs %+v, %v", dsans, err)
	}
	if life := dc.Chain[0].NotAfter.Sub(dc.Chain[0].NotBefore); life < 23*time.Hour || life > 25*time.Hour {
		t.Fatalf("device certificate lifetime %v, want 24h", life)
	}

	cert, err := c.SSHCertificate(ctx, dc, "host", []string{"web-1.example.com", "10.1.2.3"}, tpmKey(t, dc))
	if err != nil {
		t.Fatal(err)
	}
	if cert.KeyId != id || cert.CertType != ssh.HostCert || strings.Join(cert.ValidPrincipals, ",") != "web-1.example.com,10.1.2.3" {
		t.Fatalf("SSH certificate: key ID %q type %d principals %v", cert.KeyId, cert.CertType, cert.ValidPrincipals)
	}
	out := sshKeygenL(t, cert)
	for _, want := range []string{"host certificate", `Key ID: "` + id + `"`, "web-1.example.com", "10.1.2.3"} {
		if !strings.Contains(out, want) {
			t.Errorf("ssh-keygen -L lacks %q:\n%s", want, out)
		}
	}
	// A host may not have a user certificate.
	if _, err := c.SSHCertificate(ctx, dc, "user", nil, sshKey(t)); err == nil || !strings.Contains(err.Error(), "may not have an SSH user certificate") {
		t.Fatalf("user certificate for a host: %v", err)
	}
}

// TestEnrolWorkstation: a workstation gets a user certificate whose
// principals come from the inventory, not from the request.
func TestEnrolWorkstation(t *testing.T) {
	ca := catest.Start(t, nil)
	inv := ca.Server.Inventory()
	if _, err := inv.AddUser("test", inventory.NewUser{Email: "alice@example.com", Login: "alice", Groups: []string{"sre", "dev"}}); err != nil {
		t.Fatal(err)
	}
	sw, id := device(t, ca, "laptop-a", inventory.KindWorkstation, "alice@example.com", "sre-laptops")
	ctx := context.Background()
	c := enroll.New(ca.URL, ca.Roots, quiet())
	att, err := c.Attest(ctx, sw.TPM)
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	dc, err := c.DeviceCertificate(ctx, att, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	cert, err := c.SSHCertificate(ctx, dc, "user", []string{"root", "admin"}, tpmKey(t, dc))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{id, "user:alice@example.com", "login:alice", "group:dev", "group:sre", "collection:sre-laptops", "key:tpm"}
	if cert.KeyId != id || cert.CertType != ssh.UserCert || strings.Join(cert.ValidPrincipals, " ") != strings.Join(want, " ") {
		t.Fatalf("user certificate: key ID %q principals %q, want %q", cert.KeyId, cert.ValidPrincipals, want)
	}
	if life := time.Duration(cert.ValidBefore-cert.ValidAfter) * time.Second; life < 15*time.Hour || life > 17*time.Hour {
		t.Fatalf("user certificate lifetime %v, want 16h", life)
	}
	out := sshKeygenL(t, cert)
	for _, w := range append(want, "user certificate", "permit-pty") {
		if !strings.Contains(out, w) {
			t.Errorf("ssh-keygen -L lacks %q:\n%s", w, out)
		}
	}
	if _, err := c.SSHCertificate(ctx, dc, "host", []string{"laptop-a"}, sshKey(t)); err == nil || !strings.Contains(err.Error(), "may not have an SSH host certificate") {
		t.Fatalf("host certificate for a workstation: %v", err)
	}
}

// TestStatusAtEveryStep: a device quarantined or retired between steps is
// refused at the next one, with a clear error.
func TestStatusAtEveryStep(t *testing.T) {
	ca := catest.Start(t, nil)
	inv := ca.Server.Inventory()
	ctx := context.Background()
	c := enroll.New(ca.URL, ca.Roots, quiet())

	unknown := swtpmtest.New(t)
	if _, err := c.Attest(ctx, unknown.TPM); err == nil || !strings.Contains(err.Error(), "is not registered") {
		t.Fatalf("unregistered device: %v", err)
	}

	sw, id := device(t, ca, "web-2", inventory.KindHost, "", "")
	set := func(st inventory.Status) {
		t.Helper()
		if _, err := inv.SetStatus("test", id, st, "test"); err != nil {
			t.Fatal(err)
		}
	}
	set(inventory.StatusQuarantined)
	if _, err := c.Attest(ctx, sw.TPM); err == nil || !strings.Contains(err.Error(), "is quarantined") {
		t.Fatalf("attest while quarantined: %v", err)
	}
	set(inventory.StatusActive)
	att, err := c.Attest(ctx, sw.TPM)
	if err != nil {
		t.Fatal(err)
	}

	// Quarantined after attestation: no device certificate.
	set(inventory.StatusQuarantined)
	if _, err := c.DeviceCertificate(ctx, att, nil); err == nil || !strings.Contains(err.Error(), "is quarantined") {
		t.Fatalf("device certificate while quarantined: %v", err)
	}
	set(inventory.StatusActive)
	dc, err := c.DeviceCertificate(ctx, att, nil)
	if err != nil {
		t.Fatal(err)
	}

	// Quarantined, then retired, after the device certificate: no SSH
	// certificate, though the device certificate is still valid.
	set(inventory.StatusQuarantined)
	if _, err := c.SSHCertificate(ctx, dc, "host", []string{"web-2"}, sshKey(t)); err == nil || !strings.Contains(err.Error(), "is quarantined") {
		t.Fatalf("SSH certificate while quarantined: %v", err)
	}
	set(inventory.StatusRetired)
	if _, err := c.SSHCertificate(ctx, dc, "host", []string{"web-2"}, sshKey(t)); err == nil || !strings.Contains(err.Error(), "is retired") {
		t.Fatalf("SSH certificate when retired: %v", err)
	}
	dc.Close() // swtpm has room for three loaded objects
	att.Close()
	if _, err := c.Attest(ctx, sw.TPM); err == nil || !strings.Contains(err.Error(), "is retired") {
		t.Fatalf("attest when retired: %v", err)
	}
}
