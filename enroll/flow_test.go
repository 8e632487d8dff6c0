package enroll_test

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/tpm"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"golang.org/x/crypto/ssh"
)

// TestEnrollWhole: Enroll runs the three steps against a real CA and
// swtpm for a TPM-resident key, whose device certificate and SSH
// certificate are both for that key; it leaves no object of its own in the
// TPM, and tells which step a refusal came from.
func TestEnrollWhole(t *testing.T) {
	ca := catest.Start(t, nil)
	// The TPM key needs no opt-in (the collection allows no file keys);
	// the host names come from the collection.
	names := []string{"web-3.example.com"}
	if _, err := ca.Server.Inventory().SetCollection("test", inventory.CollectionUpdate{Name: "web", HostNames: &names}); err != nil {
		t.Fatal(err)
	}
	sw, id := device(t, ca, "web-3", inventory.KindHost, "", "web")
	c := enroll.New(ca.URL, ca.Roots, quiet())
	ctx := context.Background()
	rk := residentKey(t, sw.TPM)
	pub, err := ssh.NewPublicKey(rk.Public())
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Enroll(ctx, sw.TPM, enroll.Request{Type: "host", Principals: []string{"web-3.example.com"}, Key: rk})
	if err != nil {
		t.Fatal(err)
	}
	cert := res.SSHCertificate
	if res.DeviceID != id || cert.KeyId != id || cert.CertType != ssh.HostCert || string(cert.Key.Marshal()) != string(pub.Marshal()) {
		t.Fatalf("result: device %s, certificate %q type %d", res.DeviceID, cert.KeyId, cert.CertType)
	}
	if res.AKCertificate == nil || res.DeviceCertificate == nil || res.DeviceCertificate.Subject.CommonName != id {
		t.Fatalf("AK certificate %v, device certificate %v", res.AKCertificate, res.DeviceCertificate)
	}
	if !rk.Public().(*ecdsa.PublicKey).Equal(res.DeviceCertificate.PublicKey) {
		t.Fatal("the device certificate is not for the resident key")
	}
	// Four more: a leak of the AK or the key would show as TPM objects
	// left loaded, and swtpm holds only 3 at once.
	for range 4 {
		if _, err := c.Enroll(ctx, sw.TPM, enroll.Request{Type: "host", Principals: []string{"web-3"}, Key: rk}); err != nil {
			t.Fatalf("enrolment again: %v", err)
		}
	}

	var se *enroll.StepError
	_, err = c.Enroll(ctx, sw.TPM, enroll.Request{Type: "user", Key: rk})
	if !errors.As(err, &se) || se.Step != enroll.StepSSHCertificate || !se.Attested() || !strings.Contains(err.Error(), "may not have an SSH user certificate") {
		t.Errorf("a user certificate for a host: %v (%+v)", err, se)
	} else if se.DeviceCertificate.Subject.CommonName != id {
		t.Errorf("the refused enrolment's device certificate names %q, want %s", se.DeviceCertificate.Subject.CommonName, id)
	}
	unknown := swtpmtest.New(t)
	_, err = c.Enroll(ctx, unknown.TPM, enroll.Request{Type: "host", Key: rk})
	if !errors.As(err, &se) || se.Step != enroll.StepAttest || se.Attested() || !strings.Contains(err.Error(), "is not registered") {
		t.Errorf("an unregistered device: %v (%+v)", err, se)
	}
	if _, err := c.Enroll(ctx, sw.TPM, enroll.Request{Type: "admin", Key: rk}); err == nil || errors.As(err, &se) {
		t.Errorf("an enrolment for a certificate type that does not exist: %v, want a refusal before any step", err)
	}
}

// residentKey creates and loads a TPM-resident key in tp.
func residentKey(t testing.TB, tp *tpm.TPM) *tpm.ResidentKey {
	t.Helper()
	file, err := tp.CreateResidentKey("")
	if err != nil {
		t.Fatal(err)
	}
	k, err := tp.LoadResidentKey(file)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}
