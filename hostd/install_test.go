package hostd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"
)

// refusingSSHD is an sshd whose `sshd -t` refuses every configuration.
type refusingSSHD struct{ reloads int }

func (s *refusingSSHD) Check(context.Context) error  { return errors.New("sshd -t: refused") }
func (s *refusingSSHD) Reload(context.Context) error { s.reloads++; return nil }

func testHostCert(t *testing.T) *ssh.Certificate {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := ssh.NewPublicKey(k.Public())
	ca, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, _ := ssh.NewSignerFromKey(ca)
	c := &ssh.Certificate{Key: pub, CertType: ssh.HostCert, ValidPrincipals: []string{"h"}, ValidBefore: ssh.CertTimeInfinity}
	if err := c.SignCert(rand.Reader, signer); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestInstallRefusedIsNotRestored: when `sshd -t` refuses a new
// certificate, install puts back what was there, and the watcher's memory
// of the file stays the last good content (or nothing, on a new host): a
// later sweep must not bring the refused certificate back.
func TestInstallRefusedIsNotRestored(t *testing.T) {
	for _, tc := range []struct {
		name string
		good bool // a good certificate was in place before
	}{{"new host", false}, {"renewal", true}} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "devid", "ssh_host_ecdsa_key-cert.pub")
			files := NewFiles()
			var good []byte
			if tc.good {
				good = ssh.MarshalAuthorizedKey(testHostCert(t))
				if err := files.Write(file, good, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			sshd := &refusingSSHD{}
			h := NewHostCertificate(HostCertificateConfig{File: file, SSHD: sshd, Files: files})
			if err := h.install(context.Background(), testHostCert(t)); err == nil {
				t.Fatal("install succeeded although sshd -t refused")
			}
			if sshd.reloads != 0 {
				t.Error("sshd reloaded after sshd -t refused")
			}
			check := func(when string) {
				t.Helper()
				b, err := os.ReadFile(file)
				switch {
				case !tc.good && !errors.Is(err, os.ErrNotExist):
					t.Fatalf("%s: the refused certificate is in place (%q, %v)", when, b, err)
				case tc.good && string(b) != string(good):
					t.Fatalf("%s: %q in place, want the good certificate back", when, b)
				}
			}
			check("after install")
			// The watcher's sweep, and its reaction to someone deleting the file.
			for _, p := range append(files.Paths(), file) {
				if _, err := files.Restore(p); err != nil {
					t.Fatal(err)
				}
			}
			check("after the watcher's sweep")
			os.Remove(file)
			if _, err := files.Restore(file); err != nil {
				t.Fatal(err)
			}
			if tc.good {
				check("after a deletion")
			} else if _, err := os.Stat(file); err == nil {
				t.Fatal("after a deletion: the watcher wrote the refused certificate")
			}
		})
	}
}
