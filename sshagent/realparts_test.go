package sshagent_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/sshdrun"
	"github.com/devid-ssh/devid/internal/sshdtest"
	"github.com/devid-ssh/devid/sshagent"
	"github.com/devid-ssh/devid/sshagent/sshagenttest"
	"golang.org/x/crypto/ssh"
)

// sshAdd runs ssh-add with SSH_AUTH_SOCK at socket.
func sshAdd(t testing.TB, socket string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("ssh-add", args...)
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+socket)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestSSHAdd: ssh-add -L lists the certificate and the key as the agent
// holds them; ssh-add of a key file, -d and -D are refused.
func TestSSHAdd(t *testing.T) {
	sshdtest.Need(t, "ssh-add", "ssh-keygen")
	key := sshagenttest.NewKey(t)
	pub, _ := ssh.NewPublicKey(key.Public())
	cert := userCert(t, sshagenttest.NewSigner(t), pub, 7, "root")
	s := serve(t, sshagent.Static{{Signer: key, Certificate: cert, Comment: "devid tpm"}}, nil)

	out, err := sshAdd(t, s.socket, "-L")
	if err != nil {
		t.Fatalf("ssh-add -L: %v\n%s", err, out)
	}
	line := func(k ssh.PublicKey) string {
		return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) + " devid tpm"
	}
	if want := line(cert) + "\n" + line(pub) + "\n"; out != want {
		t.Errorf("ssh-add -L:\n%s\nwant:\n%s", out, want)
	}

	file := filepath.Join(t.TempDir(), "id_ecdsa")
	sshdtest.Keygen(t, file)
	for _, args := range [][]string{{file}, {"-d", file}, {"-D"}} {
		out, err := sshAdd(t, s.socket, args...)
		if err == nil {
			t.Errorf("ssh-add %s succeeded:\n%s", strings.Join(args, " "), out)
		}
		t.Logf("ssh-add %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out))
	}
	if n := strings.Count(s.log.String(), "keys live in the TPM"); n < 3 {
		t.Errorf("agent's log has %d refusals, want 3:\n%s", n, s.log)
	}
	if out, err := sshAdd(t, s.socket, "-L"); err != nil || !strings.Contains(out, line(cert)) {
		t.Errorf("after the refusals ssh-add -L: %v\n%s", err, out)
	}
}

// TestSSHAddOtherUser: a real client run as another user (nobody) on a
// socket it may open is closed by the peer check; the agent's own user
// (root) is served.
func TestSSHAddOtherUser(t *testing.T) {
	sshdtest.Need(t, "ssh-add")
	sshdtest.NeedRoot(t)
	// A directory nobody may open would stop the client before the peer check.
	dir, err := os.MkdirTemp("", "sshagent-peer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	socket := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(socket, 0o666) // only the peer check stands in the way
	log := &logBuffer{}
	a := sshagent.New(sshagent.Static{{Signer: sshagenttest.NewKey(t)}}, sshagent.Options{Logger: newLogger(log)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	cmd := exec.Command("ssh-add", "-L")
	cmd.Env = []string{"SSH_AUTH_SOCK=" + socket}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Errorf("ssh-add -L as nobody succeeded:\n%s", out)
	}
	t.Logf("ssh-add -L as nobody: %v: %s", err, strings.TrimSpace(string(out)))
	if !strings.Contains(log.String(), "uid=65534") || !strings.Contains(log.String(), "user 65534 is not allowed (allowed: [0])") {
		t.Errorf("agent's log:\n%s", log)
	}
	if out, err := sshAdd(t, socket, "-L"); err != nil {
		t.Errorf("ssh-add -L as root: %v\n%s", err, out)
	}
	if st := a.Stats(); st.PeersRefused != 1 || st.Connections != 1 {
		t.Errorf("Stats = %+v", st)
	}
}

// sshWithAgent logs in to h as root with SSH_AUTH_SOCK at socket and no
// key file: only what the agent offers.
func sshWithAgent(t testing.TB, h *sshagenttest.Host, socket string) (string, error) {
	t.Helper()
	// ssh takes an option's first value: these win over Args' IdentitiesOnly=yes.
	args := append([]string{"-o", "IdentitiesOnly=no", "-o", "IdentityFile=/nonexistent"},
		sshdrun.Client{KnownHosts: h.KnownHosts}.Args(h.Port)...)
	cmd := exec.Command("ssh", args...)
	cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+socket)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestSSHLogin: ssh with SSH_AUTH_SOCK at the agent logs in to real sshd
// with the certificate the agent holds (TrustedUserCAKeys); with no
// identity, or the key without its certificate, it is refused.
func TestSSHLogin(t *testing.T) {
	h := sshagenttest.StartHost(t, sshagenttest.HostOptions{})

	key := sshagenttest.NewKey(t)
	pub, _ := ssh.NewPublicKey(key.Public())
	cert := userCert(t, h.UserCA, pub, 77, "root")
	src := &swappable{}
	s := serve(t, src, nil)

	src.set(sshagent.Identity{Signer: key, Certificate: cert})
	if out, err := sshWithAgent(t, h, s.socket); err != nil {
		t.Fatalf("ssh with the agent's certificate: %v\n%s%s", err, out, h.Tail(20))
	}
	if log := h.Tail(200); !strings.Contains(log, "Accepted publickey for root") || !strings.Contains(log, "ECDSA-CERT") || !strings.Contains(log, "serial 77") {
		t.Errorf("sshd did not log the certificate's login:%s", log)
	}
	if st := s.Stats(); st.Signatures != 1 {
		t.Errorf("Stats = %+v, want 1 signature", st)
	}
	for name, ids := range map[string][]sshagent.Identity{
		"no identity":    nil,
		"no certificate": {{Signer: key}},
	} {
		src.set(ids...)
		out, err := sshWithAgent(t, h, s.socket)
		if err == nil || !strings.Contains(out, "Permission denied (publickey)") {
			t.Errorf("%s: ssh: %v\n%s", name, err, out)
		}
	}
}

// TestHostKeyAgent: sshd with only the host key's public half and
// HostKeyAgent at the agent serves the host certificate, and a client
// that trusts the host CA alone (StrictHostKeyChecking yes) connects; a
// client trusting another CA does not.
func TestHostKeyAgent(t *testing.T) {
	h := sshagenttest.StartHost(t, sshagenttest.HostOptions{Signer: sshagenttest.NewKey(t)})
	if _, err := os.Stat(h.HostKey); !os.IsNotExist(err) {
		t.Fatalf("host's private key file %s: %v, want none", h.HostKey, err)
	}
	c := h.Client()
	c.Verbose = true
	out, err := h.SSH(context.Background(), c)
	if err != nil {
		t.Fatalf("ssh: %v\n%s%s", err, out, h.Tail(20))
	}
	if serial, err := sshdrun.HostCertSerial(out); err != nil || serial != h.HostCertSerial {
		t.Errorf("host certificate serial %d, %v; want %d", serial, err, h.HostCertSerial)
	}
	if st := h.Agent.Stats(); st.Signatures < 1 {
		t.Errorf("agent Stats = %+v: sshd signed without it", st)
	}

	other := filepath.Join(t.TempDir(), "known_hosts")
	sshagenttest.WriteFile(t, other, append([]byte("@cert-authority * "), ssh.MarshalAuthorizedKey(sshagenttest.NewSigner(t).PublicKey())...))
	c.KnownHosts = other
	if out, err := h.SSH(context.Background(), c); err == nil || !strings.Contains(out, "Host key verification failed") {
		t.Errorf("ssh trusting another CA: %v\n%s", err, out)
	}
}

// TestHostKeyAgentRestart: the agent serving sshd's host key is killed
// (-9) and started again.
//
// With a socket it listened on itself, sshd's new connections fail while it
// is down, and work again once it listens anew (on the stale socket it
// replaces).
//
// With a socket held for it, as systemd holds a .socket unit's, a
// connection made while it is down waits in the socket's queue and logs in
// once it is back; none is lost. How long they waited is logged.
func TestHostKeyAgentRestart(t *testing.T) {
	key := sshagenttest.NewKey(t)
	pub, _ := ssh.NewPublicKey(key.Public())
	keyFile := writeKey(t, key)

	t.Run("own socket", func(t *testing.T) {
		socket := filepath.Join(t.TempDir(), "agent", "host.sock")
		p := startHelper(t, keyFile, nil, socket)
		h := sshagenttest.StartHost(t, sshagenttest.HostOptions{AgentSocket: socket, PublicKey: pub})
		if out, err := h.SSH(context.Background(), h.Client()); err != nil {
			t.Fatalf("ssh: %v\n%s%s", err, out, h.Tail(20))
		}
		p.kill()
		// One attempt: sshdrun's SSH would retry what this shows.
		start := time.Now()
		out, err := exec.Command("ssh", h.Client().Args(h.Port)...).CombinedOutput()
		if err == nil {
			t.Fatalf("ssh with the agent down logged in:\n%s", out)
		}
		t.Logf("agent down: ssh failed after %v: %v: %s", time.Since(start).Round(time.Millisecond), err, strings.TrimSpace(string(out)))
		startHelper(t, keyFile, nil, socket)
		if out, err := h.SSH(context.Background(), h.Client()); err != nil {
			t.Fatalf("ssh after the restart: %v\n%s%s", err, out, h.Tail(20))
		}
	})

	t.Run("socket held", func(t *testing.T) {
		socket := filepath.Join(t.TempDir(), "host.sock")
		ln, err := net.Listen("unix", socket)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		f, err := ln.(*net.UnixListener).File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		p := startHelper(t, keyFile, f, "")
		h := sshagenttest.StartHost(t, sshagenttest.HostOptions{AgentSocket: socket, PublicKey: pub})
		key, cert := h.UserKey(t, "root")
		if out, err := h.SSH(context.Background(), h.Client()); err != nil {
			t.Fatalf("ssh: %v\n%s%s", err, out, h.Tail(20))
		}
		p.kill()

		// Connections made while the agent is down. Each has reached sshd
		// when sshd logs that it accepted it.
		const n = 3
		before := strings.Count(h.Tail(1<<20), "Connection from 127.0.0.1")
		type result struct {
			err  error
			took time.Duration
			end  time.Time
		}
		// x/crypto's client: the handshake alone (key exchange, host
		// certificate, user certificate), no session, so that the time
		// measured is the wait for the agent.
		config := h.ClientConfig(t, "root", key, cert)
		results := make(chan result, n)
		for range n {
			go func() {
				start := time.Now()
				c, err := ssh.Dial("tcp", h.Addr, config)
				if err == nil {
					c.Close()
				}
				results <- result{err, time.Since(start), time.Now()}
			}()
		}
		waitFor(t, "sshd to accept the connections made while the agent is down", func() bool {
			return strings.Count(h.Tail(1<<20), "Connection from 127.0.0.1") >= before+n
		})
		if len(results) != 0 {
			r := <-results
			t.Fatalf("a handshake ended while the agent was down: %v", r.err)
		}
		downFor := time.Now()
		startHelper(t, keyFile, f, "")
		restarted := time.Now()
		t.Logf("agent restarted %v after sshd accepted the connections", restarted.Sub(downFor).Round(time.Millisecond))
		for i := range n {
			select {
			case r := <-results:
				if r.err != nil {
					t.Errorf("handshake begun while the agent was down: %v%s", r.err, h.Tail(20))
				}
				t.Logf("connection %d made while the agent was down: handshake done after %v, %v after the restart",
					i, r.took.Round(time.Millisecond), r.end.Sub(restarted).Round(time.Millisecond))
			case <-time.After(2 * time.Minute): // bounds a hang only
				t.Fatalf("ssh made while the agent was down did not end%s", h.Tail(40))
			}
		}
		start := time.Now()
		if out, err := h.SSH(context.Background(), h.Client()); err != nil {
			t.Fatalf("ssh after the restart: %v\n%s%s", err, out, h.Tail(20))
		}
		t.Logf("a login after the restart took %v", time.Since(start).Round(time.Millisecond))
	})
}

// waitFor polls cond until it holds, for at most a minute (a bound on a
// hang only): sshd's log is the only signal it gives.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: a minute passed", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newLogger(w *logBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
