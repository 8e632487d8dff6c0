package caserver_test

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/caserver"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/scim"
	"github.com/devid-ssh/devid/scim/scimtest"
)

// startSCIM starts a CA with a SCIM client "okta" and returns its token.
func startSCIM(t *testing.T) (*catest.CA, string) {
	t.Helper()
	token, sum, err := scim.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	ca := catest.Start(t, func(c *caserver.Config) {
		c.SCIM.Clients = []caserver.SCIMClient{{Name: "okta", TokenSHA256: sum}}
	})
	return ca, token
}

// scimDo returns a function that sends one SCIM request to ca with token
// and decodes its answer, failing the test on an error status.
func scimDo(t *testing.T, ca *catest.CA, token string) func(method, path, body string) map[string]any {
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.TLSConfig(nil)}, Timeout: time.Minute}
	return func(method, path, body string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(method, ca.URL+"/scim/v2"+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/scim+json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d %v", method, path, resp.StatusCode, out)
		}
		return out
	}
}

// TestSCIMSequences plays what Okta and Entra ID send against a real
// devid-ca, over HTTPS, and checks what the inventory holds after: every
// change is the SCIM client's in the audit trail, deactivation disabled
// the user, groups are in users' groups under their principal names.
func TestSCIMSequences(t *testing.T) {
	for name, data := range scimtest.Sequences() {
		t.Run(name, func(t *testing.T) {
			ca, token := startSCIM(t)
			client := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.TLSConfig(nil)}, Timeout: time.Minute}
			vars := scimtest.Run(t, nil, client, ca.URL, token, data)
			inv := ca.Server.Inventory()
			entries, err := inv.Audit("")
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) == 0 {
				t.Fatal("no audit entries")
			}
			for _, e := range entries {
				if e.Actor != "scim:okta" {
					t.Errorf("audit entry %s %s by %q", e.Action, e.Subject, e.Actor)
				}
			}
			switch name {
			case "okta.txtar":
				u, err := inv.UserByID(vars["ALICE"])
				if err != nil || !u.Disabled || u.Email != "test.user@okta.local" || u.Login != "test.user" || u.StatusReason != "set inactive by scim:okta" {
					t.Fatalf("alice: %+v %v", u, err)
				}
				if u.SCIM == nil || u.SCIM.ExternalID != "00ujl29u0le5T6Aj10h7" || u.SCIM.GivenName != "Another" {
					t.Errorf("alice's SCIM attributes: %+v", u.SCIM)
				}
				bob, _ := inv.UserByID(vars["BOB"])
				if len(bob.Groups) != 0 || len(u.Groups) != 0 {
					t.Errorf("groups after the group's deletion: alice %q bob %q", u.Groups, bob.Groups)
				}
				var actions []string
				for _, e := range entries {
					actions = append(actions, e.Action)
				}
				for _, want := range []string{"user.add", "group.add", "group.update", "user.disable", "group.delete"} {
					if !slices.Contains(actions, want) {
						t.Errorf("no %s in the audit trail: %q", want, actions)
					}
				}
			case "entra.txtar":
				if _, err := inv.UserByID(vars["U1"]); err == nil {
					t.Error("the deleted user is still there")
				}
				u, err := inv.UserByID(vars["JYOUNG"])
				if err != nil || u.Email != "jyoung@testuser.com" || u.Login != "jyoung" || u.Disabled {
					t.Errorf("jyoung: %+v %v", u, err)
				}
			}
		})
	}
}

// TestSCIMGroupPrincipals: a group pushed by SCIM is its members'
// group:NAME, under its display name made a principal name.
func TestSCIMGroupPrincipals(t *testing.T) {
	ca, token := startSCIM(t)
	do := scimDo(t, ca, token)
	u := do("POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"Alice@Example.com"}`)
	g := do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Site Reliability (EU)","members":[{"value":"`+u["id"].(string)+`"}]}`)
	alice, err := ca.Server.Inventory().User("alice@example.com")
	if err != nil || !slices.Equal(alice.Groups, []string{"Site-Reliability-EU"}) || alice.Login != "alice" {
		t.Fatalf("alice: %+v %v", alice, err)
	}
	do("PATCH", "/Groups/"+g["id"].(string), `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"displayName","value":"SRE"}]}`)
	if alice, _ = ca.Server.Inventory().User("alice@example.com"); !slices.Equal(alice.Groups, []string{"SRE"}) {
		t.Fatalf("after the rename: %q", alice.Groups)
	}
}

// TestSCIMKeepsAdminDisable: an IdP's active:true (Okta sends it with every
// profile update) does not enable a user an admin disabled; it does enable
// one the IdP itself disabled; other attributes change either way.
func TestSCIMKeepsAdminDisable(t *testing.T) {
	ca, token := startSCIM(t)
	do := scimDo(t, ca, token)
	inv := ca.Server.Inventory()
	u := do("POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"alice@example.com","active":true}`)
	id := u["id"].(string)
	if _, err := inv.SetUserDisabled("admin", "alice@example.com", true, "laptop stolen"); err != nil {
		t.Fatal(err)
	}
	put := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"alice@example.com","displayName":"Alice L.","active":true}`
	if got := do("PUT", "/Users/"+id, put); got["active"] != false {
		t.Fatalf("PUT active:true for an admin-disabled user answered %v", got)
	}
	alice, err := inv.User("alice@example.com")
	if err != nil || !alice.Disabled || alice.DisabledBy != "admin" || alice.StatusReason != "laptop stolen" || alice.SCIM == nil || alice.SCIM.DisplayName != "Alice L." {
		t.Fatalf("after the IdP's PUT: %+v, %v", alice, err)
	}
	// Enabled by the admin, disabled by the IdP: the IdP may enable again.
	if _, err := inv.SetUserDisabled("admin", "alice@example.com", false, "found"); err != nil {
		t.Fatal(err)
	}
	do("PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false}}]}`)
	if alice, _ = inv.User("alice@example.com"); !alice.Disabled || alice.DisabledBy != "scim:okta" {
		t.Fatalf("after the IdP's deactivation: %+v", alice)
	}
	do("PUT", "/Users/"+id, put)
	if alice, _ = inv.User("alice@example.com"); alice.Disabled || alice.DisabledBy != "" {
		t.Fatalf("after the IdP's reactivation: %+v", alice)
	}
}

// TestSCIMAccess: without clients the service is not there; with one, it
// wants that client's bearer token, and an admin certificate is no way in.
func TestSCIMAccess(t *testing.T) {
	get := func(ca *catest.CA, cert *tls.Certificate, token string) int {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.TLSConfig(cert)}, Timeout: time.Minute}
		req, _ := http.NewRequest("GET", ca.URL+"/scim/v2/Users", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(catest.Start(t, nil), nil, "x"); code != http.StatusNotFound {
		t.Errorf("no SCIM clients configured: %d, want 404", code)
	}
	ca, token := startSCIM(t)
	for _, c := range []struct {
		cert  *tls.Certificate
		token string
		want  int
	}{{nil, "", 401}, {nil, "devid-scim-wrong", 401}, {nil, token, 200}, {&ca.AdminCert, "", 403}, {&ca.AdminCert, token, 403}} {
		if code := get(ca, c.cert, c.token); code != c.want {
			t.Errorf("admin cert %v, token %q: %d, want %d", c.cert != nil, c.token, code, c.want)
		}
	}
}

// TestSCIMConfig: a bad SCIM configuration is refused at load, naming
// the field.
func TestSCIMConfig(t *testing.T) {
	ca := catest.Start(t, nil)
	orig, err := os.ReadFile(ca.Config)
	if err != nil {
		t.Fatal(err)
	}
	_, sum, _ := scim.NewToken()
	_, sum2, _ := scim.NewToken()
	for _, c := range []struct {
		scim any
		want string
	}{
		{map[string]any{"clients": []any{map[string]any{"name": "okta", "tokenSHA256": "abc"}}}, "scim.clients[0]: scim: client okta: tokenSHA256"},
		{map[string]any{"clients": []any{map[string]any{"name": "Okta!", "tokenSHA256": sum}}}, `scim.clients[0]: scim: client name "Okta!"`},
		{map[string]any{"clients": []any{map[string]any{"name": "okta", "tokenSHA256": sum}, map[string]any{"name": "okta", "tokenSHA256": sum2}}}, `the name "okta" is given twice`},
		{map[string]any{"clients": []any{map[string]any{"name": "okta", "tokenSHA256": sum}, map[string]any{"name": "entra", "tokenSHA256": sum}}}, "entra has the token of okta"},
		{map[string]any{"loginFrom": "nickName"}, `scim.loginFrom: scim: loginFrom "nickName"`},
		{map[string]any{"clients": []any{map[string]any{"name": "okta", "tokenSHA256": sum, "token": "x"}}}, `unknown field "token"`},
	} {
		var m map[string]any
		json.Unmarshal(orig, &m)
		m["scim"] = c.scim
		b, _ := json.Marshal(m)
		p := filepath.Join(t.TempDir(), "devid-ca.json")
		os.WriteFile(p, b, 0o644)
		if _, err := caserver.LoadConfig(p); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("scim %v: err = %v, want %q", c.scim, err, c.want)
		}
	}
	var m map[string]any
	json.Unmarshal(orig, &m)
	if _, ok := m["scim"]; ok {
		t.Error("devid-ca init writes a scim section")
	}
}
