package e2e_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devid-ssh/devid/hostd"
)

// loneHost is devid-hostd run as a process with a CA that does not answer
// and a TPM that is not there: it keeps retrying, which is enough for what
// the daemon does around its tasks (its StateDir lock, signals, clean-up at
// start).
type loneHost struct {
	dir, cfgFile, stateDir, managedDir string
}

func newLoneHost(t *testing.T) *loneHost {
	t.Helper()
	dir := t.TempDir()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root.crt")
	os.WriteFile(root, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	// A port nobody listens on.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	caURL := "https://" + ln.Addr().String()
	ln.Close()
	h := &loneHost{dir: dir, cfgFile: filepath.Join(dir, "hostd.json"), stateDir: filepath.Join(dir, "run"), managedDir: filepath.Join(dir, "devid")}
	b, _ := json.Marshal(map[string]any{
		"version": 1, "caUrl": caURL, "root": root, "tpm": "unix:" + filepath.Join(dir, "no-tpm.sock"),
		"hostKey": filepath.Join(dir, "ssh_host_ecdsa_key"), "hostCertificate": filepath.Join(h.managedDir, "ssh_host_ecdsa_key-cert.pub"),
		"principals": []string{"localhost"}, "trustedUserCAKeys": filepath.Join(h.managedDir, "user_ca.pub"),
		"revokedKeys": filepath.Join(h.managedDir, "revoked.krl"), "sshd": map[string]string{"binary": "/bin/false", "config": "/dev/null"},
		"reload": map[string]string{"pidFile": filepath.Join(dir, "sshd.pid")}, "metricsAddress": "off", "stateDir": h.stateDir,
	})
	os.WriteFile(h.cfgFile, b, 0o644)
	return h
}

// start runs devid-hostd; the returned channel is closed when it exits.
func (h *loneHost) start(t *testing.T) (*exec.Cmd, *syncBuffer, chan struct{}) {
	t.Helper()
	log := new(syncBuffer)
	cmd := exec.Command(hostdBin(t), "run", "--config", h.cfgFile)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("devid-hostd log:\n%s", log.String())
		}
	})
	return cmd, log, done
}

// cli runs a devid-hostd command and returns its output and exit code.
func (h *loneHost) cli(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(hostdBin(t), append(args, "--config", h.cfgFile)...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

func waitExit(t *testing.T, done chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(3 * time.Minute): // bounds a hang only
		t.Fatal("devid-hostd did not exit within 3 minutes")
	}
}

// TestHostdStatusTells: `devid-hostd status` says running (exit 0) only
// while the daemon runs, and not running (exit 3) after it stopped, cleanly
// or by kill -9; a second daemon with the same stateDir is refused.
func TestHostdStatusTells(t *testing.T) {
	t.Parallel()
	h := newLoneHost(t)
	if out, code := h.cli(t, "status"); code != 3 || !strings.Contains(out, "NOT RUNNING") {
		t.Fatalf("status before any start: exit %d\n%s", code, out)
	}
	for _, how := range []string{"SIGTERM", "kill -9"} {
		cmd, _, done := h.start(t)
		pid := strconv.Itoa(cmd.Process.Pid)
		// Running, and started: its own status shown, not an earlier
		// run's (the lock is taken a moment before the PID is written
		// into hostd.pid, and the status after it).
		waitFor(t, 3*time.Minute, "status to say running", func() bool {
			out, code := h.cli(t, "status")
			return code == 0 && strings.Contains(out, "running, pid "+pid) && !strings.Contains(out, "earlier run")
		})
		if how == "SIGTERM" {
			// A second daemon with the same stateDir is refused.
			out, err := exec.Command(hostdBin(t), "run", "--config", h.cfgFile).CombinedOutput()
			if err == nil || !strings.Contains(string(out), "another devid-hostd (pid "+pid+")") {
				t.Errorf("a second devid-hostd: %v\n%s", err, out)
			}
			cmd.Process.Signal(syscall.SIGTERM)
		} else {
			cmd.Process.Kill()
		}
		waitExit(t, done)
		out, code := h.cli(t, "status")
		if code != 3 || !strings.Contains(out, "NOT RUNNING") || !strings.Contains(out, "not running (was pid "+pid+")") {
			t.Errorf("status after %s: exit %d, want 3 and NOT RUNNING\n%s", how, code, out)
		}
		if out, code := h.cli(t, "renew"); code != 3 || !strings.Contains(out, "not running") {
			t.Errorf("renew after %s: exit %d, want 3\n%s", how, code, out)
		}
	}
}

// TestHostdRenewSignals: `devid-hostd renew` asks the running daemon (the
// process holding its stateDir's lock) to renew at once.
func TestHostdRenewSignals(t *testing.T) {
	t.Parallel()
	h := newLoneHost(t)
	cmd, log, _ := h.start(t)
	waitFor(t, 3*time.Minute, "status to say running", func() bool { _, code := h.cli(t, "status"); return code == 0 })
	out, code := h.cli(t, "renew")
	if code != 0 || !strings.Contains(out, "pid "+strconv.Itoa(cmd.Process.Pid)) {
		t.Fatalf("renew: exit %d\n%s", code, out)
	}
	waitFor(t, 3*time.Minute, "the daemon to take the request", func() bool {
		return strings.Contains(log.String(), "renewal of the host certificate requested")
	})
}

// TestHostdRemovesStaleTemporaryFiles: at start, devid-hostd removes the
// temporary files interrupted writes left in the directories it writes,
// and only those.
func TestHostdRemovesStaleTemporaryFiles(t *testing.T) {
	t.Parallel()
	h := newLoneHost(t)
	os.MkdirAll(h.managedDir, 0o755)
	os.MkdirAll(h.stateDir, 0o755)
	stale := []string{
		filepath.Join(h.managedDir, ".user_ca.pub.devid-tmp-123456"),
		filepath.Join(h.managedDir, ".ssh_host_ecdsa_key-cert.pub.devid-tmp-42"),
		filepath.Join(h.managedDir, ".revoked.krl.tmp-987654"), // an earlier release's naming
		filepath.Join(h.stateDir, ".status.json.devid-tmp-7"),
	}
	foreign := []string{
		filepath.Join(h.managedDir, ".notes.tmp-1"),
		filepath.Join(h.managedDir, "user_ca.pub.bak"),
		filepath.Join(h.managedDir, ".revoked.krl.swp"),
	}
	for _, f := range append(stale, foreign...) {
		os.WriteFile(f, []byte("partial"), 0o600)
	}
	h.start(t)
	waitFor(t, 3*time.Minute, "the stale temporary files removed", func() bool {
		for _, f := range stale {
			if _, err := os.Stat(f); err == nil {
				return false
			}
		}
		return true
	})
	for _, f := range foreign {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("%s, not ours, was removed", f)
		}
	}
}

// TestHostdStateDirAliases: a configuration reload whose stateDir names
// the same directory another way (a trailing slash, a symbolic link) keeps
// the daemon's claim on it; one whose stateDir cannot be claimed keeps the
// running configuration, and the daemon.
func TestHostdStateDirAliases(t *testing.T) {
	t.Parallel()
	h := newLoneHost(t)
	cmd, log, done := h.start(t)
	running := func() bool { _, code := h.cli(t, "status"); return code == 0 }
	waitFor(t, 3*time.Minute, "status to say running", running)
	link := filepath.Join(h.dir, "run-link")
	if err := os.Symlink(h.stateDir, link); err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	b, _ := os.ReadFile(h.cfgFile)
	json.Unmarshal(b, &cfg)
	for i, alias := range []string{h.stateDir + "/", link} {
		cfg["stateDir"] = alias
		b, _ = json.Marshal(cfg)
		os.WriteFile(h.cfgFile, b, 0o644)
		cmd.Process.Signal(syscall.SIGHUP)
		waitFor(t, 3*time.Minute, "the reload", func() bool { return strings.Count(log.String(), "reloading configuration") >= i+1 })
		if out, code := h.cli(t, "status"); code != 0 || !strings.Contains(out, "running, pid "+strconv.Itoa(cmd.Process.Pid)) {
			t.Fatalf("stateDir %s: status exit %d, want running\n%s", alias, code, out)
		}
	}
	// A stateDir another process holds: not taken, the daemon keeps going.
	other := filepath.Join(h.dir, "other")
	lock, err := hostd.LockStateDir(other) // this test process holds it
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	cfg["stateDir"] = other
	b, _ = json.Marshal(cfg)
	os.WriteFile(h.cfgFile, b, 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 3*time.Minute, "the refusal", func() bool {
		return strings.Contains(log.String(), "configuration not reloaded") && strings.Contains(log.String(), "another devid-hostd")
	})
	select {
	case <-done:
		t.Fatal("devid-hostd exited when its new stateDir was taken")
	default:
	}
	cfg["stateDir"] = h.stateDir
	b, _ = json.Marshal(cfg)
	os.WriteFile(h.cfgFile, b, 0o644) // for status below
	if out, code := h.cli(t, "status"); code != 0 {
		t.Fatalf("status after the refused reload: exit %d\n%s", code, out)
	}
}
