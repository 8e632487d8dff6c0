// Package sshdtest is package sshdrun's sshd harness for tests: an sshd in
// the test's directory, stopped when the test ends, and the tools tests
// need (skipped on a laptop without them, failed when CI=true).
//
// Two kinds of sshd (see package sshdrun): Start, a daemon on a loopback
// port, needing root, for tests that reload it or log in to several
// accounts; NewInetd, sshd -i per connection, for a test that only asks
// sshd whether a login gets in: no port, and no root unless the test needs
// another account or an AuthorizedPrincipalsCommand (InstallCommand).
package sshdtest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/sshdrun"
	"golang.org/x/crypto/ssh"
)

// Need skips t when a tool is missing, but fails it when CI=true.
func Need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not found, and CI=true", tool)
			}
			t.Skipf("%s not found", tool)
		}
	}
}

// NeedRoot skips t unless it runs as root (sshd's privilege separation),
// but fails it when CI=true.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("sshd tests need root, and CI=true")
		}
		t.Skip("sshd tests need root")
	}
}

// Server is a running sshd (package sshdrun's), with a client key in the
// root account's authorized_keys.
type Server struct {
	*sshdrun.Server
	// ClientKey is a key in the root account's authorized_keys, for a
	// plain login that tests the host side only.
	ClientKey string
}

// Options adds sshd_config lines.
type Options struct {
	Lines []string // e.g. "HostCertificate /path", "TrustedUserCAKeys /path"
	// LogLevel is sshd's LogLevel (package sshdrun's Options.LogLevel):
	// DEBUG when empty; a benchmark may want INFO, as on a real host.
	LogLevel string
}

// SSHD is sshd's absolute path (sshd refuses to re-exec otherwise).
const SSHD = sshdrun.SSHD

// Start writes a config, host key and client key in a new directory and
// starts sshd; it stops when the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	Need(t, SSHD, "ssh", "ssh-keygen")
	NeedRoot(t)
	dir := t.TempDir()
	s := &Server{ClientKey: clientKey(t, dir)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	s.Server, err = sshdrun.Start(ctx, sshdrun.Options{Dir: dir, LogLevel: o.LogLevel, Lines: configLines(dir, o)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// clientKey makes a client key in dir, and dir/authorized_keys holding it.
func clientKey(t testing.TB, dir string) string {
	t.Helper()
	key := filepath.Join(dir, "client_key")
	Keygen(t, key)
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	return key
}

// configLines are the harness's sshd_config lines, then o's.
func configLines(dir string, o Options) []string {
	return append([]string{
		"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
		"StrictModes no",
	}, o.Lines...)
}

// Inetd is sshd in inetd mode (package sshdrun's Inetd): a new sshd for
// every connection, with ClientKey in the authorized_keys of User.
type Inetd struct {
	*sshdrun.Inetd
	// ClientKey is a key in User's authorized_keys, for a plain login.
	ClientKey string
	// User is the account the test runs as, the one account an sshd not
	// run as root lets in (root when the test runs as root).
	User string
}

// NewInetd writes a config, host key and client key in a new directory for
// sshd -i. It needs sshd, ssh and ssh-keygen, but neither a port nor root.
func NewInetd(t testing.TB, o Options) *Inetd {
	t.Helper()
	Need(t, SSHD, "ssh", "ssh-keygen")
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &Inetd{ClientKey: clientKey(t, dir), User: u.Username}
	if s.Inetd, err = sshdrun.NewInetd(sshdrun.Options{Dir: dir, LogLevel: o.LogLevel, Lines: configLines(dir, o)}); err != nil {
		t.Fatal(err)
	}
	return s
}

// SSH logs in as User with ClientKey, with -v, trusting the host through
// knownHosts, and returns ssh's combined output and error.
func (s *Inetd) SSH(t testing.TB, knownHosts string) (string, error) {
	t.Helper()
	return s.Inetd.SSH(context.Background(), sshdrun.Client{User: s.User, Identity: s.ClientKey, KnownHosts: knownHosts, Verbose: true})
}

// SSHCert logs in as user with a key and its certificate only (not
// ClientKey), trusting the host through knownHosts ("" for none).
func (s *Inetd) SSHCert(t testing.TB, knownHosts, user, key, cert string) (string, error) {
	t.Helper()
	return s.Inetd.SSH(context.Background(), sshdrun.Client{User: user, Identity: key, Certificate: cert, KnownHosts: knownHosts, Verbose: true})
}

// Dial starts an sshd for one connection and returns the connection to
// it, closed (and that sshd ended) when the test ends.
func (s *Inetd) Dial(t testing.TB) net.Conn {
	t.Helper()
	c, err := s.Inetd.Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// InstallCommand installs a copy of bin where sshd runs it as an
// AuthorizedPrincipalsCommand (sshdrun.InstallCommand), removed when the
// test ends, and returns its path. Needs root.
func InstallCommand(t testing.TB, bin string) string {
	t.Helper()
	NeedRoot(t)
	path, remove, err := sshdrun.InstallCommand(bin, "devid-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remove)
	return path
}

// Keygen makes an ECDSA key pair at path and path.pub with ssh-keygen.
func Keygen(t testing.TB, path string) {
	t.Helper()
	if err := sshdrun.Keygen(path); err != nil {
		t.Fatal(err)
	}
}

// SSH logs in as root with ClientKey, with -v, trusting the host through
// knownHosts, and returns ssh's combined output and error.
func (s *Server) SSH(t testing.TB, knownHosts string) (string, error) {
	t.Helper()
	return s.Server.SSH(context.Background(), sshdrun.Client{Identity: s.ClientKey, KnownHosts: knownHosts, Verbose: true})
}

// SSHCert logs in as user with a key and its certificate only (not
// ClientKey), trusting the host through knownHosts ("" for none:
// StrictHostKeyChecking off, for tests of user authentication alone).
func (s *Server) SSHCert(t testing.TB, knownHosts, user, key, cert string) (string, error) {
	t.Helper()
	return s.Server.SSH(context.Background(), sshdrun.Client{User: user, Identity: key, Certificate: cert, KnownHosts: knownHosts, Verbose: true})
}

// WaitReloaded waits until sshd has taken n reloads and listens again.
func (s *Server) WaitReloaded(t testing.TB, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Server.WaitReloaded(ctx, n); err != nil {
		t.Fatal(err)
	}
}

// HostCertSerial finds, in ssh -v output, the serial of the host
// certificate the server presented.
func HostCertSerial(out string) (uint64, error) { return sshdrun.HostCertSerial(out) }

// Account creates a local account for the test (useradd, unlocked so that
// sshd with UsePAM no lets it in) and removes it when the test ends. Names
// should be unique to the test.
func Account(t testing.TB, name string) {
	t.Helper()
	NeedRoot(t)
	Need(t, "useradd", "userdel", "usermod")
	exec.Command("userdel", "-r", name).Run() // a leftover from a killed run
	if out, err := exec.Command("useradd", "--no-create-home", "--shell", "/bin/sh", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", name).Run() })
	// useradd leaves the password field "!": a locked account, which sshd
	// refuses even with a valid certificate when PAM is off.
	if out, err := exec.Command("usermod", "-p", "*", name).CombinedOutput(); err != nil {
		t.Fatalf("usermod %s: %v\n%s", name, err, out)
	}
}

// KeygenL is `ssh-keygen -L` of a certificate: what OpenSSH reads in it.
func KeygenL(t testing.TB, cert *ssh.Certificate) string {
	t.Helper()
	Need(t, "ssh-keygen")
	f := filepath.Join(t.TempDir(), "cert.pub")
	if err := os.WriteFile(f, ssh.MarshalAuthorizedKey(cert), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ssh-keygen", "-L", "-f", f).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -L: %v\n%s", err, out)
	}
	return string(out)
}
