package enroll_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/issuance"
)

// TestOnlyTPMResidentKeys: a workstation's user certificate for its device
// certificate's TPM key carries key:tpm; a file key is refused, until its
// collection allows file keys (through the admin API), and then its
// certificate has no key:tpm.
func TestOnlyTPMResidentKeys(t *testing.T) {
	ca := catest.Start(t, nil)
	if _, err := ca.Server.Inventory().AddUser("test", inventory.NewUser{Email: "bob@example.com", Login: "bob"}); err != nil {
		t.Fatal(err)
	}
	sw, id := device(t, ca, "laptop-b", inventory.KindWorkstation, "bob@example.com", "sre-laptops")
	ctx := context.Background()
	c := enroll.New(ca.URL, ca.Roots, quiet())
	dc := deviceCert(t, c, sw.TPM)

	cert, err := c.SSHCertificate(ctx, dc, "user", nil, tpmKey(t, dc))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cert.ValidPrincipals, issuance.PrincipalTPM) || cert.KeyId != id {
		t.Fatalf("TPM key's certificate: principals %q, want %s among them", cert.ValidPrincipals, issuance.PrincipalTPM)
	}
	if !strings.Contains(sshKeygenL(t, cert), "key:tpm") {
		t.Fatal("ssh-keygen -L does not show key:tpm")
	}

	fileKey := sshKey(t)
	_, err = c.SSHCertificate(ctx, dc, "user", nil, fileKey)
	want := "key is not TPM-resident: the SSH public key is not the device certificate's TPM key; only keys that live in the device's TPM are signed (collection sre-laptops does not allow file keys)"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("file key: %v\nwant %q", err, want)
	}

	admin, err := adminapi.NewClient(ca.URL, ca.Roots, &ca.AdminCert)
	if err != nil {
		t.Fatal(err)
	}
	yes := true
	if coll, err := admin.SetCollection("sre-laptops", adminapi.CollectionUpdate{AllowFileKeys: &yes}); err != nil || !coll.AllowFileKeys {
		t.Fatalf("collection set: %+v %v", coll, err)
	}
	cert, err = c.SSHCertificate(ctx, dc, "user", nil, fileKey)
	if err != nil {
		t.Fatalf("file key in a collection that allows them: %v", err)
	}
	if slices.Contains(cert.ValidPrincipals, issuance.PrincipalTPM) || !slices.Contains(cert.ValidPrincipals, "login:bob") {
		t.Fatalf("file key's certificate: principals %q: want login:bob and no %s", cert.ValidPrincipals, issuance.PrincipalTPM)
	}
	// The TPM key still gets its marker.
	if cert, err = c.SSHCertificate(ctx, dc, "user", nil, tpmKey(t, dc)); err != nil || !slices.Contains(cert.ValidPrincipals, issuance.PrincipalTPM) {
		t.Fatalf("TPM key after the collection allowed file keys: %v %v", cert, err)
	}

	// A device in no collection: the refusal says so.
	sw2, _ := device(t, ca, "laptop-c", inventory.KindWorkstation, "bob@example.com", "")
	dc2 := deviceCert(t, c, sw2.TPM)
	if _, err := c.SSHCertificate(ctx, dc2, "user", nil, tpmKey(t, dc)); err == nil || !strings.Contains(err.Error(), "key is not TPM-resident") ||
		!strings.Contains(err.Error(), "device laptop-c is in no collection") {
		t.Fatalf("another device's TPM key: %v", err)
	}
}

// TestHostNamesFromInventory: a host certificate's principals must each be
// the device's name, one of its host names or its collection's (exact,
// *.label pattern, CIDR); a request naming anything else is refused whole;
// a request naming none gets the device's exact names.
func TestHostNamesFromInventory(t *testing.T) {
	ca := catest.Start(t, nil)
	web := []string{"*.web.example.com", "10.1.0.0/16", "shared.example.com"}
	if _, err := ca.Server.Inventory().SetCollection("test", inventory.CollectionUpdate{Name: "web", HostNames: &web}); err != nil {
		t.Fatal(err)
	}
	sw, _ := deviceND(t, ca, inventory.NewDevice{Name: "web1", Kind: "host", Collection: "web", HostNames: []string{"web1.example.com", "192.0.2.7", "*.web1.example.com"}})
	ctx := context.Background()
	c := enroll.New(ca.URL, ca.Roots, quiet())
	dc := deviceCert(t, c, sw.TPM)
	key := tpmKey(t, dc)
	for _, ok := range [][]string{
		{"web1"}, {"web1.example.com", "192.0.2.7"}, {"a.web.example.com"}, {"x.web1.example.com"},
		{"10.1.200.3", "shared.example.com"},
	} {
		cert, err := c.SSHCertificate(ctx, dc, "host", ok, key)
		if err != nil {
			t.Errorf("%q: %v", ok, err)
			continue
		}
		if !slices.Equal(cert.ValidPrincipals, ok) {
			t.Errorf("%q: certificate for %q", ok, cert.ValidPrincipals)
		}
	}
	allowed := "(allowed: web1, web1.example.com, 192.0.2.7, *.web1.example.com, *.web.example.com, 10.1.0.0/16, shared.example.com)"
	for _, c2 := range []struct {
		asked []string
		bad   string
	}{
		{[]string{"web1", "bank.example.com"}, "bank.example.com"}, // what a test host got before
		{[]string{"a.b.web.example.com"}, "a.b.web.example.com"},
		{[]string{"web.example.com"}, "web.example.com"},
		{[]string{"10.2.0.1"}, "10.2.0.1"},
		{[]string{"*.web.example.com"}, "*.web.example.com"},
		{[]string{"10.1.0.0/16"}, "10.1.0.0/16"},
	} {
		_, err := c.SSHCertificate(ctx, dc, "host", c2.asked, key)
		want := `device web1: host name "` + c2.bad + `" is not allowed ` + allowed
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v\nwant %s", c2.asked, err, want)
		}
	}
	cert, err := c.SSHCertificate(ctx, dc, "host", nil, key)
	if err != nil || !slices.Equal(cert.ValidPrincipals, []string{"web1", "web1.example.com", "192.0.2.7"}) {
		t.Fatalf("no principals asked: %v %v", cert, err)
	}

	// A host whose name is no host name and that has no exact host names:
	// nothing to give, and the refusal says how to add names.
	sw2, _ := deviceND(t, ca, inventory.NewDevice{Name: "Build_2", Kind: "host", Collection: "web"})
	dc2 := deviceCert(t, c, sw2.TPM)
	if _, err := c.SSHCertificate(ctx, dc2, "host", nil, tpmKey(t, dc2)); err == nil || !strings.Contains(err.Error(), "device Build_2: the request names no host names") ||
		!strings.Contains(err.Error(), "--host-names") {
		t.Fatalf("no names to give: %v", err)
	}
	if cert, err := c.SSHCertificate(ctx, dc2, "host", []string{"b.web.example.com"}, tpmKey(t, dc2)); err != nil || cert.ValidPrincipals[0] != "b.web.example.com" {
		t.Fatalf("a name its collection allows: %v %v", cert, err)
	}
}
