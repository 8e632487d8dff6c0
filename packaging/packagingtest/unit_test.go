package packagingtest

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/devid-ssh/devid/hostd"
	"github.com/devid-ssh/devid/internal/conffile"
)

const (
	unitPath   = "packaging/devid-hostd.service"
	socketPath = "packaging/devid-hostd.socket"
	dropInPath = "contrib/systemd/ssh.service.d/devid-hostkey.conf"
)

// unitFile is a parsed systemd unit: section, then key, then values in the
// order they appear.
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, text string) unitFile {
	t.Helper()
	u := unitFile{}
	section := ""
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case strings.HasSuffix(line, "\\"):
			t.Fatalf("%s:%d: continuation lines are not supported by this test", unitPath, i+1)
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a setting: %q", unitPath, i+1, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// testUnit copies the unit into a temporary directory and returns the
// copy's path. systemd-analyze refuses a unit whose ExecStart= binary does
// not exist, and devid-hostd is not installed where the tests run, so the
// copy runs /bin/true instead; everything else is the shipped unit.
func testUnit(t *testing.T) string {
	t.Helper()
	return copyUnit(t, t.TempDir(), unitPath)
}

// copyUnit copies the repository's unit file rel into dir and returns the
// copy's path. A service's one ExecStart= line runs a devid binary under
// /usr/bin, which is not installed where the tests run and which
// systemd-analyze would refuse: the copy runs /bin/true with the same
// arguments instead. Everything else is the shipped unit.
func copyUnit(t *testing.T, dir, rel string) string {
	t.Helper()
	text := readRepoFile(t, rel)
	if strings.HasSuffix(rel, ".service") {
		execStart := regexp.MustCompile(`(?m)^ExecStart=/usr/bin/devid[a-z-]* `)
		if n := len(execStart.FindAllString(text, -1)); n != 1 {
			t.Fatalf("%s: %d lines run /usr/bin/devid… as ExecStart=, want 1", rel, n)
		}
		text = execStart.ReplaceAllLiteralString(text, "ExecStart=/bin/true ")
	}
	p := filepath.Join(dir, filepath.Base(rel))
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// verify runs systemd-analyze verify (with args before "verify", such as
// --user) on units and fails t unless it exits 0 without a single message.
func verify(t *testing.T, env []string, args []string, units ...string) {
	t.Helper()
	analyze := tool(t, "systemd-analyze", "systemd")
	cmd := exec.Command(analyze, append(append(args, "verify"), units...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("systemd-analyze %s verify %s: %v\n%s", strings.Join(args, " "), strings.Join(units, " "), err, out)
	}
}

// TestUnitVerify: systemd-analyze verify accepts the unit without a single
// message.
func TestUnitVerify(t *testing.T) {
	verify(t, nil, nil, testUnit(t))
}

// TestSocketUnitVerify: systemd-analyze verify accepts devid-hostd.socket
// with the service it starts, without a single message. (Alone, the socket
// fails: "service devid-hostd.service not loaded, socket cannot be
// started".) The socket listens where devid-hostd's configuration and the
// sshd snippet say the HostKeyAgent is, for root only.
func TestSocketUnitVerify(t *testing.T) {
	dir := t.TempDir()
	verify(t, nil, nil, copyUnit(t, dir, socketPath), copyUnit(t, dir, unitPath))

	agent := hostdDefaults(t).HostKeyAgent
	u := parseUnit(t, readRepoFile(t, socketPath))
	want := map[string]string{"ListenStream": agent, "SocketMode": "0600", "DirectoryMode": "0700"}
	for k, v := range want {
		if got := u["Socket"][k]; !slices.Equal(got, []string{v}) {
			t.Errorf("%s: [Socket] %s=%q, want %q", socketPath, k, got, v)
		}
	}
	if got := sshdSettings(readRepoFile(t, snippetPath))["hostkeyagent"]; !slices.Equal(got, u["Socket"]["ListenStream"]) {
		t.Errorf("%s: HostKeyAgent %q, but %s listens on %q", snippetPath, got, socketPath, u["Socket"]["ListenStream"])
	}
	// The service keeps the socket's directory when it stops, and never
	// stops being restarted: sshd's signatures wait for it.
	svc := parseUnit(t, readRepoFile(t, unitPath))
	if got := svc["Service"]["RuntimeDirectory"]; !slices.Equal(got, []string{filepath.Base(filepath.Dir(agent))}) {
		t.Errorf("%s: RuntimeDirectory=%q is not the socket's directory %s", unitPath, got, filepath.Dir(agent))
	}
	for section, kv := range map[string][2]string{"Service": {"RuntimeDirectoryPreserve", "yes"}, "Unit": {"StartLimitIntervalSec", "0"}} {
		if got := svc[section][kv[0]]; !slices.Equal(got, []string{kv[1]}) {
			t.Errorf("%s: [%s] %s=%q, want %q", unitPath, section, kv[0], got, kv[1])
		}
	}
}

// hostdDefaults returns the configuration devid-hostd makes of a
// hostd.json that sets only what it must: its defaults.
func hostdDefaults(t *testing.T) *hostd.Config {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hostd.json")
	minimal := `{"version": 1, "caUrl": "https://ca.example.com:8443", "root": "/etc/devid/root_ca.crt"}`
	if err := os.WriteFile(p, []byte(minimal), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := hostd.LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSSHDropInVerify: ssh.service (the host's, from openssh-server) with
// contrib/systemd/ssh.service.d/devid-hostkey.conf as its drop-in, beside
// devid-hostd.socket and .service, passes systemd-analyze verify without a
// single message: the drop-in parses, and the units make no ordering cycle
// (verify starts each and reports "Found ordering cycle"). A drop-in with
// an unknown key does get a message, which shows verify reads it.
func TestSSHDropInVerify(t *testing.T) {
	tool(t, "sshd", "openssh-server", "/usr/sbin")
	var sshUnit string
	for _, p := range []string{"/usr/lib/systemd/system/ssh.service", "/lib/systemd/system/ssh.service"} {
		if b, err := os.ReadFile(p); err == nil {
			sshUnit = string(b)
			break
		}
	}
	if sshUnit == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no ssh.service, and CI=true: install the Debian package openssh-server")
		}
		t.Skip("no ssh.service (Debian package openssh-server)")
	}
	dir := t.TempDir()
	ssh := filepath.Join(dir, "ssh.service")
	if err := os.WriteFile(ssh, []byte(sshUnit), 0o644); err != nil {
		t.Fatal(err)
	}
	dropIn := filepath.Join(dir, "ssh.service.d", "devid-hostkey.conf")
	if err := os.Mkdir(filepath.Dir(dropIn), 0o755); err != nil {
		t.Fatal(err)
	}
	text := readRepoFile(t, dropInPath)
	if err := os.WriteFile(dropIn, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	units := []string{ssh, copyUnit(t, dir, socketPath), copyUnit(t, dir, unitPath)}
	verify(t, nil, nil, units...)

	u := parseUnit(t, text)
	for _, k := range []string{"Wants", "After"} {
		if got := u["Unit"][k]; !slices.Equal(got, []string{filepath.Base(socketPath)}) {
			t.Errorf("%s: [Unit] %s=%q, want %s", dropInPath, k, got, filepath.Base(socketPath))
		}
	}
	if err := os.WriteFile(dropIn, []byte(text+"DevidTestUnknownKey=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(tool(t, "systemd-analyze", "systemd"), append([]string{"verify"}, units...)...).CombinedOutput()
	if !strings.Contains(string(out), "DevidTestUnknownKey") {
		t.Errorf("systemd-analyze verify does not read the drop-in: no word of its unknown key in %q", out)
	}
}

// TestUserUnitsVerify: systemd-analyze --user verify accepts devid-agent's
// user units, the socket with its service, without a single message. A
// user manager needs XDG_RUNTIME_DIR, a directory of mode 0700.
func TestUserUnitsVerify(t *testing.T) {
	runtime := t.TempDir()
	if err := os.Chmod(runtime, 0o700); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	verify(t, []string{"XDG_RUNTIME_DIR=" + runtime}, []string{"--user"},
		copyUnit(t, dir, "packaging/user/devid-agent.socket"), copyUnit(t, dir, "packaging/user/devid-agent.service"))
}

// TestUnitHardening: systemd-analyze security rates the unit's exposure
// low, and every hardening setting devid relies on is in effect.
func TestUnitHardening(t *testing.T) {
	// 2.4 with systemd 252 (Debian 12); newer systemd versions score more
	// settings, hence the margin. The list is the precise check.
	checkUnitSecurity(t, testUnit(t), 30, []string{
		"NoNewPrivileges=",
		"AmbientCapabilities=",
		"CapabilityBoundingSet=~CAP_SYS_ADMIN",
		"CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER)",
		"CapabilityBoundingSet=~CAP_KILL",
		"CapabilityBoundingSet=~CAP_SYS_PTRACE",
		"CapabilityBoundingSet=~CAP_NET_ADMIN",
		"CapabilityBoundingSet=~CAP_SET(UID|GID|PCAP)",
		"ProtectSystem=",
		"ProtectHome=",
		"PrivateTmp=",
		"ProtectKernelTunables=",
		"ProtectKernelModules=",
		"ProtectKernelLogs=",
		"ProtectControlGroups=",
		"ProtectClock=",
		"ProtectHostname=",
		"RestrictNamespaces=~user",
		"RestrictNamespaces=~mnt",
		"RestrictAddressFamilies=~AF_PACKET",
		"RestrictAddressFamilies=~…",
		"LockPersonality=",
		"MemoryDenyWriteExecute=",
		"RestrictRealtime=",
		"RestrictSUIDSGID=",
		"SystemCallArchitectures=",
		"SystemCallFilter=~@mount",
		"SystemCallFilter=~@module",
		"SystemCallFilter=~@raw-io",
		"SystemCallFilter=~@debug",
		"NotifyAccess=",
	})
}

// exposure matches systemd-analyze security's verdict line.
var exposure = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+) (\S+)`)

// checkUnitSecurity: systemd-analyze security rates unit (a file) at most
// threshold tenths (its --threshold), and every one of its checks named in
// inEffect is there and in effect.
func checkUnitSecurity(t *testing.T, unit string, threshold int, inEffect []string) {
	t.Helper()
	analyze := tool(t, "systemd-analyze", "systemd")
	out, err := exec.Command(analyze, "security", "--offline=yes", "--no-pager", "--threshold="+strconv.Itoa(threshold), unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: exposure over %.1f: %v\n%s", float64(threshold)/10, err, out)
	}
	if m := exposure.FindStringSubmatch(string(out)); m != nil {
		t.Logf("systemd-analyze security: %s %s", m[1], m[2])
	}
	out, err = exec.Command(analyze, "security", "--offline=yes", "--json=short", unit).Output()
	if err != nil {
		t.Fatalf("systemd-analyze security --json=short: %v", err)
	}
	var checks []struct {
		Set  bool   `json:"set"`
		Name string `json:"name"`
	}
	if err := json.Unmarshal(out, &checks); err != nil {
		t.Fatalf("systemd-analyze security --json=short: %v\n%.500s", err, out)
	}
	set := map[string]bool{}
	for _, c := range checks {
		set[c.Name] = c.Set
	}
	for _, name := range inEffect {
		s, ok := set[name]
		switch {
		case !ok:
			t.Errorf("systemd-analyze security has no check %q (renamed in this systemd version?)", name)
		case !s:
			t.Errorf("%s: not in effect", name)
		}
	}
}

// TestUnitLeavesSSHDAlone: hostd never holds up, stops or pulls in sshd:
// only After=ssh.service (so that `sshd -t` finds /run/sshd), no
// requirement or Before= either way.
func TestUnitLeavesSSHDAlone(t *testing.T) {
	u := parseUnit(t, readRepoFile(t, unitPath))
	isSSH := func(v string) bool {
		return slices.ContainsFunc(strings.Fields(v), func(f string) bool { return f == "ssh.service" || f == "sshd.service" })
	}
	for section, keys := range u {
		for k, vs := range keys {
			if k == "After" {
				continue
			}
			for _, v := range vs {
				if isSSH(v) {
					t.Errorf("[%s] %s=%s: hostd must not be a dependency of sshd's unit, or it of hostd", section, k, v)
				}
			}
		}
	}
	if !slices.ContainsFunc(u["Unit"]["After"], isSSH) {
		t.Errorf("[Unit] After= does not name ssh.service: %q", u["Unit"]["After"])
	}
	want := map[string]string{"Type": "notify", "NotifyAccess": "main", "WatchdogSec": "60s", "Restart": "on-failure",
		"RestartSec": "1s", "ExecReload": "/bin/kill -HUP $MAINPID", "CapabilityBoundingSet": "", "DevicePolicy": "closed",
		"DeviceAllow": "/dev/tpmrm0 rw", "ProtectSystem": "strict"}
	for k, v := range want {
		if got := u["Service"][k]; !slices.Equal(got, []string{v}) {
			t.Errorf("[Service] %s=%q, want %q", k, got, v)
		}
	}
}

// TestUnitPrivilegesSuffice checks the premise of the unit's privilege
// choice: a uid-0 process with no capabilities at all (an empty bounding
// set, as CapabilityBoundingSet= gives it) can still run `sshd -t` on a
// configuration whose host key is 0600, replace a file in a 0755 directory,
// open a 0660 device for writing, and SIGHUP another process of the same
// uid; and it cannot read a file whose mode denies its owner (it would with
// CAP_DAC_OVERRIDE), so the capabilities are really gone. Run as root, or
// in a user namespace as its root. (Reloading through systemd's D-Bus API,
// which systemd grants to uid 0, needs a running systemd and is not tested.)
func TestUnitPrivilegesSuffice(t *testing.T) {
	setpriv := tool(t, "setpriv", "util-linux")
	sshd := tool(t, "sshd", "openssh-server", "/usr/sbin")
	keygen := tool(t, "ssh-keygen", "openssh-client")
	kill := tool(t, "kill", "procps", "/bin", "/usr/bin")
	dd := tool(t, "dd", "coreutils")
	mv := tool(t, "mv", "coreutils")
	touch := tool(t, "touch", "coreutils")

	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	hostKey := filepath.Join(dir, "ssh_host_ecdsa_key")
	if out, err := exec.Command(keygen, "-q", "-t", "ecdsa", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	config := filepath.Join(dir, "sshd_config")
	write := func(name, content string, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(name, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(name, mode); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
	write(config, "HostKey "+hostKey+"\n", 0o644)
	device := filepath.Join(dir, "tpmrm0")
	write(device, "", 0o660)
	secret := filepath.Join(dir, "secret")
	write(secret, "x", 0)
	managed := filepath.Join(dir, "managed")
	write(managed, "old", 0o644)

	// A process to SIGHUP, as sshd's listener would be: cat waits for its
	// standard input, which the test never closes.
	victim := exec.Command("cat")
	stdin, err := victim.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	// A test run under nohup ignores SIGHUP, and so would cat, inheriting
	// that: while Go handles SIGHUP, a child starts with the default action.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	err = victim.Start()
	signal.Stop(hup)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		victim.Process.Kill()
		victim.Wait()
	})

	noCaps := func(argv ...string) (string, error) {
		full := append([]string{setpriv, "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs", "--"}, argv...)
		return run(command(true, full...))
	}
	if out, err := noCaps(sshd, "-t", "-f", config); err != nil || strings.TrimSpace(out) != "" {
		needNamespace(t, err)
		t.Errorf("sshd -t without capabilities: %v\n%s", err, out)
	}
	if _, err := noCaps(touch, managed+".new"); err != nil {
		t.Errorf("create a file in a 0755 directory without capabilities: %v", err)
	} else if _, err := noCaps(mv, managed+".new", managed); err != nil {
		t.Errorf("rename within a 0755 directory without capabilities: %v", err)
	}
	if _, err := noCaps(dd, "if=/dev/null", "of="+device, "conv=notrunc", "status=none"); err != nil {
		t.Errorf("open a 0660 device for writing without capabilities: %v", err)
	}
	if _, err := noCaps(dd, "if="+secret, "of=/dev/null", "status=none"); err == nil {
		t.Errorf("read a mode-0 file without capabilities: it worked, so the capabilities were not dropped")
	}
	if _, err := noCaps(kill, "-HUP", strconv.Itoa(victim.Process.Pid)); err != nil {
		t.Errorf("SIGHUP a process of the same uid without capabilities: %v", err)
	}
	stdin.Close()
	var ee *exec.ExitError
	if err := victim.Wait(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGHUP {
		t.Errorf("the process to SIGHUP ended with %v, want killed by SIGHUP", err)
	}
}

// TestExampleConfig: packaging/hostd.json.example decodes strictly, and
// agrees with the unit (which paths hostd may write, which device it may
// open, where its configuration is) and with the sshd snippet (which files
// sshd reads).
func TestExampleConfig(t *testing.T) {
	const file = "packaging/hostd.json.example"
	// The fields devid-hostd's configuration has, as the packaging knows
	// them; hostd.LoadConfig below checks the daemon itself takes the file.
	var c struct {
		Version           int      `json:"version"`
		CAURL             string   `json:"caUrl"`
		Root              string   `json:"root"`
		TPM               string   `json:"tpm"`
		TPMHostKey        string   `json:"tpmHostKey"`
		SSHDHostKey       string   `json:"sshdHostKey"`
		HostKeyAgent      string   `json:"hostKeyAgent"`
		HostCertificate   string   `json:"hostCertificate"`
		Principals        []string `json:"principals"`
		TrustedUserCAKeys string   `json:"trustedUserCAKeys"`
		RevokedKeys       string   `json:"revokedKeys"`
		SSHD              struct {
			Binary string `json:"binary"`
			Config string `json:"config"`
		} `json:"sshd"`
		Reload struct {
			SystemdUnit string `json:"systemdUnit"`
			PIDFile     string `json:"pidFile"`
		} `json:"reload"`
		MetricsAddress string  `json:"metricsAddress"`
		RenewFraction  float64 `json:"renewFraction"`
	}
	if err := conffile.DecodeJSON(file, []byte(readRepoFile(t, file)), &c); err != nil {
		t.Fatal(err)
	}
	if c.Version != 1 {
		t.Errorf("version %d, want 1", c.Version)
	}
	if u, err := url.Parse(c.CAURL); err != nil || u.Scheme != "https" || u.Host == "" {
		t.Errorf("caUrl %q: want an https URL", c.CAURL)
	}
	host, _, err := net.SplitHostPort(c.MetricsAddress)
	if a, perr := netip.ParseAddr(host); err != nil || perr != nil || !a.IsLoopback() {
		t.Errorf("metricsAddress %q: want a loopback address and port", c.MetricsAddress)
	}
	if c.RenewFraction <= 0 || c.RenewFraction >= 1 {
		t.Errorf("renewFraction %v: want between 0 and 1", c.RenewFraction)
	}
	if (c.Reload.SystemdUnit == "") == (c.Reload.PIDFile == "") {
		t.Errorf("reload: want exactly one of systemdUnit and pidFile, got %+v", c.Reload)
	}
	if c.Principals != nil {
		// A name in an example is copied to every host: leave the names
		// to the inventory (the CA gives a host its own).
		t.Errorf("principals %q: the example should not name hosts", c.Principals)
	}

	// The unit: hostd may write each file it keeps, may open the TPM, and
	// reads this configuration.
	u := parseUnit(t, readRepoFile(t, unitPath))
	svc := u["Service"]
	var writable []string
	for _, v := range svc["ReadWritePaths"] {
		writable = append(writable, strings.Fields(v)...)
	}
	if _, err := hostd.LoadConfig(filepath.Join("..", "..", file)); err != nil {
		t.Errorf("devid-hostd does not take its example configuration: %v", err)
	}
	for _, f := range []string{c.HostCertificate, c.TrustedUserCAKeys, c.RevokedKeys} {
		if !slices.Contains(writable, filepath.Dir(f)) {
			t.Errorf("%s: hostd writes %s, but the unit's ReadWritePaths= %q does not hold its directory", file, f, writable)
		}
	}
	if !slices.Contains(svc["DeviceAllow"], c.TPM+" rw") {
		t.Errorf("%s: tpm %s, but the unit's DeviceAllow= is %q", file, c.TPM, svc["DeviceAllow"])
	}
	if !strings.Contains(strings.Join(svc["ExecStart"], "\n"), " --config /etc/devid/hostd.json") {
		t.Errorf("unit's ExecStart= %q does not read /etc/devid/hostd.json", svc["ExecStart"])
	}
	if c.Reload.SystemdUnit != "" && !slices.ContainsFunc(u["Unit"]["After"], func(v string) bool {
		return slices.Contains(strings.Fields(v), c.Reload.SystemdUnit)
	}) {
		t.Errorf("%s: reloads %s, which the unit is not ordered after", file, c.Reload.SystemdUnit)
	}

	// The sshd snippet reads the files hostd keeps, and certifies its key.
	snippet := sshdSettings(readRepoFile(t, snippetPath))
	for keyword, want := range map[string]string{
		"hostcertificate":   c.HostCertificate,
		"trustedusercakeys": c.TrustedUserCAKeys,
		"revokedkeys":       c.RevokedKeys,
	} {
		if got := snippet[keyword]; !slices.Equal(got, []string{want}) {
			t.Errorf("%s: %s is %q, but %s says %s", snippetPath, keyword, got, file, want)
		}
	}
	if !slices.Contains(snippet["hostkey"], c.SSHDHostKey) {
		t.Errorf("%s: sshdHostKey %s is not one of the snippet's HostKey %q", file, c.SSHDHostKey, snippet["hostkey"])
	}
	if got := snippet["hostkeyagent"]; !slices.Equal(got, []string{c.HostKeyAgent}) {
		t.Errorf("%s: HostKeyAgent is %q, but %s says %s", snippetPath, got, file, c.HostKeyAgent)
	}
	if c.HostCertificate != c.SSHDHostKey+"-cert.pub" {
		t.Errorf("%s: hostCertificate %s is not named after sshdHostKey %s (OpenSSH's KEY-cert.pub)", file, c.HostCertificate, c.SSHDHostKey)
	}
	// The TPM key file is hostd's state; the socket is systemd's, in the
	// directory the service keeps.
	if dir := filepath.Dir(c.TPMHostKey); !slices.Contains(svc["StateDirectory"], strings.TrimPrefix(dir, "/var/lib/")) {
		t.Errorf("%s: tpmHostKey %s is not in the unit's StateDirectory= %q", file, c.TPMHostKey, svc["StateDirectory"])
	}
	if !slices.Contains(writable, filepath.Dir(c.SSHDHostKey)) {
		t.Errorf("%s: hostd writes %s.pub, but the unit's ReadWritePaths= %q does not hold its directory", file, c.SSHDHostKey, writable)
	}
	if got := parseUnit(t, readRepoFile(t, socketPath))["Socket"]["ListenStream"]; !slices.Equal(got, []string{c.HostKeyAgent}) {
		t.Errorf("%s: hostKeyAgent %s, but %s listens on %q", file, c.HostKeyAgent, socketPath, got)
	}
	// Left out, the fields are devid-hostd's defaults: the example only
	// spells them out.
	def := hostdDefaults(t)
	for _, f := range [][3]string{{"tpmHostKey", c.TPMHostKey, def.TPMHostKey}, {"sshdHostKey", c.SSHDHostKey, def.SSHDHostKey},
		{"hostKeyAgent", c.HostKeyAgent, def.HostKeyAgent}, {"hostCertificate", c.HostCertificate, def.HostCertificate}} {
		if f[1] != f[2] {
			t.Errorf("%s: %s %s, but devid-hostd's default is %s", file, f[0], f[1], f[2])
		}
	}
}
