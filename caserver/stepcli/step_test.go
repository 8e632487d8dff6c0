package stepcli

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/attestca/wire"
	"github.com/devid-ssh/devid/caserver"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/internal/gobuild"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"go.step.sm/crypto/pemutil"
	steptpm "go.step.sm/crypto/tpm"
	"go.step.sm/crypto/tpm/storage"
	"go.step.sm/crypto/x509util"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

func TestMain(m *testing.M) { os.Exit(gobuild.Run(m)) }

// stepPkg is step's command, pinned by go.mod's tool directive.
const stepPkg = "github.com/smallstep/cli/cmd/step"

// stepEnv is one user's step: its binary, and a STEPPATH and HOME of its
// own, so that nothing reads or writes the real ~/.step.
type stepEnv struct {
	bin, home, stepPath string
	env                 []string // more variables, NAME=VALUE
}

func newStep(t *testing.T) *stepEnv {
	t.Helper()
	home := t.TempDir()
	return &stepEnv{bin: gobuild.Binary(t, stepPkg), home: home, stepPath: filepath.Join(home, "step")}
}

// run runs step with args and returns its standard output and error; a
// hang is bounded by a generous deadline, never timed.
func (s *stepEnv) run(args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + s.home, "STEPPATH=" + s.stepPath}, s.env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("step %s: %w\n%s%s", strings.Join(args, " "), err, o.Bytes(), e.Bytes())
	}
	return o.String(), e.String(), err
}

// must is run that fails t on an error.
func (s *stepEnv) must(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	o, e, err := s.run(args...)
	if err != nil {
		t.Fatal(err)
	}
	return o, e
}

// bootstrap runs `step ca bootstrap` against ca and checks what it wrote.
func (s *stepEnv) bootstrap(t *testing.T, ca *catest.CA) {
	t.Helper()
	s.must(t, "ca", "bootstrap", "--ca-url", ca.URL, "--fingerprint", caserver.Fingerprint(ca.Root))
	root, err := pemutil.ReadCertificate(filepath.Join(s.stepPath, "certs", "root_ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if !root.Equal(ca.Root) {
		t.Fatal("step ca bootstrap saved another root than devid-ca's")
	}
	var defaults struct {
		CA          string `json:"ca-url"`
		Fingerprint string `json:"fingerprint"`
		Root        string `json:"root"`
	}
	b, err := os.ReadFile(filepath.Join(s.stepPath, "config", "defaults.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &defaults); err != nil {
		t.Fatalf("defaults.json: %v", err)
	}
	if defaults.CA != ca.URL || defaults.Fingerprint != caserver.Fingerprint(ca.Root) {
		t.Fatalf("defaults.json %+v, want ca-url %s and devid-ca's fingerprint", defaults, ca.URL)
	}
}

// TestBootstrap: `step ca bootstrap` pins devid-ca by the fingerprint
// devid-ca init prints, and refuses a wrong one.
func TestBootstrap(t *testing.T) {
	ca := catest.Start(t, nil)
	s := newStep(t)
	wrong := strings.Repeat("0", 64)
	if _, _, err := s.run("ca", "bootstrap", "--ca-url", ca.URL, "--fingerprint", wrong); err == nil {
		t.Fatal("step ca bootstrap accepted a wrong fingerprint")
	}
	if _, err := os.Stat(filepath.Join(s.stepPath, "certs", "root_ca.crt")); err == nil {
		t.Fatal("a refused bootstrap saved a root")
	}
	s.bootstrap(t, ca)
	// A command that needs the CA now finds it by the saved configuration
	// alone, over TLS checked against the saved root.
	if o, _ := s.must(t, "ca", "health"); strings.TrimSpace(o) != "ok" {
		t.Fatalf("step ca health printed %q, want ok", o)
	}
}

// TestSSHRoots: `step ssh config --roots` (and `--host --roots`) print the
// SSH CA keys devid-ca serves on /ssh/roots, which are those of
// certs/ssh_user_ca.pub and certs/ssh_host_ca.pub.
func TestSSHRoots(t *testing.T) {
	ca := catest.Start(t, nil)
	s := newStep(t)
	s.bootstrap(t, ca)
	served := sshRoots(t, ca)
	for _, c := range []struct {
		args []string
		file string
		keys []string
	}{
		{[]string{"ssh", "config", "--roots"}, "ssh_user_ca.pub", served.User},
		{[]string{"ssh", "config", "--host", "--roots"}, "ssh_host_ca.pub", served.Host},
	} {
		out, _ := s.must(t, c.args...)
		got := strings.Fields(out)
		if len(got) != 2 || len(c.keys) != 1 {
			t.Fatalf("step %s printed %q; /ssh/roots has %d keys, want one each", strings.Join(c.args, " "), out, len(c.keys))
		}
		if got[1] != c.keys[0] {
			t.Errorf("step %s printed %s, /ssh/roots serves %s", strings.Join(c.args, " "), got[1], c.keys[0])
		}
		b, err := os.ReadFile(filepath.Join(ca.Dir, "certs", c.file))
		if err != nil {
			t.Fatal(err)
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		if got[0] != pub.Type() || got[1] != base64.StdEncoding.EncodeToString(pub.Marshal()) {
			t.Errorf("step %s printed %q, certs/%s holds %s", strings.Join(c.args, " "), out, c.file, b)
		}
	}
}

// TestSSHConfigUser: `step ssh config --set User=LOGIN` renders the client
// configuration from devid-ca's templates with that login, and trusts
// devid-ca's host CA in its known_hosts. Without --set User step would take
// the first principal of a user certificate in the agent, which for
// devid is the device ID, not a login.
func TestSSHConfigUser(t *testing.T) {
	ca := catest.Start(t, nil)
	s := newStep(t)
	s.bootstrap(t, ca)
	host := sshRoots(t, ca).Host[0]
	raw, err := base64.StdEncoding.DecodeString(host)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := ssh.ParsePublicKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	o, e := s.must(t, "ssh", "config", "--set", "User=alice", "--dry-run")
	out := o + e
	for _, want := range []string{
		"\tUser alice\n",
		"ProxyCommand step ssh proxycommand %r %h %p",
		"@cert-authority * " + hostKey.Type() + " " + host,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("step ssh config --set User=alice --dry-run does not print %q:\n%s", want, out)
		}
	}
	// Nothing is written with --dry-run.
	if _, err := os.Stat(filepath.Join(s.home, ".ssh", "config")); err == nil {
		t.Error("step ssh config --dry-run wrote ~/.ssh/config")
	}
	// Without --set User, step takes the first principal of the first
	// certificate of devid-ca's user CA in the agent: for devid, the
	// device ID.
	// With neither, it fails.
	if _, _, err := s.run("ssh", "config", "--dry-run"); err == nil || !strings.Contains(err.Error(), "ssh-agent") {
		t.Errorf("step ssh config without User or agent: %v, want an ssh-agent error", err)
	}
	const deviceID = "urn:ek:sha256:aZUfiQnWEdHZM5yb9fX6EN8Ivde77utgkQGkyutgnh4="
	s.env = append(s.env, "SSH_AUTH_SOCK="+agentWithUserCert(t, ca, deviceID,
		[]string{deviceID, "user:alice@example.com", "login:alice", "key:tpm"}))
	o, e = s.must(t, "ssh", "config", "--dry-run")
	if out := o + e; !strings.Contains(out, "\tUser "+deviceID+"\n") {
		t.Errorf("step ssh config without --set User did not take the device ID as User:\n%s", out)
	}
	o, e = s.must(t, "ssh", "config", "--set", "User=alice", "--dry-run")
	if out := o + e; !strings.Contains(out, "\tUser alice\n") {
		t.Errorf("step ssh config --set User=alice with an agent does not print User alice:\n%s", out)
	}
}

// agentWithUserCert serves an ssh-agent on a new unix socket holding a key
// and a user certificate for it shaped as devid-ca issues them (key ID and
// principals as given), signed by the CA's user CA key; it returns the
// socket's path.
func agentWithUserCert(t *testing.T, ca *catest.CA, keyID string, principals []string) string {
	t.Helper()
	k, cert := signedByCA(t, ca, "ssh_user_ca.key", &ssh.Certificate{Serial: 1, CertType: ssh.UserCert, KeyId: keyID, ValidPrincipals: principals})
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: k, Certificate: cert}); err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir(): a unix socket's path is limited to 107 bytes.
	dir, err := os.MkdirTemp("", "stepcli-agent-")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				agent.ServeAgent(keyring, c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		os.RemoveAll(dir)
	})
	return sock
}

// signedByCA makes a new ECDSA P-256 key and signs cert for it (valid
// from a minute ago for an hour) with the CA's SSH CA key in
// secrets/caKeyFile (ssh_user_ca.key, ssh_host_ca.key), as devid-ca would.
func signedByCA(t *testing.T, ca *catest.CA, caKeyFile string, cert *ssh.Certificate) (*ecdsa.PrivateKey, *ssh.Certificate) {
	t.Helper()
	caKey, err := pemutil.Read(filepath.Join(ca.Dir, "secrets", caKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	caSigner, err := ssh.NewSignerFromKey(caKey)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Key, err = ssh.NewPublicKey(k.Public()); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert.ValidAfter, cert.ValidBefore = uint64(now.Add(-time.Minute).Unix()), uint64(now.Add(time.Hour).Unix())
	if err := cert.SignCert(rand.Reader, caSigner); err != nil {
		t.Fatal(err)
	}
	return k, cert
}

// roots is what devid-ca serves on /ssh/roots: base64 SSH wire-format keys.
type roots struct {
	User []string `json:"userKey"`
	Host []string `json:"hostKey"`
}

func sshRoots(t *testing.T, ca *catest.CA) roots {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Roots}}}
	resp, err := hc.Get(ca.URL + "/ssh/roots")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r roots
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /ssh/roots: %s, %v", resp.Status, err)
	}
	if len(r.User) != 1 || len(r.Host) != 1 {
		t.Fatalf("GET /ssh/roots: %d user and %d host keys, want one each", len(r.User), len(r.Host))
	}
	return r
}

// TestDeviceAttest: step's own TPM code gets a device certificate from
// devid-ca through ACME device-attest-01, against a swtpm that devid's
// inventory knows by its EK: `step ca certificate DEVICE-ID crt
// --attestation-uri 'tpmkms:name=KEY;device=SOCKET'`. step enrols its AK
// with devid's Attestation CA (wire.AttestationPath), has it certify a new
// P-256 key in the TPM over the challenge, and the certificate it gets
// chains to devid's root, names the device ID as its permanent
// identifier, and is for that TPM key. A quarantined device is refused.
func TestDeviceAttest(t *testing.T) {
	ca := catest.Start(t, nil)
	sw := swtpmtest.NewServed(t)
	d, err := ca.Server.Inventory().AddDevice("test", inventory.NewDevice{
		Name: "step-host", Kind: string(inventory.KindHost),
		EK: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: sw.EK.Certificate.Raw})),
	})
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != sw.EK.DeviceID {
		t.Fatalf("inventory device ID %s, TPM device ID %s", d.ID, sw.EK.DeviceID)
	}
	s := newStep(t)
	s.bootstrap(t, ca)
	rootFile := filepath.Join(s.stepPath, "certs", "root_ca.crt")
	crt := filepath.Join(t.TempDir(), "device.crt")
	certificate := func(keyName, crt string) error {
		_, _, err := s.run("ca", "certificate", d.ID, crt,
			"--provisioner", wire.AttestProvisioner,
			"--attestation-uri", "tpmkms:name="+keyName+";device="+sw.Sock,
			"--attestation-ca-url", ca.URL+wire.AttestationPath,
			"--attestation-ca-root", rootFile)
		return err
	}
	start := time.Now()
	if err := certificate("devid-step", crt); err != nil {
		t.Fatal(err)
	}
	t.Logf("step ca certificate with device-attest-01: %s", time.Since(start).Round(time.Millisecond))

	chain, err := pemutil.ReadCertificateBundle(crt)
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("the device certificate does not chain to devid-ca's root: %v", err)
	}
	sans, err := x509util.ParseSubjectAlternativeNames(leaf)
	if err != nil {
		t.Fatal(err)
	}
	if len(sans.PermanentIdentifiers) != 1 || sans.PermanentIdentifiers[0].Identifier != d.ID {
		t.Fatalf("the device certificate names %+v, want the one permanent identifier %s", sans.PermanentIdentifiers, d.ID)
	}
	if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Fatalf("the device certificate is for a %T, want step's default ECDSA P-256 key", leaf.PublicKey)
	}

	// The certificate's key is the one step made in this TPM: step's TPM
	// store holds it, and the TPM signs with it.
	st, err := steptpm.New(steptpm.WithDeviceName(sw.Sock), steptpm.WithStore(storage.NewDirstore(filepath.Join(s.stepPath, "tpm"))))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key, err := st.GetKey(ctx, "devid-step")
	if err != nil {
		t.Fatal(err)
	}
	if !key.WasAttested() {
		t.Error("step's store says its key was not attested by an AK")
	}
	signer, err := key.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("devid"))
	sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("the TPM does not sign with step's key: %v", err)
	}
	if !ecdsa.VerifyASN1(leaf.PublicKey.(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatal("the device certificate's key is not the TPM key step made")
	}

	// devid's SSH issuance takes the device certificate step got: a host
	// certificate for that very TPM key, naming the device and the name
	// the inventory gives it. Then step's own `step ssh check-host` (what
	// the `Match exec` of `step ssh config` runs) knows the host.
	sshPub, err := ssh.NewPublicKey(leaf.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ec := enroll.New(ca.URL, ca.Roots, slog.New(slog.DiscardHandler))
	hostCert, err := ec.SSHCertificate(ctx, &enroll.DeviceCert{DeviceID: d.ID, Key: signer, Chain: chain}, "host", nil, sshPub)
	if err != nil {
		t.Fatalf("an SSH host certificate with step's device certificate: %v", err)
	}
	if hostCert.KeyId != d.ID || strings.Join(hostCert.ValidPrincipals, ",") != "step-host" {
		t.Fatalf("host certificate key ID %s, principals %q; want %s, [step-host]", hostCert.KeyId, hostCert.ValidPrincipals, d.ID)
	}
	s.must(t, "ssh", "check-host", "step-host")
	if _, _, err := s.run("ssh", "check-host", "other-host"); err == nil {
		t.Error("step ssh check-host accepted a host devid-ca never certified")
	}

	// step cached the AK certificate devid's Attestation CA issued, and
	// presents it again; the CA still reads the device's status first.
	if _, err := ca.Server.Inventory().SetStatus("test", d.ID, inventory.StatusQuarantined, "lost"); err != nil {
		t.Fatal(err)
	}
	refused := filepath.Join(t.TempDir(), "refused.crt")
	if err := certificate("devid-step-2", refused); err == nil {
		t.Fatal("step got a device certificate for a quarantined device")
	}
	if _, err := os.Stat(refused); err == nil {
		t.Fatal("step wrote a certificate for a quarantined device")
	}
}

// TestSSHRenewNotOffered: `step ssh renew` needs an SSHPOP provisioner,
// which devid-ca does not configure: a host renews by attesting again
// (devid-hostd), never by presenting its old certificate.
func TestSSHRenewNotOffered(t *testing.T) {
	ca := catest.Start(t, nil)
	s := newStep(t)
	s.bootstrap(t, ca)
	k, cert := signedByCA(t, ca, "ssh_host_ca.key", &ssh.Certificate{Serial: 7, CertType: ssh.HostCert, KeyId: "urn:ek:sha256:x", ValidPrincipals: []string{"web-1"}})
	dir := t.TempDir()
	keyFile, certFile := filepath.Join(dir, "ssh_host_ecdsa_key"), filepath.Join(dir, "ssh_host_ecdsa_key-cert.pub")
	if _, err := pemutil.Serialize(k, pemutil.ToFile(keyFile, 0o600)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, ssh.MarshalAuthorizedKey(cert), 0o644); err != nil {
		t.Fatal(err)
	}
	// step looks for an SSHPOP provisioner among devid-ca's (an X5C and
	// an ACME one) and finds none.
	_, _, err := s.run("ssh", "renew", "--force", certFile, keyFile)
	if err == nil || !strings.Contains(err.Error(), "the CA does not have any provisioner configured") {
		t.Fatalf("step ssh renew: %v, want no SSHPOP provisioner found", err)
	}
}
