package hostd

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/devid-ssh/devid/renew"
	"github.com/prometheus/client_golang/prometheus"

	"golang.org/x/crypto/ssh"
)

// TrustedUserCAKeysConfig configures the TrustedUserCAKeys task.
type TrustedUserCAKeysConfig struct {
	CAURL string
	HTTP  *http.Client // trusts only the pinned root
	// File is sshd's TrustedUserCAKeys.
	File string
	// KnownHosts makes the task keep an ssh client's known_hosts file
	// instead (devid-agent): the CA's SSH host CA keys, each on a
	// "@cert-authority * KEY" line, so ssh trusts the host certificates
	// the CA signs. CAKeys is not fed then.
	KnownHosts bool
	Interval   time.Duration
	Files      *Files
	// CAKeys, if set, is given every good set of keys (the RevokedKeys
	// task verifies KRLs with the last one).
	CAKeys *CAKeys
	// Rand draws the back-off jitter in [0, 1); default math/rand/v2's
	// Float64.
	Rand func() float64
	TaskOptions
}

// TrustedUserCAKeys keeps sshd's TrustedUserCAKeys equal to the CA's SSH
// user CA keys (/ssh/roots), rewriting the file when they change and never
// with nothing in it. After a failure it retries with renew's exponential
// back-off and jitter (5 s doubling to 5 min, or Interval if longer), not
// every Interval: a fleet must not hammer a CA that is coming back.
type TrustedUserCAKeys struct {
	c   TrustedUserCAKeysConfig
	log *slog.Logger
	h   *health

	keys, changedAt prometheus.Gauge

	mu sync.Mutex
	n  int // keys in the file
}

// TrustedUserCAKeysStatus is a snapshot of the task.
type TrustedUserCAKeysStatus struct {
	// Keys is how many keys the file holds (0 before the first sync, unless
	// the file held some at start).
	Keys int
	Task TaskStatus
}

// NewTrustedUserCAKeys returns the task, its metrics registered.
func NewTrustedUserCAKeys(c TrustedUserCAKeysConfig) *TrustedUserCAKeys {
	c.TaskOptions = c.TaskOptions.withDefaults()
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	name := TaskUserCA
	if c.KnownHosts {
		name = TaskKnownHosts
	}
	return &TrustedUserCAKeys{c: c, log: c.Log, h: newHealth(name, c.TaskOptions),
		keys:      gauge(c.Registerer, "devid_user_ca_keys", "User CA keys in TrustedUserCAKeys."),
		changedAt: gauge(c.Registerer, "devid_user_ca_keys_last_change_seconds", "Last change of TrustedUserCAKeys, Unix time."),
	}
}

// Name is the task's name.
func (u *TrustedUserCAKeys) Name() string {
	if u.c.KnownHosts {
		return TaskKnownHosts
	}
	return TaskUserCA
}

// Status returns a snapshot.
func (u *TrustedUserCAKeys) Status() TrustedUserCAKeysStatus {
	u.mu.Lock()
	defer u.mu.Unlock()
	return TrustedUserCAKeysStatus{Keys: u.n, Task: u.h.status()}
}

// Installed records n keys found in the file at start (CAKeys.Load): they
// count as synced until the CA says otherwise.
func (u *TrustedUserCAKeys) Installed(n int) {
	if n <= 0 {
		return
	}
	u.setKeys(n)
}

func (u *TrustedUserCAKeys) setKeys(n int) {
	u.keys.Set(float64(n))
	u.mu.Lock()
	u.n = n
	u.mu.Unlock()
	if u.c.Changed != nil {
		u.c.Changed()
	}
}

// Run fetches the keys now and every Interval until ctx is done.
func (u *TrustedUserCAKeys) Run(ctx context.Context) error {
	policy := renew.Policy{MaxBackoff: max(renew.DefaultMaxBackoff, u.c.Interval)}
	failures := 0
	for {
		wait := u.c.Interval
		if err := u.Sync(ctx); ctx.Err() != nil {
			return nil
		} else if err != nil {
			failures++
			wait = policy.Backoff(failures, u.c.Rand())
			u.h.fail(fmt.Errorf("%w (attempt %d; next in %v)", err, failures, wait.Round(time.Millisecond)))
		} else {
			failures = 0
			u.h.ok()
		}
		if renew.Sleep(ctx, wait, time.After) != nil {
			return nil
		}
	}
}

// CAKeys is the last good set of the CA's SSH user CA keys, shared by the
// TrustedUserCAKeys and RevokedKeys tasks. The zero value (and nil) holds none.
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

// Load sets the keys from an installed TrustedUserCAKeys file (as the
// TrustedUserCAKeys task writes it: comments and one key a line), if it holds any. It returns how
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
func (u *TrustedUserCAKeys) Sync(ctx context.Context) error {
	keys, err := fetchCAKeys(ctx, u.c.HTTP, u.c.CAURL, u.c.KnownHosts)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if u.c.KnownHosts {
		buf.WriteString("# SSH host CA keys from devid-ca, written by devid-agent: edits are undone.\n")
		for _, k := range keys {
			buf.WriteString("@cert-authority * ")
			buf.Write(ssh.MarshalAuthorizedKey(k))
		}
	} else {
		buf.WriteString("# SSH user CA keys from devid-ca, written by devid-hostd: edits are undone.\n")
		for _, k := range keys {
			buf.Write(ssh.MarshalAuthorizedKey(k))
		}
	}
	if u.c.CAKeys != nil && !u.c.KnownHosts {
		u.c.CAKeys.Set(keys)
	}
	if cur, err := os.ReadFile(u.c.File); err == nil && bytes.Equal(cur, buf.Bytes()) {
		u.c.Files.remember(u.c.File, cur, 0o644)
		u.setKeys(len(keys))
		return nil
	}
	if err := u.c.Files.Write(u.c.File, buf.Bytes(), 0o644); err != nil {
		return err
	}
	u.changedAt.Set(float64(u.c.Now().Unix()))
	u.setKeys(len(keys))
	u.log.Info("CA keys updated", "file", u.c.File, "keys", len(keys), "known_hosts", u.c.KnownHosts)
	return nil
}

// fetchUserCAKeys gets the CA's SSH user CA keys from /ssh/roots: at least
// one, each a valid key.
func fetchUserCAKeys(ctx context.Context, hc *http.Client, caURL string) ([]ssh.PublicKey, error) {
	return fetchCAKeys(ctx, hc, caURL, false)
}

// fetchCAKeys gets the CA's SSH user (or host) CA keys from /ssh/roots: at
// least one, each a valid key.
func fetchCAKeys(ctx context.Context, hc *http.Client, caURL string, host bool) ([]ssh.PublicKey, error) {
	what := "user CA keys"
	if host {
		what = "host CA keys"
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, caURL+"/ssh/roots", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s/ssh/roots: %s", what, caURL, resp.Status)
	}
	var roots struct {
		UserKey []string `json:"userKey"`
		HostKey []string `json:"hostKey"`
	}
	if err := json.Unmarshal(body, &roots); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	list := roots.UserKey
	if host {
		list = roots.HostKey
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("%s: the CA sent none; keeping the current file", what)
	}
	keys := make([]ssh.PublicKey, len(list))
	for i, k := range list {
		raw, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			return nil, fmt.Errorf("%s: key %d: %w", what, i, err)
		}
		if keys[i], err = ssh.ParsePublicKey(raw); err != nil {
			return nil, fmt.Errorf("%s: key %d: %w", what, i, err)
		}
	}
	return keys, nil
}

// NewHTTPClient returns a client trusting only roots.
func NewHTTPClient(roots *x509.CertPool) *http.Client {
	return newPinnedClient(roots)
}
