package main

import (
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// startServe starts cmd (a devid-ca serve), its standard error in the
// test's log, and kills it when the test ends. The channel gets the
// result of its Wait, once.
func startServe(t *testing.T, cmd *exec.Cmd) <-chan error {
	t.Helper()
	cmd.Stderr = testLog{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		exited <- cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	return exited
}

// stopServe sends SIGTERM to a devid-ca serve that startServe started and
// checks that it exits 0; the 2 minutes only bound a hang.
func stopServe(t *testing.T, cmd *exec.Cmd, exited <-chan error) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	awaitExit(t, exited)
}

// awaitExit checks that a devid-ca serve exits 0 within 2 minutes (a hang's
// bound) of being asked to stop.
func awaitExit(t *testing.T, exited <-chan error) {
	t.Helper()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("devid-ca serve after SIGTERM: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("devid-ca still runs 2 minutes after SIGTERM")
	}
}
