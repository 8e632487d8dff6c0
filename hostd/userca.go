package hostd

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/devid-ssh/devid/renew"

	"golang.org/x/crypto/ssh"
)

// UserCA keeps TrustedUserCAKeys equal to the CA's SSH user CA keys.
type UserCA struct {
	CAURL    string
	HTTP     *http.Client // trusts only the pinned root
	File     string
	Interval time.Duration
	Files    *Files
	Report   *Reporter
	// CAKeys, if set, is given every good set of keys (the KRL task
	// verifies KRLs with the last one).
	CAKeys *CAKeys
	// Rand draws the back-off jitter in [0, 1); default rand.Float64.
	Rand func() float64
	// Synced, if set, is called after every successful sync: the file
	// holds the CA's keys.
	Synced func()
}

// Run fetches the keys now and every Interval until ctx is done. After a
// failure it retries with renew's exponential back-off and jitter (5 s
// doubling to 5 min, or Interval if longer), not every Interval: a fleet
// must not hammer a CA that is coming back.
func (u *UserCA) Run(ctx context.Context) error {
	draw := u.Rand
	if draw == nil {
		draw = rand.Float64
	}
	policy := renew.Policy{MaxBackoff: max(renew.DefaultMaxBackoff, u.Interval)}
	failures := 0
	for {
		wait := u.Interval
		if err := u.Sync(ctx); ctx.Err() != nil {
			return nil
		} else if err != nil {
			failures++
			wait = policy.Backoff(failures, draw())
			u.Report.Failure(TaskUserCA, fmt.Errorf("%w (attempt %d; next in %v)", err, failures, wait.Round(time.Millisecond)))
		} else {
			failures = 0
			u.Report.Success(TaskUserCA)
			if u.Synced != nil {
				u.Synced()
			}
		}
		if renew.Sleep(ctx, wait, time.After) != nil {
			return nil
		}
	}
}

// CAKeys is the last good set of the CA's SSH user CA keys, shared by the
// UserCA and KRL tasks. The zero value (and nil) holds none.
type CAKeys struct {
	mu   sync.Mutex
	keys []ssh.PublicKey
}

// Get returns the keys (none for a nil CAKeys).
func (c *CAKeys) Get() []ssh.PublicKey {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keys
}

// Set replaces the keys.
func (c *CAKeys) Set(keys []ssh.PublicKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keys = slices.Clone(keys)
}

// Load sets the keys from an installed TrustedUserCAKeys file (as UserCA
// writes it: comments and one key a line), if it holds any. It returns how
// many it found; a file that is missing or holds none changes nothing.
func (c *CAKeys) Load(file string) (int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	var keys []ssh.PublicKey
	for len(bytes.TrimSpace(b)) > 0 {
		k, _, _, rest, err := ssh.ParseAuthorizedKey(b)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", file, err)
		}
		keys = append(keys, k)
		b = rest
	}
	if len(keys) > 0 {
		c.Set(keys)
	}
	return len(keys), nil
}

// Sync fetches the user CA keys and rewrites the file if they changed. An
// empty or unparsable answer is an error, and the file stays as it was.
func (u *UserCA) Sync(ctx context.Context) error {
	keys, err := fetchUserCAKeys(ctx, u.HTTP, u.CAURL)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	buf.WriteString("# SSH user CA keys from devid-ca, written by devid-hostd: edits are undone.\n")
	for _, k := range keys {
		buf.Write(ssh.MarshalAuthorizedKey(k))
	}
	if u.CAKeys != nil {
		u.CAKeys.Set(keys)
	}
	u.Report.M.UserCAKeys.Set(float64(len(keys)))
	u.Report.update(func(d *StatusData) { d.UserCA = len(keys) })
	if cur, err := readFile(u.File); err == nil && bytes.Equal(cur, buf.Bytes()) {
		u.Files.remember(u.File, cur, 0o644)
		return nil
	}
	if err := u.Files.Write(u.File, buf.Bytes(), 0o644); err != nil {
		return err
	}
	u.Report.M.UserCAKeysChanged.Set(float64(u.Report.Now().Unix()))
	u.Report.Log.Info("TrustedUserCAKeys updated", "file", u.File, "keys", len(keys))
	return nil
}

// fetchUserCAKeys gets the CA's SSH user CA keys from /ssh/roots: at least
// one, each a valid key.
func fetchUserCAKeys(ctx context.Context, hc *http.Client, caURL string) ([]ssh.PublicKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, caURL+"/ssh/roots", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("user CA keys: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("user CA keys: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("user CA keys: %s/ssh/roots: %s", caURL, resp.Status)
	}
	var roots struct {
		UserKey []string `json:"userKey"`
	}
	if err := json.Unmarshal(body, &roots); err != nil {
		return nil, fmt.Errorf("user CA keys: %w", err)
	}
	if len(roots.UserKey) == 0 {
		return nil, errors.New("user CA keys: the CA sent none; keeping the current file")
	}
	keys := make([]ssh.PublicKey, len(roots.UserKey))
	for i, k := range roots.UserKey {
		raw, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			return nil, fmt.Errorf("user CA keys: key %d: %w", i, err)
		}
		if keys[i], err = ssh.ParsePublicKey(raw); err != nil {
			return nil, fmt.Errorf("user CA keys: key %d: %w", i, err)
		}
	}
	return keys, nil
}

// NewHTTPClient returns a client trusting only roots.
func NewHTTPClient(roots *x509.CertPool) *http.Client {
	return newPinnedClient(roots)
}
