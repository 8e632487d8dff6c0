package e2e_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/caserver"
	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/internal/sshdtest"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/krl"
	"github.com/devid-ssh/devid/scim"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"golang.org/x/crypto/ssh"
)

// tryEnrollUser is enrollUser returning the CA's refusal rather than
// failing the test.
func tryEnrollUser(t *testing.T, h *host, ws *swtpmtest.Instance, key string) (*ssh.Certificate, error) {
	t.Helper()
	b, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatal(err)
	}
	c := enroll.New(h.ca.URL, h.ca.Roots, slog.New(slog.NewTextHandler(io.Discard, nil)))
	res, err := c.Enroll(context.Background(), ws.TPM, enroll.Request{Type: "user", FileKey: pub})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(key+"-cert.pub", ssh.MarshalAuthorizedKey(res.SSHCertificate), 0o644); err != nil {
		t.Fatal(err)
	}
	return res.SSHCertificate, nil
}

// waitKRL waits until RevokedKeys holds the KRL the CA publishes now (or a
// newer one).
func (h *host) waitKRL(t *testing.T, what string) {
	t.Helper()
	want := h.ca.Server.PublishedKRL().Version
	waitFor(t, time.Minute, what+": KRL version "+strconv.FormatUint(want, 10)+" in RevokedKeys", func() bool {
		b, err := os.ReadFile(h.krlFile)
		if err != nil {
			return false
		}
		k, err := krl.Parse(b)
		return err == nil && k.Version >= want
	})
}

// offboardFixture is a host running devid-hostd and sshd, and alice's
// workstation (its own swtpm) enrolled with a user certificate that
// logs in as root (the principals file accepts login:alice).
type offboardFixture struct {
	h     *host
	ws    *swtpmtest.Instance
	dev   *inventory.Device
	key   string
	cert  *ssh.Certificate
	admin *adminapi.Client
}

func newOffboardFixture(t *testing.T, edits ...func(*caserver.Config)) *offboardFixture {
	t.Helper()
	h := newHost(t, time.Hour, edits...)
	h.start(t)
	h.waitServing(t, 0)
	inv := h.ca.Server.Inventory()
	if _, err := inv.AddUser("test", inventory.NewUser{Email: "alice@example.com", Login: "alice", Groups: []string{"sre"}}); err != nil {
		t.Fatal(err)
	}
	ws := swtpmtest.New(t)
	ek, _ := ws.TPM.EK()
	dev, err := inv.AddDevice("test", inventory.NewDevice{EK: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ek.Certificate.Raw})),
		Name: "laptop-a", Kind: "workstation", Owner: "alice@example.com", Collection: legacy})
	if err != nil {
		t.Fatal(err)
	}
	f := &offboardFixture{h: h, ws: ws, dev: dev, key: filepath.Join(h.dir, "id_alice")}
	sshdtest.Keygen(t, f.key)
	f.cert = enrollUser(t, h.ca, ws, f.key)
	if !slices.Contains(f.cert.ValidPrincipals, "login:alice") {
		t.Fatalf("alice's certificate has principals %q", f.cert.ValidPrincipals)
	}
	os.WriteFile(h.principals, []byte("login:alice\n"), 0o644)
	if out, err := h.sshd.SSHCert(t, h.knownHosts, "root", f.key, f.key+"-cert.pub"); err != nil {
		t.Fatalf("alice's login before anything: %v\n%s", err, out)
	}
	if f.admin, err = adminapi.NewClient(h.ca.URL, h.ca.Roots, &h.ca.AdminCert); err != nil {
		t.Fatal(err)
	}
	return f
}

// refused checks that sshd refuses key's certificate, and says, in what
// it logs from this attempt on, that it is revoked (not some earlier
// refusal's line).
func (f *offboardFixture) refused(t *testing.T, key, when string) {
	t.Helper()
	before := len(sshdLog(t, f.h.sshd.Log))
	if out, err := f.h.sshd.SSHCert(t, f.h.knownHosts, "root", key, key+"-cert.pub"); err == nil {
		t.Fatalf("%s: the certificate still logs in:\n%s", when, out)
	}
	// sshd's log line may land just after ssh gives up: a minute bounds a
	// hang only.
	waitFor(t, time.Minute, when+": sshd logging that the key is revoked, since the attempt", func() bool {
		log := sshdLog(t, f.h.sshd.Log)
		return len(log) >= before && strings.Contains(string(log[before:]), "revoked")
	})
}

// sshdLog reads sshd's log file.
func sshdLog(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("sshd's log: %v", err)
	}
	return b
}

// TestOffboardLogin: alice logs in from her workstation; `devid user
// disable` (the admin API) puts her certificate in the KRL, which reaches
// sshd's RevokedKeys within seconds, and her next login is refused; her
// workstation gets no new certificate, the refusal naming her as its
// disabled owner. Enabled again, the workstation enrols anew and logs in
// with its new certificate; the old one stays refused.
func TestOffboardLogin(t *testing.T) {
	t.Parallel()
	f := newOffboardFixture(t)
	h := f.h

	start := time.Now()
	if _, err := f.admin.SetUserDisabled("alice@example.com", true, "left the company"); err != nil {
		t.Fatal(err)
	}
	h.waitKRL(t, "after the disable")
	t.Logf("devid user disable → RevokedKeys updated in %v", time.Since(start).Round(time.Millisecond)) // information, not asserted
	f.refused(t, f.key, "alice disabled")

	newKey := filepath.Join(h.dir, "id_alice2")
	sshdtest.Keygen(t, newKey)
	if _, err := tryEnrollUser(t, h, f.ws, newKey); err == nil || !strings.Contains(err.Error(), "owner alice@example.com is disabled") {
		t.Fatalf("enrolment of a disabled user's workstation: %v", err)
	}

	if _, err := f.admin.SetUserDisabled("alice@example.com", false, "rehired"); err != nil {
		t.Fatal(err)
	}
	h.waitKRL(t, "after the enable")
	f.refused(t, f.key, "enabled again, the old certificate")
	cert2, err := tryEnrollUser(t, h, f.ws, newKey)
	if err != nil {
		t.Fatalf("enrolment after the enable: %v", err)
	}
	if cert2.Serial == f.cert.Serial {
		t.Fatal("the same serial again")
	}
	if out, err := h.sshd.SSHCert(t, h.knownHosts, "root", newKey, newKey+"-cert.pub"); err != nil {
		t.Fatalf("a certificate issued after the enable is refused: %v\n%s", err, out)
	}
	f.refused(t, f.key, "after the new login, the old certificate")
}

// scimCall sends one SCIM request to the CA as the IdP would, and decodes
// the answer.
func scimCall(t *testing.T, h *host, token, method, path, body string) map[string]any {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: h.ca.TLSConfig(nil)}, Timeout: time.Minute}
	req, err := http.NewRequest(method, h.ca.URL+"/scim/v2"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/scim+json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		t.Fatalf("SCIM %s %s: HTTP %d %v (%v)", method, path, resp.StatusCode, out, err)
	}
	return out
}

// TestSCIMDeactivationLogin: the IdP finds alice (Okta's userName filter),
// then deactivates her as Okta does (PATCH replace without a path,
// active false): her certificate is in the KRL sshd reads within seconds
// and her login is refused, and her workstation gets nothing new. The IdP
// activates her again as Entra ID does (active "True", capitalised
// Replace): the old certificate stays refused, a new enrolment logs in.
func TestSCIMDeactivationLogin(t *testing.T) {
	t.Parallel()
	token, sum, err := scim.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	f := newOffboardFixture(t, func(c *caserver.Config) {
		c.SCIM.Clients = []caserver.SCIMClient{{Name: "okta", TokenSHA256: sum}}
	})
	h := f.h

	list := scimCall(t, h, token, "GET", `/Users?filter=userName%20eq%20%22alice%40example.com%22&startIndex=1&count=100`, "")
	res, _ := list["Resources"].([]any)
	if list["totalResults"] != 1.0 || len(res) != 1 {
		t.Fatalf("userName filter: %v", list)
	}
	id := res[0].(map[string]any)["id"].(string)
	start := time.Now()
	u := scimCall(t, h, token, "PATCH", "/Users/"+id,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false}}]}`)
	if u["active"] != false {
		t.Fatalf("after the deactivation: %v", u)
	}
	h.waitKRL(t, "after the SCIM deactivation")
	t.Logf("SCIM deactivation → RevokedKeys updated in %v", time.Since(start).Round(time.Millisecond)) // information, not asserted
	f.refused(t, f.key, "alice deactivated by SCIM")
	newKey := filepath.Join(h.dir, "id_alice2")
	sshdtest.Keygen(t, newKey)
	if _, err := tryEnrollUser(t, h, f.ws, newKey); err == nil || !strings.Contains(err.Error(), "owner alice@example.com is disabled") {
		t.Fatalf("enrolment of a deactivated user's workstation: %v", err)
	}
	entries, err := h.ca.Server.Inventory().Audit("alice@example.com")
	if err != nil || len(entries) == 0 {
		t.Fatalf("audit of alice@example.com: %d entries, %v", len(entries), err)
	}
	if last := entries[len(entries)-1]; last.Action != "user.disable" || last.Actor != "scim:okta" {
		t.Fatalf("audit: last entry %s by %s, want user.disable by scim:okta: %+v", last.Action, last.Actor, entries)
	}

	scimCall(t, h, token, "PATCH", "/Users/"+id,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"True"}]}`)
	h.waitKRL(t, "after the SCIM activation")
	f.refused(t, f.key, "activated again, the old certificate")
	if _, err := tryEnrollUser(t, h, f.ws, newKey); err != nil {
		t.Fatalf("enrolment after the activation: %v", err)
	}
	if out, err := h.sshd.SSHCert(t, h.knownHosts, "root", newKey, newKey+"-cert.pub"); err != nil {
		t.Fatalf("a certificate issued after the activation is refused: %v\n%s", err, out)
	}
}

// TestSCIMRenameLogin: the IdP renames alice asmith (Entra ID's PATCH of
// userName; the login follows it). Her old certificate, which names
// user:alice@example.com and login:alice, is in the KRL sshd reads within
// seconds and refused, though the host still lets login:alice in: a new
// hire given alice@ and alice (the IdP's next POST) is not logged in as
// with it. Her workstation enrols again and logs in as asmith.
func TestSCIMRenameLogin(t *testing.T) {
	t.Parallel()
	token, sum, err := scim.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	f := newOffboardFixture(t, func(c *caserver.Config) {
		c.SCIM.Clients = []caserver.SCIMClient{{Name: "entra", TokenSHA256: sum}}
	})
	h := f.h
	if err := os.WriteFile(h.principals, []byte("login:alice\nlogin:asmith\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	list := scimCall(t, h, token, "GET", `/Users?filter=userName%20eq%20%22alice%40example.com%22`, "")
	res, _ := list["Resources"].([]any)
	if len(res) != 1 {
		t.Fatalf("userName filter: %v", list)
	}
	id := res[0].(map[string]any)["id"].(string)
	u := scimCall(t, h, token, "PATCH", "/Users/"+id,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"userName","value":"asmith@example.com"}]}`)
	if u["userName"] != "asmith@example.com" {
		t.Fatalf("after the rename: %v", u)
	}
	h.waitKRL(t, "after the SCIM rename")
	f.refused(t, f.key, "alice renamed asmith, her old certificate")

	// The new hire: alice@ and the login alice are someone else's now.
	scimCall(t, h, token, "POST", "/Users",
		`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"alice@example.com","active":true}`)
	if hire, err := h.ca.Server.Inventory().User("alice@example.com"); err != nil || hire.ID == id || hire.Login != "alice" {
		t.Fatalf("the new hire: %+v %v", hire, err)
	}
	f.refused(t, f.key, "the new hire has alice's login, the old certificate")

	newKey := filepath.Join(h.dir, "id_asmith")
	sshdtest.Keygen(t, newKey)
	cert, err := tryEnrollUser(t, h, f.ws, newKey)
	if err != nil {
		t.Fatalf("asmith's workstation enrols again: %v", err)
	}
	if !slices.Contains(cert.ValidPrincipals, "login:asmith") || slices.Contains(cert.ValidPrincipals, "login:alice") {
		t.Fatalf("asmith's new certificate: principals %q", cert.ValidPrincipals)
	}
	if out, err := h.sshd.SSHCert(t, h.knownHosts, "root", newKey, newKey+"-cert.pub"); err != nil {
		t.Fatalf("asmith's new certificate is refused: %v\n%s", err, out)
	}
}
