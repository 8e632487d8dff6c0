// Package sshagenttest runs the real sshd with its host key served by
// package sshagent (HostKeyAgent) or read from a file, for tests and
// benchmarks of a host key that lives elsewhere: an in-memory key in
// sshagent's own tests, a TPM's (swtpm) in the TPM side's.
//
// [StartHost] starts one sshd; [BenchmarkHandshake] times a full ssh login
// with the host key through the agent against one with a file host key,
// side by side, for any crypto.Signer the caller brings.
package sshagenttest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/sshdrun"
	"github.com/devid-ssh/devid/internal/sshdtest"
	"github.com/devid-ssh/devid/sshagent"
	"golang.org/x/crypto/ssh"
)

// HostOptions describe the sshd StartHost starts.
type HostOptions struct {
	// Signer is the host key, served to sshd by a sshagent.Agent in this
	// process on a socket in the host's directory. Nil: the host key is
	// the PublicKey of an agent at AgentSocket, or else a file.
	Signer crypto.Signer
	// AgentSocket and PublicKey: an agent the caller runs (a process it
	// kills and restarts), serving the host key PublicKey.
	AgentSocket string
	PublicKey   ssh.PublicKey
	// LogLevel is sshd's (sshdrun.Options); default VERBOSE.
	LogLevel string
	// Lines are added to sshd_config (e.g. TrustedUserCAKeys).
	Lines []string
}

// Host is a running sshd whose host certificate a test CA signed.
type Host struct {
	*sshdrun.Server
	// KnownHosts trusts the host CA only: "@cert-authority * KEY".
	KnownHosts string
	// ClientKey is a private key file in root's authorized_keys.
	ClientKey string
	// HostCertSerial is the serial of the host certificate sshd presents.
	HostCertSerial uint64
	// Agent serves the host key (Signer set), else nil.
	Agent *sshagent.Agent
	// AgentSocket is sshd's HostKeyAgent, "" for a file host key.
	AgentSocket string
}

// hostCertSerial is the serial StartHost's host certificates carry.
const hostCertSerial = 4711

// StartHost starts sshd on a loopback port as o says; it stops, and the
// agent with it, when the test ends. Needs root, sshd, ssh and ssh-keygen
// (sshdtest.Need: skipped on a laptop, failed when CI=true).
func StartHost(t testing.TB, o HostOptions) *Host {
	t.Helper()
	sshdtest.Need(t, sshdrun.SSHD, "ssh", "ssh-keygen")
	sshdtest.NeedRoot(t)
	dir := t.TempDir()
	h := &Host{ClientKey: filepath.Join(dir, "client_key"), HostCertSerial: hostCertSerial}
	sshdtest.Keygen(t, h.ClientKey)
	copyFile(t, h.ClientKey+".pub", filepath.Join(dir, "authorized_keys"))

	hostKey := filepath.Join(dir, "ssh_host_key")
	var hostPub ssh.PublicKey
	switch {
	case o.Signer != nil:
		pub, err := ssh.NewPublicKey(o.Signer.Public())
		if err != nil {
			t.Fatal(err)
		}
		hostPub = pub
		h.AgentSocket = filepath.Join(dir, "agent", "host.sock")
		ln, err := sshagent.Listen(h.AgentSocket)
		if err != nil {
			t.Fatal(err)
		}
		h.Agent = sshagent.New(sshagent.Static{{Signer: o.Signer, Comment: "host key"}}, sshagent.Options{AllowUIDs: []int{0}})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- h.Agent.Serve(ctx, ln) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	case o.AgentSocket != "":
		hostPub, h.AgentSocket = o.PublicKey, o.AgentSocket
	default:
		sshdtest.Keygen(t, hostKey)
		hostPub = ReadPublicKey(t, hostKey+".pub")
	}
	if h.AgentSocket != "" {
		// Only the public half: sshd asks HostKeyAgent for signatures.
		WriteFile(t, hostKey+".pub", ssh.MarshalAuthorizedKey(hostPub))
	}

	ca := NewSigner(t)
	cert := &ssh.Certificate{Key: hostPub, Serial: hostCertSerial, CertType: ssh.HostCert, KeyId: "test host",
		ValidPrincipals: []string{"127.0.0.1"}, ValidAfter: uint64(time.Now().Add(-time.Hour).Unix()),
		ValidBefore: uint64(time.Now().Add(24 * time.Hour).Unix())}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	WriteFile(t, hostKey+"-cert.pub", ssh.MarshalAuthorizedKey(cert))
	h.KnownHosts = filepath.Join(dir, "known_hosts")
	WriteFile(t, h.KnownHosts, append([]byte("@cert-authority * "), ssh.MarshalAuthorizedKey(ca.PublicKey())...))

	lines := []string{
		"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
		"StrictModes no",
		"HostCertificate " + hostKey + "-cert.pub",
	}
	if h.AgentSocket != "" {
		lines = append(lines, "HostKeyAgent "+h.AgentSocket)
	}
	if o.LogLevel == "" {
		o.LogLevel = "VERBOSE"
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	h.Server, err = sshdrun.Start(ctx, sshdrun.Options{Dir: dir, HostKey: hostKey, LogLevel: o.LogLevel, Lines: append(lines, o.Lines...)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Stop)
	return h
}

// Client is the ssh client that logs in to h as root with ClientKey,
// trusting the host only through KnownHosts (StrictHostKeyChecking yes).
func (h *Host) Client() sshdrun.Client {
	return sshdrun.Client{Identity: h.ClientKey, KnownHosts: h.KnownHosts}
}

// BenchmarkHandshake times `ssh -o BatchMode=yes root@host true` (a full
// login: key exchange, host certificate checked against a known_hosts
// @cert-authority line, user key, a command) against two sshds side by side:
// "hostkey=agent", whose host key is signer, served by a sshagent.Agent
// (HostKeyAgent), and "hostkey=file", an ECDSA P-256 host key file. The
// difference is what the agent and the signer cost a login.
func BenchmarkHandshake(b *testing.B, signer crypto.Signer) {
	hosts := []struct {
		name string
		o    HostOptions
	}{
		{"hostkey=agent", HostOptions{Signer: signer}},
		{"hostkey=file", HostOptions{}},
	}
	for _, hc := range hosts {
		h := StartHost(b, hc.o)
		args := h.Client().Args(h.Port)
		b.Run(hc.name, func(b *testing.B) {
			for b.Loop() {
				if out, err := exec.Command("ssh", args...).CombinedOutput(); err != nil {
					b.Fatalf("ssh: %v\n%s%s", err, out, h.Tail(20))
				}
			}
		})
		if h.Agent != nil {
			b.Logf("%s: agent stats %+v", hc.name, h.Agent.Stats())
		}
	}
}

// NewSigner is a new in-memory ECDSA P-256 key as an ssh.Signer.
func NewSigner(t testing.TB) ssh.Signer {
	t.Helper()
	s, err := ssh.NewSignerFromSigner(NewKey(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// NewKey is a new in-memory ECDSA P-256 key.
func NewKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// ReadPublicKey reads an authorized_keys-format public key file.
func ReadPublicKey(t testing.TB, path string) ssh.PublicKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pub
}

// WriteFile writes a file for sshd or ssh to read, mode 0644.
func WriteFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	WriteFile(t, to, b)
}
