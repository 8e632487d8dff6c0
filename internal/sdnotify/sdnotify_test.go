package sdnotify

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/sdnotify/sdnotifytest"
)

// listen names a socket the test reads in NOTIFY_SOCKET and returns the
// messages it receives.
func listen(t *testing.T) <-chan string {
	t.Helper()
	path, msgs := sdnotifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", path)
	return msgs
}

func next(t *testing.T, msgs <-chan string) string {
	t.Helper()
	select {
	case m := <-msgs:
		return m
	case <-time.After(time.Minute): // bounds a hang only
		t.Fatal("no notification within a minute")
		return ""
	}
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// TestNotifyKeepsSocket: every message arrives, the socket is still named
// after each (SdNotify(true, …) would have unset it after the first).
func TestNotifyKeepsSocket(t *testing.T) {
	msgs := listen(t)
	for _, s := range []string{Ready + "\nSTATUS=serving", Reloading, Stopping} {
		Notify(discard, s)
		if got := next(t, msgs); got != s {
			t.Errorf("got %q, want %q", got, s)
		}
		if os.Getenv("NOTIFY_SOCKET") == "" {
			t.Fatalf("NOTIFY_SOCKET unset after %q", s)
		}
	}
}

// TestWatchdogPingsOnlyWhenHealthy: no ping while the health check fails;
// pings once it passes; Watchdog returns when its context ends.
func TestWatchdogPingsOnlyWhenHealthy(t *testing.T) {
	msgs := listen(t)
	t.Setenv("WATCHDOG_USEC", "20000")
	if got := WatchdogInterval(); got != 20*time.Millisecond {
		t.Fatalf("WatchdogInterval() = %v, want 20ms", got)
	}
	var checks atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watchdog(ctx, discard, func(context.Context) error {
			if checks.Add(1) <= 3 {
				return errors.New("store unreachable")
			}
			return nil
		})
	}()
	for range 2 {
		if got := next(t, msgs); got != Ping {
			t.Fatalf("got %q, want %q", got, Ping)
		}
		if n := checks.Load(); n < 4 {
			t.Fatalf("a ping after %d health checks, of which the first 3 failed", n)
		}
	}
	cancel()
	<-done
}

// TestWatchdogOff: without WATCHDOG_USEC, Watchdog returns at once and
// checks nothing.
func TestWatchdogOff(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "")
	Watchdog(context.Background(), discard, func(context.Context) error {
		t.Error("health checked with the watchdog off")
		return nil
	})
}
