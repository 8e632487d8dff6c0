// Package catest runs a real devid-ca for tests: a fresh CA directory made
// by caserver.Init, served over HTTPS on a loopback port.
package catest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/devid-ssh/devid/adminapi"
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

	t      testing.TB
	cfg    *caserver.Config
	log    *slog.Logger
	now    func() time.Time // nil: time.Now
	cancel context.CancelFunc
	done   chan error
}

// Start creates and serves a CA that lives as long as the test. edit, if not
// nil, may change the configuration before the server starts.
func Start(t testing.TB, edit func(*caserver.Config)) *CA {
	t.Helper()
	return StartLogged(t, edit, nil)
}

// StartLogged is Start with the CA logging to log (nil: discarded, or the
// test log with -v).
func StartLogged(t testing.TB, edit func(*caserver.Config), log *slog.Logger) *CA {
	t.Helper()
	return start(t, edit, log, nil)
}

// StartClock is Start with the CA's clock (caserver.Options.Now): what
// devid-ca decides by its clock (the inventory's times, revocation, the end
// of temporary quarantines) follows now, a fake clock's say; step-ca signs
// by the wall clock.
func StartClock(t testing.TB, edit func(*caserver.Config), now func() time.Time) *CA {
	t.Helper()
	return start(t, edit, nil, now)
}

func start(t testing.TB, edit func(*caserver.Config), log *slog.Logger, now func() time.Time) *CA {
	t.Helper()
	dir := t.TempDir()
	res, err := caserver.Init(caserver.InitOptions{Dir: dir, DNSNames: []string{"127.0.0.1", "localhost"}, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return serveDir(t, dir, res.Config, res.AdminCert, res.AdminKey, edit, log, now)
}

// StartDir serves the CA directory dir, which Start made (its copy, say,
// with a store restored into it), as Start serves a new one: on a new
// loopback port, until the test ends.
func StartDir(t testing.TB, dir string) *CA {
	t.Helper()
	admin := filepath.Join(dir, "admin", "admin")
	return serveDir(t, dir, filepath.Join(dir, caserver.ConfigFile), admin+".crt", admin+".key", nil, nil, nil)
}

// serveDir serves the CA directory dir with its config file and first
// admin's certificate and key.
func serveDir(t testing.TB, dir, config, adminCrt, adminKey string, edit func(*caserver.Config), log *slog.Logger, now func() time.Time) *CA {
	t.Helper()
	cfg, err := caserver.LoadConfig(config)
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
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
		if testing.Verbose() {
			log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
		}
	}
	ca := &CA{t: t, cfg: cfg, log: log, now: now}
	if err := ca.serve(ln); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ca.Stop)
	root, err := pemutil.ReadCertificate(filepath.Join(dir, "certs", "root_ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	admin, err := tls.LoadX509KeyPair(adminCrt, adminKey)
	if err != nil {
		t.Fatal(err)
	}
	ca.Dir, ca.Config, ca.URL = dir, config, "https://"+ln.Addr().String()
	ca.Root, ca.Roots, ca.AdminCert, ca.AdminCrt, ca.AdminKey = root, pool, admin, adminCrt, adminKey
	return ca
}

func (ca *CA) serve(ln net.Listener) error {
	srv, err := caserver.New(ca.cfg, caserver.Options{Logger: ca.log, Now: ca.now})
	if err != nil {
		ln.Close()
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() { done <- srv.Serve(ctx, ln, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		srv.Close()
		return fmt.Errorf("devid-ca did not start: %w", err)
	}
	ca.Server, ca.cancel, ca.done = srv, cancel, done
	return nil
}

// Stop stops the CA (a test of what happens while it is down); Restart
// brings it back on the same address with the same store.
func (ca *CA) Stop() {
	if ca.cancel == nil {
		return
	}
	ca.cancel()
	if err := <-ca.done; err != nil {
		ca.t.Errorf("devid-ca serve: %v", err)
	}
	ca.Server.Close()
	ca.cancel = nil
}

// Restart serves the CA again after Stop.
func (ca *CA) Restart() error {
	ln, err := net.Listen("tcp", ca.cfg.Address)
	if err != nil {
		return err
	}
	return ca.serve(ln)
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

// Backup copies the CA's store to a new file, path (mode 0600), through the
// admin API's backup route, as `devid backup` does.
func (ca *CA) Backup(t testing.TB, path string) {
	t.Helper()
	cl, err := adminapi.NewClient(ca.URL, ca.Roots, &ca.AdminCert)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.Backup(context.Background(), f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("backup to %s: %v", path, err)
	}
}
