package hostd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"time"

	"github.com/devid-ssh/devid/krl"
	"github.com/devid-ssh/devid/krldist"
	"github.com/devid-ssh/devid/renew"
)

// KRL keeps sshd's RevokedKeys file equal to the CA's KRL. It waits for new
// versions (long-poll), and installs one only if its signature verifies
// with the CA's user CA key, its version is newer than the installed one,
// and it decodes; on any failure the last good file stays. sshd is never
// without the file once this task has started: it first writes a valid
// empty KRL if there is none.
//
// A poll that fails backs off exponentially with jitter (Rand). Every
// poll, whatever its answer, starts at least MinInterval after the one
// before; a 304 that comes back before half of Wait is an early answer (a
// CA or load balancer that does not hold the long-poll): it is not a
// success, it is counted (devid_krl_early_answers_total), and repeated
// early answers back off, with jitter, up to Wait.
type KRL struct {
	CAURL  string
	HTTP   *http.Client // trusts only the pinned root; no overall timeout
	File   string
	Wait   time.Duration // long-poll; default 55s
	Files  *Files
	Report *Reporter
	// CAKeys is the last good set of the CA's user CA keys, kept by the
	// UserCA task. A KRL is verified against it; /ssh/roots is fetched
	// only when it is empty or does not verify the KRL (a rotated key).
	// Nil: fetch them for every KRL.
	CAKeys *CAKeys
	// MinInterval is the least time from the start of one poll to the
	// start of the next; default 1s.
	MinInterval time.Duration
	// Rand draws the back-off jitter in [0, 1); default rand.Float64.
	Rand func() float64

	prepared bool
	cur      uint64 // version of the KRL in place
}

// Prepare makes sure the file is there (an empty KRL if there was none)
// and reads its version. The daemon calls it before starting any task, so
// that sshd never finds RevokedKeys missing; Run calls it if nobody did.
func (k *KRL) Prepare() error {
	cur, err := k.installed()
	if err != nil {
		return err
	}
	k.cur, k.prepared = cur, true
	return nil
}

// Run keeps the file current until ctx is done.
func (k *KRL) Run(ctx context.Context) error {
	if !k.prepared {
		if err := k.Prepare(); err != nil {
			return err
		}
	}
	cur := k.cur
	wait := k.Wait
	if wait <= 0 {
		wait = 55 * time.Second
	}
	floor := k.MinInterval
	if floor <= 0 {
		floor = time.Second
	}
	draw := k.Rand
	if draw == nil {
		draw = rand.Float64
	}
	failPolicy := renew.Policy{MaxBackoff: time.Minute}
	earlyPolicy := renew.Policy{MinBackoff: 2 * time.Second, MaxBackoff: max(wait, 2*time.Second)}
	failures, early := 0, 0
	for ctx.Err() == nil {
		start := time.Now() // monotonic: elapsed times, not dates
		next, err := k.fetch(ctx, cur, wait)
		var pause time.Duration
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, krldist.ErrNotModified) && time.Since(start) < wait/2:
			// Not held: a CA (or something in front of it) answering at
			// once. Back off; not a success, so that DevidKRLStale fires
			// if it goes on.
			failures = 0
			early++
			k.Report.M.KRLEarlyAnswers.Inc()
			pause = earlyPolicy.Backoff(early, draw())
			if early == 1 {
				k.Report.Log.Warn("the CA answered the KRL long-poll at once (304 without waiting): backing off",
					"wait", wait, "next_poll_in", pause)
			}
		case errors.Is(err, krldist.ErrNotModified):
			failures, early = 0, 0
			k.Report.Success(TaskKRL) // the CA answered: nothing new
		case err != nil:
			failures, early = failures+1, 0
			k.Report.M.KRLFetchFailures.Inc()
			k.Report.Failure(TaskKRL, fmt.Errorf("KRL: keeping version %d: %w", cur, err))
			pause = failPolicy.Backoff(failures, draw())
		default:
			failures, early = 0, 0
			cur = next
			k.Report.Success(TaskKRL)
		}
		pause = max(pause, floor-time.Since(start))
		if renew.Sleep(ctx, pause, time.After) != nil {
			return nil
		}
	}
	return nil
}

// installed returns the version of the KRL in place, writing an empty one
// (version 0) if there is none.
func (k *KRL) installed() (uint64, error) {
	b, err := os.ReadFile(k.File)
	if errors.Is(err, os.ErrNotExist) {
		empty, err := (&krl.KRL{}).Marshal()
		if err != nil {
			return 0, err
		}
		if err := k.Files.Write(k.File, empty, 0o644); err != nil {
			return 0, err
		}
		k.Report.Log.Info("wrote an empty KRL: sshd must never be without RevokedKeys", "file", k.File)
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("KRL: %w", err)
	}
	parsed, err := krl.Parse(b)
	if err != nil {
		// Not ours to fix by guessing: report it, and let the next good
		// KRL from the CA replace it.
		k.Report.Failure(TaskKRL, fmt.Errorf("KRL: the installed %s does not decode: %w", k.File, err))
		return 0, nil
	}
	k.Files.remember(k.File, b, 0o644)
	k.publish(parsed.Version, parsed.Generated)
	return parsed.Version, nil
}

// fetch gets, checks and installs a KRL newer than cur.
func (k *KRL) fetch(ctx context.Context, cur uint64, wait time.Duration) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, wait+30*time.Second)
	defer cancel()
	got, err := krldist.Fetch(ctx, k.HTTP, k.CAURL, cur, wait)
	if err != nil {
		return cur, err
	}
	if got.Version <= cur {
		return cur, fmt.Errorf("the CA sent version %d, not newer than the installed %d: refused", got.Version, cur)
	}
	if err := k.verify(ctx, got); err != nil {
		return cur, err
	}
	parsed, err := krl.Parse(got.Body)
	if err != nil {
		return cur, err
	}
	if parsed.Version != got.Version {
		return cur, fmt.Errorf("the KRL says version %d, its signature version %d", parsed.Version, got.Version)
	}
	if err := k.Files.Write(k.File, got.Body, 0o644); err != nil {
		return cur, err
	}
	k.publish(got.Version, got.Generated)
	k.Report.Log.Info("KRL installed", "file", k.File, "version", got.Version, "bytes", len(got.Body))
	return got.Version, nil
}

// verify checks got's signature with the last good user CA keys and, only
// if there are none or they do not verify it, with the keys /ssh/roots
// gives now: a broken /ssh/roots does not hold up KRLs, and a rotated user
// CA key does not either.
func (k *KRL) verify(ctx context.Context, got *krldist.Signed) error {
	var known error = errors.New("no user CA keys known yet")
	if keys := k.CAKeys.Get(); len(keys) > 0 {
		if known = krldist.Verify(got.Version, got.Body, got.Signature, keys); known == nil {
			return nil
		}
	}
	fresh, err := fetchUserCAKeys(ctx, k.HTTP, k.CAURL)
	if err != nil {
		return fmt.Errorf("KRL signature: %v; and %w", known, err)
	}
	return krldist.Verify(got.Version, got.Body, got.Signature, fresh)
}

func (k *KRL) publish(version uint64, generated time.Time) {
	k.Report.M.KRLVersion.Set(float64(version))
	if !generated.IsZero() {
		k.Report.M.KRLGenerated.Set(float64(generated.Unix()))
	}
	k.Report.update(func(d *StatusData) { d.KRLVersion, d.KRLGenerated = version, generated })
}
