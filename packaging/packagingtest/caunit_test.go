package packagingtest

import (
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/caserver"
)

const caUnitPath = "packaging/devid-ca.service"

// TestCAUnitVerify: systemd-analyze verify accepts devid-ca.service
// without a single message.
func TestCAUnitVerify(t *testing.T) {
	verify(t, nil, nil, copyUnit(t, t.TempDir(), caUnitPath))
}

// exposure matches systemd-analyze security's verdict line.
var exposure = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+) (\S+)`)

// TestCAUnitHardening: systemd-analyze security rates devid-ca.service at
// most 2.5 ("OK"; 1.4 with systemd 252), and every hardening setting the
// unit claims is in effect.
func TestCAUnitHardening(t *testing.T) {
	analyze := tool(t, "systemd-analyze", "systemd")
	unit := copyUnit(t, t.TempDir(), caUnitPath)
	out, err := exec.Command(analyze, "security", "--offline=yes", "--no-pager", "--threshold=25", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: exposure over 2.5: %v\n%s", err, out)
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
	for _, name := range []string{
		"User=/DynamicUser=", "PrivateUsers=", "NoNewPrivileges=", "AmbientCapabilities=",
		"CapabilityBoundingSet=~CAP_SYS_ADMIN", "CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER)",
		"CapabilityBoundingSet=~CAP_KILL",
		"ProtectSystem=", "ProtectHome=", "PrivateTmp=", "PrivateDevices=", "ProtectProc=", "ProcSubset=",
		"ProtectKernelTunables=", "ProtectKernelModules=", "ProtectKernelLogs=", "ProtectControlGroups=",
		"ProtectClock=", "ProtectHostname=", "RestrictNamespaces=~user", "RestrictAddressFamilies=~AF_PACKET",
		"RestrictAddressFamilies=~AF_NETLINK", "RestrictAddressFamilies=~…", "LockPersonality=", "MemoryDenyWriteExecute=",
		"RestrictRealtime=", "RestrictSUIDSGID=", "SystemCallArchitectures=", "SystemCallFilter=~@privileged",
		"SystemCallFilter=~@mount", "SystemCallFilter=~@debug", "UMask=", "RemoveIPC=", "KeyringMode=", "NotifyAccess=",
	} {
		s, ok := set[name]
		switch {
		case !ok:
			t.Errorf("systemd-analyze security has no check %q (renamed in this systemd version?)", name)
		case !s:
			t.Errorf("%s: not in effect", name)
		}
	}
}

// TestCAUnitService: the unit is a Type=notify service with a watchdog,
// restarted on failure, with no reload (devid-ca has none); it runs as the
// devid-ca user from its CA directory, the state directory, with the
// config file devid-ca init writes there; and it has a capability only if
// devid-ca's default port needs one.
func TestCAUnitService(t *testing.T) {
	u := parseUnit(t, readRepoFile(t, caUnitPath))
	svc := u["Service"]
	want := map[string]string{"Type": "notify", "NotifyAccess": "main", "WatchdogSec": "60s", "Restart": "on-failure",
		"User": "devid-ca", "Group": "devid-ca", "StateDirectory": "devid-ca", "StateDirectoryMode": "0700",
		"ProtectSystem": "strict", "CapabilityBoundingSet": "", "AmbientCapabilities": "", "PrivateUsers": "yes"}
	for k, v := range want {
		if got := svc[k]; !slices.Equal(got, []string{v}) {
			t.Errorf("[Service] %s=%q, want %q", k, got, v)
		}
	}
	if r, ok := svc["ExecReload"]; ok {
		t.Errorf("[Service] ExecReload=%q: devid-ca does not reload its configuration", r)
	}
	exec := strings.Fields(strings.Join(svc["ExecStart"], " "))
	wantExec := []string{"/usr/bin/devid-ca", "serve", "--config", filepath.Join("/var/lib", svc["StateDirectory"][0], caserver.ConfigFile)}
	if !slices.Equal(exec, wantExec) {
		t.Errorf("ExecStart=%q, want %q", exec, wantExec)
	}
	// devid-ca init's default address needs no capability (its port is
	// not below 1024).
	res, err := caserver.Init(caserver.InitOptions{Dir: t.TempDir(), DNSNames: []string{"ca.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := caserver.LoadConfig(res.Config)
	if err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(cfg.Address)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := strconv.Atoi(port); n < 1024 {
		t.Errorf("devid-ca's default port %d needs CAP_NET_BIND_SERVICE, which the unit does not grant", n)
	}
}
