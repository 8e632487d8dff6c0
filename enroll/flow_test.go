package enroll_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"golang.org/x/crypto/ssh"
)

// TestEnrollWhole: Enroll runs the three steps against a real CA and
// swtpm, leaves no object of its own in the TPM, and tells which step a
// refusal came from. Enroll certifies a key given before the device
// certificate exists, a file key: the device's collection allows them.
func TestEnrollWhole(t *testing.T) {
	ca := catest.Start(t, nil)
	yes, names := true, []string{"web-3.example.com"}
	if _, err := ca.Server.Inventory().SetCollection("test", inventory.CollectionUpdate{Name: "legacy", AllowFileKeys: &yes, HostNames: &names}); err != nil {
		t.Fatal(err)
	}
	sw, id := device(t, ca, "web-3", inventory.KindHost, "", "legacy")
	c := enroll.New(ca.URL, ca.Roots, quiet())
	ctx := context.Background()
	pub := sshKey(t)
	res, err := c.Enroll(ctx, sw.TPM, enroll.Request{Type: "host", Principals: []string{"web-3.example.com"}, Key: pub})
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
	// Four more: a leak of the AK or the key would show as TPM objects
	// left loaded, and swtpm holds only 3 at once.
	for range 4 {
		if _, err := c.Enroll(ctx, sw.TPM, enroll.Request{Type: "host", Principals: []string{"web-3"}, Key: pub}); err != nil {
			t.Fatalf("enrolment again: %v", err)
		}
	}

	var se *enroll.StepError
	_, err = c.Enroll(ctx, sw.TPM, enroll.Request{Type: "user", Key: pub})
	if !errors.As(err, &se) || se.Step != enroll.StepSSHCertificate || !se.Attested() || !strings.Contains(err.Error(), "may not have an SSH user certificate") {
		t.Errorf("a user certificate for a host: %v (%+v)", err, se)
	} else if se.DeviceCertificate.Subject.CommonName != id {
		t.Errorf("the refused enrolment's device certificate names %q, want %s", se.DeviceCertificate.Subject.CommonName, id)
	}
	unknown := swtpmtest.New(t)
	_, err = c.Enroll(ctx, unknown.TPM, enroll.Request{Type: "host", Key: pub})
	if !errors.As(err, &se) || se.Step != enroll.StepAttest || se.Attested() || !strings.Contains(err.Error(), "is not registered") {
		t.Errorf("an unregistered device: %v (%+v)", err, se)
	}
	if _, err := c.Enroll(ctx, sw.TPM, enroll.Request{Type: "admin", Key: pub}); err == nil || errors.As(err, &se) {
		t.Errorf("an enrolment for a certificate type that does not exist: %v, want a refusal before any step", err)
	}
}
