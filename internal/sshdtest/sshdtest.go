// Package sshdtest runs the real OpenSSH sshd for tests, on a loopback
// port, from a config in the test's directory, and connects to it with the
// real ssh client.
package sshdtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

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

// Server is a running sshd.
type Server struct {
	Dir     string // its files
	Config  string // sshd_config
	HostKey string // private host key (ECDSA); .pub beside it
	PIDFile string
	Log     string // sshd's log (-E)
	Port    int
	Addr    string // 127.0.0.1:Port
	// ClientKey is a key in the root account's authorized_keys, for a
	// plain login that tests the host side only.
	ClientKey string
	cmd       *exec.Cmd
	done      chan struct{}
}

// Options adds sshd_config lines.
type Options struct {
	Lines []string // e.g. "HostCertificate /path", "TrustedUserCAKeys /path"
}

// SSHD is sshd's absolute path (sshd refuses to re-exec otherwise).
const SSHD = "/usr/sbin/sshd"

// Start writes a config, host key and client key in a new directory and
// starts sshd; it stops when the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	Need(t, SSHD, "ssh", "ssh-keygen")
	NeedRoot(t)
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil { // privilege separation directory
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &Server{Dir: dir, Config: filepath.Join(dir, "sshd_config"), HostKey: filepath.Join(dir, "ssh_host_ecdsa_key"),
		PIDFile: filepath.Join(dir, "sshd.pid"), Log: filepath.Join(dir, "sshd.log"), ClientKey: filepath.Join(dir, "client_key")}
	Keygen(t, s.HostKey)
	Keygen(t, s.ClientKey)
	pub, err := os.ReadFile(s.ClientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s.Addr = "127.0.0.1:" + strconv.Itoa(s.Port)
	lines := append([]string{
		"Port " + strconv.Itoa(s.Port),
		"ListenAddress 127.0.0.1",
		"HostKey " + s.HostKey,
		"PidFile " + s.PIDFile,
		"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
		"StrictModes no",
		"UsePAM no",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin prohibit-password",
		"LogLevel DEBUG",
	}, o.Lines...)
	s.WriteConfig(t, lines...)
	s.cmd = exec.Command(SSHD, "-D", "-f", s.Config, "-E", s.Log)
	var out bytes.Buffer
	s.cmd.Stdout, s.cmd.Stderr = &out, &out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.done = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.done
	})
	// Wait until it accepts connections (or died).
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", s.Addr)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-s.done:
			log, _ := os.ReadFile(s.Log)
			t.Fatalf("sshd exited: %s\n%s", out.String(), log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not listen on %s within 10s", s.Addr)
		}
		time.Sleep(10 * time.Millisecond) // sshd gives no readiness signal
	}
	return s
}

// WriteConfig replaces sshd_config (sshd reads it on SIGHUP).
func (s *Server) WriteConfig(t testing.TB, lines ...string) {
	t.Helper()
	if err := os.WriteFile(s.Config, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Keygen makes an ECDSA key pair at path and path.pub with ssh-keygen.
func Keygen(t testing.TB, path string) {
	t.Helper()
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-C", "", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
}

// SSH runs the real ssh client against s with extra options and returns
// its combined output (with -v) and error. User root, key ClientKey unless
// options say otherwise.
func (s *Server) SSH(t testing.TB, knownHosts string, extra ...string) (string, error) {
	t.Helper()
	return s.run(knownHosts, "root", append([]string{"-i", s.ClientKey}, extra...))
}

// SSHCert logs in as user with a key and its certificate only (not
// ClientKey), trusting the host through knownHosts ("" for none:
// StrictHostKeyChecking off, for tests of user authentication alone).
func (s *Server) SSHCert(t testing.TB, knownHosts, user, key, cert string) (string, error) {
	t.Helper()
	return s.run(knownHosts, user, []string{"-i", key, "-o", "CertificateFile=" + cert})
}

func (s *Server) run(knownHosts, user string, extra []string) (string, error) {
	strict := "yes"
	if knownHosts == "" {
		knownHosts, strict = "/dev/null", "no"
	}
	args := []string{"-F", "/dev/null", "-v", "-p", strconv.Itoa(s.Port),
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=" + strict, "-o", "UserKnownHostsFile=" + knownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "IdentitiesOnly=yes"}
	args = append(args, extra...)
	args = append(args, user+"@127.0.0.1", "true")
	for attempt := 0; ; attempt++ {
		s.waitListening(10 * time.Second)
		out, err := exec.Command("ssh", args...).CombinedOutput()
		// sshd re-executes itself on SIGHUP (a reload) and does not listen
		// for a moment: a refused connection then is not the answer.
		if err != nil && attempt < 3 && strings.Contains(string(out), "Connection refused") {
			continue
		}
		return string(out), err
	}
}

// waitListening waits until sshd accepts TCP connections, or limit passes.
func (s *Server) waitListening(limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", s.Addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond) // nothing to wait on but the port
	}
}

// HostCertSerial finds, in ssh -v output, the serial of the host
// certificate the server presented ("Server host certificate: … serial N").
func HostCertSerial(out string) (uint64, error) {
	for _, line := range strings.Split(out, "\n") {
		_, rest, ok := strings.Cut(line, "Server host certificate: ")
		if !ok {
			continue
		}
		_, after, ok := strings.Cut(rest, " serial ")
		if !ok {
			continue
		}
		f := strings.Fields(after)
		if len(f) > 0 {
			return strconv.ParseUint(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no host certificate in ssh's output")
}

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
