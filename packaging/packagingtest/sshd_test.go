package packagingtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/sshagent"
	"github.com/devid-ssh/devid/sshagent/sshagenttest"
	"golang.org/x/crypto/ssh"
)

const snippetPath = "contrib/sshd_config.d/devid.conf"

// sshdSettings returns the settings of sshd_config text, or of `sshd -T`
// output: lower-case keyword, then its values in order.
func sshdSettings(text string) map[string][]string {
	m := map[string][]string{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, _ := strings.Cut(line, " ")
		k = strings.ToLower(k)
		m[k] = append(m[k], strings.TrimSpace(v))
	}
	return m
}

// sshdDir makes, in a temporary directory, everything the snippet names
// under /etc/ssh and /run/devid-hostd: the file host keys; the TPM host key
// (ssh_host_tpm_key) as devid-hostd leaves it, a public half with no
// private file, served by an agent at HostKeyAgent as devid-hostd serves it
// (an in-memory key stands in for the TPM's); a certificate for the key the
// HostCertificate is named after; a user CA key and an empty KRL. It
// returns the directory and the snippet with those paths rewritten to it.
// The agent serves until the test ends.
func sshdDir(t *testing.T) (dir, snippet string) {
	t.Helper()
	keygen := tool(t, "ssh-keygen", "openssh-client")
	dir = t.TempDir()
	snippet = readRepoFile(t, snippetPath)
	snippet = strings.ReplaceAll(snippet, "/etc/ssh/", dir+"/")
	snippet = strings.ReplaceAll(snippet, "/run/devid-hostd/", dir+"/run/")
	for _, line := range strings.Split(snippet, "\n") {
		if !strings.HasPrefix(line, "#") && (strings.Contains(line, "/etc/ssh") || strings.Contains(line, "/run/devid-hostd")) {
			t.Fatalf("%s: line %q still names /etc/ssh or /run/devid-hostd after the rewrite", snippetPath, line)
		}
	}
	settings := sshdSettings(snippet)
	for _, k := range []string{"hostkey", "hostkeyagent", "hostcertificate", "trustedusercakeys", "revokedkeys",
		"authorizedprincipalscommand", "authorizedprincipalscommanduser"} {
		if len(settings[k]) == 0 {
			t.Fatalf("%s: no %s", snippetPath, k)
		}
	}
	keygenRun := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(keygen, args...).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	hostKeyName := regexp.MustCompile(`/ssh_host_([a-z0-9]+)_key$`)
	tpmKeys := 0
	for _, k := range settings["hostkey"] {
		m := hostKeyName.FindStringSubmatch(k)
		if m == nil {
			t.Fatalf("%s: HostKey %s is not named ssh_host_TYPE_key", snippetPath, k)
		}
		if err := os.MkdirAll(filepath.Dir(k), 0o755); err != nil {
			t.Fatal(err)
		}
		if m[1] != "tpm" {
			keygenRun("-q", "-t", m[1], "-N", "", "-C", "", "-f", k)
			continue
		}
		tpmKeys++
		serveHostKey(t, k, settings["hostkeyagent"][0])
	}
	if tpmKeys != 1 {
		t.Fatalf("%s: %d HostKey lines name ssh_host_tpm_key, want 1", snippetPath, tpmKeys)
	}
	for _, k := range []string{"hostcertificate", "trustedusercakeys", "revokedkeys"} {
		if err := os.MkdirAll(filepath.Dir(settings[k][0]), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ca := filepath.Join(dir, "ca")
	keygenRun("-q", "-t", "ed25519", "-N", "", "-C", "", "-f", ca)
	copyFile(t, ca+".pub", settings["trustedusercakeys"][0])

	// HostCertificate DIR/devid/ssh_host_tpm_key-cert.pub certifies
	// DIR/devid/ssh_host_tpm_key.pub, OpenSSH's KEY-cert.pub naming.
	cert := settings["hostcertificate"][0]
	key := strings.TrimSuffix(cert, "-cert.pub")
	if !slices.Contains(settings["hostkey"], key) {
		t.Fatalf("%s: HostCertificate %s is named after no HostKey", snippetPath, cert)
	}
	keygenRun("-q", "-s", ca, "-h", "-I", "host-1", "-n", "host-1.example.com", "-V", "-5m:+24h", key+".pub")
	keygenRun("-q", "-k", "-f", settings["revokedkeys"][0])
	return dir, snippet
}

// serveHostKey does what devid-hostd does for sshd with a key in the TPM,
// with an in-memory key instead: it writes the public half at key.pub, no
// private file at key, and serves the key on an agent socket at sock to
// root (sshd) and the test's own user (sshd in a user namespace) until the
// test ends.
func serveHostKey(t *testing.T, key, sock string) {
	t.Helper()
	priv := sshagenttest.NewKey(t)
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key+".pub", ssh.MarshalAuthorizedKey(pub), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := sshagent.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	agent := sshagent.New(sshagent.Static{{Signer: priv, Comment: "host key (test)"}},
		sshagent.Options{AllowUIDs: []int{0, os.Getuid()}})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- agent.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("host key agent: %v", err)
		}
	})
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeSSHDConfig writes the snippet and an sshd_config including it, as
// Debian's sshd_config includes sshd_config.d/*.conf, and returns the
// sshd_config's path.
func writeSSHDConfig(t *testing.T, dir, snippet string) string {
	t.Helper()
	include := filepath.Join(dir, "sshd_config.d", "devid.conf")
	if err := os.MkdirAll(filepath.Dir(include), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(include, []byte(snippet), 0o644); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(config, []byte("Include "+filepath.Join(dir, "sshd_config.d", "*.conf")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return config
}

// TestSSHDSnippet: sshd -t accepts the snippet without a single message
// (so every host key and the host certificate loaded and match), and
// sshd -T shows that every setting of the snippet is in effect as written.
//
// The snippet's paths under /etc/ssh are rewritten into a temporary
// directory holding generated keys, a certificate and an empty KRL. The
// AuthorizedPrincipalsCommand line is tested as shipped: sshd -t checks
// only that its path is absolute, and sshd checks ownership and the
// account only at login time, so neither the helper nor the
// devid-principals account need exist here.
func TestSSHDSnippet(t *testing.T) {
	sshd := tool(t, "sshd", "openssh-server", "/usr/sbin")
	dir, snippet := sshdDir(t)
	config := writeSSHDConfig(t, dir, snippet)

	out, err := run(command(false, sshd, "-t", "-f", config))
	needNamespace(t, err)
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("sshd -t: %v\n%s", err, out)
	}
	out, err = run(command(false, sshd, "-T", "-f", config))
	if err != nil {
		t.Fatalf("sshd -T: %v", err)
	}
	effective := sshdSettings(out)
	for k, want := range sshdSettings(snippet) {
		if got := effective[k]; !slices.Equal(got, want) {
			t.Errorf("sshd -T: %s %q, want %q", k, got, want)
		}
	}
	if cmd := effective["authorizedprincipalscommand"]; len(cmd) != 1 || !slices.Contains(strings.Fields(cmd[0]), "%u") {
		t.Errorf("AuthorizedPrincipalsCommand %q does not pass %%u: sshd passes nothing unless asked", cmd)
	}
}

// TestSSHDTestIgnoresBadHostCertificate shows why TestSSHDSnippet reads
// sshd -t's output and not only its exit status, as devid-hostd must when
// it validates a new certificate: a host certificate that is missing or
// matches no host key makes sshd -t complain, yet exit 0.
func TestSSHDTestIgnoresBadHostCertificate(t *testing.T) {
	sshd := tool(t, "sshd", "openssh-server", "/usr/sbin")
	keygen := tool(t, "ssh-keygen", "openssh-client")
	dir, snippet := sshdDir(t)
	cert := sshdSettings(snippet)["hostcertificate"][0]

	// A certificate, by the same CA, for a key sshd does not have.
	stray := filepath.Join(dir, "stray_key")
	for _, args := range [][]string{
		{"-q", "-t", "ecdsa", "-N", "", "-C", "", "-f", stray},
		{"-q", "-s", filepath.Join(dir, "ca"), "-h", "-I", "host-1", "-n", "host-1.example.com", stray + ".pub"},
	} {
		if out, err := exec.Command(keygen, args...).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	for _, tc := range []struct{ cert, want string }{
		{stray + "-cert.pub", "No matching private key for certificate"},
		{filepath.Join(dir, "missing-cert.pub"), "Could not load host certificate"},
	} {
		bad := strings.Replace(snippet, "HostCertificate "+cert+"\n", "HostCertificate "+tc.cert+"\n", 1)
		if bad == snippet {
			t.Fatal("could not rewrite HostCertificate")
		}
		out, err := run(command(false, sshd, "-t", "-f", writeSSHDConfig(t, dir, bad)))
		needNamespace(t, err)
		if err != nil || !strings.Contains(out, tc.want) {
			t.Errorf("sshd -t with HostCertificate %s: %v, output %q; want exit 0 and %q", tc.cert, err, out, tc.want)
		}
	}
}

// TestSSHDSnippetWithoutAgent: with nothing listening at HostKeyAgent
// (devid-hostd.socket missing), sshd still starts, with the file host keys
// only: sshd -t exits 0 but says that it cannot reach the agent, cannot load
// the TPM host key and so cannot use its certificate, as the snippet's
// comment says; the file keys load without a word.
func TestSSHDSnippetWithoutAgent(t *testing.T) {
	sshd := tool(t, "sshd", "openssh-server", "/usr/sbin")
	dir, snippet := sshdDir(t)
	agent := sshdSettings(snippet)["hostkeyagent"][0]
	none := filepath.Join(dir, "run", "none.sock")
	without := strings.Replace(snippet, "HostKeyAgent "+agent+"\n", "HostKeyAgent "+none+"\n", 1)
	if without == snippet {
		t.Fatal("could not rewrite HostKeyAgent")
	}
	out, err := run(command(false, sshd, "-t", "-f", writeSSHDConfig(t, dir, without)))
	needNamespace(t, err)
	if err != nil {
		t.Fatalf("sshd -t without the agent: %v (want exit 0: the file keys suffice)\n%s", err, out)
	}
	for _, want := range []string{
		`Could not connect to agent "` + none + `"`,
		"Unable to load host key: " + filepath.Join(dir, "devid", "ssh_host_tpm_key") + "\r\n", // sshd ends stderr lines so
		"No matching private key for certificate: " + sshdSettings(snippet)["hostcertificate"][0],
	} {
		if !strings.Contains(out, want) {
			t.Errorf("sshd -t without the agent: no %q in\n%s", want, out)
		}
	}
	for _, k := range sshdSettings(snippet)["hostkey"] {
		if !strings.HasSuffix(k, "/ssh_host_tpm_key") && strings.Contains(out, k) {
			t.Errorf("sshd -t without the agent complains about the file key %s:\n%s", k, out)
		}
	}
}
