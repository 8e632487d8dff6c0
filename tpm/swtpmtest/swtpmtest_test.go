package swtpmtest_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/tpm"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
	"github.com/google/go-tpm/tpm2"
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

// TestOptions: each Options leaves the EKs and EK certificates the package
// documentation says, as the TPM lists them (persistent handles, NV
// indices); the certificates Options add are the EK CA's, for the key at
// their handle.
func TestOptions(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		opts              swtpmtest.Options
		handles, nvIndexs string
	}{
		{swtpmtest.Options{}, "0x81010001 0x81010016", "0x01c00002 0x01c00016"},
		{swtpmtest.Options{ECCOnly: true}, "0x81010016", "0x01c00016"},
		{swtpmtest.Options{ECCP256: true}, "0x81010001 0x81010002 0x81010016", "0x01c00002 0x01c0000a 0x01c00016"},
		{swtpmtest.Options{ECCOnly: true, ECCP256: true}, "0x81010002 0x81010016", "0x01c0000a 0x01c00016"},
		{swtpmtest.Options{ECCOnly: true, ECCP256: true, TransientEKs: true}, "", "0x01c0000a 0x01c00016"},
	} {
		t.Run(fmt.Sprintf("%+v", c.opts), func(t *testing.T) {
			t.Parallel()
			i := c.opts.New(t)
			ch, err := i.RawChannel()
			if err != nil {
				t.Fatal(err)
			}
			defer ch.Close()
			if got := handles(t, ch, tpm2.TPMHTPersistent); got != c.handles {
				t.Errorf("persistent handles %q, want %q", got, c.handles)
			}
			if got := handles(t, ch, tpm2.TPMHTNVIndex); got != c.nvIndexs {
				t.Errorf("NV indices %q, want %q", got, c.nvIndexs)
			}
			if !c.opts.ECCP256 {
				return
			}
			rsp, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(0x01c0000a)}.Execute(ch)
			if err != nil {
				t.Fatal(err)
			}
			pub, _ := rsp.NVPublic.Contents()
			var der []byte
			for len(der) < int(pub.DataSize) {
				r, err := tpm2.NVRead{AuthHandle: tpm2.AuthHandle{Handle: 0x01c0000a, Name: rsp.NVName, Auth: tpm2.PasswordAuth(nil)},
					NVIndex: tpm2.NamedHandle{Handle: 0x01c0000a, Name: rsp.NVName}, Size: min(512, pub.DataSize-uint16(len(der))), Offset: uint16(len(der))}.Execute(ch)
				if err != nil {
					t.Fatal(err)
				}
				der = append(der, r.Data.Buffer...)
			}
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := cert.CheckSignatureFrom(i.EKIssuer); err != nil {
				t.Errorf("the P-256 EK certificate: %v", err)
			}
			// The key of the TCG's L-2 template is the certificate's.
			ek, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tpm2.ECCEKTemplate)}.Execute(ch)
			if err != nil {
				t.Fatal(err)
			}
			defer tpm2.FlushContext{FlushHandle: ek.ObjectHandle}.Execute(ch)
			public, _ := ek.OutPublic.Contents()
			key, err := tpm2.Pub(*public)
			if err != nil || !cert.PublicKey.(*ecdsa.PublicKey).Equal(key) {
				t.Errorf("the P-256 EK certificate is not for the L-2 key (%v)", err)
			}
		})
	}
}

// handles lists the TPM's handles of type typ as "0x%08x ...".
func handles(t *testing.T, ch *tpm.Channel, typ tpm2.TPMHT) string {
	t.Helper()
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(typ) << 24, PropertyCount: 64}.Execute(ch)
	if err != nil {
		t.Fatal(err)
	}
	hl, err := rsp.CapabilityData.Data.Handles()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, h := range hl.Handle {
		if uint32(h)>>24 == uint32(typ) {
			out = append(out, fmt.Sprintf("0x%08x", uint32(h)))
		}
	}
	return strings.Join(out, " ")
}

// TestServeECCOnly: served, a TPM with only ECC EKs writes the
// certificate of the EK that names it: swtpm's P-384 one.
func TestServeECCOnly(t *testing.T) {
	t.Parallel()
	s := swtpmtest.Options{ECCOnly: true}.NewServed(t)
	b, err := os.ReadFile(s.EKCert)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil || !bytes.Equal(block.Bytes, s.EK.Certificate.Raw) {
		t.Fatalf("%s does not hold the EK certificate", s.EKCert)
	}
	if pub, ok := s.EK.Public.(*ecdsa.PublicKey); !ok || pub.Curve.Params().Name != "P-384" || s.EK.Handle != 0x81010016 {
		t.Errorf("served EK: %s at %#x, want ECC-P-384 at 0x81010016", s.EK.Type(), s.EK.Handle)
	}
}
