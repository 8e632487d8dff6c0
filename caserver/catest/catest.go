// Package catest runs a real devid-ca for tests: a fresh CA directory made
// by caserver.Init, served over HTTPS on a loopback port.
package catest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/devid-ssh/devid/caserver"
	"go.step.sm/crypto/pemutil"
)

// CA is a running test CA.
type CA struct {
	Dir       string // the CA directory
	Config    string // its config file
	URL       string // https://127.0.0.1:PORT
	Server    *caserver.Server
	Root      *x509.Certificate
	Roots     *x509.CertPool
	AdminCert tls.Certificate // the first admin's client certificate
	AdminCrt  string          // its file
	AdminKey  string          // its key file
}

// Start creates and serves a CA that lives as long as the test. edit, if not
// nil, may change the configuration before the server starts.
func Start(t testing.TB, edit func(*caserver.Config)) *CA {
	t.Helper()
	dir := t.TempDir()
	res, err := caserver.Init(caserver.InitOptions{Dir: dir, DNSNames: []string{"127.0.0.1", "localhost"}, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := caserver.LoadConfig(res.Config)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Address = ln.Addr().String()
	if edit != nil {
		edit(cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	srv, err := caserver.New(cfg, caserver.Options{Logger: log})
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() { done <- srv.Serve(ctx, ln, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("devid-ca did not start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("devid-ca serve: %v", err)
		}
		srv.Close()
	})
	root, err := pemutil.ReadCertificate(filepath.Join(dir, "certs", "root_ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	admin, err := tls.LoadX509KeyPair(res.AdminCert, res.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{
		Dir: dir, Config: res.Config, URL: "https://" + ln.Addr().String(), Server: srv,
		Root: root, Roots: pool, AdminCert: admin, AdminCrt: res.AdminCert, AdminKey: res.AdminKey,
	}
}

// TLSConfig returns a client TLS configuration that trusts the CA's root and presents cert,
// if not nil.
func (ca *CA) TLSConfig(cert *tls.Certificate) *tls.Config {
	tc := &tls.Config{RootCAs: ca.Roots}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return tc
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
