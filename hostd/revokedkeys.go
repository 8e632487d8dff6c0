package hostd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/devid-ssh/devid/krl"
	"github.com/devid-ssh/devid/krldist"
	"github.com/devid-ssh/devid/renew"
	"github.com/prometheus/client_golang/prometheus"
)

// RevokedKeysConfig configures the RevokedKeys task.
type RevokedKeysConfig struct {
	CAURL string
	HTTP  *http.Client // trusts only the pinned root; no overall timeout
	// File is sshd's RevokedKeys.
	File  string
	Wait  time.Duration // long-poll; default 55s
	Files *Files
	// CAKeys is the last good set of the CA's user CA keys, kept by the
	// TrustedUserCAKeys task. A KRL is verified against it; /ssh/roots is
	// fetched only when it is empty or does not verify the KRL (a rotated
	// key). Nil: fetch them for every KRL.
	CAKeys *CAKeys
	// MinInterval is the least time from the start of one poll to the
	// start of the next; default 1s.
	MinInterval time.Duration
	// Rand draws the back-off jitter in [0, 1); default math/rand/v2's
	// Float64.
	Rand func() float64
	// Installed, if set, is given every KRL the task installs, once the
	// file holds it, and at Prepare the one in place: devid-agent checks
	// its own certificate against it. It must not block.
	Installed func(*krl.KRL)
	TaskOptions
}

// RevokedKeys keeps sshd's RevokedKeys file equal to the CA's KRL. It
// waits for new versions (long-poll), and installs one only if its
// signature verifies with the CA's user CA key, its version is newer than
// the installed one, and it decodes; on any failure the last good file
// stays. sshd is never without the file once the task exists: Prepare
// first writes a valid empty KRL if there is none.
//
// A poll that fails backs off exponentially with full jitter (Rand; see
// krlRetry). Every
// poll, whatever its answer, starts at least MinInterval after the one
// before; a 304 that comes back before half of Wait is an early answer (a
// CA or load balancer that does not hold the long-poll): it is not a
// success, it is counted (devid_krl_early_answers_total), and repeated
// early answers back off, with jitter, up to Wait.
type RevokedKeys struct {
	c   RevokedKeysConfig
	log *slog.Logger
	h   *health

	version, generated          prometheus.Gauge
	fetchFailures, earlyAnswers prometheus.Counter

	mu       sync.Mutex
	prepared bool
	cur      uint64    // version of the KRL in place
	built    time.Time // when the CA built it
}

// RevokedKeysStatus is a snapshot of the task.
type RevokedKeysStatus struct {
	// Version and Generated describe the KRL in the file.
	Version   uint64
	Generated time.Time
	Task      TaskStatus
}

// NewRevokedKeys returns the task, its metrics registered.
func NewRevokedKeys(c RevokedKeysConfig) *RevokedKeys {
	c.TaskOptions = c.TaskOptions.withDefaults()
	if c.Wait <= 0 {
		c.Wait = 55 * time.Second
	}
	if c.MinInterval <= 0 {
		c.MinInterval = time.Second
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	reg := c.Registerer
	return &RevokedKeys{c: c, log: c.Log, h: newHealth(TaskKRL, c.TaskOptions),
		version: gauge(reg, "devid_krl_version", "Version of the KRL in RevokedKeys."),
		generated: gauge(reg, "devid_krl_generated_seconds",
			"When the CA built the KRL in RevokedKeys, Unix time (its age: time() minus this)."),
		fetchFailures: counter(reg, "devid_krl_fetch_failures_total",
			"Failed KRL fetches (unreachable CA, bad signature, older version, undecodable KRL)."),
		earlyAnswers: counter(reg, "devid_krl_early_answers_total",
			"KRL long-polls answered 304 at once instead of being held (a CA or load balancer not holding the request); each backs off."),
	}
}

// Name is the task's name.
func (k *RevokedKeys) Name() string { return TaskKRL }

// Status returns a snapshot.
func (k *RevokedKeys) Status() RevokedKeysStatus {
	k.mu.Lock()
	defer k.mu.Unlock()
	return RevokedKeysStatus{Version: k.cur, Generated: k.built, Task: k.h.status()}
}

// Prepare makes sure the file is there (an empty KRL if there was none)
// and reads its version. The daemon calls it before starting any task, so
// that sshd never finds RevokedKeys missing; Run calls it if nobody did.
func (k *RevokedKeys) Prepare() error {
	if _, err := k.installed(); err != nil {
		return err
	}
	k.mu.Lock()
	k.prepared = true
	k.mu.Unlock()
	return nil
}

// Run keeps the file current until ctx is done.
func (k *RevokedKeys) Run(ctx context.Context) error {
	k.mu.Lock()
	prepared := k.prepared
	k.mu.Unlock()
	if !prepared {
		if err := k.Prepare(); err != nil {
			return err
		}
	}
	cur := k.Status().Version
	wait, floor, draw := k.c.Wait, k.c.MinInterval, k.c.Rand
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
			k.earlyAnswers.Inc()
			pause = earlyPolicy.Backoff(early, draw())
			if early == 1 {
				k.log.Warn("the CA answered the KRL long-poll at once (304 without waiting): backing off",
					"wait", wait, "next_poll_in", pause)
			}
		case errors.Is(err, krldist.ErrNotModified):
			failures, early = 0, 0
			k.h.ok() // the CA answered: nothing new
		case err != nil:
			failures, early = failures+1, 0
			k.fetchFailures.Inc()
			k.h.fail(fmt.Errorf("KRL: keeping version %d: %w", cur, err))
			pause = krlRetry(failures, draw())
		default:
			failures, early = 0, 0
			cur = next
			k.h.ok()
		}
		pause = max(pause, floor-time.Since(start))
		if renew.Sleep(ctx, pause, time.After) != nil {
			return nil
		}
	}
	return nil
}

// krlFailPolicy is the base of the back-off after failed polls: 5 s,
// doubling to 2 minutes.
var krlFailPolicy = renew.Policy{MaxBackoff: 2 * time.Minute}

// krlRetry is the pause after the given number of consecutive failed
// polls: a draw rnd in [0, 1) of the back-off's base ("full jitter": the
// whole of [0, base], not its upper half). When the CA comes back after an
// outage, the fleet's polls come back spread evenly over the 2 minutes
// rather than crowded into the last minute, and while it is down a host
// polls every minute on average, about its rate with a long-poll held for
// 55 s: an outage does not raise the KRL request rate (see
// TestOutageStorm).
func krlRetry(failures int, rnd float64) time.Duration {
	return time.Duration(min(max(rnd, 0), 1) * float64(krlFailPolicy.Backoff(failures, 1)))
}

// installed returns the version of the KRL in place, writing an empty one
// (version 0) if there is none.
func (k *RevokedKeys) installed() (uint64, error) {
	b, err := os.ReadFile(k.c.File)
	if errors.Is(err, os.ErrNotExist) {
		empty, err := (&krl.KRL{}).Marshal()
		if err != nil {
			return 0, err
		}
		if err := k.c.Files.Write(k.c.File, empty, 0o644); err != nil {
			return 0, err
		}
		k.log.Info("wrote an empty KRL: sshd must never be without RevokedKeys", "file", k.c.File)
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("KRL: %w", err)
	}
	parsed, err := krl.Parse(b)
	if err != nil {
		// Not ours to fix by guessing: report it, and let the next good
		// KRL from the CA replace it.
		k.h.fail(fmt.Errorf("KRL: the installed %s does not decode: %w", k.c.File, err))
		return 0, nil
	}
	k.c.Files.remember(k.c.File, b, 0o644)
	k.publish(parsed.Version, parsed.Generated)
	if k.c.Installed != nil {
		k.c.Installed(parsed)
	}
	return parsed.Version, nil
}

// fetch gets, checks and installs a KRL newer than cur.
func (k *RevokedKeys) fetch(ctx context.Context, cur uint64, wait time.Duration) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, wait+30*time.Second)
	defer cancel()
	got, err := krldist.Fetch(ctx, k.c.HTTP, k.c.CAURL, cur, wait)
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
	if err := k.c.Files.Write(k.c.File, got.Body, 0o644); err != nil {
		return cur, err
	}
	k.publish(got.Version, got.Generated)
	k.log.Info("KRL installed", "file", k.c.File, "version", got.Version, "bytes", len(got.Body))
	if k.c.Installed != nil {
		k.c.Installed(parsed)
	}
	return got.Version, nil
}

// verify checks got's signature with the last good user CA keys and, only
// if there are none or they do not verify it, with the keys /ssh/roots
// gives now: a broken /ssh/roots does not hold up KRLs, and a rotated user
// CA key does not either.
func (k *RevokedKeys) verify(ctx context.Context, got *krldist.Signed) error {
	var known error = errors.New("no user CA keys known yet")
	if keys := k.c.CAKeys.Get(); len(keys) > 0 {
		if known = krldist.Verify(got.Version, got.Body, got.Signature, keys); known == nil {
			return nil
		}
	}
	fresh, err := fetchUserCAKeys(ctx, k.c.HTTP, k.c.CAURL)
	if err != nil {
		return fmt.Errorf("KRL signature: %v; and %w", known, err)
	}
	return krldist.Verify(got.Version, got.Body, got.Signature, fresh)
}

func (k *RevokedKeys) publish(version uint64, generated time.Time) {
	k.version.Set(float64(version))
	if !generated.IsZero() {
		k.generated.Set(float64(generated.Unix()))
	}
	k.mu.Lock()
	k.cur, k.built = version, generated
	k.mu.Unlock()
	if k.c.Changed != nil {
		k.c.Changed()
	}
}
