package caserver_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/inventory"
)

// TestListFilters: a misspelt filter value or query parameter on the list
// endpoints is a 400 naming the parameter, not an empty list.
func TestListFilters(t *testing.T) {
	ca := catest.Start(t, nil)
	inv := ca.Server.Inventory()
	if _, err := inv.AddUser("test", inventory.NewUser{Email: "alice@example.com", Login: "alice"}); err != nil {
		t.Fatal(err)
	}
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if _, err := inv.AddDevice("test", inventory.NewDevice{EK: base64.StdEncoding.EncodeToString(der), Name: "laptop-a", Kind: "workstation",
		Collection: "sre-laptops", Owner: "alice@example.com", Status: "quarantined"}); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/devid/v1/devices?status=quarantine":            `"error": "status: unknown status \"quarantine\" (want active, quarantined, retired or pending)", "field": "status"`,
		"/devid/v1/devices?kind=hots":                    `"error": "kind: unknown kind \"hots\" (want host or workstation)", "field": "kind"`,
		"/devid/v1/devices?statuss=quarantined":          `"error": "unknown query parameter \"statuss\" (want status, kind, collection or owner)", "field": "statuss"`,
		"/devid/v1/devices?status=":                      `"field": "status"`,
		"/devid/v1/devices?status=active&status=retired": `"error": "status: given 2 times`,
		"/devid/v1/devices?owner=alice@example.org":      `"error": "owner: no user alice@example.org", "field": "owner"`,
		"/devid/v1/devices?collection=sre-laptop":        `"error": "collection: no device is in collection \"sre-laptop\"", "field": "collection"`,
		"/devid/v1/devices?status=active;kind=host":      `query`,
		"/devid/v1/users?email=alice@example.com":        `"error": "unknown query parameter \"email\" (this list takes none)", "field": "email"`,
		"/devid/v1/audit?subjet=laptop-a":                `"error": "unknown query parameter \"subjet\" (want subject)", "field": "subjet"`,
	} {
		code, body := adminDo(t, ca, "GET", path, "")
		body = strings.Join(strings.Fields(body), " ")
		if code != http.StatusBadRequest || !strings.Contains(body, want) {
			t.Errorf("GET %s: HTTP %d, want 400 with %q:\n%s", path, code, want, body)
		}
	}
	for _, path := range []string{"/devid/v1/devices?status=quarantined", "/devid/v1/devices?kind=workstation&collection=sre-laptops&owner=alice@example.com",
		"/devid/v1/devices", "/devid/v1/audit?subject=laptop-a"} {
		code, body := adminDo(t, ca, "GET", path, "")
		if code != http.StatusOK || !strings.Contains(body, "laptop-a") && !strings.Contains(body, "urn:ek:") {
			t.Errorf("GET %s: HTTP %d, want the device:\n%s", path, code, body)
		}
	}
	if code, body := adminDo(t, ca, "GET", "/devid/v1/devices?status=active", ""); code != http.StatusOK || !strings.Contains(body, `"devices": []`) {
		t.Errorf("GET ?status=active: HTTP %d, want an empty list:\n%s", code, body)
	}
}

// TestImportQuery: a misspelt dry_run would import for real: refused.
func TestImportQuery(t *testing.T) {
	ca := catest.Start(t, nil)
	csv := "email,login,groups\nbob@example.com,bob,\n"
	for path, want := range map[string]string{
		"/devid/v1/import/users?dry-run=true": `"error": "unknown query parameter \"dry-run\" (want file or dry_run)", "field": "dry-run"`,
		"/devid/v1/import/users?dry_run=ture": `"error": "dry_run: want true or false, not \"ture\"", "field": "dry_run"`,
	} {
		code, body := adminDo(t, ca, "POST", path, csv)
		body = strings.Join(strings.Fields(body), " ")
		if code != http.StatusBadRequest || !strings.Contains(body, want) {
			t.Errorf("POST %s: HTTP %d, want 400 with %q:\n%s", path, code, want, body)
		}
	}
	if users, err := ca.Server.Inventory().Users(); err != nil || len(users) != 0 {
		t.Fatalf("users after refused imports: %d, %v", len(users), err)
	}
	if code, body := adminDo(t, ca, "POST", "/devid/v1/import/users?file=u.csv&dry_run=true", csv); code != http.StatusOK || !strings.Contains(body, `"dryRun": true`) {
		t.Fatalf("dry run: HTTP %d %s", code, body)
	}
}

// TestUserStatusNeedsDisabled: a status request without "disabled" is a
// 400 naming it, never an enable; the user stays disabled.
func TestUserStatusNeedsDisabled(t *testing.T) {
	ca := catest.Start(t, nil)
	inv := ca.Server.Inventory()
	if _, err := inv.AddUser("test", inventory.NewUser{Email: "alice@example.com", Login: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := inv.SetUserDisabled("test", "alice@example.com", true, "left"); err != nil {
		t.Fatal(err)
	}
	code, body := adminDo(t, ca, "POST", "/devid/v1/users/alice@example.com/status", `{"reason": "oops"}`)
	if code != http.StatusBadRequest || !strings.Contains(body, `"field": "disabled"`) {
		t.Fatalf("status without disabled: HTTP %d\n%s", code, body)
	}
	if u, err := inv.User("alice@example.com"); err != nil || !u.Disabled {
		t.Fatalf("after the refused request: %+v, %v", u, err)
	}
}
