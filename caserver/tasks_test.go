package caserver

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeRebuilder fails its rebuilds while failing is set, and records when
// it was asked.
type fakeRebuilder struct {
	mu      sync.Mutex
	failing bool
	behind  bool
	calls   []time.Time
}

func (f *fakeRebuilder) Rebuild() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, time.Now())
	f.behind = f.failing
	if f.failing {
		return errors.New("revocation: KRL not published")
	}
	return nil
}

func (f *fakeRebuilder) Behind() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.behind
}

func (f *fakeRebuilder) set(failing, behind bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing, f.behind = failing, behind
}

func (f *fakeRebuilder) since(t0 time.Time) []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Duration
	for _, c := range f.calls {
		if !c.Before(t0) {
			out = append(out, c.Sub(t0))
		}
	}
	return out
}

// TestRebuildKRLCatchesUp: the krl-rebuild task rebuilds every period;
// once a rebuild elsewhere failed (the store is Behind: a revocation may be
// unpublished) it rebuilds within a second, and while rebuilds fail it
// retries after 1 s doubling, not at the next period.
func TestRebuildKRLCatchesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &fakeRebuilder{}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		t0 := time.Now()
		go func() { done <- rebuildKRL(ctx, r, slog.New(slog.DiscardHandler), 10*time.Minute) }()
		time.Sleep(25 * time.Minute)
		synctest.Wait()
		if got := r.since(t0); len(got) != 2 || got[0] != 10*time.Minute || got[1] != 20*time.Minute {
			t.Fatalf("rebuilds at %v, want at 10m and 20m", got)
		}
		// A rebuild after a change failed, and the next ones fail too.
		r.set(true, true)
		t1 := time.Now()
		time.Sleep(20 * time.Second)
		synctest.Wait()
		got := r.since(t1)
		want := []time.Duration{time.Second, 3 * time.Second, 7 * time.Second, 15 * time.Second}
		if len(got) != len(want) {
			t.Fatalf("rebuilds while failing at %v, want at %v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("rebuilds while failing at %v, want at %v", got, want)
			}
		}
		// The store recovers: the next retry publishes, then the period again.
		r.set(false, true)
		time.Sleep(20 * time.Second)
		synctest.Wait()
		n := len(r.since(t1))
		if n != len(want)+1 {
			t.Fatalf("%d rebuilds after recovery, want one more", n-len(want))
		}
		time.Sleep(9 * time.Minute)
		synctest.Wait()
		if m := len(r.since(t1)); m != n {
			t.Fatalf("%d rebuilds within the period after recovery, want none", m-n)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("rebuildKRL: %v", err)
		}
	})
}
