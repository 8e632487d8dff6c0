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
	"github.com/devid-ssh/devid/sshagent/sshagenttest"
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
// passes, silent, with the snippet installed, and devid-hostd has made the
// host key in the TPM, serves it on devid-hostd.socket's socket, and has
// written the files sshd reads. Then that sshd, on a loopback port, lets a
// user in with a certificate from a registered workstation's TPM, and the
// client trusts the host by its devid host certificate alone, which
// certifies the TPM key.
func TestREADMEHostSetup(t *testing.T) {
	sshdtest.NeedRoot(t)
	sshdtest.Need(t, "swtpm", "swtpm_setup", "useradd", "usermod", "bash", "ssh")
	tool(t, "sshd", "openssh-server", "/usr/sbin")
	tool(t, "ssh-keygen", "openssh-client")
	block := readmeHostSetup(t)

	ca := catest.Start(t, nil)
	dir := t.TempDir()
	// The host's key lives in its TPM, so its collection needs nothing
	// allowed. Its inventory names are what the login connects to, and so
	// what its certificate must name.
	dev, tpmAddr := registerTPM(t, ca, inventory.NewDevice{Name: "host-1", Kind: "host", HostNames: []string{hostAddr}})

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
	// The host key: in the TPM, its key file in hostd's state, its public
	// half where the snippet's HostKey names it, and no private file there.
	if st, err := os.Stat(filepath.Join(upper, "/var/lib/devid-hostd/ssh_host_key.tpm")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("the host key's TPM key file: %v, want mode 0600 (%v)", st, err)
	}
	if _, err := os.Lstat(filepath.Join(upper, "/etc/ssh/devid/ssh_host_tpm_key")); !os.IsNotExist(err) {
		t.Errorf("a file is at /etc/ssh/devid/ssh_host_tpm_key (%v): the host key must be only in the TPM", err)
	}
	tpmKey, _, _, _, err := ssh.ParseAuthorizedKey(file("/etc/ssh/devid/ssh_host_tpm_key.pub"))
	if err != nil {
		t.Fatalf("ssh_host_tpm_key.pub: %v", err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(file("/etc/ssh/devid/ssh_host_tpm_key-cert.pub"))
	cert, ok := k.(*ssh.Certificate)
	if err != nil || !ok || cert.CertType != ssh.HostCert || cert.KeyId != dev.ID {
		t.Fatalf("host certificate: %v, key ID %q; want a host certificate for %s", err, cert.KeyId, dev.ID)
	}
	if !bytes.Equal(cert.Key.Marshal(), tpmKey.Marshal()) {
		t.Errorf("the host certificate certifies %s, not the TPM key %s", ssh.FingerprintSHA256(cert.Key), ssh.FingerprintSHA256(tpmKey))
	}
	if !slices.Contains(cert.ValidPrincipals, hostAddr) {
		t.Errorf("host certificate principals %q, without the inventory's host name %q", cert.ValidPrincipals, hostAddr)
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
	if want := "daemon-reload\nenable --now devid-hostd.socket devid-hostd.service\nreload ssh\n"; string(calls) != want {
		t.Errorf("systemctl calls %q, want %q", calls, want)
	}

	// A user logs in with the workstation's certificate, trusting the host
	// by its devid host certificate only: for the name it connects to, with
	// no alias, and on this port (ssh looks a port other than 22 up as
	// [HOST]:PORT). The certificate's key is the TPM key, so the host
	// signed through devid-hostd's agent.
	knownHosts := filepath.Join(dir, "known_hosts")
	pattern := fmt.Sprintf("[%s]:%d", hostAddr, port)
	if err := os.WriteFile(knownHosts, append([]byte("@cert-authority "+pattern+" "), hostCA...), 0o644); err != nil {
		t.Fatal(err)
	}
	// The sshd the block started may not listen yet: SSH tries again
	// while the connection is refused.
	login, err := sshdrun.SSH(context.Background(), port, sshdrun.Client{User: setupLogin, Identity: key, Certificate: wsCert,
		KnownHosts: knownHosts, Verbose: true, Command: "id -un"})
	if err != nil || !slices.Contains(strings.Split(login, "\n"), setupLogin) {
		t.Fatalf("login as %s: %v\n%s", setupLogin, err, login)
	}
	if serial, err := sshdtest.HostCertSerial(login); err != nil || serial != cert.Serial {
		t.Errorf("the host presented certificate serial %d (%v), want devid-hostd's %d", serial, err, cert.Serial)
	}
}

// hostAddr is the host's name in the inventory, and what the login
// connects to: sshdrun's ssh connects to 127.0.0.1.
const hostAddr = "127.0.0.1"

// setupLogin is the account TestREADMEHostSetup logs in to (created in
// its namespace only).
const setupLogin = "devid-setup-user"

// enrollWorkstation registers a second software TPM as setupLogin's
// workstation and gets a user certificate with it through the real
// `devid enroll`. It returns the key and certificate files. The key is a
// file (id_ecdsa), which ssh reads without an agent, so the workstation's
// collection allows file keys; the host's key is in its TPM.
func enrollWorkstation(t *testing.T, ca *catest.CA, dir string) (key, cert string) {
	t.Helper()
	inv := ca.Server.Inventory()
	yes := true
	if _, err := inv.SetCollection("test", inventory.CollectionUpdate{Name: "file-keys", AllowFileKeys: &yes}); err != nil {
		t.Fatal(err)
	}
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
// starts the units named (see startUnits) and returns once each service
// says READY=1. Each call is recorded in records/calls.
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
	case len(args) >= 3 && args[0] == "enable" && args[1] == "--now":
		if err := startUnits(records, args[2:]); err != nil {
			return fail(err)
		}
		return 0
	}
	return fail(fmt.Errorf("unsupported: %q", args))
}

// startUnits starts the units names, in order, from /etc/systemd/system.
// A .socket is made as systemd makes it, from the unit's ListenStream=,
// SocketMode= and DirectoryMode=, and passed to its service as systemd
// passes it (fd 3, LISTEN_FDS, LISTEN_PID). With no systemd to hold the
// socket between calls, the service must be named in the same call; a
// socket on its own is refused. devid-hostd given no socket would make one
// of its own at hostKeyAgent, and the login at the end would work just as
// well: passing the socket instead makes the test follow the path systemd
// takes, and fail if devid-hostd.socket listened anywhere but where the
// snippet's HostKeyAgent looks.
func startUnits(records string, names []string) error {
	sockets := map[string]*os.File{} // by the name of the service they start
	for _, name := range names {
		base, kind, ok := strings.Cut(name, ".")
		if !ok {
			kind = "service"
		}
		switch kind {
		case "socket":
			f, err := listenSocketUnit("/etc/systemd/system/" + name)
			if err != nil {
				return err
			}
			sockets[base] = f
		case "service":
			err := startUnit(records, base, sockets[base])
			delete(sockets, base)
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unsupported unit type", name)
		}
	}
	for base := range sockets {
		return fmt.Errorf("%s.socket started without %[1]s.service: this systemctl cannot hold a socket on its own", base)
	}
	return nil
}

// unitSettings returns the settings of a unit file by key, the last value
// of each (sections are not told apart: the units read here have no key in
// two sections).
func unitSettings(unit string) (map[string]string, error) {
	b, err := os.ReadFile(unit)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && !strings.HasPrefix(k, "#") {
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return m, sc.Err()
}

// listenSocketUnit makes the socket of a .socket unit with one
// ListenStream= path, as systemd does, and returns it as a file to pass.
func listenSocketUnit(unit string) (*os.File, error) {
	set, err := unitSettings(unit)
	if err != nil {
		return nil, err
	}
	path := set["ListenStream"]
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%s: ListenStream=%q: only a socket path is supported", unit, path)
	}
	mode := func(key, def string) (os.FileMode, error) {
		v := set[key]
		if v == "" {
			v = def
		}
		m, err := strconv.ParseUint(v, 8, 32)
		if err != nil {
			return 0, fmt.Errorf("%s: %s=%q: %w", unit, key, v, err)
		}
		return os.FileMode(m), nil
	}
	dirMode, err := mode("DirectoryMode", "0755")
	if err != nil {
		return nil, err
	}
	sockMode, err := mode("SocketMode", "0666")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", unit, err)
	}
	defer l.Close()
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(path, sockMode); err != nil {
		return nil, err
	}
	return l.File()
}

// startUnit starts name.service's ExecStart, with the socket passed if
// there is one, and returns once it says READY=1.
func startUnit(records, name string, socket *os.File) error {
	unit := "/etc/systemd/system/" + name + ".service"
	set, err := unitSettings(unit)
	if err != nil {
		return err
	}
	argv := strings.Fields(set["ExecStart"])
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
	if socket != nil {
		err = sshagenttest.StartActivated(cmd, socket)
		socket.Close()
	} else {
		err = cmd.Start()
	}
	if err != nil {
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
