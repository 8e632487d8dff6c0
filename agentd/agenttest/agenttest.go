// Package agenttest runs the real devid-agent binary for tests: against a
// devid-ca (catest) with a software TPM (swtpmtest), its socket passed the
// way systemd passes one (LISTEN_FDS), so a test can kill -9 the agent and
// start it again on the same socket.
package agenttest

import (
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devid-ssh/devid/agentd"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/internal/gobuild"
	"github.com/devid-ssh/devid/sshagent/sshagenttest"
)

// Agent is a devid-agent process and its files.
type Agent struct {
	// Socket is the agent socket (SSH_AUTH_SOCK); StateDir its state
	// directory; Config its configuration file.
	Socket, StateDir, Config string
	Paths                    agentd.Paths

	bin  string
	cfg  map[string]any
	ln   *net.UnixListener // held by the test, as systemd holds a .socket
	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{}
	log  *lockedBuffer
}

// Start is New, then Restart: devid-agent runs.
func Start(t testing.TB, ca *catest.CA, tpmAddr string) *Agent {
	t.Helper()
	a := New(t, ca, tpmAddr)
	a.Restart(t)
	return a
}

// New writes a configuration for the agent of the TPM at tpmAddr (a
// registered workstation's), with its state in a new directory, and makes
// its socket; Restart starts devid-agent, which stops when the test ends.
func New(t testing.TB, ca *catest.CA, tpmAddr string) *Agent {
	t.Helper()
	// Not t.TempDir(): a unix socket's path is limited to 107 bytes.
	dir, err := os.MkdirTemp("", "agenttest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	root := filepath.Join(dir, "root.crt")
	if err := os.WriteFile(root, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	a := &Agent{Socket: filepath.Join(dir, "agent.sock"), StateDir: filepath.Join(dir, "state"),
		Config: filepath.Join(dir, "agent.json"), bin: gobuild.Binary(t, "github.com/devid-ssh/devid/cmd/devid-agent")}
	a.cfg = map[string]any{"version": 1, "caUrl": ca.URL, "root": root, "tpm": tpmAddr,
		"stateDir": a.StateDir, "socket": a.Socket, "hostCaInterval": "1s"}
	a.writeConfig(t)
	c, err := agentd.LoadConfig(a.Config, os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	a.Paths = c.Paths()
	a.ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: a.Socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.ln.Close() })
	t.Cleanup(func() {
		a.Stop(t)
		if t.Failed() {
			t.Logf("devid-agent log:\n%s", a.Log())
		}
	})
	return a
}

// SetConfig sets a field of the configuration, for the next Restart.
func (a *Agent) SetConfig(t testing.TB, field string, value any) {
	t.Helper()
	a.cfg[field] = value
	a.writeConfig(t)
}

func (a *Agent) writeConfig(t testing.TB) {
	t.Helper()
	b, _ := json.Marshal(a.cfg)
	if err := os.WriteFile(a.Config, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Bin is the devid-agent binary.
func (a *Agent) Bin() string { return a.bin }

// CloseSocket closes the test's hold on the socket: with no agent running,
// connections are then refused instead of waiting.
func (a *Agent) CloseSocket() { a.ln.Close() }

// Restart starts devid-agent (again), on the same socket and state.
func (a *Agent) Restart(t testing.TB) {
	t.Helper()
	f, err := a.ln.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.log == nil {
		a.log = new(lockedBuffer)
	}
	cmd := exec.Command(a.bin, "run", "--config", a.Config)
	cmd.Stdout, cmd.Stderr = a.log, a.log
	if err := sshagenttest.StartActivated(cmd, f); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	a.proc, a.done = cmd, done
}

// Kill kills the agent with SIGKILL and waits for it to be gone.
func (a *Agent) Kill(t testing.TB) {
	t.Helper()
	a.mu.Lock()
	proc, done := a.proc, a.done
	a.mu.Unlock()
	proc.Process.Kill()
	<-done
}

// Signal sends sig to the agent.
func (a *Agent) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.proc.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// Done is closed when the running agent process exits.
func (a *Agent) Done() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.done
}

// Stop stops the agent with SIGTERM (a minute only bounds a hang).
func (a *Agent) Stop(t testing.TB) {
	a.mu.Lock()
	proc, done := a.proc, a.done
	a.mu.Unlock()
	if proc == nil {
		return
	}
	proc.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(time.Minute):
		proc.Process.Kill()
		<-done
		t.Error("devid-agent did not stop within a minute of SIGTERM")
	}
}

// Log is what the agent wrote to standard error.
func (a *Agent) Log() string { return a.log.String() }

// Status reads status.json, or returns nil if there is none yet.
func (a *Agent) Status() *agentd.Status {
	s, err := agentd.ReadStatus(a.StateDir)
	if err != nil {
		return nil
	}
	return s
}

// WaitStatus waits (a minute at most, which bounds a hang) for the
// status to satisfy cond, and returns it.
func (a *Agent) WaitStatus(t testing.TB, what string, cond func(*agentd.Status) bool) *agentd.Status {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if s := a.Status(); s != nil && cond(s) {
			return s
		}
		select {
		case <-a.Done():
			t.Fatalf("devid-agent exited while waiting for %s:\n%s", what, a.Log())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; status %+v", what, a.Status())
		}
	}
}

// WaitCertificate waits for a certificate of this process (pid) other
// than serial not (0: any).
func (a *Agent) WaitCertificate(t testing.TB, not uint64) *agentd.Status {
	t.Helper()
	a.mu.Lock()
	pid := a.proc.Process.Pid
	a.mu.Unlock()
	return a.WaitStatus(t, "a certificate", func(s *agentd.Status) bool {
		return s.PID == pid && s.Certificate != nil && s.Certificate.Serial != not
	})
}

type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}
