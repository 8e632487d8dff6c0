package caserver

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/devid-ssh/devid/inventory"
)

// fakeLifter keeps the ends of temporary quarantines in memory and records
// when each device was lifted; a device in failing fails its lifts.
type fakeLifter struct {
	mu      sync.Mutex
	ends    []inventory.QuarantineEnd
	lifted  map[string]time.Time
	failing map[string]bool
	tries   map[string]int
}

func (f *fakeLifter) QuarantineEnds() ([]inventory.QuarantineEnd, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ends), nil
}

func (f *fakeLifter) LiftQuarantine(actor, id string, until time.Time) (*inventory.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tries[id]++
	if actor != "devid-ca" || time.Now().Before(until) {
		panic("lifted by " + actor + " before its end")
	}
	if f.failing[id] {
		return nil, errors.New("database unavailable")
	}
	i := slices.IndexFunc(f.ends, func(e inventory.QuarantineEnd) bool { return e.DeviceID == id && e.Until.Equal(until) })
	if i < 0 {
		return nil, nil
	}
	f.ends = slices.Delete(f.ends, i, i+1)
	f.lifted[id] = time.Now()
	return &inventory.Device{ID: id, Name: id, Status: inventory.StatusActive}, nil
}

func (f *fakeLifter) add(id string, until time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ends = append(f.ends, inventory.QuarantineEnd{DeviceID: id, Until: until})
}

func (f *fakeLifter) state(id string) (time.Time, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lifted[id], f.tries[id]
}

func (f *fakeLifter) fail(id string, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing[id] = on
}

// TestLiftQuarantinesTiming: the quarantine-lift task lifts each known
// temporary quarantine exactly at its end, not a poll later, and never
// before; an end it learns of only from the database (another devid-ca's)
// within a poll; a lift that fails is tried again at each poll until it
// succeeds.
func TestLiftQuarantinesTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		t0 := time.Now()
		f := &fakeLifter{lifted: map[string]time.Time{}, failing: map[string]bool{}, tries: map[string]int{}}
		f.add("a", t0.Add(2*time.Hour))
		f.add("b", t0.Add(30*time.Minute+500*time.Millisecond))
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- liftQuarantines(ctx, f, time.Now, slog.New(slog.DiscardHandler), time.Minute) }()

		time.Sleep(30 * time.Minute)
		synctest.Wait()
		if at, n := f.state("b"); n != 0 || !at.IsZero() {
			t.Fatalf("b lifted %d times before its end", n)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if at, _ := f.state("b"); !at.Equal(t0.Add(30*time.Minute + 500*time.Millisecond)) {
			t.Fatalf("b lifted at %v after the start, want exactly at its end, 30m0.5s", at.Sub(t0))
		}
		// Another devid-ca's quarantine, ended already when this one first
		// reads it (written while it was down, say): tried at the next
		// poll, and again at each poll while its lift fails.
		f.add("c", time.Now().Add(-10*time.Minute))
		f.fail("c", true)
		time.Sleep(3 * time.Minute)
		synctest.Wait()
		if at, n := f.state("c"); !at.IsZero() || n < 2 {
			t.Fatalf("c failing: lifted at %v after %d tries, want tries at each poll and no lift", at, n)
		}
		f.fail("c", false)
		resumed := time.Now()
		time.Sleep(time.Minute)
		synctest.Wait()
		if at, n := f.state("c"); at.IsZero() || at.Sub(resumed) > time.Minute || n != 4 {
			t.Fatalf("c lifted at %v, want within a poll of its lifts succeeding again", at)
		}
		time.Sleep(2*time.Hour - time.Since(t0))
		synctest.Wait()
		if at, n := f.state("a"); !at.Equal(t0.Add(2*time.Hour)) || n != 1 {
			t.Fatalf("a lifted at %v after the start in %d tries, want once, exactly at 2h", at.Sub(t0), n)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("liftQuarantines: %v", err)
		}
	})
}
