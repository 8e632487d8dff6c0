package swtpmtest_test

import (
	"bytes"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/tpm"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
)

// TestStartAndClose: Start manufactures a TPM whose EK certificate the
// private CA in CADir issued (swtpm_localca kept its serial number there,
// not in /var/lib/swtpm-localca), and Close stops swtpm, also after the
// caller closed the TPM itself, and again.
func TestStartAndClose(t *testing.T) {
	t.Parallel()
	i, err := swtpmtest.Start(t.TempDir())
	if errors.Is(err, exec.ErrNotFound) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	ek, err := i.TPM.EK()
	if err != nil {
		t.Fatal(err)
	}
	if err := ek.Certificate.CheckSignatureFrom(i.EKIssuer); err != nil {
		t.Errorf("EK certificate not signed by EKIssuer: %v", err)
	}
	if err := i.EKIssuer.CheckSignatureFrom(i.EKRoot); err != nil {
		t.Errorf("EKIssuer not signed by EKRoot: %v", err)
	}
	for _, name := range []string{"certserial", "issuercert.pem", "signkey.pem", "swtpm-localca-rootca-cert.pem", "swtpm_setup.conf", "swtpm-localca.conf"} {
		if _, err := os.Stat(filepath.Join(i.CADir, name)); err != nil {
			t.Error(err)
		}
	}
	if err := i.TPM.Close(); err != nil {
		t.Fatal(err)
	}
	if err := i.Close(); err != nil {
		t.Errorf("Close after the TPM was closed: %v", err)
	}
	if err := i.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := i.TPM.EK(); !errors.Is(err, tpm.ErrClosed) {
		t.Errorf("EK after Close: %v, want ErrClosed", err)
	}
}

// recordTB stands in for a testing.TB to see whether New skips or fails.
type recordTB struct {
	testing.TB
	skipped, failed string
}

func (r *recordTB) Helper() {}

func (r *recordTB) Skipf(format string, args ...any) {
	r.skipped = format
	runtime.Goexit()
}

func (r *recordTB) Fatalf(format string, args ...any) {
	r.failed = format
	runtime.Goexit()
}

func runNew(t *testing.T) *recordTB {
	r := &recordTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		swtpmtest.New(r)
	}()
	<-done
	return r
}

// TestNewWithoutSwtpm: without swtpm on PATH, New skips the test on a
// developer's machine and fails it under CI=true.
func TestNewWithoutSwtpm(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv("CI", "")
	if r := runNew(t); r.skipped == "" || r.failed != "" {
		t.Errorf("without CI: skipped %q, failed %q; want a skip", r.skipped, r.failed)
	}
	t.Setenv("CI", "true")
	if r := runNew(t); r.failed == "" || r.skipped != "" || !strings.Contains(r.failed, "CI=true") {
		t.Errorf("with CI=true: skipped %q, failed %q; want a failure that names CI=true", r.skipped, r.failed)
	}
}

// TestServe: Serve writes the EK certificate the TPM holds, and the socket
// answers as soon as Serve returns, one connection after another, with that
// TPM; Stop ends swtpm and removes the socket.
func TestServe(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "swtpmtest-test-") // short: a socket's path has 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s, err := swtpmtest.Serve(dir)
	if errors.Is(err, exec.ErrNotFound) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.TPM.EK(); !errors.Is(err, tpm.ErrClosed) || s.Addr != "unix:"+s.Sock {
		t.Errorf("TPM.EK: %v, Addr %q; want ErrClosed, and unix:%s", err, s.Addr, s.Sock)
	}
	b, err := os.ReadFile(s.EKCert)
	if err != nil {
		t.Fatal(err)
	}
	if block, _ := pem.Decode(b); block == nil || block.Type != "CERTIFICATE" || !bytes.Equal(block.Bytes, s.EK.Certificate.Raw) {
		t.Errorf("%s does not hold the EK certificate as PEM:\n%s", s.EKCert, b)
	}
	if err := s.EK.Certificate.CheckSignatureFrom(s.EKIssuer); err != nil {
		t.Errorf("EK certificate not signed by EKIssuer: %v", err)
	}
	for i := range 2 {
		ch, err := tpm.DialChannel("unix", s.Sock)
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		tp, err := tpm.New(ch, nil)
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		ek, err := tp.EK()
		if err != nil || ek.DeviceID != s.EK.DeviceID {
			t.Errorf("connection %d: EK %v (%v), want %s", i+1, ek, err, s.EK.DeviceID)
		}
		if err := tp.Close(); err != nil {
			t.Error(err)
		}
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket after Stop: %v, want it gone", err)
	}
}
