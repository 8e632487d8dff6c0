package e2e

import (
	"encoding/pem"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/agentd"
	"github.com/devid-ssh/devid/agentd/agenttest"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/internal/sshdtest"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/krl"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"golang.org/x/crypto/ssh"
)

// TestAgentRenewsRevoked: the CA revokes the agent's certificate by serial
// (`devid cert revoke`, through the admin API). The agent finds it in the
// KRL it fetches, says so, and renews at once, hours before its scheduled
// renewal (16 h certificates): it holds a new certificate, with another
// serial, that the CA's KRL does not revoke. Then an import gives the
// laptop's owner another login: her certificate, which names the old one,
// is revoked with the change, and the agent renews again, now with the new
// login.
func TestAgentRenewsRevoked(t *testing.T) {
	sshdtest.Need(t, "swtpm", "swtpm_setup")
	ca := catest.Start(t, nil)
	inv := ca.Server.Inventory()
	if _, err := inv.AddUser("test", inventory.NewUser{Email: "alice@example.com", Login: "alice"}); err != nil {
		t.Fatal(err)
	}
	sw := swtpmtest.NewServed(t)
	if _, err := inv.AddDevice("test", inventory.NewDevice{
		EK:   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: sw.EK.Certificate.Raw})),
		Name: "laptop-1", Kind: "workstation", Collection: "eng", Owner: "alice@example.com"}); err != nil {
		t.Fatal(err)
	}
	admin, err := adminapi.NewClient(ca.URL, ca.Roots, &ca.AdminCert)
	if err != nil {
		t.Fatal(err)
	}
	a := agenttest.Start(t, ca, sw.Addr)
	st := a.WaitCertificate(t, 0)
	if !slices.Contains(st.Certificate.Principals, "login:alice") {
		t.Fatalf("first certificate: principals %q", st.Certificate.Principals)
	}

	if _, err := admin.RevokeCert(adminapi.RevokeRequest{Serial: adminapi.Serial(st.Certificate.Serial), Reason: "test: key suspected"}); err != nil {
		t.Fatal(err)
	}
	st2 := a.WaitCertificate(t, st.Certificate.Serial) // a minute at most
	if !strings.Contains(a.Log(), "the CA's KRL revokes this agent's certificate: renewing it now") {
		t.Errorf("the agent renewed without saying its certificate was revoked:\n%s", a.Log())
	}
	notRevoked(t, ca, a, st2)

	// Alice's login becomes asmith: her certificate names login:alice.
	if _, err := admin.ImportUsers("users.csv", []byte("email,login\nalice@example.com,asmith\n"), false); err != nil {
		t.Fatal(err)
	}
	st3 := a.WaitCertificate(t, st2.Certificate.Serial)
	if !slices.Contains(st3.Certificate.Principals, "login:asmith") || slices.Contains(st3.Certificate.Principals, "login:alice") {
		t.Fatalf("after the new login: principals %q", st3.Certificate.Principals)
	}
	notRevoked(t, ca, a, st3)
}

// notRevoked checks that the certificate the agent holds is the one its
// status shows, and that the KRL the CA publishes does not revoke it.
func notRevoked(t *testing.T, ca *catest.CA, a *agenttest.Agent, st *agentd.Status) {
	t.Helper()
	b, err := os.ReadFile(a.Paths.Cert)
	if err != nil {
		t.Fatal(err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatal(err)
	}
	cert, ok := k.(*ssh.Certificate)
	if !ok || cert.Serial != st.Certificate.Serial {
		t.Fatalf("%s holds %T, serial %v; the status says %d", a.Paths.Cert, k, cert, st.Certificate.Serial)
	}
	published, err := krl.Parse(ca.Server.PublishedKRL().Body)
	if err != nil {
		t.Fatal(err)
	}
	if published.IsRevoked(cert) {
		t.Fatalf("the new certificate %d is revoked", cert.Serial)
	}
}
