package renew_test

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/renew"
)

// t0 is an arbitrary wall-clock time, the notBefore of most test certificates.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// justBelowOne is the largest float64 below 1, the top of rnd's range.
var justBelowOne = math.Nextafter(1, 0)

func hours(h float64) time.Duration { return time.Duration(h * float64(time.Hour)) }

func TestRenewAtDefault24h(t *testing.T) {
	var p renew.Policy
	notAfter := t0.Add(24 * time.Hour)
	for _, tc := range []struct {
		rnd  float64
		want time.Duration // after notBefore
	}{
		{0, 16 * time.Hour}, // 2/3 of 24h
		{0.5, hours(15.4)},  // 16h - 0.5 * 5% of 24h
		{justBelowOne, hours(14.8)},
		{-1, 16 * time.Hour},         // clamped to 0
		{math.NaN(), 16 * time.Hour}, // clamped to 0
		{7, hours(14.8)},             // clamped to 1
	} {
		if got := p.RenewAt(t0, notAfter, tc.rnd).Sub(t0); got != tc.want {
			t.Errorf("RenewAt(24h certificate, rnd %v) = notBefore + %v, want + %v", tc.rnd, got, tc.want)
		}
	}
	// Any draw lands between (2/3 - 5%) and 2/3 of the lifetime, and a
	// larger draw never renews later.
	prev := p.RenewAt(t0, notAfter, 0)
	for i := 1; i <= 1000; i++ {
		rnd := float64(i) / 1001
		at := p.RenewAt(t0, notAfter, rnd)
		if off := at.Sub(t0); off < hours(14.8) || off > 16*time.Hour {
			t.Fatalf("RenewAt(rnd %v) = notBefore + %v, outside [14.8h, 16h]", rnd, off)
		}
		if at.After(prev) {
			t.Fatalf("RenewAt(rnd %v) = %v is later than for a smaller draw (%v)", rnd, at, prev)
		}
		prev = at
	}
}

func TestRenewAtPolicy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		p        renew.Policy
		lifetime time.Duration
		rnd      float64
		want     time.Duration
	}{
		{"half, no draw", renew.Policy{Fraction: 0.5}, 16 * time.Hour, 0, 8 * time.Hour},
		{"half, 10% jitter, top draw", renew.Policy{Fraction: 0.5, Jitter: 0.1}, 10 * time.Hour, justBelowOne, 4 * time.Hour},
		{"5m certificate", renew.Policy{}, 5 * time.Minute, 0, 200 * time.Second},
		{"empty lifetime", renew.Policy{}, 0, 0.5, 0},
		{"inverted lifetime", renew.Policy{}, -time.Hour, 0.5, 0},
		{"invalid policy uses defaults", renew.Policy{Fraction: 2}, 24 * time.Hour, 0, 16 * time.Hour},
	} {
		if got := tc.p.RenewAt(t0, t0.Add(tc.lifetime), tc.rnd).Sub(t0); got != tc.want {
			t.Errorf("%s: RenewAt = notBefore + %v, want + %v", tc.name, got, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	fields := []string{"Fraction", "Jitter", "MinBackoff", "MaxBackoff", "MaxSleep", "Spread"}
	for _, tc := range []struct {
		name string
		p    renew.Policy
		bad  []string // the fields the error must name; no others
	}{
		{"zero value", renew.Policy{}, nil},
		{"all set", renew.Policy{Fraction: 0.8, Jitter: 0.1, MinBackoff: time.Second, MaxBackoff: time.Second, MaxSleep: time.Second}, nil},
		{"fraction near 1", renew.Policy{Fraction: 0.999}, nil},
		{"fraction 1", renew.Policy{Fraction: 1}, []string{"Fraction"}},
		{"fraction negative", renew.Policy{Fraction: -0.5}, []string{"Fraction", "Jitter"}},
		{"fraction NaN", renew.Policy{Fraction: math.NaN()}, []string{"Fraction", "Jitter"}},
		{"fraction above 1", renew.Policy{Fraction: 1.5, Jitter: 0.01}, []string{"Fraction"}},
		{"jitter negative", renew.Policy{Jitter: -0.1}, []string{"Jitter"}},
		{"jitter equal to fraction", renew.Policy{Fraction: 0.5, Jitter: 0.5}, []string{"Jitter"}},
		{"jitter NaN", renew.Policy{Jitter: math.NaN()}, []string{"Jitter"}},
		{"default jitter above small fraction", renew.Policy{Fraction: 0.01}, []string{"Jitter"}},
		{"min backoff negative", renew.Policy{MinBackoff: -time.Second}, []string{"MinBackoff"}},
		{"max backoff negative", renew.Policy{MaxBackoff: -time.Second}, []string{"MaxBackoff"}},
		{"min above max", renew.Policy{MinBackoff: time.Minute, MaxBackoff: time.Second}, []string{"MaxBackoff"}},
		{"min above default max", renew.Policy{MinBackoff: time.Hour}, []string{"MaxBackoff"}},
		{"several bad fields", renew.Policy{Fraction: 1.5, Jitter: 0.1, MinBackoff: -1, MaxSleep: -1}, []string{"Fraction", "MinBackoff", "MaxSleep"}},
		{"max sleep negative", renew.Policy{MaxSleep: -1}, []string{"MaxSleep"}},
		{"spread half", renew.Policy{Spread: 0.5}, nil},
		{"spread above half", renew.Policy{Spread: 0.6}, []string{"Spread"}},
		{"spread negative", renew.Policy{Spread: -0.1}, []string{"Spread"}},
		{"spread NaN", renew.Policy{Spread: math.NaN()}, []string{"Spread"}},
	} {
		err := tc.p.Validate()
		if len(tc.bad) == 0 {
			if err != nil {
				t.Errorf("%s: Validate() = %v, want nil", tc.name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: Validate() = nil, want an error naming %v", tc.name, tc.bad)
			continue
		}
		// One line per bad field, each "renew: policy: <Field> <value> ...".
		var named []string
		for _, line := range strings.Split(err.Error(), "\n") {
			rest, ok := strings.CutPrefix(line, "renew: policy: ")
			field, _, _ := strings.Cut(rest, " ")
			if !ok || !slices.Contains(fields, field) {
				t.Errorf("%s: Validate() line %q does not start with \"renew: policy: <Field>\"", tc.name, line)
			}
			named = append(named, field)
		}
		if !slices.Equal(named, tc.bad) {
			t.Errorf("%s: Validate() = %q, names %v, want %v", tc.name, err, named, tc.bad)
		}
	}
}

func TestBackoff(t *testing.T) {
	var p renew.Policy // 5s doubling, capped at 5m
	bases := []time.Duration{
		5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second,
		80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute,
	}
	for _, rnd := range []float64{0, 0.5, 0.999} {
		for i, base := range bases {
			failures := i + 1
			got := p.Backoff(failures, rnd)
			want := base/2 + time.Duration(float64(base/2)*rnd)
			if got != want {
				t.Errorf("Backoff(%d, %v) = %v, want %v", failures, rnd, got, want)
			}
			if got < renew.DefaultMinBackoff/2 || got > renew.DefaultMaxBackoff {
				t.Errorf("Backoff(%d, %v) = %v, outside [MinBackoff/2, MaxBackoff]", failures, rnd, got)
			}
			if i > 0 {
				prev := p.Backoff(failures-1, rnd)
				if base > bases[i-1] && got <= prev {
					t.Errorf("Backoff(%d, %v) = %v, not more than Backoff(%d) = %v", failures, rnd, got, failures-1, prev)
				}
			}
		}
		// Far past the cap, and at the largest count, it stays capped.
		for _, failures := range []int{100, math.MaxInt} {
			if got, want := p.Backoff(failures, rnd), renew.DefaultMaxBackoff/2+time.Duration(float64(renew.DefaultMaxBackoff/2)*rnd); got != want {
				t.Errorf("Backoff(%d, %v) = %v, want %v", failures, rnd, got, want)
			}
		}
	}
	for _, failures := range []int{0, -1, math.MinInt} {
		if got := p.Backoff(failures, 0.5); got != 0 {
			t.Errorf("Backoff(%d) = %v, want 0", failures, got)
		}
	}
	// A cap that is not a power-of-two multiple of the minimum, and one so
	// large that doubling would overflow.
	odd := renew.Policy{MinBackoff: 3 * time.Second, MaxBackoff: 10 * time.Second}
	if got := odd.Backoff(3, 0); got != 5*time.Second {
		t.Errorf("Backoff(3) with 3s..10s = %v, want 5s (half of the 10s cap)", got)
	}
	huge := renew.Policy{MinBackoff: time.Second, MaxBackoff: math.MaxInt64}
	for _, rnd := range []float64{0, justBelowOne, 1} {
		if got := huge.Backoff(200, rnd); got < huge.MaxBackoff/2 {
			t.Errorf("Backoff(200, %v) capped at MaxInt64 = %v, want at least half of it (no overflow)", rnd, got)
		}
	}
}

// cert returns a state for a certificate valid from nb for lifetime.
func cert(nb time.Time, lifetime time.Duration, rnd float64) renew.State {
	return renew.State{NotBefore: nb, NotAfter: nb.Add(lifetime), Rnd: rnd}
}

func TestDecide(t *testing.T) {
	p := renew.Policy{}
	day := cert(t0, 24*time.Hour, 0) // due at t0+16h, expires at t0+24h
	due := t0.Add(16 * time.Hour)
	exp := t0.Add(24 * time.Hour)
	failed := func(s renew.State, n int, at time.Time) renew.State {
		s.Failures, s.LastFailure = n, at
		return s
	}
	b1 := p.Backoff(1, 0)                  // 2.5s
	b6 := p.RetryDelay(6, 0, exp.Sub(due)) // 80s, and part of a quarter of the 8h left
	for _, tc := range []struct {
		name string
		now  time.Time
		s    renew.State
		want renew.Decision
	}{
		{"no certificate", t0, renew.State{}, renew.Decision{Renew: true, Reattest: true}},
		{"no certificate, in backoff", t0, renew.State{Failures: 1, LastFailure: t0.Add(-time.Second)},
			renew.Decision{Wait: b1 - time.Second}},
		{"no certificate, backoff over", t0, renew.State{Failures: 1, LastFailure: t0.Add(-b1)},
			renew.Decision{Renew: true, Reattest: true}},
		{"no certificate, long backoff capped by MaxSleep", t0, renew.State{Failures: 6, LastFailure: t0},
			renew.Decision{Wait: time.Minute}},
		{"inverted validity is no certificate", t0, renew.State{NotBefore: exp, NotAfter: t0},
			renew.Decision{Renew: true, Reattest: true}},
		{"expired", exp, day, renew.Decision{Renew: true, Reattest: true, At: due}},
		{"long expired", exp.Add(1000 * time.Hour), day, renew.Decision{Renew: true, Reattest: true, At: due}},
		{"just before expiry", exp.Add(-1), day, renew.Decision{Renew: true, At: due}},
		{"fresh: Wait capped at MaxSleep", t0, day, renew.Decision{Wait: time.Minute, At: due}},
		{"not yet valid: Wait capped", t0.Add(-time.Hour), day, renew.Decision{Wait: time.Minute, At: due}},
		{"30s before due", due.Add(-30 * time.Second), day, renew.Decision{Wait: 30 * time.Second, At: due}},
		{"1ns before due", due.Add(-1), day, renew.Decision{Wait: 1, At: due}},
		{"exactly at due", due, day, renew.Decision{Renew: true, At: due}},
		{"after due", due.Add(3 * time.Hour), day, renew.Decision{Renew: true, At: due}},
		{"jittered due", t0.Add(hours(15.4)), cert(t0, 24*time.Hour, 0.5),
			renew.Decision{Renew: true, At: t0.Add(hours(15.4))}},
		{"jittered, before due", t0.Add(hours(15.4) - time.Second), cert(t0, 24*time.Hour, 0.5),
			renew.Decision{Wait: time.Second, At: t0.Add(hours(15.4))}},
		{"in backoff", due.Add(time.Second), failed(day, 1, due),
			renew.Decision{Wait: b1 - time.Second, At: due}},
		{"in backoff, capped by MaxSleep", due.Add(time.Second), failed(day, 6, due),
			renew.Decision{Wait: time.Minute, At: due}},
		{"backoff remainder under MaxSleep", due.Add(b6 - 10*time.Second), failed(day, 6, due),
			renew.Decision{Wait: 10 * time.Second, At: due}},
		{"backoff just over", due.Add(b6), failed(day, 6, due), renew.Decision{Renew: true, At: due}},
		{"an old failure's backoff is over", due, failed(day, 1, due.Add(-time.Hour)),
			renew.Decision{Renew: true, At: due}},
		{"a failure just before due delays it", due, failed(day, 1, due.Add(-time.Second)),
			renew.Decision{Wait: b1 - time.Second, At: due}},
		{"backoff ending after expiry waits only until expiry", exp.Add(-30 * time.Second), failed(day, 20, exp.Add(-40*time.Second)),
			renew.Decision{Wait: 30 * time.Second, At: due}},
		{"then re-attests at expiry", exp, failed(day, 20, exp.Add(-40*time.Second)),
			renew.Decision{Renew: true, Reattest: true, At: due}},
		{"re-attestation failures back off", exp.Add(time.Minute), failed(day, 21, exp.Add(time.Minute)),
			renew.Decision{Wait: time.Minute, At: due}},
		{"failure in the future (clock stepped back): no backoff", due.Add(time.Hour), failed(day, 20, due.Add(2*time.Hour)),
			renew.Decision{Renew: true, At: due}},
	} {
		if got := p.Decide(tc.now, tc.s); got != tc.want {
			t.Errorf("%s: Decide = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// checkDecision fails t if d breaks Decide's promises for policy max sleep.
func checkDecision(t *testing.T, d renew.Decision, maxSleep time.Duration) {
	t.Helper()
	switch {
	case d.Renew && d.Wait != 0:
		t.Fatalf("Decision %+v: Renew with a Wait", d)
	case !d.Renew && d.Wait <= 0:
		t.Fatalf("Decision %+v: neither Renew nor a positive Wait (busy loop)", d)
	case d.Wait > maxSleep:
		t.Fatalf("Decision %+v: Wait above MaxSleep %v", d, maxSleep)
	case d.Reattest && !d.Renew:
		t.Fatalf("Decision %+v: Reattest without Renew", d)
	}
}

func FuzzDecide(f *testing.F) {
	h := int64(time.Hour)
	base := t0.UnixNano()
	f.Add(0.0, 0.0, int64(0), int64(0), int64(0), base, base+24*h, base+16*h, 0, int64(0), 0.5)
	f.Add(0.5, 0.1, int64(time.Second), int64(time.Minute), int64(time.Second), base, base+h, base+h-1, 3, base+h-2, 0.999)
	f.Add(0.9, 0.0, int64(1), int64(1), int64(1), int64(0), int64(0), base, 1, base, 0.0)
	f.Add(2.0, -1.0, int64(-1), int64(-5), int64(-1), base+h, base, base, math.MaxInt, base+h, math.NaN())
	f.Fuzz(func(t *testing.T, fraction, jitter float64, minB, maxB, maxSleep, nb, na, now int64, failures int, lastFailure int64, rnd float64) {
		p := renew.Policy{
			Fraction: fraction, Jitter: jitter,
			MinBackoff: time.Duration(minB), MaxBackoff: time.Duration(maxB), MaxSleep: time.Duration(maxSleep),
		}
		// Decide keeps its promises under the policy it uses: p with
		// defaults, or the default policy if p is invalid.
		limit := p.MaxSleep
		if p.Validate() != nil || limit == 0 {
			limit = renew.DefaultMaxSleep
		}
		unix := func(ns int64) time.Time {
			if ns == 0 {
				return time.Time{}
			}
			return time.Unix(0, ns)
		}
		s := renew.State{NotBefore: unix(nb), NotAfter: unix(na), Failures: failures, LastFailure: unix(lastFailure), Rnd: rnd}
		d := p.Decide(unix(now), s)
		checkDecision(t, d, limit)
		if hasCert := !s.NotAfter.IsZero() && s.NotAfter.After(s.NotBefore); d.At.IsZero() == hasCert {
			t.Fatalf("Decide(%+v) = %+v: At set %v for a certificate present %v", s, d, !d.At.IsZero(), hasCert)
		}
		if b := p.Backoff(failures, rnd); failures > 0 && p.Validate() == nil {
			q := p
			if q.MinBackoff == 0 {
				q.MinBackoff = renew.DefaultMinBackoff
			}
			if q.MaxBackoff == 0 {
				q.MaxBackoff = renew.DefaultMaxBackoff
			}
			if b < q.MinBackoff/2 || b > q.MaxBackoff {
				t.Fatalf("Backoff(%d, %v) = %v outside [%v, %v]", failures, rnd, b, q.MinBackoff/2, q.MaxBackoff)
			}
		}
	})
}
