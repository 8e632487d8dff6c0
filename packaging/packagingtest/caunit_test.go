package packagingtest

import (
	"net"
	"path/filepath"
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

// TestCAUnitHardening: systemd-analyze security rates devid-ca.service at
// most 2.5 ("OK"; 1.4 with systemd 252), and every hardening setting the
// unit claims is in effect.
func TestCAUnitHardening(t *testing.T) {
	checkUnitSecurity(t, copyUnit(t, t.TempDir(), caUnitPath), 25, []string{
		"User=/DynamicUser=", "PrivateUsers=", "NoNewPrivileges=", "AmbientCapabilities=",
		"CapabilityBoundingSet=~CAP_SYS_ADMIN", "CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER)",
		"CapabilityBoundingSet=~CAP_KILL",
		"ProtectSystem=", "ProtectHome=", "PrivateTmp=", "PrivateDevices=", "ProtectProc=", "ProcSubset=",
		"ProtectKernelTunables=", "ProtectKernelModules=", "ProtectKernelLogs=", "ProtectControlGroups=",
		"ProtectClock=", "ProtectHostname=", "RestrictNamespaces=~user", "RestrictAddressFamilies=~AF_PACKET",
		"RestrictAddressFamilies=~AF_NETLINK", "RestrictAddressFamilies=~…", "LockPersonality=", "MemoryDenyWriteExecute=",
		"RestrictRealtime=", "RestrictSUIDSGID=", "SystemCallArchitectures=", "SystemCallFilter=~@privileged",
		"SystemCallFilter=~@mount", "SystemCallFilter=~@debug", "UMask=", "RemoveIPC=", "KeyringMode=", "NotifyAccess=",
	})
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
