// Package e2e runs the real devid-agent against a real devid-ca, software
// TPMs, sshd, ssh and ssh-add.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devid-ssh/devid/agentd"
	"github.com/devid-ssh/devid/agentd/agenttest"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/internal/gobuild"
	"github.com/devid-ssh/devid/internal/sshdrun"
	"github.com/devid-ssh/devid/internal/sshdtest"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"golang.org/x/crypto/ssh"
)

func TestMain(m *testing.M) { os.Exit(gobuild.Run(m)) }

// register adds sw's TPM to the inventory as a workstation.
func register(t testing.TB, ca *catest.CA, sw *swtpmtest.Served, name string) *inventory.Device {
	t.Helper()
	d, err := ca.Server.Inventory().AddDevice("test", inventory.NewDevice{
		EK:   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: sw.EK.Certificate.Raw})),
		Name: name, Kind: "workstation", Collection: "eng"})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// userHost is an sshd trusting the CA's user CA key, letting in as root a
// certificate with the principal.
func userHost(t testing.TB, ca *catest.CA, principal string) *sshdtest.Server {
	t.Helper()
	dir := t.TempDir()
	principals := filepath.Join(dir, "principals")
	if err := os.WriteFile(principals, []byte(principal+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return sshdtest.Start(t, sshdtest.Options{Lines: []string{
		"TrustedUserCAKeys " + filepath.Join(ca.Dir, "certs", "ssh_user_ca.pub"),
		"AuthorizedPrincipalsFile " + principals,
	}})
}

func login(t testing.TB, h *sshdtest.Server, sock string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return h.Server.SSH(ctx, sshdrun.Client{Agent: sock})
}

// TestAgent: devid-agent makes its key in the TPM, gets a user certificate
// for it (whose device certificate is for the same key), and serves both:
// ssh-add -L lists them and ssh logs in with them. Killed with -9 and
// started again on the same socket, it has the same key and certificate,
// and logins work. Its key file and certificate copied to another machine
// are useless there: that agent cannot load the key, and nothing logs in.
// A quarantine shows in its status at the next renewal.
func TestAgent(t *testing.T) {
	sshdtest.Need(t, "swtpm", "swtpm_setup", "ssh-add")
	ca := catest.Start(t, nil)
	sw := swtpmtest.NewServed(t)
	dev := register(t, ca, sw, "laptop-1")
	a := agenttest.Start(t, ca, sw.Addr)
	st := a.WaitCertificate(t, 0)
	if st.Certificate.KeyID != dev.ID || !slices.Contains(st.Certificate.Principals, dev.ID) {
		t.Fatalf("certificate: key ID %q, principals %q; want the device ID %s", st.Certificate.KeyID, st.Certificate.Principals, dev.ID)
	}

	// devid-agent status --json: what status.json says, for scripts.
	out, err := exec.Command(a.Bin(), "status", "--json", "--config", a.Config).Output()
	if err != nil {
		t.Fatalf("devid-agent status --json: %v", err)
	}
	var js struct {
		Certificate struct {
			Serial     string   `json:"serial"`
			Principals []string `json:"principals"`
		} `json:"certificate"`
		Fingerprint string `json:"fingerprint"`
	}
	if err := json.Unmarshal(out, &js); err != nil || js.Certificate.Serial != strconv.FormatUint(st.Certificate.Serial, 10) ||
		js.Fingerprint != st.Fingerprint || !slices.Contains(js.Certificate.Principals, "key:tpm") {
		t.Fatalf("devid-agent status --json: %v\n%s", err, out)
	}

	// On disk: the TPM's wrapped key, never an OpenSSH private key.
	keyFile, err := os.ReadFile(a.Paths.Key)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(keyFile, []byte("-----BEGIN TSS2 PRIVATE KEY-----")) {
		t.Fatalf("key file %s is not a TSS2 TPM key:\n%s", a.Paths.Key, keyFile)
	}
	if fi, err := os.Stat(a.Paths.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v, want 0600", fi.Mode(), err)
	}
	if _, err := ssh.ParseRawPrivateKey(keyFile); err == nil {
		t.Fatal("the key file parses as a private key outside the TPM")
	}

	// ssh-add -L: the certificate, then the key.
	listed, err := sshAdd(a.Socket, "-L")
	if err != nil {
		t.Fatalf("ssh-add -L: %v\n%s", err, listed)
	}
	lines := strings.Split(strings.TrimSpace(listed), "\n")
	pub, err := os.ReadFile(a.Paths.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ecdsa-sha2-nistp256-cert-v01@openssh.com ") ||
		!strings.HasPrefix(string(pub), strings.Join(strings.Fields(lines[1])[:2], " ")) {
		t.Fatalf("ssh-add -L:\n%s\nwant the certificate, then the key %s", listed, pub)
	}
	fileKey := filepath.Join(t.TempDir(), "id_file")
	sshdtest.Keygen(t, fileKey)
	if out, err := sshAdd(a.Socket, fileKey); err == nil || !strings.Contains(out, "agent refused operation") {
		t.Fatalf("ssh-add of a key: %v\n%s; want the agent to refuse", err, out)
	}

	host := userHost(t, ca, dev.ID)
	if out, err := login(t, host, a.Socket); err != nil {
		t.Fatalf("login with devid-agent: %v\n%s", err, out)
	}

	// kill -9, start again: the same key and certificate, and a login.
	a.Kill(t)
	a.Restart(t)
	st2 := a.WaitStatus(t, "the restarted agent's status", func(s *agentd.Status) bool {
		return s.PID != st.PID && s.Certificate != nil
	})
	if st2.Fingerprint != st.Fingerprint || st2.Certificate.Serial != st.Certificate.Serial {
		t.Fatalf("after kill -9: key %s certificate %d; want the same key %s and certificate %d",
			st2.Fingerprint, st2.Certificate.Serial, st.Fingerprint, st.Certificate.Serial)
	}
	if out, err := login(t, host, a.Socket); err != nil {
		t.Fatalf("login after kill -9 and restart: %v\n%s", err, out)
	}

	// Everything on this machine's disk, copied to another machine with
	// its own TPM: useless.
	sw2 := swtpmtest.NewServed(t)
	register(t, ca, sw2, "laptop-2")
	b := agenttest.New(t, ca, sw2.Addr)
	copyDir(t, a.StateDir, b.StateDir)
	b.Restart(t)
	select {
	case <-b.Done():
	case <-time.After(time.Minute): // bounds a hang only
		t.Fatalf("the agent with another machine's key file did not stop:\n%s", b.Log())
	}
	if !strings.Contains(b.Log(), "another TPM") {
		t.Fatalf("the agent with another machine's key file did not say why it stopped:\n%s", b.Log())
	}
	b.CloseSocket()
	if out, err := login(t, host, b.Socket); err == nil {
		t.Fatalf("a login through the copy succeeded:\n%s", out)
	}
	if out, err := sshAdd(b.Socket, "-L"); err == nil {
		t.Fatalf("the copy's agent lists keys:\n%s", out)
	}

	// A quarantine: the next renewal says so, plainly.
	if _, err := ca.Server.Inventory().SetStatus("test", dev.ID, inventory.StatusQuarantined, "lost laptop"); err != nil {
		t.Fatal(err)
	}
	a.Signal(t, syscall.SIGUSR1)
	st3 := a.WaitStatus(t, "the quarantine in the status", func(s *agentd.Status) bool { return s.LastError != "" })
	if !strings.Contains(st3.LastError, "quarantined") {
		t.Fatalf("status after a quarantine: last error %q, want it to say quarantined", st3.LastError)
	}
}

func sshAdd(sock string, args ...string) (string, error) {
	cmd := exec.Command("ssh-add", args...)
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func copyDir(t testing.TB, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
