package hostd

import (
	"context"
	"errors"
	"fmt"
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
type KRL struct {
	CAURL  string
	HTTP   *http.Client // trusts only the pinned root; no overall timeout
	File   string
	Wait   time.Duration // long-poll; default 55s
	Files  *Files
	Report *Reporter

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
	policy := renew.Policy{MaxBackoff: time.Minute}
	failures := 0
	for ctx.Err() == nil {
		next, err := k.fetch(ctx, cur, wait)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, krldist.ErrNotModified):
			k.Report.Success(TaskKRL) // the CA answered: nothing new
			continue
		case err != nil:
			failures++
			k.Report.M.KRLFetchFailures.Inc()
			k.Report.Failure(TaskKRL, fmt.Errorf("KRL: keeping version %d: %w", cur, err))
			renew.Sleep(ctx, policy.Backoff(failures, 0.5), time.After)
			continue
		}
		failures = 0
		cur = next
		k.Report.Success(TaskKRL)
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
	keys, err := fetchUserCAKeys(ctx, k.HTTP, k.CAURL)
	if err != nil {
		return cur, err
	}
	if err := krldist.Verify(got.Version, got.Body, got.Signature, keys); err != nil {
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

func (k *KRL) publish(version uint64, generated time.Time) {
	k.Report.M.KRLVersion.Set(float64(version))
	if !generated.IsZero() {
		k.Report.M.KRLGenerated.Set(float64(generated.Unix()))
	}
	k.Report.update(func(d *StatusData) { d.KRLVersion, d.KRLGenerated = version, generated })
}
