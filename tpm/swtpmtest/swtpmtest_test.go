package swtpmtest_test

import (
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
