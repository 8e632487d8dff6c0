package enroll_test

import (
	"context"
	"crypto/ecdsa"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/caserver"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"go.step.sm/crypto/x509util"
	"golang.org/x/crypto/ssh"
)

// TestEnrollECCOnlyEK: devices whose TPMs have only ECC EKs, registered by
// their EK certificates at a CA that checks EK certificates against the
// manufacturer's roots, enrol end to end: a host with swtpm's P-384 EK
// gets an SSH host certificate for its TPM-resident key, and a
// workstation whose P-256 EK is at no persistent handle (made from the
// TCG template) an SSH user certificate. Each step names the device by
// its ECC EK: the AK certificate (permanent identifier and URI, as
// step-ca's device-attest-01 reads them), the device certificate, the SSH
// certificate's key ID.
func TestEnrollECCOnlyEK(t *testing.T) {
	host := swtpmtest.Options{ECCOnly: true}.New(t)
	laptop := swtpmtest.Options{ECCOnly: true, ECCP256: true, TransientEKs: true}.New(t)
	var bundle []byte
	for _, sw := range []*swtpmtest.Instance{host, laptop} {
		for _, c := range [][]byte{sw.EKRoot.Raw, sw.EKIssuer.Raw} {
			bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
		}
	}
	rootsFile := filepath.Join(t.TempDir(), "ek-roots.pem")
	if err := os.WriteFile(rootsFile, bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	ca := catest.Start(t, func(cfg *caserver.Config) { cfg.Attestation.EKRoots = rootsFile })
	inv := ca.Server.Inventory()
	if _, err := inv.AddUser("test", inventory.NewUser{Email: "carol@example.com", Login: "carol"}); err != nil {
		t.Fatal(err)
	}
	register := func(sw *swtpmtest.Instance, nd inventory.NewDevice, curve string, handle uint32) string {
		t.Helper()
		ek, err := sw.TPM.EK()
		if err != nil {
			t.Fatal(err)
		}
		if pub, ok := ek.Public.(*ecdsa.PublicKey); !ok || pub.Curve.Params().Name != curve || ek.Handle != handle {
			t.Fatalf("%s: EK %s at %#x, want ECC %s at %#x", nd.Name, ek.Type(), ek.Handle, curve, handle)
		}
		nd.EK = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ek.Certificate.Raw}))
		d, err := inv.AddDevice("test", nd)
		if err != nil {
			t.Fatal(err)
		}
		if d.ID != ek.DeviceID {
			t.Fatalf("%s: inventory device ID %s, TPM's %s", nd.Name, d.ID, ek.DeviceID)
		}
		return d.ID
	}
	hostID := register(host, inventory.NewDevice{Name: "db-1", Kind: "host", HostNames: []string{"db-1.example.com"}}, "P-384", 0x81010016)
	laptopID := register(laptop, inventory.NewDevice{Name: "laptop-c", Kind: "workstation", Owner: "carol@example.com"}, "P-256", 0)

	c := enroll.New(ca.URL, ca.Roots, quiet())
	ctx := context.Background()

	// The host, step by step.
	att, err := c.Attest(ctx, host.TPM)
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	sans, err := x509util.ParseSubjectAlternativeNames(att.Chain[0])
	if err != nil {
		t.Fatal(err)
	}
	if att.DeviceID != hostID || len(sans.PermanentIdentifiers) != 1 || sans.PermanentIdentifiers[0].Identifier != hostID ||
		len(att.Chain[0].URIs) != 1 || att.Chain[0].URIs[0].String() != hostID {
		t.Fatalf("AK certificate: device %s, SANs %+v, URIs %v; want %s", att.DeviceID, sans, att.Chain[0].URIs, hostID)
	}
	rk := residentKey(t, host.TPM)
	dc, err := c.DeviceCertificate(ctx, att, rk)
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	if dc.Chain[0].Subject.CommonName != hostID || !rk.Public().(*ecdsa.PublicKey).Equal(dc.Chain[0].PublicKey) {
		t.Fatalf("device certificate %q, want one for %s and the resident key", dc.Chain[0].Subject.CommonName, hostID)
	}
	pub, err := ssh.NewPublicKey(rk.Public())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.SSHCertificate(ctx, dc, "host", []string{"db-1.example.com"}, pub)
	if err != nil {
		t.Fatal(err)
	}
	if cert.KeyId != hostID || cert.CertType != ssh.HostCert || strings.Join(cert.ValidPrincipals, ",") != "db-1.example.com" {
		t.Fatalf("host certificate: key ID %q type %d principals %v", cert.KeyId, cert.CertType, cert.ValidPrincipals)
	}
	if out := sshKeygenL(t, cert); !strings.Contains(out, `Key ID: "`+hostID+`"`) || !strings.Contains(out, "host certificate") {
		t.Errorf("ssh-keygen -L:\n%s", out)
	}

	// The workstation, in one Enroll.
	lk := residentKey(t, laptop.TPM)
	res, err := c.Enroll(ctx, laptop.TPM, enroll.Request{Type: "user", Key: lk})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{laptopID, "user:carol@example.com", "login:carol", "key:tpm"}
	if res.DeviceID != laptopID || res.SSHCertificate.KeyId != laptopID || res.SSHCertificate.CertType != ssh.UserCert ||
		strings.Join(res.SSHCertificate.ValidPrincipals, " ") != strings.Join(want, " ") {
		t.Fatalf("user certificate: device %s, key ID %q, principals %q; want %q", res.DeviceID, res.SSHCertificate.KeyId, res.SSHCertificate.ValidPrincipals, want)
	}
}
