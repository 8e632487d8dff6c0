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
	"net/http"
	"time"

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
}

// Run fetches the keys now and every Interval until ctx is done.
func (u *UserCA) Run(ctx context.Context) error {
	for {
		if err := u.Sync(ctx); ctx.Err() != nil {
			return nil
		} else if err != nil {
			u.Report.Failure(TaskUserCA, err)
		} else {
			u.Report.Success(TaskUserCA)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(u.Interval):
		}
	}
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
