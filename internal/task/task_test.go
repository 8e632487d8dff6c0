package task_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/devid-ssh/devid/internal/task"
)

// logs is a JSON log the tests read back.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// records returns every record logged so far.
func (l *logs) records(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for line := range strings.Lines(l.buf.String()) {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

func newRunner(minB, maxB time.Duration) (*task.Runner, *logs) {
	l := &logs{}
	return &task.Runner{Log: slog.New(slog.NewJSONHandler(l, nil)), MinBackoff: minB, MaxBackoff: maxB}, l
}

// times records the times a task started, for the test to read.
type times struct {
	mu sync.Mutex
	ts []time.Time
}

// add records a start now and returns how many there were.
func (s *times) add() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ts = append(s.ts, time.Now())
	return len(s.ts)
}

func (s *times) get() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ts)
}

// gaps are the durations between consecutive starts.
func (s *times) gaps() []time.Duration {
	ts := s.get()
	var out []time.Duration
	for i := 1; i < len(ts); i++ {
		out = append(out, ts[i].Sub(ts[i-1]))
	}
	return out
}

// start runs r in the background; the returned channel has Run's result.
func start(ctx context.Context, r *task.Runner, tasks ...task.Task) <-chan error {
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, tasks...) }()
	return done
}

// returned reports whether Run has returned (with its error).
func returned(done <-chan error) (bool, error) {
	select {
	case err := <-done:
		return true, err
	default:
		return false, nil
	}
}

func TestPanicRecoveredAndRestarted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, l := newRunner(time.Second, time.Minute)
		ctx, cancel := context.WithCancel(t.Context())
		var starts times
		t0 := time.Now()
		done := start(ctx, r, task.Func("flaky", func(ctx context.Context) error {
			if starts.add() == 1 {
				panic("boom")
			}
			<-ctx.Done()
			return ctx.Err()
		}))
		synctest.Wait()
		if n := len(starts.get()); n != 1 {
			t.Fatalf("%d runs before the backoff, want 1", n)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if starts := starts.get(); len(starts) != 2 || starts[1].Sub(t0) != time.Second {
			t.Fatalf("runs at %v, want a restart 1s after the panic", starts)
		}
		var found bool
		for _, rec := range l.records(t) {
			if rec["msg"] == "task panicked; restarting" {
				found = true
				if rec["task"] != "flaky" || rec["panic"] != "boom" || !strings.Contains(rec["stack"].(string), "task_test") {
					t.Errorf("panic record %v: want task=flaky, panic=boom and the stack", rec)
				}
			}
		}
		if !found {
			t.Errorf("the panic was not logged: %v", l.records(t))
		}
		cancel()
		synctest.Wait()
		if ok, err := returned(done); !ok || err != nil {
			t.Fatalf("after cancel: Run returned %v, %v; want nil at once", ok, err)
		}
	})
}

func TestBackoffDoubles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, _ := newRunner(time.Second, 8*time.Second)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var starts times
		start(ctx, r, task.Func("failing", func(ctx context.Context) error {
			starts.add()
			return errors.New("no")
		}))
		synctest.Wait()
		for len(starts.get()) < 7 {
			time.Sleep(time.Second)
			synctest.Wait()
		}
		gaps := starts.gaps()
		want := []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second, 8 * time.Second}
		if !slices.Equal(gaps[:len(want)], want) {
			t.Fatalf("waits between runs %v, want %v", gaps, want)
		}
	})
}

// A task that ran MaxBackoff or longer before it failed is restarted after
// MinBackoff again.
func TestBackoffResetsAfterLongRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, _ := newRunner(time.Second, 8*time.Second)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var starts times
		start(ctx, r, task.Func("failing", func(ctx context.Context) error {
			if starts.add() == 4 {
				time.Sleep(8 * time.Second) // a good run, then a failure
			}
			return errors.New("no")
		}))
		synctest.Wait()
		for len(starts.get()) < 6 {
			time.Sleep(time.Second)
			synctest.Wait()
		}
		// Runs 1-3 fail at once (waits 1s, 2s, 4s), run 4 lasts 8s then
		// fails: the wait after it is 1s, not 8s; then 2s.
		gaps := starts.gaps()
		want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 9 * time.Second, 2 * time.Second}
		if !slices.Equal(gaps[:len(want)], want) {
			t.Fatalf("waits between runs %v, want %v", gaps, want)
		}
	})
}

// Cancelling the context stops every task, those running and those waiting
// to be restarted, and Run returns nil at once.
func TestCancelStopsAll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, _ := newRunner(time.Minute, time.Hour)
		ctx, cancel := context.WithCancel(t.Context())
		stopped := map[string]bool{}
		var mu sync.Mutex
		blocking := func(name string) task.Task {
			return task.Func(name, func(ctx context.Context) error {
				<-ctx.Done()
				mu.Lock()
				stopped[name] = true
				mu.Unlock()
				return ctx.Err()
			})
		}
		failing := task.Func("failing", func(context.Context) error { return errors.New("no") })
		done := start(ctx, r, blocking("a"), blocking("b"), failing)
		time.Sleep(time.Second) // "failing" is waiting for its restart
		synctest.Wait()
		if ok, _ := returned(done); ok {
			t.Fatal("Run returned before its context ended")
		}
		t0 := time.Now()
		cancel()
		synctest.Wait()
		ok, err := returned(done)
		if !ok || err != nil {
			t.Fatalf("after cancel: Run returned %v, %v; want nil", ok, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if !stopped["a"] || !stopped["b"] {
			t.Fatalf("tasks stopped: %v, want a and b", stopped)
		}
		if d := time.Since(t0); d != 0 {
			t.Fatalf("Run returned %v after the cancel, want at once", d)
		}
	})
}

// A task that returns nil is finished: it is not run again, and the others
// go on.
func TestFinishedNotRestarted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, l := newRunner(time.Second, time.Minute)
		ctx, cancel := context.WithCancel(t.Context())
		var runs times
		done := start(ctx, r,
			task.Func("once", func(context.Context) error { runs.add(); return nil }),
			task.Func("forever", func(ctx context.Context) error { <-ctx.Done(); return nil }))
		time.Sleep(time.Hour)
		synctest.Wait()
		if n := len(runs.get()); n != 1 {
			t.Fatalf("a task that returned nil ran %d times, want 1", n)
		}
		if ok, _ := returned(done); ok {
			t.Fatal("Run returned while a task was still running")
		}
		var finished bool
		for _, rec := range l.records(t) {
			finished = finished || rec["msg"] == "task finished" && rec["task"] == "once"
		}
		if !finished {
			t.Errorf("no task=once \"task finished\" record: %v", l.records(t))
		}
		cancel()
		synctest.Wait()
		if ok, err := returned(done); !ok || err != nil {
			t.Fatalf("after cancel: Run returned %v, %v", ok, err)
		}
	})
}

// A Fatal error stops every task, and Run returns it.
func TestFatalStopsAll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, _ := newRunner(time.Second, time.Minute)
		errListen := errors.New("listener closed")
		var otherStopped times
		done := start(t.Context(), r,
			task.Func("serve", func(context.Context) error {
				time.Sleep(time.Second)
				return task.Fatal(errListen)
			}),
			task.Func("other", func(ctx context.Context) error {
				<-ctx.Done()
				otherStopped.add()
				return ctx.Err()
			}))
		time.Sleep(time.Second)
		synctest.Wait()
		ok, err := returned(done)
		if !ok || !errors.Is(err, errListen) || !strings.Contains(err.Error(), "task serve: listener closed") {
			t.Fatalf("Run returned %v, %v; want the fatal error, named by its task", ok, err)
		}
		if len(otherStopped.get()) != 1 {
			t.Fatal("a fatal error did not stop the other task")
		}
	})
}

// A task that fails as it stops (not with its context's error) makes Run
// return that error; one that panics is recovered.
func TestUncleanStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, _ := newRunner(time.Second, time.Minute)
		ctx, cancel := context.WithCancel(t.Context())
		errShutdown := errors.New("shutdown: connections still open")
		done := start(ctx, r,
			task.Func("serve", func(ctx context.Context) error { <-ctx.Done(); return errShutdown }),
			task.Func("panicky", func(ctx context.Context) error { <-ctx.Done(); panic("at stop") }),
			task.Func("clean", func(ctx context.Context) error { <-ctx.Done(); return fmt.Errorf("stopped: %w", ctx.Err()) }),
			task.Func("timeout", func(ctx context.Context) error {
				<-ctx.Done()
				// A graceful shutdown bounded by a context of its own, that
				// ran out: not clean, although it is a context's error.
				sctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				<-sctx.Done()
				return fmt.Errorf("shutdown: %w", sctx.Err())
			}))
		cancel()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		ok, err := returned(done)
		if !ok || !errors.Is(err, errShutdown) || !strings.Contains(err.Error(), "task panicky: panic: at stop") || strings.Contains(err.Error(), "clean") {
			t.Fatalf("Run returned %v, %v; want serve's and panicky's errors only", ok, err)
		}
		if !strings.Contains(err.Error(), "task timeout: shutdown: context deadline exceeded") {
			t.Fatalf("Run returned %v; want the timed-out shutdown reported", err)
		}
	})
}

func TestFatalNil(t *testing.T) {
	if task.Fatal(nil) != nil {
		t.Fatal("Fatal(nil) is not nil")
	}
}
