package e2e_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/gobuild"
	"github.com/devid-ssh/devid/internal/sshdtest"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/krl"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"go.step.sm/crypto/pemutil"
	"golang.org/x/crypto/ssh"
)

// installHelper installs devid-principals into a root-owned 0755 directory
// outside /tmp, as sshd requires of an AuthorizedPrincipalsCommand, and
// removes it when the test ends.
func installHelper(t *testing.T) string {
	t.Helper()
	return sshdtest.InstallCommand(t, gobuild.Binary(t, "github.com/devid-ssh/devid/cmd/devid-principals"))
}

// TestPrincipalsLogins: device-aware logins through real sshd, devid-hostd
// and devid-principals, with the policy of the design:
//
//	dvtadmin  group:sre collection:sre-laptops
//	*         login:{account}
func TestPrincipalsLogins(t *testing.T) {
	t.Parallel()
	helper := installHelper(t)
	for _, a := range []string{"dvtadmin", "dvtalice", "dvtbob"} {
		sshdtest.Account(t, a)
	}
	h := newHost(t, time.Hour)
	// The helper runs as nobody, which cannot enter the test's 0700
	// directories: the policy goes beside the helper.
	policy := filepath.Join(filepath.Dir(helper), "principals.conf")
	os.WriteFile(policy, []byte("# account  principals\ndvtadmin  group:sre collection:sre-laptops\n*         login:{account}\n"), 0o644)
	cfg, _ := os.ReadFile(h.sshd.Config)
	cfg = append(cfg, []byte(fmt.Sprintf("AuthorizedPrincipalsCommand %s --policy %s %%u %%t %%k\nAuthorizedPrincipalsCommandUser nobody\nMaxStartups 300\n", helper, policy))...)
	os.WriteFile(h.sshd.Config, cfg, 0o644)
	h.start(t)
	h.waitServing(t, 0) // the host certificate installed, and sshd reloaded with the config above

	inv := h.ca.Server.Inventory()
	inv.AddUser("test", inventory.NewUser{Email: "alice@example.com", Login: "dvtalice", Groups: []string{"sre"}})
	inv.AddUser("test", inventory.NewUser{Email: "bob@example.com", Login: "dvtbob"})
	type device struct {
		id, key, cert string
	}
	mk := func(name, owner, collection string) device {
		sw := swtpmtest.New(t)
		ek, _ := sw.TPM.EK()
		d, err := inv.AddDevice("test", inventory.NewDevice{EK: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ek.Certificate.Raw})),
			Name: name, Kind: "workstation", Owner: owner, Collection: collection})
		if err != nil {
			t.Fatal(err)
		}
		key := filepath.Join(h.dir, "id_"+name)
		sshdtest.Keygen(t, key)
		enrollUser(t, h.ca, sw, key)
		return device{d.ID, key, key + "-cert.pub"}
	}
	allowFileKeys(t, h.ca, "sre-laptops")
	allowFileKeys(t, h.ca, "other")
	a := mk("laptop-a", "alice@example.com", "sre-laptops")
	b := mk("laptop-b", "bob@example.com", "other")

	login := func(d device, account string) error {
		_, err := h.sshd.SSHCert(t, h.knownHosts, account, d.key, d.cert)
		return err
	}
	cases := []struct {
		d       device
		account string
		ok      bool
	}{
		{a, "dvtadmin", true}, {a, "dvtalice", true}, {a, "dvtbob", false},
		{b, "dvtadmin", false}, {b, "dvtbob", true}, {b, "dvtalice", false},
	}
	for _, c := range cases {
		if err := login(c.d, c.account); (err == nil) != c.ok {
			log, _ := os.ReadFile(h.sshd.Log)
			t.Fatalf("%s as %s: err = %v, want allowed=%v; sshd's log ends:\n%s", filepath.Base(c.d.key), c.account, err, c.ok, tail(string(log), 30))
		}
	}

	// 200 logins in parallel: every decision right.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wrong := 0
	sem := make(chan struct{}, 25)
	for i := range 200 {
		c := cases[i%len(cases)]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := login(c.d, c.account); (err == nil) != c.ok {
				mu.Lock()
				wrong++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wrong > 0 {
		t.Errorf("%d of 200 parallel logins decided wrong", wrong)
	}

	// A certificate from devid's own user CA without a device-ID principal.
	userCA, err := pemutil.Read(filepath.Join(h.ca.Dir, "secrets", "ssh_user_ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	caSigner, _ := ssh.NewSignerFromKey(userCA)
	signCert := func(signer ssh.Signer, name string, principals []string) device {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub, _ := ssh.NewPublicKey(k.Public())
		c := &ssh.Certificate{Key: pub, Serial: 42, CertType: ssh.UserCert, KeyId: a.id, ValidPrincipals: principals,
			ValidAfter: uint64(time.Now().Add(-time.Minute).Unix()), ValidBefore: uint64(time.Now().Add(time.Hour).Unix()),
			Permissions: ssh.Permissions{Extensions: map[string]string{"permit-pty": ""}}}
		if err := c.SignCert(rand.Reader, signer); err != nil {
			t.Fatal(err)
		}
		key := filepath.Join(h.dir, name)
		block, _ := ssh.MarshalPrivateKey(k, "")
		os.WriteFile(key, pem.EncodeToMemory(block), 0o600)
		os.WriteFile(key+"-cert.pub", ssh.MarshalAuthorizedKey(c), 0o644)
		return device{"", key, key + "-cert.pub"}
	}
	noID := signCert(caSigner, "no-device-id", []string{"login:dvtalice", "user:alice@example.com"})
	if err := login(noID, "dvtalice"); err == nil {
		t.Error("a certificate with no device-ID principal logged in")
	}
	otherCA, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherSigner, _ := ssh.NewSignerFromKey(otherCA)
	foreign := signCert(otherSigner, "other-ca", []string{a.id, "login:dvtalice"})
	if err := login(foreign, "dvtalice"); err == nil {
		t.Error("a certificate from another CA logged in")
	}

	// A broken policy: everyone is refused.
	good, _ := os.ReadFile(policy)
	os.WriteFile(policy, []byte("dvtadmin\n"), 0o644)
	if err := login(a, "dvtalice"); err == nil {
		t.Error("a broken policy let someone in")
	}
	os.WriteFile(policy, good, 0o644)
	if err := login(a, "dvtalice"); err != nil {
		t.Errorf("after the policy was fixed: %v", err)
	}

	// Device A quarantined: refused within seconds, through the KRL.
	if _, err := inv.SetStatus("test", a.id, inventory.StatusQuarantined, "lost"); err != nil {
		t.Fatal(err)
	}
	want := h.ca.Server.PublishedKRL().Version
	start := time.Now()
	waitFor(t, time.Minute, "the KRL on the host", func() bool {
		data, err := os.ReadFile(h.krlFile)
		k, perr := krl.Parse(data)
		return err == nil && perr == nil && k.Version >= want
	})
	if err := login(a, "dvtalice"); err == nil {
		t.Error("device A logged in after its quarantine")
	}
	t.Logf("quarantine → refused in %v", time.Since(start).Round(time.Millisecond))
	if err := login(b, "dvtbob"); err != nil {
		t.Errorf("device B refused after A's quarantine: %v", err)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
