package sshagent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devid-ssh/devid/sshagent"
	"github.com/devid-ssh/devid/sshagent/sshagenttest"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// TestMain runs the test binary as the helper agent process when asked
// (see helperMain), else the tests.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	os.Exit(m.Run())
}

// swappable is a Source whose identities a test replaces, as a daemon
// does at renewal.
type swappable struct {
	mu  sync.Mutex
	ids []sshagent.Identity
}

func (s *swappable) Identities() []sshagent.Identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ids
}

func (s *swappable) set(ids ...sshagent.Identity) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids = ids
}

// userCert is a user certificate for key, signed by ca.
func userCert(t testing.TB, ca ssh.Signer, key ssh.PublicKey, serial uint64, principals ...string) *ssh.Certificate {
	t.Helper()
	c := &ssh.Certificate{Key: key, Serial: serial, CertType: ssh.UserCert, KeyId: "test user",
		ValidPrincipals: principals, ValidAfter: uint64(time.Now().Add(-time.Hour).Unix()),
		ValidBefore: uint64(time.Now().Add(24 * time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{"permit-pty": ""}}}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return c
}

// logBuffer is a logger's output, safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// served is an agent serving on a socket in a new directory until the
// test ends.
type served struct {
	*sshagent.Agent
	socket string
	log    *logBuffer
	cancel context.CancelFunc
	done   chan error
}

func serve(t testing.TB, src sshagent.Source, allow []int) *served {
	t.Helper()
	s := &served{socket: filepath.Join(t.TempDir(), "agent", "sock"), log: &logBuffer{}, done: make(chan error, 1)}
	ln, err := sshagent.Listen(s.socket)
	if err != nil {
		t.Fatal(err)
	}
	s.Agent = sshagent.New(src, sshagent.Options{AllowUIDs: allow, Logger: slog.New(slog.NewTextHandler(s.log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	var ctx context.Context
	ctx, s.cancel = context.WithCancel(context.Background())
	go func() { s.done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop ends Serve and checks it returned nil (once; later calls return).
func (s *served) stop(t testing.TB) {
	t.Helper()
	s.cancel()
	select {
	case err, ok := <-s.done:
		if ok && err != nil {
			t.Errorf("Serve: %v", err)
		}
		if ok {
			close(s.done)
		}
	case <-time.After(time.Minute):
		t.Fatal("Serve did not return within a minute of its context ending")
	}
}

// client dials the agent.
func (s *served) client(t testing.TB) agent.ExtendedAgent {
	t.Helper()
	c, err := net.Dial("unix", s.socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return agent.NewClient(c)
}

// TestListSign: List shows the certificate, then the key; a signature
// asked for by either verifies with the key; an unknown key is refused;
// Stats count both.
func TestListSign(t *testing.T) {
	key := sshagenttest.NewKey(t)
	pub, _ := ssh.NewPublicKey(key.Public())
	cert := userCert(t, sshagenttest.NewSigner(t), pub, 7, "root")
	s := serve(t, sshagent.Static{{Signer: key, Certificate: cert, Comment: "tpm"}}, nil)
	c := s.client(t)

	keys, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || !bytes.Equal(keys[0].Blob, cert.Marshal()) || !bytes.Equal(keys[1].Blob, pub.Marshal()) {
		t.Fatalf("List = %v, want the certificate then the key", keys)
	}
	if keys[0].Comment != "tpm" || keys[0].Format != ssh.CertAlgoECDSA256v01 || keys[1].Format != ssh.KeyAlgoECDSA256 {
		t.Errorf("List = %q %q, %q %q", keys[0].Format, keys[0].Comment, keys[1].Format, keys[1].Comment)
	}
	data := []byte("session hash")
	for _, k := range []ssh.PublicKey{pub, cert} {
		sig, err := c.SignWithFlags(k, data, agent.SignatureFlagRsaSha256) // ignored for ECDSA, as OpenSSH does
		if err != nil {
			t.Fatalf("Sign(%s): %v", k.Type(), err)
		}
		if sig.Format != ssh.KeyAlgoECDSA256 {
			t.Errorf("Sign(%s): format %s", k.Type(), sig.Format)
		}
		if err := pub.Verify(data, sig); err != nil {
			t.Errorf("Sign(%s): %v", k.Type(), err)
		}
	}
	other, _ := ssh.NewPublicKey(sshagenttest.NewKey(t).Public())
	if _, err := c.Sign(other, data); err == nil {
		t.Error("Sign with an unknown key succeeded")
	}
	if !strings.Contains(s.log.String(), "no identity holds key "+other.Type()+" "+ssh.FingerprintSHA256(other)) {
		t.Errorf("log does not name the unknown key:\n%s", s.log)
	}
	if st := s.Stats(); st.Signatures != 2 || st.SignErrors != 1 || st.Connections != 1 {
		t.Errorf("Stats = %+v, want 2 signatures, 1 error, 1 connection", st)
	}
}

// TestSourceSwap: a certificate swapped in the Source is listed, and
// signed for, from the next request on the same connection.
func TestSourceSwap(t *testing.T) {
	key := sshagenttest.NewKey(t)
	pub, _ := ssh.NewPublicKey(key.Public())
	ca := sshagenttest.NewSigner(t)
	src := &swappable{}
	src.set(sshagent.Identity{Signer: key, Certificate: userCert(t, ca, pub, 1, "root")})
	c := serve(t, src, nil).client(t)
	if keys, err := c.List(); err != nil || len(keys) != 2 {
		t.Fatalf("List = %v, %v", keys, err)
	}
	renewed := userCert(t, ca, pub, 2, "root")
	src.set(sshagent.Identity{Signer: key, Certificate: renewed})
	keys, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ssh.ParsePublicKey(keys[0].Blob)
	if err != nil {
		t.Fatal(err)
	}
	if cert, ok := got.(*ssh.Certificate); !ok || cert.Serial != 2 {
		t.Fatalf("after the swap List shows %v, want serial 2", got)
	}
	if _, err := c.Sign(renewed, []byte("x")); err != nil {
		t.Errorf("Sign with the renewed certificate: %v", err)
	}
}

// TestCertificateOfOtherKey: a certificate that does not certify the
// identity's key is not listed (the key is), and the agent says why.
func TestCertificateOfOtherKey(t *testing.T) {
	key := sshagenttest.NewKey(t)
	pub, _ := ssh.NewPublicKey(key.Public())
	otherPub, _ := ssh.NewPublicKey(sshagenttest.NewKey(t).Public())
	s := serve(t, sshagent.Static{{Signer: key, Certificate: userCert(t, sshagenttest.NewSigner(t), otherPub, 1, "root")}}, nil)
	keys, err := s.client(t).List()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || !bytes.Equal(keys[0].Blob, pub.Marshal()) {
		t.Errorf("List = %v, want the key alone", keys)
	}
	if !strings.Contains(s.log.String(), "certifies another key") {
		t.Errorf("log:\n%s", s.log)
	}
}

// TestRSAFlags: an RSA key signs with the SHA-2 algorithm the flags ask
// for and refuses SHA-1.
func TestRSAFlags(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := ssh.NewPublicKey(key.Public())
	c := serve(t, sshagent.Static{{Signer: key}}, nil).client(t)
	for flags, want := range map[agent.SignatureFlags]string{
		agent.SignatureFlagRsaSha256: ssh.KeyAlgoRSASHA256,
		agent.SignatureFlagRsaSha512: ssh.KeyAlgoRSASHA512,
	} {
		sig, err := c.SignWithFlags(pub, []byte("x"), flags)
		if err != nil {
			t.Fatalf("flags %d: %v", flags, err)
		}
		if sig.Format != want {
			t.Errorf("flags %d: format %s, want %s", flags, sig.Format, want)
		}
		if err := pub.Verify([]byte("x"), sig); err != nil {
			t.Errorf("flags %d: %v", flags, err)
		}
	}
	if _, err := c.Sign(pub, []byte("x")); err == nil {
		t.Error("an ssh-rsa (SHA-1) signature was made")
	}
}

// TestRefused: requests that would change the keys fail, with
// ErrNotSupported in process and a failure on the wire, and are counted
// and logged; extensions answer ErrExtensionUnsupported.
func TestRefused(t *testing.T) {
	key := sshagenttest.NewKey(t)
	s := serve(t, sshagent.Static{{Signer: key}}, nil)
	c := s.client(t)
	pub, _ := ssh.NewPublicKey(key.Public())
	for name, err := range map[string]error{
		"add":        c.Add(agent.AddedKey{PrivateKey: sshagenttest.NewKey(t)}),
		"remove":     c.Remove(pub),
		"remove all": c.RemoveAll(),
		"lock":       c.Lock([]byte("p")),
		"unlock":     c.Unlock([]byte("p")),
	} {
		if err == nil {
			t.Errorf("%s succeeded", name)
		}
	}
	if _, err := c.Extension("session-bind@openssh.com", nil); !errors.Is(err, agent.ErrExtensionUnsupported) {
		t.Errorf("Extension: %v, want ErrExtensionUnsupported", err)
	}
	if err := s.Agent.RemoveAll(); !errors.Is(err, sshagent.ErrNotSupported) || err.Error() != "sshagent: keys live in the TPM: removing all keys is not supported" {
		t.Errorf("RemoveAll: %v", err)
	}
	if st := s.Stats(); st.Refused != 6 {
		t.Errorf("Stats = %+v, want 6 refused", st)
	}
	if n := strings.Count(s.log.String(), "is not supported"); n != 6 {
		t.Errorf("log has %d refusals, want 6:\n%s", n, s.log)
	}
	if keys, err := c.List(); err != nil || len(keys) != 1 {
		t.Errorf("after the refusals List = %v, %v", keys, err)
	}
}

// TestPeerRefused: a peer whose user is not allowed is closed unserved,
// counted and logged.
func TestPeerRefused(t *testing.T) {
	s := serve(t, sshagent.Static{{Signer: sshagenttest.NewKey(t)}}, []int{4242})
	if keys, err := s.client(t).List(); err == nil {
		t.Fatalf("List by uid %d = %v, want the connection closed", os.Getuid(), keys)
	}
	if st := s.Stats(); st.PeersRefused != 1 || st.Connections != 0 {
		t.Errorf("Stats = %+v, want 1 peer refused", st)
	}
	if !strings.Contains(s.log.String(), "is not allowed (allowed: [4242])") {
		t.Errorf("log:\n%s", s.log)
	}
}

// TestServeStops: when its context ends Serve closes the listener and
// removes the socket, ends open connections, and returns nil.
func TestServeStops(t *testing.T) {
	s := serve(t, sshagent.Static{{Signer: sshagenttest.NewKey(t)}}, nil)
	conn, err := net.Dial("unix", s.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := agent.NewClient(conn).List(); err != nil { // served: Serve tracks it
		t.Fatal(err)
	}
	s.stop(t)
	conn.SetReadDeadline(time.Now().Add(time.Minute)) // bounds a hang only
	if n, err := conn.Read(make([]byte, 1)); err == nil {
		t.Errorf("connection still open after Serve returned (read %d bytes)", n)
	}
	if _, err := os.Lstat(s.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Serve returned: %v", err)
	}
}

// TestListen: the directory made 0700, the socket 0600; a file refused; a
// live agent's socket refused; a dead one's replaced.
func TestListen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "devid")
	path := filepath.Join(dir, "agent.sock")
	ln, err := sshagent.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: os.ModeDir | 0o700, path: os.ModeSocket | 0o600} {
		if fi, err := os.Stat(p); err != nil || fi.Mode() != want {
			t.Errorf("%s: %v %v, want %v", p, fi.Mode(), err, want)
		}
	}
	if _, err := sshagent.Listen(path); err == nil || err.Error() != "sshagent: another agent is listening on "+path {
		t.Errorf("Listen on a live socket: %v", err)
	}
	// A socket left behind: listening stopped without removing the file.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln2, err := sshagent.Listen(path)
	if err != nil {
		t.Fatalf("Listen on a stale socket: %v", err)
	}
	ln2.Close()

	file := filepath.Join(t.TempDir(), "not-a-socket")
	os.WriteFile(file, []byte("keep me"), 0o600)
	if _, err := sshagent.Listen(file); err == nil || !strings.Contains(err.Error(), "exists and is not a socket") {
		t.Errorf("Listen on a file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Errorf("the file was changed: %q", b)
	}
}

// TestActivatedListenerNone: without systemd's variables, no listener and
// no error.
func TestActivatedListenerNone(t *testing.T) {
	t.Setenv("LISTEN_PID", "")
	t.Setenv("LISTEN_FDS", "")
	ln, err := sshagent.ActivatedListener()
	if ln != nil || err != nil {
		t.Errorf("ActivatedListener = %v, %v; want nil, nil", ln, err)
	}
}
