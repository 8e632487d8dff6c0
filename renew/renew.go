// Package renew decides when devid-hostd renews its SSH host certificate and
// how it backs off when renewal fails.
//
// Everything here is a pure function of its inputs: the current time and the
// random draws are parameters, so the same inputs always give the same
// decision and tests drive it with a fake clock. The daemon's loop is
//
//	for {
//		d := policy.Decide(time.Now().Round(0), state)
//		if !d.Renew {
//			if err := renew.Sleep(ctx, d.Wait, time.After); err != nil {
//				return err
//			}
//			continue
//		}
//		// d.Reattest: the certificate expired (or there is none), start
//		// over with a fresh TPM attestation; otherwise renew with the
//		// current one.
//		if cert, err := renewOrReattest(ctx, d.Reattest); err != nil {
//			state.Failures++
//			state.LastFailure = time.Now().Round(0)
//		} else {
//			state = renew.State{
//				NotBefore: cert.NotBefore, NotAfter: cert.NotAfter,
//				Rnd: rand.Float64(), // once per certificate
//			}
//		}
//	}
//
// hostd.HostCertificate.Run is this loop; every renewal there is a whole
// enrolment with a fresh attestation, so it needs no Reattest of its own.
//
// A certificate is renewed at Fraction (default 2/3) of its lifetime, spread
// earlier by up to Jitter (default 5%) of the lifetime so that hosts issued
// certificates at the same moment do not all come back at the same moment. A
// failed renewal keeps the current certificate and is retried after an
// exponential, jittered backoff; a retry is never scheduled after the
// certificate expires, and once it has expired the daemon starts over with a
// fresh attestation.
//
// # Wall clock
//
// Decisions compare wall-clock times: the certificate's validity is defined
// by the wall clock, and the monotonic clock stops while a machine is
// suspended. Callers pass time.Now().Round(0), and Decide strips any monotonic
// reading from now and State.LastFailure itself. Because a timer may sleep
// through a suspend, and the wall clock may be stepped, no Wait is longer than
// MaxSleep (default 1 minute): the daemon looks at the wall clock again at
// least that often and never misses a renewal by more than MaxSleep.
package renew

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// Policy says when to renew and how to back off. Zero fields take the
// defaults shown; see Validate for the allowed values.
type Policy struct {
	// Fraction is the point of the certificate's lifetime at which it is
	// renewed, in (0, 1). Default 2.0/3.
	Fraction float64

	// Jitter spreads renewals over this fraction of the lifetime, before the
	// renewal point: a certificate is renewed between (Fraction-Jitter) and
	// Fraction of its lifetime. In [0, Fraction). Default 0.05. A zero value
	// means the default; to renew at exactly Fraction, pass a zero random
	// draw (State.Rnd) instead.
	Jitter float64

	// MinBackoff is the delay before the first retry after a failure. Each
	// further consecutive failure doubles it, up to MaxBackoff. Default 5s.
	MinBackoff time.Duration

	// MaxBackoff caps the retry delay. At least MinBackoff. Default 5m.
	MaxBackoff time.Duration

	// MaxSleep is the longest Wait Decide returns: the daemon re-reads the
	// wall clock at least this often. Default 1m.
	MaxSleep time.Duration

	// Spread spreads the retries of a certificate that still has time
	// left over this fraction of that time: from the second consecutive
	// failure on, the retry comes a random part of Spread times the time
	// left after the backoff (see RetryDelay). In (0, 0.5]. Default 0.25.
	Spread float64
}

// The defaults for Policy's zero fields.
const (
	DefaultFraction   = 2.0 / 3
	DefaultJitter     = 0.05
	DefaultMinBackoff = 5 * time.Second
	DefaultMaxBackoff = 5 * time.Minute
	DefaultMaxSleep   = time.Minute
	DefaultSpread     = 0.25
)

// withDefaults returns p with its zero fields set to the defaults.
func (p Policy) withDefaults() Policy {
	if p.Fraction == 0 {
		p.Fraction = DefaultFraction
	}
	if p.Jitter == 0 {
		p.Jitter = DefaultJitter
	}
	if p.MinBackoff == 0 {
		p.MinBackoff = DefaultMinBackoff
	}
	if p.MaxBackoff == 0 {
		p.MaxBackoff = DefaultMaxBackoff
	}
	if p.MaxSleep == 0 {
		p.MaxSleep = DefaultMaxSleep
	}
	if p.Spread == 0 {
		p.Spread = DefaultSpread
	}
	return p
}

// Validate reports every field of p (after the defaults for zero fields) that
// is out of range: Fraction must be in (0, 1), Jitter in [0, Fraction),
// MinBackoff, MaxBackoff and MaxSleep positive, and MinBackoff at most
// MaxBackoff. Each error names the field and its value.
func (p Policy) Validate() error {
	q := p.withDefaults()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("renew: policy: "+format, args...))
	}
	if !(q.Fraction > 0 && q.Fraction < 1) {
		bad("Fraction %v is not in (0, 1)", q.Fraction)
	}
	if !(q.Jitter >= 0 && q.Jitter < q.Fraction) {
		bad("Jitter %v is not in [0, Fraction %v)", q.Jitter, q.Fraction)
	}
	if q.MinBackoff < 0 {
		bad("MinBackoff %v is negative", q.MinBackoff)
	}
	if q.MaxBackoff < 0 {
		bad("MaxBackoff %v is negative", q.MaxBackoff)
	} else if q.MinBackoff > q.MaxBackoff {
		bad("MaxBackoff %v is less than MinBackoff %v", q.MaxBackoff, q.MinBackoff)
	}
	if q.MaxSleep < 0 {
		bad("MaxSleep %v is negative", q.MaxSleep)
	}
	if !(q.Spread > 0 && q.Spread <= 0.5) {
		bad("Spread %v is not in (0, 0.5]", q.Spread)
	}
	return errors.Join(errs...)
}

// effective returns the policy the decisions use: p with defaults for its zero
// fields, or, if that is not valid, the default policy as a whole, so that a
// decision never breaks its promises (a Wait in (0, MaxSleep]) whatever the
// policy. Check Validate where a policy is configured.
func (p Policy) effective() Policy {
	if p.Validate() != nil {
		return Policy{}.withDefaults()
	}
	return p.withDefaults()
}

// RenewAt returns when a certificate valid from notBefore to notAfter is due
// for renewal:
//
//	notBefore + lifetime*(Fraction - Jitter*rnd)
//
// where lifetime is notAfter-notBefore and rnd, a random draw in [0, 1), is
// chosen once per certificate so the time is stable. With the default policy
// a 24h certificate is due between 14.8h (rnd near 1) and 16h (rnd 0) after
// notBefore. An rnd outside [0, 1) is clamped into [0, 1]; a lifetime that is
// not positive gives notBefore. An invalid policy is replaced by the defaults
// (see Validate).
func (p Policy) RenewAt(notBefore, notAfter time.Time, rnd float64) time.Time {
	p = p.effective()
	lifetime := notAfter.Sub(notBefore)
	if lifetime <= 0 {
		return notBefore
	}
	f := p.Fraction - p.Jitter*clamp01(rnd)
	return notBefore.Add(time.Duration(math.Round(float64(lifetime) * f)))
}

// Backoff returns how long to wait after the given number of consecutive
// failures before trying again: the base delay MinBackoff doubles with each
// failure after the first and is capped at MaxBackoff, and the result is the
// base's upper half spread by rnd ("equal jitter"): base/2 + base/2*rnd. So
// it is always within [MinBackoff/2, MaxBackoff], and hosts that fail
// together retry apart. failures <= 0 gives 0. An rnd outside [0, 1) is
// clamped into [0, 1]; an invalid policy is replaced by the defaults.
func (p Policy) Backoff(failures int, rnd float64) time.Duration {
	if failures <= 0 {
		return 0
	}
	p = p.effective()
	base := p.MinBackoff
	for i := 1; i < failures && base < p.MaxBackoff; i++ {
		if base > p.MaxBackoff/2 {
			base = p.MaxBackoff
			break
		}
		base *= 2
	}
	base = min(base, p.MaxBackoff)
	half := base / 2
	// min: float64(half) may round up, and base-half+half must not overflow.
	return base - half + min(time.Duration(float64(half)*clamp01(rnd)), half)
}

// RetryDelay returns how long to wait after the given number of
// consecutive failures to renew a certificate that had `left` to live at
// the last failure (0 or less: none, or expired):
//
//	Backoff(failures, rnd) + Spread*left*u
//
// where u is 0 for the first failure and, from the second on, a draw in
// [0, 1) made from rnd and failures (rnd, drawn once per certificate,
// gives a different u at each failure, spread evenly across hosts).
//
// The spread is what keeps a CA outage from being followed by a storm.
// Renewals fall due all the time, so during an outage of length T a
// fleet piles up T times its renewal rate of failed renewals; if they all
// came back within MaxBackoff of the CA's return, that backlog would
// arrive at once (an hour's renewals in a few minutes: about 12 times the
// steady rate for 24h certificates). Spread over a quarter of the time
// left (two hours for a 24h certificate due at 2/3 of its life), it
// arrives over hours, under twice the steady rate after a 1-hour outage.
// The certificate does not expire meanwhile: a retry comes within a
// quarter of the time left plus MaxBackoff, so while the CA is up the
// first retry succeeds long before expiry (and Decide never schedules one
// after it). A single failure, a CA that blinked, is retried after the
// backoff alone.
func (p Policy) RetryDelay(failures int, rnd float64, left time.Duration) time.Duration {
	if failures <= 0 {
		return 0
	}
	p = p.effective()
	d := p.Backoff(failures, rnd)
	if failures < 2 || left <= 0 {
		return d
	}
	// An additive recurrence by the golden ratio: for each number of
	// failures, u is spread evenly across hosts' rnd, and it moves at
	// each failure.
	_, u := math.Modf(clamp01(rnd) + float64(failures)*0.6180339887498949)
	return d + time.Duration(p.Spread*float64(left)*u)
}

// clamp01 maps r into [0, 1]: NaN and negatives to 0, above 1 to 1.
func clamp01(r float64) float64 {
	if !(r > 0) {
		return 0
	}
	return min(r, 1)
}

// State is what the daemon knows when it decides.
type State struct {
	// NotBefore and NotAfter bound the current certificate's validity; a
	// zero NotAfter means there is no certificate.
	NotBefore, NotAfter time.Time

	// Failures counts consecutive failed renewals (or attestations) since
	// the last success; LastFailure is when the last one failed.
	Failures    int
	LastFailure time.Time

	// Rnd is a random draw in [0, 1) chosen once per certificate (say
	// rand.Float64() when it is installed), so that its renewal time, and the
	// backoff after failures to renew it, do not move between decisions.
	Rnd float64
}

// Decision is what to do now: either Renew, or sleep for Wait and decide
// again.
type Decision struct {
	// Renew says to renew now.
	Renew bool

	// Reattest, only ever set with Renew, says the certificate has expired
	// (or there is none): start over with a fresh attestation.
	Reattest bool

	// Wait, when Renew is false, is how long to sleep before deciding
	// again; always in (0, MaxSleep]. Zero when Renew is true.
	Wait time.Duration

	// At is when the certificate is (or was) due for renewal, for metrics
	// and status; zero if there is no certificate.
	At time.Time
}

// Decide says what the daemon should do at wall-clock time now (pass
// time.Now().Round(0)) in state s. The rules, in order:
//
//   - No certificate (a zero NotAfter, or a NotAfter not after NotBefore, which
//     no time falls in), or now at or after NotAfter: Renew and Reattest, unless
//     a backoff is running, in which case Wait for it.
//   - Before the certificate's due time (RenewAt with s.Rnd): Wait until then.
//   - At or after the due time: Renew, unless a backoff is running, in which
//     case Wait for it.
//
// A backoff runs after Failures > 0 from LastFailure until
// LastFailure+RetryDelay(Failures, Rnd, NotAfter-LastFailure) (Backoff,
// and from the second failure a spread over part of the time the
// certificate has left), with two exceptions. A retry is never
// scheduled after the certificate expires: a failure while the certificate
// was valid backs off at most until NotAfter, and at NotAfter the daemon
// re-attests at once (further failures then back off as usual). And a
// LastFailure after now means the wall clock was stepped back since; the
// failure's time cannot be trusted and there is no backoff, rather than one
// stretched by the step.
//
// Every Wait is capped at MaxSleep, so that a daemon whose timer slept
// through a suspend, or whose wall clock jumped, looks again within MaxSleep
// and never misses a renewal. An invalid policy is replaced by the defaults
// (see Validate).
func (p Policy) Decide(now time.Time, s State) Decision {
	p = p.effective()
	now = now.Round(0)
	hasCert := !s.NotAfter.IsZero() && s.NotAfter.After(s.NotBefore)
	var d Decision
	if hasCert {
		d.At = p.RenewAt(s.NotBefore, s.NotAfter, s.Rnd)
	}
	expired := !hasCert || !now.Before(s.NotAfter)
	next := p.retryAt(now, s, hasCert)
	if !expired && d.At.After(next) {
		next = d.At
	}
	if now.Before(next) {
		d.Wait = min(next.Sub(now), p.MaxSleep)
		return d
	}
	d.Renew = true
	d.Reattest = expired
	return d
}

// retryAt returns when the backoff after s's failures ends (see Decide); the
// zero time if there is none.
func (p Policy) retryAt(now time.Time, s State, hasCert bool) time.Time {
	if s.Failures <= 0 {
		return time.Time{}
	}
	last := s.LastFailure.Round(0)
	if now.Before(last) {
		return time.Time{}
	}
	var left time.Duration
	if hasCert {
		left = s.NotAfter.Sub(last)
	}
	end := last.Add(p.RetryDelay(s.Failures, s.Rnd, left))
	if hasCert && last.Before(s.NotAfter) && end.After(s.NotAfter) {
		end = s.NotAfter
	}
	return end
}

// Sleep waits for d, or until ctx is done, whichever comes first. It returns
// nil after d, ctx.Err() if ctx is done first (or already). after makes the
// timer (time.After, or a fake in tests; nil means time.After); a d that is
// not positive returns at once.
func Sleep(ctx context.Context, d time.Duration, after func(time.Duration) <-chan time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	if after == nil {
		after = time.After
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-after(d):
		return nil
	}
}
