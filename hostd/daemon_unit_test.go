package hostd_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devid-ssh/devid/hostd"
	"github.com/devid-ssh/devid/internal/sdnotify/sdnotifytest"
	"github.com/devid-ssh/devid/krldist"
	"github.com/prometheus/client_golang/prometheus"
)

// unitHost is devid-hostd's Daemon run in the test's process on fakes: an
// Issuer and an sshd of this package's tests, and a CA (an httptest TLS
// server, pinned as the root) for /ssh/roots and the KRL.
type unitHost struct {
	dir, cfgFile, stateDir string
	cfg                    map[string]any
	issuer                 *fakeIssuer
	sshd                   *fakeSSHD
	reg                    *prometheus.Registry

	mu         sync.Mutex
	rootsGate  chan struct{} // /ssh/roots answers once it is closed
	rootsReady bool
}

func newUnitHost(t *testing.T) *unitHost {
	dir := t.TempDir()
	h := &unitHost{dir: dir, cfgFile: filepath.Join(dir, "hostd.json"), stateDir: filepath.Join(dir, "run"),
		issuer: newFakeIssuer(t, 24*time.Hour), sshd: &fakeSSHD{}, reg: prometheus.NewRegistry(), rootsGate: make(chan struct{})}
	userCA := newSigner(t)
	body, sig := signedKRL(t, userCA, 1)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ssh/roots":
			select {
			case <-h.rootsGate:
			case <-r.Context().Done():
				return
			}
			json.NewEncoder(w).Encode(map[string]any{"userKey": []string{base64.StdEncoding.EncodeToString(userCA.PublicKey().Marshal())}})
		case krldist.Path:
			if r.URL.Query().Get("after") == "0" {
				krldist.Serve(w, 1, time.Now(), body, sig)
				return
			}
			<-r.Context().Done() // held, as devid-ca holds it
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	root := filepath.Join(dir, "root.crt")
	if err := os.WriteFile(root, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	managed := filepath.Join(dir, "devid")
	h.cfg = map[string]any{
		"version": 1, "caUrl": srv.URL, "root": root, "tpm": "unix:" + filepath.Join(dir, "unused.sock"),
		"hostKey": filepath.Join(dir, "ssh_host_ecdsa_key"), "hostCertificate": filepath.Join(managed, "ssh_host_ecdsa_key-cert.pub"),
		"principals": []string{"web-1.example.com"}, "trustedUserCAKeys": filepath.Join(managed, "user_ca.pub"),
		"revokedKeys": filepath.Join(managed, "revoked.krl"), "metricsAddress": "off", "stateDir": h.stateDir, "userCaInterval": "1h",
	}
	h.writeConfig(t)
	return h
}

func (h *unitHost) writeConfig(t *testing.T) {
	b, _ := json.Marshal(h.cfg)
	if err := os.WriteFile(h.cfgFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// run starts the daemon; it stops when the test ends.
func (h *unitHost) run(t *testing.T) {
	d := &hostd.Daemon{ConfigFile: h.cfgFile, Log: slog.New(slog.DiscardHandler), Registry: h.reg,
		NewIssuer: func(*hostd.Config, *x509.CertPool, *slog.Logger) hostd.Issuer { return h.issuer },
		NewSSHD:   func(*hostd.Config) hostd.SSHD { return h.sshd }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
}

func (h *unitHost) status(t *testing.T) *hostd.StatusData {
	st, err := hostd.ReadStatus(h.stateDir)
	if err != nil {
		return nil
	}
	return st
}

// notifySocket listens where sd_notify writes (NOTIFY_SOCKET) and returns
// the messages as they come.
func notifySocket(t *testing.T) <-chan string {
	path, msgs := sdnotifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", path)
	return msgs
}

// TestDaemonReadyAndStatus: the daemon writes status.json from its tasks'
// snapshots; it tells systemd READY only once sshd has a host certificate
// and the user CA keys — a certificate alone is not enough —; a changed
// configuration file is reloaded and a changed principal renews at once.
func TestDaemonReadyAndStatus(t *testing.T) {
	notes := notifySocket(t)
	h := newUnitHost(t)
	h.run(t)
	waitFor(t, time.Minute, "a host certificate in the status", func() bool {
		st := h.status(t)
		return st != nil && st.HostCert != nil && !st.Tasks[hostd.TaskHostCert].LastSuccess.IsZero()
	})
	st := h.status(t)
	if st.PID != os.Getpid() || st.UserCA != 0 || st.SSHDReloads != 1 {
		t.Fatalf("status: pid %d, %d user CA keys, %d sshd reloads; want %d, 0, 1", st.PID, st.UserCA, st.SSHDReloads, os.Getpid())
	}
	if _, ok := st.Tasks[hostd.TaskWatch]; ok {
		t.Errorf("status lists the watch task, which has neither succeeded nor failed: %+v", st.Tasks)
	}
	drain := func() (all []string) {
		for {
			select {
			case n := <-notes:
				all = append(all, n)
			default:
				return all
			}
		}
	}
	if got := drain(); slices.ContainsFunc(got, func(n string) bool { return strings.Contains(n, "READY=1") }) {
		t.Fatalf("READY before the user CA keys were in place: %q", got)
	}
	close(h.rootsGate)
	var got []string
	waitFor(t, time.Minute, "READY=1", func() bool {
		got = append(got, drain()...)
		return slices.ContainsFunc(got, func(n string) bool { return strings.Contains(n, "READY=1") })
	})
	if st := h.status(t); st.UserCA != 1 {
		t.Errorf("READY with %d user CA keys in the status", st.UserCA)
	}
	// The KRL is verified with the user CA keys: it is in place once they are.
	waitFor(t, time.Minute, "the KRL in the status", func() bool {
		st := h.status(t)
		return st != nil && st.KRLVersion == 1 && !st.Tasks[hostd.TaskKRL].LastSuccess.IsZero()
	})
	if n := metric(t, h.reg, "devid_user_ca_keys"); n != 1 {
		t.Errorf("devid_user_ca_keys = %v", n)
	}

	// A new principal: the configuration is reloaded, the certificate
	// renewed at once, and the reload counted across configurations.
	h.cfg["principals"] = []string{"web-1.example.com", "web-1"}
	h.writeConfig(t)
	waitFor(t, time.Minute, "the certificate for the new principals", func() bool {
		st := h.status(t)
		return st != nil && st.HostCert != nil && len(st.HostCert.Principals) == 2 && st.SSHDReloads == 2
	})
	if n := metric(t, h.reg, "devid_renewals_total", "result", "success"); n != 2 {
		t.Errorf("devid_renewals_total{success} = %v after the reload, want 2 (counted across configurations)", n)
	}

	// SIGUSR1 (`devid-hostd renew`): a renewal at once.
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the certificate renewed on SIGUSR1", func() bool {
		st := h.status(t)
		return st != nil && st.HostCert != nil && st.SSHDReloads == 3
	})
	if _, issued := h.issuer.history(); len(issued) != 3 {
		t.Errorf("%d certificates issued, want 3", len(issued))
	}

	// A configuration without the KRL: its task's series go, so that no
	// alert fires on a KRL turned off.
	h.cfg["revokedKeys"] = "off"
	h.writeConfig(t)
	waitFor(t, time.Minute, "the krl task's series removed", func() bool {
		mfs, _ := h.reg.Gather()
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "task" && l.GetValue() == hostd.TaskKRL {
						return false
					}
				}
			}
		}
		return true
	})
}

// TestDaemonMetricsPortTaken: a metrics address that cannot be bound stops
// the daemon with the listener's error (systemd restarts it), rather than
// leave it running unwatched.
func TestDaemonMetricsPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h := newUnitHost(t)
	h.cfg["metricsAddress"] = ln.Addr().String()
	h.writeConfig(t)
	d := &hostd.Daemon{ConfigFile: h.cfgFile, Log: slog.New(slog.DiscardHandler), Registry: h.reg,
		NewIssuer: func(*hostd.Config, *x509.CertPool, *slog.Logger) hostd.Issuer { return h.issuer },
		NewSSHD:   func(*hostd.Config) hostd.SSHD { return h.sshd }}
	done := make(chan error, 1)
	go func() { done <- d.Run(t.Context()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("Run: %v, want the listener's error", err)
		}
	case <-time.After(time.Minute): // bounds a hang only
		t.Fatal("the daemon kept running without its metrics listener")
	}
}
