package renew_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/devid-ssh/devid/renew"
)

// A simulated devid-hostd: a loop of Decide, sleeping Wait on a fake wall
// clock or renewing against a fake CA, as the package doc describes.

// attempt is one renewal the daemon tried.
type attempt struct {
	at       time.Time
	reattest bool
	ok       bool
}

type daemon struct {
	t        *testing.T
	p        renew.Policy
	now      time.Time // the fake wall clock
	s        renew.State
	lifetime time.Duration // of the certificates the CA issues
	rng      *rand.Rand    // draws State.Rnd for each new certificate

	// caFails says whether the CA refuses a renewal at a time; nil: never.
	caFails func(now time.Time) bool
	// clockJump returns how far the wall clock moves, beyond the sleep
	// itself, while the daemon sleeps wait from now (a suspend forward, a
	// step backward); nil: never.
	clockJump func(now time.Time, wait time.Duration) time.Duration

	attempts  []attempt
	decisions int
	expired   []time.Time // decisions made while the certificate had expired
}

func newDaemon(t *testing.T, s renew.State, now time.Time) *daemon {
	return &daemon{
		t: t, s: s, now: now, lifetime: 24 * time.Hour,
		rng: rand.New(rand.NewPCG(1, 2)),
	}
}

// step makes one decision and carries it out.
func (d *daemon) step() renew.Decision {
	d.t.Helper()
	dec := d.p.Decide(d.now, d.s)
	d.decisions++
	checkDecision(d.t, dec, renew.DefaultMaxSleep)
	if !d.s.NotAfter.IsZero() && !d.now.Before(d.s.NotAfter) {
		d.expired = append(d.expired, d.now)
	}
	if !dec.Renew {
		next := d.now.Add(dec.Wait)
		if d.clockJump != nil {
			next = next.Add(d.clockJump(d.now, dec.Wait))
		}
		d.now = next
		return dec
	}
	ok := d.caFails == nil || !d.caFails(d.now)
	d.attempts = append(d.attempts, attempt{at: d.now, reattest: dec.Reattest, ok: ok})
	if ok {
		d.s = renew.State{NotBefore: d.now, NotAfter: d.now.Add(d.lifetime), Rnd: d.rng.Float64()}
	} else {
		d.s.Failures++
		d.s.LastFailure = d.now
	}
	return dec
}

// runUntil steps until the wall clock reaches end.
func (d *daemon) runUntil(end time.Time) {
	d.t.Helper()
	for d.now.Before(end) {
		d.step()
		if d.decisions > 1_000_000 {
			d.t.Fatalf("over a million decisions before %v: busy loop (now %v)", end, d.now)
		}
	}
}

func TestLoopRenewsOnceNearTwoThirds(t *testing.T) {
	d := newDaemon(t, cert(t0, 24*time.Hour, 0.5), t0)
	d.runUntil(t0.Add(30 * time.Hour)) // the next certificate is due after 15.4h+14.8h
	want := []attempt{{at: t0.Add(hours(15.4)), ok: true}}
	if !equalAttempts(d.attempts, want) {
		t.Fatalf("attempts = %v, want %v", d.attempts, want)
	}
	if len(d.expired) > 0 {
		t.Errorf("decided with an expired certificate at %v", d.expired)
	}
	// Waits are at most a minute: about one decision a minute, no more.
	// 924 one-minute waits to 15.4h, the renewal, 876 waits to 30h.
	if want := 924 + 1 + 876; d.decisions != want {
		t.Errorf("%d decisions in 30h, want %d (one a minute)", d.decisions, want)
	}
}

func TestLoopSuspend(t *testing.T) {
	for _, tc := range []struct {
		name     string
		suspend  time.Duration
		reattest bool
	}{
		{"past the due time", 10 * time.Hour, false},
		{"past expiry", 20 * time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Started 6h into a 24h certificate; the machine sleeps through
			// the daemon's next timer.
			d := newDaemon(t, cert(t0, 24*time.Hour, 0.5), t0.Add(6*time.Hour))
			var woke time.Time
			d.clockJump = func(now time.Time, wait time.Duration) time.Duration {
				if !woke.IsZero() {
					return 0
				}
				woke = now.Add(wait + tc.suspend)
				return tc.suspend
			}
			d.step() // a Wait, through which the machine is suspended
			if d.now != woke {
				t.Fatalf("after the suspend the clock reads %v, want %v", d.now, woke)
			}
			dec := d.step()
			if !dec.Renew || dec.Reattest != tc.reattest {
				t.Fatalf("first decision after waking at +%v = %+v, want Renew, Reattest %v", woke.Sub(t0), dec, tc.reattest)
			}
			want := []attempt{{at: woke, reattest: tc.reattest, ok: true}}
			if !equalAttempts(d.attempts, want) {
				t.Fatalf("attempts = %v, want %v", d.attempts, want)
			}
			// And then it settles on the new certificate.
			d.runUntil(woke.Add(14 * time.Hour))
			if len(d.attempts) != 1 {
				t.Errorf("attempts after renewing on wake = %v, want just the one", d.attempts)
			}
		})
	}
}

func TestLoopClockStepsBack(t *testing.T) {
	due := t0.Add(hours(15.4))
	stepBackOnce := func(when func(now time.Time) bool) func(time.Time, time.Duration) time.Duration {
		done := false
		return func(now time.Time, _ time.Duration) time.Duration {
			if done || !when(now) {
				return 0
			}
			done = true
			return -time.Hour
		}
	}

	t.Run("before the due time", func(t *testing.T) {
		d := newDaemon(t, cert(t0, 24*time.Hour, 0.5), t0)
		d.clockJump = stepBackOnce(func(now time.Time) bool { return !now.Before(t0.Add(10 * time.Hour)) })
		d.runUntil(t0.Add(30 * time.Hour))
		// The renewal is still made at its wall-clock time, exactly once.
		want := []attempt{{at: due, ok: true}}
		if !equalAttempts(d.attempts, want) || len(d.expired) > 0 {
			t.Fatalf("attempts = %v (expired at %v), want %v", d.attempts, d.expired, want)
		}
	})

	t.Run("right after renewing", func(t *testing.T) {
		// The clock now reads before the new certificate's NotBefore: the
		// daemon waits for it, it does not renew again and again.
		d := newDaemon(t, cert(t0, 24*time.Hour, 0.5), t0)
		d.clockJump = stepBackOnce(func(time.Time) bool { return len(d.attempts) == 1 })
		d.runUntil(t0.Add(30 * time.Hour))
		want := []attempt{{at: due, ok: true}}
		if !equalAttempts(d.attempts, want) {
			t.Fatalf("attempts = %v, want %v", d.attempts, want)
		}
		if !d.s.NotBefore.Equal(due) {
			t.Fatalf("current certificate from %v, want %v", d.s.NotBefore, due)
		}
	})

	t.Run("during a backoff", func(t *testing.T) {
		// The CA refuses the first four attempts, and the clock steps back
		// an hour during the third backoff. The failure time is then in the
		// future: the daemon retries at once rather than an hour and a
		// backoff later, and backs off from that failure as usual.
		d := newDaemon(t, cert(t0, 24*time.Hour, 0.5), t0)
		d.caFails = func(time.Time) bool { return len(d.attempts) < 4 }
		var stepped time.Time
		d.clockJump = stepBackOnce(func(now time.Time) bool {
			if len(d.attempts) == 3 {
				stepped = now
				return true
			}
			return false
		})
		d.runUntil(t0.Add(30 * time.Hour))
		if len(d.attempts) != 5 {
			t.Fatalf("attempts = %v, want 3 failures, 1 after the step and 1 success", d.attempts)
		}
		a := d.attempts[3]
		if a.at.After(stepped) || a.at.Before(stepped.Add(-time.Hour)) {
			t.Errorf("first attempt after the step at %v; the step (back 1h) came while sleeping from %v", a.at, stepped)
		}
		if !d.attempts[4].ok || len(d.expired) > 0 {
			t.Errorf("attempts = %v (expired at %v), want the last to succeed before expiry", d.attempts, d.expired)
		}
	})
}

func TestLoopBacksOffAndRecovers(t *testing.T) {
	const fails = 9
	d := newDaemon(t, cert(t0, 24*time.Hour, 0.5), t0)
	d.caFails = func(time.Time) bool { return len(d.attempts) < fails }
	d.runUntil(t0.Add(30 * time.Hour))
	if len(d.attempts) != fails+1 {
		t.Fatalf("%d attempts, want %d failures and a success: %v", len(d.attempts), fails, d.attempts)
	}
	if at := d.attempts[0].at; !at.Equal(t0.Add(hours(15.4))) {
		t.Errorf("first attempt at %v, want at the due time", at)
	}
	// Each retry comes exactly one RetryDelay after the failure before it:
	// the first one Backoff, the next ones spread over part of the time
	// the certificate has left too.
	exp := d.attempts[0].at.Add(-hours(15.4)).Add(24 * time.Hour)
	for i := 1; i < len(d.attempts); i++ {
		prev := d.attempts[i-1].at
		gap := d.attempts[i].at.Sub(prev)
		if want := d.p.RetryDelay(i, 0.5, exp.Sub(prev)); gap != want {
			t.Errorf("retry %d came %v after failure %d, want RetryDelay(%d) = %v", i, gap, i, i, want)
		}
		if i == 1 && gap != d.p.Backoff(1, 0.5) {
			t.Errorf("first retry came %v after the failure, want Backoff(1) = %v", gap, d.p.Backoff(1, 0.5))
		}
		if limit := renew.DefaultMaxBackoff + time.Duration(renew.DefaultSpread*float64(exp.Sub(prev))); gap > limit {
			t.Errorf("retry %d came %v after failure %d, more than MaxBackoff and a quarter of the time left (%v)", i, gap, i, limit)
		}
	}
	last := d.attempts[len(d.attempts)-1]
	if !last.ok || last.reattest || len(d.expired) > 0 {
		t.Errorf("last attempt %+v (expired at %v), want a successful renewal before expiry", last, d.expired)
	}
	if d.s.Failures != 0 || !d.s.NotBefore.Equal(last.at) {
		t.Errorf("state after recovery %+v, want the new certificate and no failures", d.s)
	}
}

func TestLoopOutagePastExpiry(t *testing.T) {
	// The CA is down from before the due time until 7 minutes after expiry.
	exp := t0.Add(24 * time.Hour)
	back := exp.Add(7 * time.Minute)
	d := newDaemon(t, cert(t0, 24*time.Hour, 0.5), t0)
	d.caFails = func(now time.Time) bool { return now.Before(back) }
	d.runUntil(exp.Add(time.Hour))
	atExpiry, success := -1, -1
	for i, a := range d.attempts {
		switch {
		case a.at.Before(exp):
			if a.reattest || a.ok {
				t.Errorf("attempt %d before expiry %+v, want a failed plain renewal", i, a)
			}
		case a.at.Equal(exp):
			atExpiry = i
		}
		if i > 0 {
			prev := d.attempts[i-1].at
			limit := renew.DefaultMaxBackoff // past expiry: the backoff alone
			if prev.Before(exp) {
				limit += time.Duration(renew.DefaultSpread * float64(exp.Sub(prev)))
			}
			if gap := a.at.Sub(prev); gap > limit {
				t.Errorf("attempt %d came %v after the one before, more than %v", i, gap, limit)
			}
		}
		if a.ok {
			success = i
		}
	}
	// The backoff running at expiry is cut short: re-attest at NotAfter.
	if atExpiry < 0 || !d.attempts[atExpiry].reattest {
		t.Fatalf("no re-attestation exactly at expiry %v: %v", exp, d.attempts)
	}
	if success != len(d.attempts)-1 {
		t.Fatalf("attempts %v: want the last one, and only it, to succeed", d.attempts)
	}
	s := d.attempts[success]
	if !s.reattest || s.at.Before(back) || s.at.After(back.Add(renew.DefaultMaxBackoff)) {
		t.Errorf("success %+v, want a re-attestation within MaxBackoff of the CA's return at %v", s, back)
	}
	// Between expiry and success the failed re-attestations backed off
	// rather than looping.
	if n := success - atExpiry; n < 2 || n > 4 {
		t.Errorf("%d attempts from expiry to success over 7 minutes, want 2 to 4", n)
	}
}

func equalAttempts(a, b []attempt) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].at.Equal(b[i].at) || a[i].reattest != b[i].reattest || a[i].ok != b[i].ok {
			return false
		}
	}
	return true
}
