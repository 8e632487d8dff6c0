package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devid-ssh/devid/caserver"
	"github.com/devid-ssh/devid/internal/sdnotify/sdnotifytest"
	"go.step.sm/crypto/pemutil"
)

// freeAddrs returns n loopback addresses with ports free a moment ago, all
// different: each listener stays open until every port is chosen.
// (devid-ca's configuration takes no port 0.)
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

// TestServeNotifies runs `devid-ca serve` as systemd runs the packaged
// unit, with NOTIFY_SOCKET a datagram socket the test reads and a watchdog
// of 200 ms: the first notification is a STATUS; READY=1 comes once the
// HTTPS port answers a TLS request and the metrics port /metrics (the test
// asks both the moment READY=1 arrives); then WATCHDOG=1 pings; SIGTERM
// brings STOPPING=1 and a clean exit.
func TestServeNotifies(t *testing.T) {
	dir := t.TempDir()
	addrs := freeAddrs(t, 2)
	httpsAddr, metricsAddr := addrs[0], addrs[1]
	res, err := caserver.Init(caserver.InitOptions{Dir: filepath.Join(dir, "ca"), DNSNames: []string{"127.0.0.1"},
		Address: httpsAddr, MetricsAddress: metricsAddr, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	root, err := pemutil.ReadCertificate(filepath.Join(dir, "ca", "certs", "root_ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	sock, msgs := sdnotifytest.Listen(t)

	cmd := exec.Command(os.Args[0], "serve", "--config", res.Config)
	cmd.Env = append(os.Environ(), mainEnv+"=1", "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=200000")
	exited := startServe(t, cmd)
	next := func(what string) string {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case err := <-exited:
			t.Fatalf("devid-ca exited (%v) while the test waited for %s", err, what)
		case <-time.After(2 * time.Minute): // bounds a hang only
			t.Fatalf("no %s within 2 minutes", what)
		}
		return ""
	}

	if m := next("a first notification"); !strings.HasPrefix(m, "STATUS=") {
		t.Errorf("first notification %q, want a STATUS before READY=1", m)
	}
	var ready string
	for ready == "" {
		if m := next("READY=1"); strings.Contains(m, "READY=1") {
			ready = m
		} else if m != "WATCHDOG=1" && !strings.HasPrefix(m, "STATUS=") {
			t.Errorf("before READY=1: %q", m)
		}
	}
	// Now, without waiting: both listeners answer.
	pool := x509.NewCertPool()
	pool.AddCert(root)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: time.Minute}
	resp, err := hc.Get("https://" + httpsAddr + "/health")
	if err != nil {
		t.Fatalf("HTTPS at READY=1: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /health at READY=1: HTTP %d", resp.StatusCode)
	}
	resp, err = http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("metrics at READY=1: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "devid_ca_krl_version") {
		t.Errorf("GET /metrics at READY=1: HTTP %d\n%.300s", resp.StatusCode, body)
	}
	if !strings.Contains(ready, "STATUS=serving HTTPS on "+httpsAddr) || !strings.Contains(ready, metricsAddr) {
		t.Errorf("READY=1 message %q does not say where it serves", ready)
	}
	// No metrics on the HTTPS listener.
	if resp, err := hc.Get("https://" + httpsAddr + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("/metrics answered on the HTTPS listener")
		}
	}

	for pings := 0; pings < 3; {
		switch m := next("a watchdog ping"); {
		case m == "WATCHDOG=1":
			pings++
		case strings.HasPrefix(m, "STATUS="):
		default:
			t.Errorf("while serving: %q", m)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for {
		m := next("STOPPING=1")
		if strings.Contains(m, "STOPPING=1") {
			break
		}
		if m != "WATCHDOG=1" {
			t.Errorf("after SIGTERM, before STOPPING=1: %q", m)
		}
	}
	awaitExit(t, exited)
}

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
