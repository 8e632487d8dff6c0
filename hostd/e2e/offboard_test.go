package e2e_test

import (
	"context"
	"encoding/pem"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/internal/sshdtest"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/krl"
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

func newOffboardFixture(t *testing.T) *offboardFixture {
	t.Helper()
	h := newHost(t, time.Hour)
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

// refused checks that sshd refuses key's certificate, and says it is
// revoked.
func (f *offboardFixture) refused(t *testing.T, key, when string) {
	t.Helper()
	if out, err := f.h.sshd.SSHCert(t, f.h.knownHosts, "root", key, key+"-cert.pub"); err == nil {
		t.Fatalf("%s: the certificate still logs in:\n%s", when, out)
	}
	if log, _ := os.ReadFile(f.h.sshd.Log); !strings.Contains(string(log), "revoked") {
		t.Errorf("%s: sshd's log does not say the key is revoked", when)
	}
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

	if _, err := f.admin.SetUserDisabled("alice@example.com", true, "left the company"); err != nil {
		t.Fatal(err)
	}
	h.waitKRL(t, "after the disable")
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
