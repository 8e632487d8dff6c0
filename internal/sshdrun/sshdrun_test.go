package sshdrun_test

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/sshdrun"
	"github.com/devid-ssh/devid/internal/sshdtest"
)

// TestReloadWindow: logins made right after a SIGHUP, while sshd executes
// itself again, are neither lost nor mistaken for refusals: the harness
// retries what the re-exec window looks like and nothing else, and
// WaitReloaded sees every reload sshd took.
func TestReloadWindow(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // bounds a hang only
	defer cancel()
	login := sshdrun.Client{Identity: s.ClientKey}
	const reloads = 20
	for i := 1; i <= reloads; i++ {
		if err := syscall.Kill(s.PID, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		// Straight into the window: no wait for the reload.
		if out, err := s.Server.SSH(ctx, login); err != nil {
			t.Fatalf("login %d, right after a SIGHUP: %v\n%s%s", i, err, out, s.Tail(20))
		}
		if err := s.Server.WaitReloaded(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	restarts, listens, err := s.Generations()
	if err != nil || restarts != reloads || listens != reloads+1 {
		t.Fatalf("sshd's log: %d restarts, %d listens (%v); want %d and %d", restarts, listens, err, reloads, reloads+1)
	}

	// A refused login is the answer, not a reason to try again: a key
	// sshd does not know is refused once.
	other := t.TempDir() + "/other"
	sshdtest.Keygen(t, other)
	before := strings.Count(readFile(t, s.Log), "Connection closed by authenticating user")
	out, err := s.Server.SSH(ctx, sshdrun.Client{Identity: other})
	if err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("login with an unknown key: %v\n%s", err, out)
	}
	// sshd logs the refused connection once it has closed it.
	for strings.Count(readFile(t, s.Log), "Connection closed by authenticating user") == before {
		select {
		case <-ctx.Done():
			t.Fatalf("sshd never logged the refused connection%s", s.Tail(20))
		case <-time.After(10 * time.Millisecond):
		}
	}
	if n := strings.Count(readFile(t, s.Log), "Connection closed by authenticating user") - before; n != 1 {
		t.Errorf("a refused login was tried %d times, want once", n)
	}
}

// TestStartFails: an sshd that cannot start is reported with what it said,
// not waited for.
func TestStartFails(t *testing.T) {
	sshdtest.Need(t, sshdrun.SSHD, "ssh-keygen")
	sshdtest.NeedRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := sshdrun.Start(ctx, sshdrun.Options{Dir: t.TempDir(), Lines: []string{"NoSuchOption yes"}})
	if err == nil || !strings.Contains(err.Error(), "sshd exited") || !strings.Contains(err.Error(), "NoSuchOption") {
		t.Fatalf("Start with a broken config: %v", err)
	}
	if _, err := sshdrun.Start(ctx, sshdrun.Options{Dir: t.TempDir(), LogLevel: "QUIET"}); err == nil {
		t.Fatal("Start with LogLevel QUIET: no error")
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
