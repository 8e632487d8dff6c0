package packagingtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devid-ssh/devid/caserver"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/internal/gobuild"
	"github.com/devid-ssh/devid/internal/sshdrun"
	"github.com/devid-ssh/devid/internal/sshdtest"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// The host set-up test runs README.md's block as root in a private mount
// namespace whose /etc, /usr and /var are overlays: the block changes them
// as it would a real host's, and every change lands in the test's
// directory. There is no systemd there: systemctl is the test binary,
// which starts devid-hostd from the installed unit's ExecStart and waits
// for its READY=1, as systemctl start does.
const (
	// hostEnv, set to the upper directory, makes a re-executed test binary
	// set up that namespace and run its arguments in it.
	hostEnv = "DEVID_PACKAGINGTEST_HOST"
	// systemctlEnv, set to a directory for its records, makes the test
	// binary act as systemctl.
	systemctlEnv = "DEVID_PACKAGINGTEST_SYSTEMCTL"
	// hostSetupMarker precedes the block in README.md.
	hostSetupMarker = "<!-- host-setup -->"
	// readyTimeout only bounds a hang of devid-hostd's start.
	readyTimeout = 3 * time.Minute
)

// overlaid are the directories the block may change.
var overlaid = []string{"/etc", "/usr", "/var"}

// readmeHostSetup returns README.md's host set-up block.
func readmeHostSetup(t *testing.T) string {
	t.Helper()
	readme := readRepoFile(t, "README.md")
	_, rest, ok := strings.Cut(readme, hostSetupMarker+"\n```sh\n")
	if !ok {
		t.Fatalf("README.md: no %q followed by a ```sh block", hostSetupMarker)
	}
	block, _, ok := strings.Cut(rest, "\n```\n")
	if !ok {
		t.Fatal("README.md: the host set-up block does not end")
	}
	return block + "\n"
}

// setVar gives the block's assignment to name, a line of its own, value.
func setVar(t *testing.T, block, name, value string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + name + `=\S*`)
	if n := len(re.FindAllString(block, -1)); n != 1 {
		t.Fatalf("README.md host set-up: %d assignments to %s, want 1", n, name)
	}
	return re.ReplaceAllLiteralString(block, name+"='"+value+"'")
}

// TestREADMEHostSetup runs README.md's host set-up block, as written, on a
// host where sshd is set up as Debian's is, against a real devid-ca with a
// software TPM registered as the host's. It must run to its end: sshd -t
// passes, silent, with the snippet installed, and devid-hostd has written
// the files sshd reads. Then that sshd, on a loopback port, lets a user in
// with a certificate from a registered workstation's TPM, and the client
// trusts the host by its devid host certificate alone.
func TestREADMEHostSetup(t *testing.T) {
	sshdtest.NeedRoot(t)
	sshdtest.Need(t, "swtpm", "swtpm_setup", "useradd", "usermod", "bash", "ssh")
	tool(t, "sshd", "openssh-server", "/usr/sbin")
	tool(t, "ssh-keygen", "openssh-client")
	block := readmeHostSetup(t)

	ca := catest.Start(t, nil)
	dir := t.TempDir()
	// devid-hostd and devid enroll certify keys from files (the host key,
	// the user's id_ecdsa): the devices' collection allows them.
	yes := true
	if _, err := ca.Server.Inventory().SetCollection("test", inventory.CollectionUpdate{Name: "file-keys", AllowFileKeys: &yes}); err != nil {
		t.Fatal(err)
	}
	dev, tpmAddr := registerTPM(t, ca, inventory.NewDevice{Name: "host-1", Kind: "host", Collection: "file-keys"})

	// The checkout the block runs in: bin/ as make build leaves it, and the
	// repository's files.
	work := filepath.Join(dir, "checkout")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := gobuild.Dir(t, "github.com/devid-ssh/devid/cmd/devid", "github.com/devid-ssh/devid/cmd/devid-hostd",
		"github.com/devid-ssh/devid/cmd/devid-principals")
	if err := os.Symlink(bin, filepath.Join(work, "bin")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"packaging", "contrib"} {
		abs, _ := filepath.Abs(repoPath(d))
		if err := os.Symlink(abs, filepath.Join(work, d)); err != nil {
			t.Fatal(err)
		}
	}
	block = setVar(t, block, "CA_URL", ca.URL)
	block = setVar(t, block, "CA_FINGERPRINT", caserver.Fingerprint(ca.Root))
	block = setVar(t, block, "TPM", tpmAddr)
	upper, records := filepath.Join(dir, "root"), filepath.Join(dir, "systemctl")
	// After the README's lines, the test's own: the user's account, and the
	// host's sshd on a loopback port, for a login from outside.
	port, err := sshdrun.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	block += fmt.Sprintf("\n# --- TestREADMEHostSetup ---\nuseradd --no-create-home --shell /bin/sh %[1]s\nusermod -p '*' %[1]s\n"+
		"/usr/sbin/sshd -p %[2]d -o ListenAddress=127.0.0.1 -o PidFile=%[3]s/sshd.pid\n", setupLogin, port, records)
	script := filepath.Join(dir, "host-setup.sh")
	if err := os.WriteFile(script, []byte(block), 0o644); err != nil {
		t.Fatal(err)
	}
	key, wsCert := enrollWorkstation(t, ca, dir)

	for _, d := range []string{upper, records} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { stopStarted(t, records) })
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "bash", "-e", script)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), hostEnv+"="+upper, systemctlEnv+"="+records)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(records, "devid-hostd.log"))
		t.Fatalf("the README's host set-up failed: %v\n%s\ndevid-hostd's log:\n%s", err, out, log)
	}
	t.Logf("host set-up:\n%s", out)

	// What the block left, in the overlay's upper layer.
	file := func(p string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(upper, p))
		if err != nil {
			t.Fatalf("after the host set-up: %v", err)
		}
		return b
	}
	if !bytes.Equal(file("/etc/ssh/sshd_config.d/devid.conf"), []byte(readRepoFile(t, snippetPath))) {
		t.Errorf("/etc/ssh/sshd_config.d/devid.conf is not %s", snippetPath)
	}
	account := regexp.MustCompile(`(?m)^devid-principals:`)
	if before, _ := os.ReadFile("/etc/passwd"); !account.Match(before) && !account.Match(file("/etc/passwd")) {
		t.Error("no devid-principals account")
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(file("/etc/ssh/devid/ssh_host_ecdsa_key-cert.pub"))
	cert, ok := k.(*ssh.Certificate)
	if err != nil || !ok || cert.CertType != ssh.HostCert || cert.KeyId != dev.ID {
		t.Fatalf("host certificate: %v, key ID %q; want a host certificate for %s", err, cert.KeyId, dev.ID)
	}
	hostCA, err := os.ReadFile(filepath.Join(ca.Dir, "certs", "ssh_host_ca.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if caKey, _, _, _, err := ssh.ParseAuthorizedKey(hostCA); err != nil || !bytes.Equal(caKey.Marshal(), cert.SignatureKey.Marshal()) {
		t.Errorf("host certificate not signed by the CA's host key (%v)", err)
	}
	userCA, _ := os.ReadFile(filepath.Join(ca.Dir, "certs", "ssh_user_ca.pub"))
	want, _, _, _, err := ssh.ParseAuthorizedKey(userCA)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, _, _, err := ssh.ParseAuthorizedKey(file("/etc/ssh/devid/user_ca.pub")); err != nil || !bytes.Equal(got.Marshal(), want.Marshal()) {
		t.Errorf("user_ca.pub is not the CA's user key (%v)", err)
	}
	if len(file("/etc/ssh/devid/revoked.krl")) == 0 {
		t.Error("revoked.krl is empty")
	}
	calls, _ := os.ReadFile(filepath.Join(records, "calls"))
	if want := "daemon-reload\nenable --now devid-hostd\nreload ssh\n"; string(calls) != want {
		t.Errorf("systemctl calls %q, want %q", calls, want)
	}

	// A user logs in with the workstation's certificate, trusting the host
	// by its devid host certificate only.
	knownHosts := filepath.Join(dir, "known_hosts")
	alias := cert.ValidPrincipals[0]
	if err := os.WriteFile(knownHosts, append([]byte("@cert-authority "+alias+" "), hostCA...), 0o644); err != nil {
		t.Fatal(err)
	}
	// The sshd the block started may not listen yet: SSH tries again
	// while the connection is refused.
	login, err := sshdrun.SSH(context.Background(), port, sshdrun.Client{User: setupLogin, Identity: key, Certificate: wsCert,
		KnownHosts: knownHosts, HostKeyAlias: alias, Verbose: true, Command: "id -un"})
	if err != nil || !slices.Contains(strings.Split(login, "\n"), setupLogin) {
		t.Fatalf("login as %s: %v\n%s", setupLogin, err, login)
	}
	if serial, err := sshdtest.HostCertSerial(login); err != nil || serial != cert.Serial {
		t.Errorf("the host presented certificate serial %d (%v), want devid-hostd's %d", serial, err, cert.Serial)
	}
}

// setupLogin is the account TestREADMEHostSetup logs in to (created in
// its namespace only).
const setupLogin = "devid-setup-user"

// enrollWorkstation registers a second software TPM as setupLogin's
// workstation and gets a user certificate with it through the real
// `devid enroll`. It returns the key and certificate files.
func enrollWorkstation(t *testing.T, ca *catest.CA, dir string) (key, cert string) {
	t.Helper()
	inv := ca.Server.Inventory()
	if _, err := inv.AddUser("test", inventory.NewUser{Email: "setup@example.com", Login: setupLogin}); err != nil {
		t.Fatal(err)
	}
	_, tpmAddr := registerTPM(t, ca, inventory.NewDevice{Name: "laptop-1", Kind: "workstation", Owner: "setup@example.com", Collection: "file-keys"})
	key, cert = filepath.Join(dir, "id_ecdsa"), filepath.Join(dir, "id_ecdsa-cert.pub")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-C", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	root := filepath.Join(dir, "ws-root.crt")
	if err := os.WriteFile(root, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	enroll := exec.Command(filepath.Join(dir, "checkout", "bin", "devid"), "enroll", "--ca-url", ca.URL, "--root", root,
		"--tpm", tpmAddr, "--type", "user", "--key", key+".pub", "--out", cert)
	enroll.Env = append(os.Environ(), "DEVID_CONFIG="+filepath.Join(dir, "no-devid-config.json"))
	if out, err := enroll.CombinedOutput(); err != nil {
		t.Fatalf("devid enroll: %v\n%s", err, out)
	}
	return key, cert
}

// registerTPM makes a software TPM, registers its EK certificate as the
// device nd, and serves it on a unix socket for the programs under test,
// whose address ("unix:PATH") it returns.
func registerTPM(t *testing.T, ca *catest.CA, nd inventory.NewDevice) (*inventory.Device, string) {
	t.Helper()
	sw := swtpmtest.NewServed(t)
	nd.EK = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: sw.EK.Certificate.Raw}))
	dev, err := ca.Server.Inventory().AddDevice("test", nd)
	if err != nil {
		t.Fatal(err)
	}
	return dev, sw.Addr
}

// stopStarted stops what the fake systemctl started, by the pids it
// recorded, and waits for each to end.
func stopStarted(t *testing.T, records string) {
	pids, _ := filepath.Glob(filepath.Join(records, "*.pid"))
	for _, f := range pids {
		b, _ := os.ReadFile(f)
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // gone already
		}
		if err := unix.PidfdSendSignal(fd, unix.SIGTERM, nil, 0); err == nil {
			// Not our child: wait for the pidfd to become readable (exit).
			if _, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(time.Minute/time.Millisecond)); err != nil {
				t.Errorf("waiting for pid %d: %v", pid, err)
			}
		}
		unix.Close(fd)
	}
}

// runInHost sets up the host namespace (see hostEnv) and execs argv.
func runInHost(upper string, argv []string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "packagingtest: host namespace:", err)
		os.Exit(nsSetupFailed)
	}
	if err := mountRun(); err != nil {
		fail(err)
	}
	for _, d := range overlaid {
		up, wd := filepath.Join(upper, d), filepath.Join(upper, ".work", d)
		if err := os.MkdirAll(up, 0o755); err != nil {
			fail(err)
		}
		if err := os.MkdirAll(wd, 0o755); err != nil {
			fail(err)
		}
		if err := syscall.Mount("overlay", d, "overlay", 0, "lowerdir="+d+",upperdir="+up+",workdir="+wd); err != nil {
			fail(fmt.Errorf("overlay on %s: %w", d, err))
		}
	}
	self, err := os.Executable()
	if err != nil {
		fail(err)
	}
	// systemctl is this binary (its records directory is in the environment).
	stub := "#!/bin/sh\nexec '" + self + "' \"$@\"\n"
	for _, p := range []string{"/usr/bin/systemctl", "/usr/sbin/systemctl"} {
		os.Remove(p)
	}
	if err := os.WriteFile("/usr/bin/systemctl", []byte(stub), 0o755); err != nil {
		fail(err)
	}
	// A Debian host has its host keys from openssh-server's installation.
	if out, err := exec.Command("ssh-keygen", "-A").CombinedOutput(); err != nil {
		fail(fmt.Errorf("ssh-keygen -A: %v: %s", err, out))
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fail(err)
	}
	fail(syscall.Exec(path, argv, envWithout(hostEnv)))
}

// fakeSystemctl does what the block asks of systemctl: daemon-reload and
// reload do nothing (there is no systemd, and no sshd runs), enable --now
// starts the unit's ExecStart and returns once it says READY=1. Each call
// is recorded in records/calls.
func fakeSystemctl(records string, args []string) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "systemctl (test):", err)
		return 1
	}
	f, err := os.OpenFile(filepath.Join(records, "calls"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fail(err)
	}
	fmt.Fprintln(f, strings.Join(args, " "))
	f.Close()
	switch {
	case len(args) == 1 && args[0] == "daemon-reload", len(args) == 2 && args[0] == "reload":
		return 0
	case len(args) == 3 && args[0] == "enable" && args[1] == "--now":
		if err := startUnit(records, args[2]); err != nil {
			return fail(err)
		}
		return 0
	}
	return fail(fmt.Errorf("unsupported: %q", args))
}

func startUnit(records, name string) error {
	unit := "/etc/systemd/system/" + name + ".service"
	b, err := os.ReadFile(unit)
	if err != nil {
		return err
	}
	var argv []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ExecStart="); ok {
			argv = strings.Fields(v)
		}
	}
	if len(argv) == 0 {
		return fmt.Errorf("%s: no ExecStart=", unit)
	}
	notify := filepath.Join(records, name+".notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer ln.Close()
	log, err := os.Create(filepath.Join(records, name+".log"))
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(records, name+".pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ready := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ln.Read(buf)
			if err != nil {
				return
			}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				if line == "READY=1" {
					close(ready)
					return
				}
			}
		}
	}()
	select {
	case <-ready:
		return nil
	case err := <-exited:
		return fmt.Errorf("%s exited before READY=1: %v (log: %s)", argv[0], err, log.Name())
	case <-time.After(readyTimeout):
		return fmt.Errorf("%s: no READY=1 within %v (log: %s)", argv[0], readyTimeout, log.Name())
	}
}
