package sshdrun_test

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/sshdrun"
	"github.com/devid-ssh/devid/internal/sshdtest"
	"golang.org/x/crypto/ssh"
)

// TestReloadWindow: logins made right after a SIGHUP, while sshd executes
// itself again, are neither lost nor mistaken for refusals: the harness
// retries what the re-exec window looks like and nothing else, and
// WaitReloaded sees every reload sshd took.
func TestReloadWindow(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // bounds a hang only
	defer cancel()
	login := sshdrun.Client{Identity: s.ClientKey}
	const reloads = 20
	for i := 1; i <= reloads; i++ {
		if err := syscall.Kill(s.PID, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		// Straight into the window: no wait for the reload.
		if out, err := s.Server.SSH(ctx, login); err != nil {
			t.Fatalf("login %d, right after a SIGHUP: %v\n%s%s", i, err, out, s.Tail(20))
		}
		if err := s.Server.WaitReloaded(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	restarts, listens, err := s.Generations()
	if err != nil || restarts != reloads || listens != reloads+1 {
		t.Fatalf("sshd's log: %d restarts, %d listens (%v); want %d and %d", restarts, listens, err, reloads, reloads+1)
	}

	// A refused login is the answer, not a reason to try again: a key
	// sshd does not know is refused once.
	other := t.TempDir() + "/other"
	sshdtest.Keygen(t, other)
	before := strings.Count(readFile(t, s.Log), "Connection closed by authenticating user")
	out, err := s.Server.SSH(ctx, sshdrun.Client{Identity: other})
	if err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("login with an unknown key: %v\n%s", err, out)
	}
	// sshd logs the refused connection once it has closed it.
	for strings.Count(readFile(t, s.Log), "Connection closed by authenticating user") == before {
		select {
		case <-ctx.Done():
			t.Fatalf("sshd never logged the refused connection%s", s.Tail(20))
		case <-time.After(10 * time.Millisecond):
		}
	}
	if n := strings.Count(readFile(t, s.Log), "Connection closed by authenticating user") - before; n != 1 {
		t.Errorf("a refused login was tried %d times, want once", n)
	}
}

// TestStartFails: an sshd that cannot start is reported with what it said,
// not waited for.
func TestStartFails(t *testing.T) {
	sshdtest.Need(t, sshdrun.SSHD, "ssh-keygen")
	sshdtest.NeedRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := sshdrun.Start(ctx, sshdrun.Options{Dir: t.TempDir(), Lines: []string{"NoSuchOption yes"}})
	if err == nil || !strings.Contains(err.Error(), "sshd exited") || !strings.Contains(err.Error(), "NoSuchOption") {
		t.Fatalf("Start with a broken config: %v", err)
	}
	if _, err := sshdrun.Start(ctx, sshdrun.Options{Dir: t.TempDir(), LogLevel: "QUIET"}); err == nil {
		t.Fatal("Start with LogLevel QUIET: no error")
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestInetd: sshd -i answers each connection with a sshd of its own, from
// the real ssh client (ProxyCommand) and from x/crypto/ssh over a
// socketpair alike: a known key logs in as the test's own account, an
// unknown one is refused, and the host key is the configured one.
func TestInetd(t *testing.T) {
	s := sshdtest.NewInetd(t, sshdtest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // bounds a hang only
	defer cancel()
	out, err := s.Inetd.SSH(ctx, sshdrun.Client{User: s.User, Identity: s.ClientKey, Command: "id -un"})
	if err != nil || strings.TrimSpace(lastLine(out)) != s.User {
		t.Fatalf("ssh through sshd -i: %v\n%s\n%s", err, out, readFile(t, s.Log))
	}
	other := t.TempDir() + "/other"
	sshdtest.Keygen(t, other)
	if out, err := s.Inetd.SSH(ctx, sshdrun.Client{User: s.User, Identity: other}); err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("ssh with an unknown key: %v\n%s", err, out)
	}

	signer, err := ssh.ParsePrivateKey([]byte(readFile(t, s.ClientKey)))
	if err != nil {
		t.Fatal(err)
	}
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(readFile(t, s.HostKey+".pub")))
	if err != nil {
		t.Fatal(err)
	}
	conn, chans, reqs, err := ssh.NewClientConn(s.Dial(t), "inetd", &ssh.ClientConfig{
		User: s.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: ssh.FixedHostKey(hostKey)})
	if err != nil {
		t.Fatalf("x/crypto/ssh over a socketpair: %v\n%s", err, readFile(t, s.Log))
	}
	client := ssh.NewClient(conn, chans, reqs)
	session, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	b, err := session.Output("id -un")
	if err != nil || strings.TrimSpace(string(b)) != s.User {
		t.Fatalf("id -un over x/crypto/ssh: %v %q", err, b)
	}
	if err := client.Close(); err != nil {
		t.Error(err)
	}
	log := readFile(t, s.Log)
	if n := strings.Count(log, "Accepted publickey for "+s.User+" "); n != 2 {
		t.Errorf("sshd's log shows %d logins, want 2:\n%s", n, log)
	}
	if n := strings.Count(log, "Connection from "); n != 3 {
		t.Errorf("sshd's log shows %d connections, want 3 (one sshd each):\n%s", n, log)
	}
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestInetdAsUser checks what the Inetd documentation says sshd -i does
// when not run as root: run as an ordinary account (through the ssh client
// that account runs), it lets that account in by key or by certificate,
// honours RevokedKeys, and lets no other account in.
func TestInetdAsUser(t *testing.T) {
	sshdtest.Need(t, sshdrun.SSHD, "ssh", "ssh-keygen")
	const name = "devid-inetd-test"
	sshdtest.Account(t, name)
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	// A directory the account owns, reached through directories it may
	// enter (a test's own are root's, mode 0700).
	dir, err := os.MkdirTemp("", "devid-inetd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	key, ca := filepath.Join(dir, "id"), filepath.Join(dir, "ca")
	sshdtest.Keygen(t, key)
	sshdtest.Keygen(t, ca)
	keygen := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ssh-keygen", args...).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen %q: %v\n%s", args, err, out)
		}
	}
	keygen("-q", "-s", ca, "-I", "test", "-n", name+",root", "-z", "7", key+".pub")
	certOnly := filepath.Join(dir, "cert-only") // the key without an authorized_keys entry
	sshdtest.Keygen(t, certOnly)
	keygen("-q", "-s", ca, "-I", "test", "-n", name, "-z", "8", certOnly+".pub")
	revoked := filepath.Join(dir, "revoked.krl")
	keygen("-q", "-k", "-f", revoked)
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), []byte(readFile(t, key+".pub")), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := sshdrun.NewInetd(sshdrun.Options{Dir: dir, Lines: []string{
		"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"), "StrictModes no",
		"TrustedUserCAKeys " + ca + ".pub", "RevokedKeys " + revoked,
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// login returns what the command printed, then what ssh and sshd
	// said (stderr: "Could not chdir to home directory", say), so that
	// the command's last line is its own whatever order the two streams
	// arrive in.
	login := func(c sshdrun.Client) (string, error) {
		t.Helper()
		c.Command = "id -un"
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // bounds a hang only
		defer cancel()
		cmd := exec.CommandContext(ctx, "ssh", s.Args(c)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stderr.String() + stdout.String(), err
	}
	if out, err := login(sshdrun.Client{User: name, Identity: key}); err != nil || lastLine(out) != name {
		t.Fatalf("by key, as %s: %v\n%s\nsshd's log:\n%s", name, err, out, readFile(t, s.Log))
	}
	if out, err := login(sshdrun.Client{User: name, Identity: certOnly, Certificate: certOnly + "-cert.pub"}); err != nil || lastLine(out) != name {
		t.Fatalf("by certificate, as %s: %v\n%s\nsshd's log:\n%s", name, err, out, readFile(t, s.Log))
	}
	if out, err := login(sshdrun.Client{User: "root", Identity: key}); err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("as root, from an sshd run as %s: %v\n%s", name, err, out)
	}
	if out, err := exec.Command("ssh-keygen", "-q", "-k", "-u", "-f", revoked, "-z", "2", certOnly+"-cert.pub").CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -k -u: %v\n%s", err, out)
	}
	if out, err := login(sshdrun.Client{User: name, Identity: certOnly, Certificate: certOnly + "-cert.pub"}); err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("by a revoked certificate: %v\n%s", err, out)
	}
	if log := readFile(t, s.Log); !strings.Contains(log, "revoked") {
		t.Errorf("sshd's log does not say the certificate is revoked:\n%s", log)
	}
}
