package main_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/devid-ssh/devid/internal/gobuild"
	"golang.org/x/crypto/ssh"
)

// bin is devid-principals, built once for all tests the way the Makefile
// builds it.
var bin string

func TestMain(m *testing.M) {
	var err error
	if bin, err = gobuild.Build("."); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(gobuild.Run(m))
}

// result is one run of the binary.
type result struct {
	stdout, stderr string
	code           int
}

func run(t testing.TB, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = nil // sshd gives /dev/null
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return r
}

func devID(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "urn:ek:sha256:" + base64.StdEncoding.EncodeToString(sum[:])
}

// cert is a signed user certificate: its type (%t) and base64 (%k).
type cert struct{ typ, b64 string }

func newCert(t testing.TB, certType uint32, keyID string, principals ...string) cert {
	t.Helper()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	key, _ := ssh.NewPublicKey(pub)
	_, caPriv, _ := ed25519.GenerateKey(rand.Reader)
	ca, _ := ssh.NewSignerFromKey(caPriv)
	c := &ssh.Certificate{Key: key, Serial: 42, CertType: certType, KeyId: keyID, ValidPrincipals: principals, ValidBefore: ssh.CertTimeInfinity}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return cert{c.Type(), base64.StdEncoding.EncodeToString(c.Marshal())}
}

// file writes a file in dir, mode 0644, and returns its path.
func file(t testing.TB, dir, name, data string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const policy = `# account   principals the certificate must all carry
admin       group:sre collection:sre-laptops
*           login:{account}
`

// elapsed matches the variable end of a log line.
var elapsed = regexp.MustCompile(` elapsed=[0-9.]+ms$`)

// logLine returns the one log line of a run with --log stderr, without its
// elapsed time.
func logLine(t testing.TB, r result) string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !elapsed.MatchString(lines[0]) {
		t.Fatalf("want one log line ending in elapsed=…ms, got stderr:\n%s", r.stderr)
	}
	return elapsed.ReplaceAllString(lines[0], "")
}

func TestHelperDecisions(t *testing.T) {
	dir := t.TempDir()
	pol := file(t, dir, "principals.conf", policy)
	dev, other := devID("laptop-1"), devID("laptop-2")
	host := newCert(t, ssh.HostCert, dev, dev, "login:alice")
	for _, tc := range []struct {
		name    string
		account string
		c       cert
		allow   bool
		log     string // after "devid-principals: "; DEV and OTHER stand for the device IDs
	}{
		{"* with {account}", "alice", newCert(t, ssh.UserCert, dev, dev, "login:alice"), true,
			`level=info msg=allow account=alice device_id=DEV key_id=DEV serial=42 policy=POLICY line=3 rule="* login:{account}"`},
		{"all principals of a line", "admin", newCert(t, ssh.UserCert, dev, dev, "group:sre", "collection:sre-laptops"), true,
			`level=info msg=allow account=admin device_id=DEV key_id=DEV serial=42 policy=POLICY line=2 rule="admin group:sre collection:sre-laptops"`},
		{"no line matches", "admin", newCert(t, ssh.UserCert, dev, dev, "group:sre"), false,
			`level=info msg=deny account=admin device_id=DEV key_id=DEV serial=42 policy=POLICY reason="no line of POLICY matches (2 rules)"`},
		{"no device-ID principal", "alice", newCert(t, ssh.UserCert, dev, "login:alice"), false,
			`level=info msg=deny account=alice device_id="" key_id=DEV serial=42 policy=POLICY reason="the certificate has no device-ID principal"`},
		{"key ID is not the device ID", "alice", newCert(t, ssh.UserCert, other, dev, "login:alice"), false,
			`level=info msg=deny account=alice device_id="" key_id=OTHER serial=42 policy=POLICY reason="key ID \"OTHER\" is not the device-ID principal DEV"`},
		{"host certificate", "alice", host, false,
			`level=info msg=deny account=alice device_id="" key_id=DEV serial=42 policy=POLICY reason="a host certificate, not a user certificate"`},
		// sshd's form wins over subcommand names and flags: these are accounts.
		{"account named check", "check", newCert(t, ssh.UserCert, dev, dev, "login:check"), true,
			`level=info msg=allow account=check device_id=DEV key_id=DEV serial=42 policy=POLICY line=3 rule="* login:{account}"`},
		{"account named --help", "--help", newCert(t, ssh.UserCert, dev, dev, "login:--help"), true,
			`level=info msg=allow account=--help device_id=DEV key_id=DEV serial=42 policy=POLICY line=3 rule="* login:{account}"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, "--policy", pol, "--log", "stderr", tc.account, tc.c.typ, tc.c.b64)
			want := ""
			if tc.allow {
				want = dev + "\n"
			}
			if r.code != 0 || r.stdout != want {
				t.Fatalf("exit %d, stdout %q; want exit 0, stdout %q\n%s", r.code, r.stdout, want, r.stderr)
			}
			wantLog := "devid-principals: " + strings.NewReplacer("DEV", dev, "OTHER", other, "POLICY", pol).Replace(tc.log)
			if got := logLine(t, r); got != wantLog {
				t.Errorf("log:\n%s\nwant:\n%s", got, wantLog)
			}
		})
	}
}

// TestHelperFailsClosed: whatever goes wrong, nothing on standard output and
// exit 0, and the log says why.
func TestHelperFailsClosed(t *testing.T) {
	dir := t.TempDir()
	dev := devID("laptop-1")
	c := newCert(t, ssh.UserCert, dev, dev, "login:alice")
	broken := file(t, dir, "broken.conf", "admin group:sre\n* login:{user}\nops\n")
	writable := file(t, dir, "writable.conf", policy)
	os.Chmod(writable, 0o666)
	for _, tc := range []struct {
		name   string
		args   []string
		reason string
	}{
		{"missing policy", []string{"--policy", filepath.Join(dir, "nope.conf"), "alice", c.typ, c.b64},
			`reason="principals: open ` + filepath.Join(dir, "nope.conf") + `: no such file or directory"`},
		{"broken policy", []string{"--policy", broken, "alice", c.typ, c.b64},
			`reason="` + broken + `:2: unknown placeholder {user} (the only one is {account}) (and 1 more errors)"`},
		{"writable policy", []string{"--policy", writable, "alice", c.typ, c.b64},
			`reason="principals: ` + writable + `: writable by group or others (mode 0666)"`},
		{"policy is a directory", []string{"--policy", dir, "alice", c.typ, c.b64},
			`reason="principals: ` + dir + `: not a regular file but a directory"`},
		{"garbage base64", []string{"--policy", broken, "alice", c.typ, "%%%garbage"},
			`reason="principals: certificate: illegal base64 data at input byte 0"`},
		{"type is not the certificate's", []string{"--policy", broken, "alice", "ssh-rsa-cert-v01@openssh.com", c.b64},
			`reason="principals: certificate: type ssh-ed25519-cert-v01@openssh.com, but ssh-rsa-cert-v01@openssh.com was given"`},
		{"a plain key", []string{"--policy", broken, "alice", "ssh-ed25519", base64.StdEncoding.EncodeToString([]byte("\x00\x00\x00\x0bssh-ed25519"))},
			`reason="principals: certificate: a \"ssh-ed25519\" key, not a certificate"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, append([]string{"--log", "stderr"}, tc.args...)...)
			if r.code != 0 || r.stdout != "" {
				t.Fatalf("exit %d, stdout %q; want exit 0 and nothing\n%s", r.code, r.stdout, r.stderr)
			}
			if l := logLine(t, r); !strings.HasPrefix(l, "devid-principals: level=error msg=deny account=alice ") || !strings.HasSuffix(l, " "+tc.reason) {
				t.Errorf("log:\n%s\nwant a deny ending in\n%s", l, tc.reason)
			}
		})
	}
}

func TestHelperDeadline(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "principals.conf")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	dev := devID("laptop-1")
	c := newCert(t, ssh.UserCert, dev, dev, "login:alice")
	r := run(t, "--policy", fifo, "--log", "stderr", "alice", c.typ, c.b64)
	if r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "no decision within 500ms") {
		t.Fatalf("exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}
}

// TestHelperUsage: a wrong command line prints nothing on standard output
// and exits 2, so sshd logs the failure.
func TestHelperUsage(t *testing.T) {
	dev := devID("laptop-1")
	c := newCert(t, ssh.UserCert, dev, dev, "login:alice")
	for _, args := range [][]string{
		nil,
		{"alice"},
		{"alice", c.typ},
		{"alice", "ssh-ed25519", c.b64, "extra"},
		{"--log", "file", "alice", c.typ, c.b64},
		{"--no-such-flag", "alice", c.typ, c.b64},
		{"--help", "--policy", "x"},
		{"--policy", "x", "--help"},
		{"--help", "alice", c.typ, c.b64},
	} {
		r := run(t, args...)
		if r.code != 2 || r.stdout != "" || !strings.HasPrefix(r.stderr, "devid-principals: ") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2, nothing on stdout", args, r.code, r.stdout, r.stderr)
		}
	}
}

// TestHelperDefaultLog: without --log the decision goes to syslog, or to
// standard error where there is none; standard output is the same.
func TestHelperDefaultLog(t *testing.T) {
	dir := t.TempDir()
	pol := file(t, dir, "principals.conf", policy)
	dev := devID("laptop-1")
	c := newCert(t, ssh.UserCert, dev, dev, "login:alice")
	r := run(t, "--policy", pol, "alice", c.typ, c.b64)
	if r.code != 0 || r.stdout != dev+"\n" {
		t.Fatalf("exit %d, stdout %q\n%s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat("/dev/log"); err != nil && !strings.Contains(r.stderr, "msg=allow") {
		t.Errorf("no syslog here, and nothing on standard error: %q", r.stderr)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		r := run(t, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "AuthorizedPrincipalsCommand /usr/libexec/devid/devid-principals %u %t %k") {
			t.Errorf("%q: exit %d, stdout %q", args, r.code, r.stdout)
		}
	}
	for _, sub := range []string{"check", "explain"} {
		r := run(t, sub, "--help")
		if r.code != 0 || !strings.HasPrefix(r.stderr, "Usage: devid-principals "+sub+" ") || !strings.Contains(r.stderr, "-policy file") {
			t.Errorf("%s --help: exit %d, stderr %q", sub, r.code, r.stderr)
		}
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := file(t, dir, "good.conf", policy+"admin group:sre collection:sre-laptops\n")
	bad := file(t, dir, "bad.conf", "admin\n* login:{user}\nok group:x\nadmin group:sre\r\n")

	r := run(t, "check", "--policy", good)
	if r.code != 0 || r.stdout != good+": OK, 3 rules\n" || r.stderr != good+":4: warning: duplicate of line 2\n" {
		t.Errorf("good policy: exit %d\nstdout %q\nstderr %q", r.code, r.stdout, r.stderr)
	}
	foreign := file(t, dir, "foreign.conf", "admin grp:sre\n")
	r = run(t, "check", "--policy", foreign)
	if r.code != 0 || r.stdout != foreign+": OK, 1 rules\n" || !strings.Contains(r.stderr, foreign+`:1: warning: principal "grp:sre" is of no kind devid issues`) {
		t.Errorf("foreign principal: exit %d\nstdout %q\nstderr %q", r.code, r.stdout, r.stderr)
	}
	r = run(t, "check", "--policy", bad)
	wantErr := bad + ":1: account admin lists no principals\n" +
		bad + ":2: unknown placeholder {user} (the only one is {account})\n" +
		bad + ":4: control character U+000D (a CRLF line ending?)\n" +
		"devid-principals check: " + bad + " does not parse (3 errors): devid-principals would deny every login\n"
	if r.code != 1 || r.stdout != "" || r.stderr != wantErr {
		t.Errorf("bad policy: exit %d\nstdout %q\nstderr:\n%s\nwant:\n%s", r.code, r.stdout, r.stderr, wantErr)
	}
	r = run(t, "check", "--policy", filepath.Join(dir, "missing.conf"))
	if r.code != 1 || !strings.Contains(r.stderr, "no such file or directory") {
		t.Errorf("missing policy: exit %d, stderr %q", r.code, r.stderr)
	}
	if r = run(t, "check", "--policy", good, "extra"); r.code != 2 {
		t.Errorf("extra argument: exit %d", r.code)
	}
}

func TestExplain(t *testing.T) {
	dir := t.TempDir()
	pol := file(t, dir, "principals.conf", policy+"carol group:dev\n")
	dev := devID("laptop-1")
	c := newCert(t, ssh.UserCert, dev, dev, "login:alice", "group:sre")
	certFile := file(t, dir, "id-cert.pub", c.typ+" "+c.b64+" alice@laptop\n")
	head := `certificate: ssh-ed25519-cert-v01@openssh.com user certificate, serial 42, key ID "` + dev + `"
  principals: ` + dev + ` login:alice group:sre
  valid: always
policy: ` + pol + `, 3 rules
`
	r := run(t, "explain", "--policy", pol, "alice", certFile)
	want := head + `line 2: admin group:sre collection:sre-laptops
  no: for account admin, not alice
line 3: * login:{account}
  matches: the certificate carries login:alice
lines after 3 are not tried: the first line that matches decides
allowed by line 3: devid-principals prints "` + dev + `" for sshd
`
	if r.code != 0 || r.stdout != want {
		t.Errorf("allowed: exit %d\n%s\nwant:\n%s\nstderr: %s", r.code, r.stdout, want, r.stderr)
	}
	r = run(t, "explain", "--policy", pol, "admin", certFile)
	want = head + `line 2: admin group:sre collection:sre-laptops
  no: the certificate lacks collection:sre-laptops
line 3: * login:{account}
  no: the certificate lacks login:admin
line 4: carol group:dev
  no: for account carol, not admin
denied: no line of ` + pol + ` matches (3 rules)
`
	if r.code != 1 || r.stdout != want || r.stderr != "devid-principals explain: denied\n" {
		t.Errorf("denied: exit %d\n%s\nwant:\n%s\nstderr: %s", r.code, r.stdout, want, r.stderr)
	}
	// A certificate devid's CA would not issue: the line matches, the login is denied.
	c = newCert(t, ssh.UserCert, "laptop-1", dev, "login:alice")
	certFile = file(t, dir, "bad-cert.pub", c.typ+" "+c.b64+"\n")
	r = run(t, "explain", "--policy", pol, "alice", certFile)
	if r.code != 1 || !strings.Contains(r.stdout, "  matches: the certificate carries login:alice\n") ||
		!strings.HasSuffix(r.stdout, "denied: key ID \"laptop-1\" is not the device-ID principal "+dev+"\n") {
		t.Errorf("bad key ID: exit %d\n%s", r.code, r.stdout)
	}
	r = run(t, "explain", "--policy", pol, "alice", pol)
	if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "principals: certificate:") {
		t.Errorf("not a certificate: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r = run(t, "explain", "--policy", pol, "alice"); r.code != 2 {
		t.Errorf("missing argument: exit %d", r.code)
	}
}

// TestStaticLight: the helper imports neither package net (which would link
// it against the C library, 2.2× slower to exec) nor step-ca, nor anything
// outside the standard library but devid's own light packages.
func TestStaticLight(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case dep == "net", dep == "runtime/cgo", dep == "os/user", dep == "log/syslog":
			t.Errorf("depends on %s", dep)
		case strings.Contains(strings.SplitN(dep, "/", 2)[0], ".") && !strings.HasPrefix(dep, "github.com/devid-ssh/devid/"):
			t.Errorf("depends on %s, outside the standard library", dep)
		}
	}
}
