package renew_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/devid-ssh/devid/renew"
)

func TestSleep(t *testing.T) {
	for _, tc := range []struct {
		name    string
		d       time.Duration
		timeout time.Duration // cancel the context after this; 0: never
		after   func(time.Duration) <-chan time.Time
		want    error
		elapsed time.Duration
	}{
		{"sleeps d", time.Minute, 0, time.After, nil, time.Minute},
		{"nil after means time.After", 90 * time.Second, 0, nil, nil, 90 * time.Second},
		{"cancelled first", time.Minute, 10 * time.Second, time.After, context.DeadlineExceeded, 10 * time.Second},
		{"timer first", 10 * time.Second, time.Minute, time.After, nil, 10 * time.Second},
		{"zero d", 0, 0, time.After, nil, 0},
		{"negative d", -time.Second, 0, time.After, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := t.Context()
				if tc.timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tc.timeout)
					defer cancel()
				}
				start := time.Now()
				err := renew.Sleep(ctx, tc.d, tc.after)
				if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
					t.Errorf("Sleep = %v, want %v", err, tc.want)
				}
				if got := time.Since(start); got != tc.elapsed {
					t.Errorf("Sleep returned after %v, want %v", got, tc.elapsed)
				}
			})
		})
	}
}

func TestSleepAlreadyCancelled(t *testing.T) {
	// A cancelled context wins even over a timer that has already fired,
	// and a zero d: the loop stops promptly.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	fired := func(time.Duration) <-chan time.Time {
		c := make(chan time.Time, 1)
		c <- time.Time{}
		return c
	}
	for _, d := range []time.Duration{0, time.Second} {
		if err := renew.Sleep(ctx, d, fired); !errors.Is(err, context.Canceled) {
			t.Errorf("Sleep(cancelled, %v) = %v, want context.Canceled", d, err)
		}
	}
}

func TestSleepUsesTimer(t *testing.T) {
	// The timer constructor is asked for d, and its channel, not the real
	// clock, ends the sleep.
	var asked time.Duration
	c := make(chan time.Time, 1)
	after := func(d time.Duration) <-chan time.Time { asked = d; return c }
	c <- time.Time{}
	if err := renew.Sleep(t.Context(), time.Hour, after); err != nil || asked != time.Hour {
		t.Errorf("Sleep(1h, fake) = %v, asked the timer for %v; want nil, 1h", err, asked)
	}
}
