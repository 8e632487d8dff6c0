package containertest

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/dockertest"
)

// box is a container running systemd as PID 1, and the test using it.
type box struct {
	t *testing.T
	c string
}

// sh runs a bash script (-euo pipefail) in the container, with env
// (NAME=VALUE) set, and returns its output, trimmed.
func (b box) sh(script string, env ...string) (string, error) {
	args := []string{"exec"}
	for _, e := range env {
		args = append(args, "-e", e)
	}
	return dockertest.RunErr(append(args, b.c, "bash", "-euo", "pipefail", "-c", script)...)
}

// must is sh failing the test, saying what failed.
func (b box) must(what, script string, env ...string) string {
	b.t.Helper()
	out, err := b.sh(script, env...)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return out
}

// show is `systemctl show UNIT -p PROP…` as a map.
func (b box) show(unit string, props ...string) map[string]string {
	b.t.Helper()
	args := []string{"systemctl", "show", unit}
	for _, p := range props {
		args = append(args, "-p", p)
	}
	out := dockertest.Exec(b.t, b.c, args...)
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// caService is the README's "devid-ca as a service" with the devid-ca
// package installed: devid-ca init as the devid-ca user in the unit's
// state directory, with a metrics listener, and `systemctl enable --now`,
// which returns at READY=1. It prints the root's fingerprint.
const caService = `
runuser -u devid-ca -- devid-ca init --dir /var/lib/devid-ca --dns localhost --metrics-address 127.0.0.1:9751 >/dev/null
systemctl enable --now devid-ca >/dev/null
openssl x509 -in /var/lib/devid-ca/certs/root_ca.crt -outform DER | sha256sum | cut -d ' ' -f 1
`

// caHealth asks the CA's HTTPS /health on localhost:8443, checking its
// certificate against the CA's root and the name localhost, and prints the
// answer (openssl fails on a certificate it does not trust).
const caHealth = `
printf 'GET /health HTTP/1.1\r\nHost: localhost:8443\r\nConnection: close\r\n\r\n' |
	openssl s_client -quiet -connect localhost:8443 -servername localhost -verify_hostname localhost \
		-CAfile /var/lib/devid-ca/certs/root_ca.crt -verify_return_error 2>/dev/null
`

// caMetrics prints http://127.0.0.1:9751/metrics (bash's /dev/tcp: the
// images have neither curl nor wget).
const caMetrics = `
exec 3<>/dev/tcp/127.0.0.1/9751
printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1:9751\r\n\r\n' >&3
cat <&3
`

// caJournal is the end of devid-ca.service's journal, for a failure.
func (b box) caJournal() string {
	out, err := b.sh("journalctl -u devid-ca.service --no-pager -o short-monotonic -n 40")
	if err != nil {
		return fmt.Sprintf("journalctl -u devid-ca.service: %v", err)
	}
	return "journalctl -u devid-ca.service:\n" + out
}

// buildInfo is devid-ca's build in its metrics.
var buildInfo = regexp.MustCompile(`(?m)^devid_build_info\{[^}]*\bprogram="devid-ca"[^}]*\} 1$`)

// exposure is systemd-analyze security's verdict.
var exposure = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+) (\S+)`)

// startCAService sets devid-ca up as a service in b (caService) and checks
// that the packaged unit runs it, hardening and all: active once enable
// --now returns, Type=notify with the watchdog armed and devid-ca's status
// text, the main process the devid-ca user's; /health answers over HTTPS
// with the CA's root and /metrics has devid-ca's build; systemd-analyze
// security rates the loaded unit at most 2.5. It returns the root's
// fingerprint.
func startCAService(b box, suite string) string {
	t := b.t
	fp, err := b.sh(caService)
	if err != nil {
		t.Fatalf("the README's devid-ca as a service: %v\n%s", err, b.caJournal())
	}
	p := b.show("devid-ca.service", "ActiveState", "SubState", "Type", "WatchdogUSec", "WatchdogTimestampMonotonic", "StatusText", "MainPID", "NRestarts")
	if p["ActiveState"] != "active" || p["SubState"] != "running" || p["Type"] != "notify" || p["WatchdogUSec"] != "1min" ||
		p["WatchdogTimestampMonotonic"] == "0" || p["NRestarts"] != "0" || !strings.HasPrefix(p["StatusText"], "serving HTTPS on ") {
		t.Fatalf("devid-ca.service after enable --now: %v, want active, running, Type=notify, WatchdogUSec=1min, a watchdog timestamp, no restart and devid-ca's status text\n%s",
			p, b.caJournal())
	}
	if user := b.must("the main process's user", "ps -o user= -p "+p["MainPID"]); user != "devid-ca" {
		t.Errorf("devid-ca's main process %s runs as %q, want devid-ca", p["MainPID"], user)
	}
	if out := b.must("https://localhost:8443/health", caHealth); !strings.HasPrefix(out, "HTTP/1.1 200 ") || !strings.Contains(out, `{"status":"ok"}`) {
		t.Errorf("https://localhost:8443/health:\n%s", out)
	}
	if out := b.must("http://127.0.0.1:9751/metrics", caMetrics); !buildInfo.MatchString(out) {
		t.Errorf("http://127.0.0.1:9751/metrics has no devid_build_info{program=\"devid-ca\"}:\n%.2000s", out)
	}
	out, err := b.sh("systemd-analyze security --no-pager --threshold=25 devid-ca.service")
	if m := exposure.FindStringSubmatch(out); m != nil {
		t.Logf("%s: systemd-analyze security devid-ca.service: %s %s (%s)", suite, m[1], m[2], b.must("systemd's version", "systemctl --version | head -n 1"))
	}
	if err != nil {
		t.Errorf("systemd-analyze security devid-ca.service: exposure over 2.5: %v", err)
	}
	return fp
}

// killCAService kills devid-ca's main process (SIGKILL), as a crash would:
// systemd restarts it (Restart=on-failure), a new main process counted in
// NRestarts, back at READY, with its store intact: device, which was
// registered before, still listed. It returns the watchdog timestamp of
// the new process's READY.
func killCAService(b box, device string) string {
	t := b.t
	before := b.show("devid-ca.service", "MainPID", "NRestarts")
	n, err := strconv.Atoi(before["NRestarts"])
	if err != nil {
		t.Fatalf("devid-ca.service: NRestarts=%q", before["NRestarts"])
	}
	listed := b.must("devid device list", "devid device list")
	dockertest.Exec(t, b.c, "systemctl", "kill", "-s", "KILL", "devid-ca.service")
	var now map[string]string
	dockertest.Poll(t, waitLimit, "systemd to restart devid-ca", func() (bool, string) {
		now = b.show("devid-ca.service", "MainPID", "NRestarts", "ActiveState", "SubState", "WatchdogTimestampMonotonic")
		return now["ActiveState"] == "active" && now["SubState"] == "running" && now["MainPID"] != before["MainPID"] && now["MainPID"] != "0" &&
			now["NRestarts"] == strconv.Itoa(n+1), fmt.Sprintf("%v (before: %v)", now, before)
	})
	if user := b.must("the main process's user", "ps -o user= -p "+now["MainPID"]); user != "devid-ca" {
		t.Errorf("devid-ca's new main process %s runs as %q, want devid-ca", now["MainPID"], user)
	}
	after := b.must("devid device list", "devid device list")
	if after != listed || !strings.Contains(after, device) {
		t.Errorf("devid device list before the kill:\n%s\nafter the restart:\n%s\nwant the same, with %s", listed, after, device)
	}
	t.Logf("devid-ca after SIGKILL: main process %s, then %s; NRestarts %d, then %s; devid device list unchanged", before["MainPID"], now["MainPID"], n, now["NRestarts"])
	return now["WatchdogTimestampMonotonic"]
}

// stopCAService waits for a watchdog ping after ready (the watchdog
// timestamp of the last READY) and stops devid-ca: a clean stop, STOPPING=1
// with its status text heard by systemd, exit status 0, devid-ca's last
// line in the journal.
func stopCAService(b box, ready string) {
	t := b.t
	start := time.Now()
	dockertest.Poll(t, waitLimit, "a watchdog ping from devid-ca", func() (bool, string) {
		now := b.show("devid-ca.service", "WatchdogTimestampMonotonic", "ActiveState")
		return now["WatchdogTimestampMonotonic"] != ready && now["ActiveState"] == "active", fmt.Sprintf("%v (at READY: %s)", now, ready)
	})
	waited := time.Since(start)
	pid := b.show("devid-ca.service", "MainPID")["MainPID"]
	dockertest.Exec(t, b.c, "systemctl", "stop", "devid-ca.service")
	p := b.show("devid-ca.service", "ActiveState", "Result", "ExecMainCode", "ExecMainStatus", "StatusText")
	if p["ActiveState"] != "inactive" || p["Result"] != "success" || p["ExecMainCode"] != "1" || p["ExecMainStatus"] != "0" || p["StatusText"] != "stopping" {
		t.Errorf("devid-ca.service after systemctl stop: %v, want inactive, success, exited (1) with status 0, the status text of STOPPING=1\n%s",
			p, b.caJournal())
	}
	// journald reads the service's output on its own time: wait for it.
	dockertest.Poll(t, waitLimit, `"devid-ca stopped" in the journal of devid-ca `+pid, func() (bool, string) {
		out, err := b.sh("journalctl -u devid-ca -o cat _PID=" + pid)
		return err == nil && strings.Contains(out, `msg="devid-ca stopped"`), dockertest.LastLines(out, 5)
	})
	t.Logf("devid-ca: a watchdog ping (waited %s for it), then systemctl stop: %v", waited.Round(100*time.Millisecond), p)
}
