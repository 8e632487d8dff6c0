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
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
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
	// HostCA signed the host certificate; UserCA is sshd's
	// TrustedUserCAKeys.
	HostCA, UserCA ssh.Signer
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
	h.HostCA, h.UserCA = ca, NewSigner(t)
	WriteFile(t, filepath.Join(dir, "user_ca.pub"), ssh.MarshalAuthorizedKey(h.UserCA.PublicKey()))
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
		"TrustedUserCAKeys " + filepath.Join(dir, "user_ca.pub"),
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

// UserKey makes a key file (ssh-keygen) and a certificate for it from
// UserCA naming principal, valid for a day, and returns their paths.
func (h *Host) UserKey(t testing.TB, principal string) (key, cert string) {
	t.Helper()
	key = filepath.Join(t.TempDir(), "id_ecdsa")
	sshdtest.Keygen(t, key)
	c := &ssh.Certificate{Key: ReadPublicKey(t, key+".pub"), Serial: 1, CertType: ssh.UserCert, KeyId: "test user",
		ValidPrincipals: []string{principal}, ValidAfter: uint64(time.Now().Add(-time.Hour).Unix()),
		ValidBefore: uint64(time.Now().Add(24 * time.Hour).Unix())}
	if err := c.SignCert(rand.Reader, h.UserCA); err != nil {
		t.Fatal(err)
	}
	WriteFile(t, key+"-cert.pub", ssh.MarshalAuthorizedKey(c))
	return key, key + "-cert.pub"
}

// benchUser is the account BenchmarkHandshake logs in to: its shell is
// /bin/sh, which reads no start-up files (root's ~/.bashrc may run
// anything, and a login would time it).
const benchUser = "devid-bench"

// BenchmarkHandshake compares, side by side, two sshds: "hostkey=agent",
// whose host key is signer, served by a sshagent.Agent (HostKeyAgent), and
// "hostkey=file", an ECDSA P-256 host key file. Both present a host
// certificate; the client trusts the host CA alone. Two measures each:
//
//   - login: `ssh -o BatchMode=yes devid-bench@host true`, the real client,
//     a user certificate, to an account whose shell is /bin/sh (created for
//     the run: needs useradd);
//   - handshake: golang.org/x/crypto/ssh's client: version exchange, key
//     exchange (the host key's one signature), the host certificate
//     checked, the user certificate accepted; no session.
//
// The difference between the two hosts is what the agent and the signer
// cost a connection.
func BenchmarkHandshake(b *testing.B, signer crypto.Signer) {
	sshdtest.Account(b, benchUser)
	hosts := []struct {
		name string
		o    HostOptions
	}{
		{"hostkey=agent", HostOptions{Signer: signer}},
		{"hostkey=file", HostOptions{}},
	}
	for _, hc := range hosts {
		h := StartHost(b, hc.o)
		key, cert := h.UserKey(b, benchUser)
		args := sshdrun.Client{User: benchUser, Identity: key, Certificate: cert, KnownHosts: h.KnownHosts}.Args(h.Port)
		config := h.ClientConfig(b, benchUser, key, cert)
		b.Run(hc.name+"/login", func(b *testing.B) {
			for b.Loop() {
				if out, err := exec.Command("ssh", args...).CombinedOutput(); err != nil {
					b.Fatalf("ssh: %v\n%s%s", err, out, h.Tail(20))
				}
			}
		})
		b.Run(hc.name+"/handshake", func(b *testing.B) {
			for b.Loop() {
				c, err := ssh.Dial("tcp", h.Addr, config)
				if err != nil {
					b.Fatalf("ssh.Dial: %v%s", err, h.Tail(20))
				}
				c.Close()
			}
		})
		if h.Agent != nil {
			b.Logf("%s: agent stats %+v", hc.name, h.Agent.Stats())
		}
	}
}

// ClientConfig is an x/crypto/ssh client configuration that logs in to h
// as user with the key and certificate files, and accepts only a host
// certificate from HostCA.
func (h *Host) ClientConfig(t testing.TB, user, key, cert string) *ssh.ClientConfig {
	t.Helper()
	pem, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	cs, err := ssh.NewCertSigner(ReadPublicKey(t, cert).(*ssh.Certificate), s)
	if err != nil {
		t.Fatal(err)
	}
	ca := h.HostCA.PublicKey().Marshal()
	checker := &ssh.CertChecker{IsHostAuthority: func(k ssh.PublicKey, _ string) bool { return bytes.Equal(k.Marshal(), ca) }}
	return &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(cs)},
		HostKeyCallback: checker.CheckHostKey, HostKeyAlgorithms: []string{ssh.CertAlgoECDSA256v01},
		Timeout: time.Minute}
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

// StartActivated starts cmd with the listening socket ln passed the way
// systemd passes a .socket unit's: as fd 3, with LISTEN_FDS=1 and
// LISTEN_PID set to the process's own PID (a shell sets it, then execs
// the command, which keeps the PID).
func StartActivated(cmd *exec.Cmd, ln *os.File) error {
	sh, err := exec.LookPath("sh")
	if err != nil {
		return fmt.Errorf("sshagenttest: no sh to set LISTEN_PID with: %w", err)
	}
	cmd.ExtraFiles = []*os.File{ln}
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, "LISTEN_FDS=1")
	cmd.Args = append([]string{sh, "-c", `LISTEN_PID=$$ exec "$0" "$@"`, cmd.Path}, cmd.Args[1:]...)
	cmd.Path = sh
	return cmd.Start()
}
