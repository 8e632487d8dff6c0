// Package krldist is how a KRL travels from devid-ca to hosts: the HTTP
// exchange (GET /devid/v1/krl, long-poll with ?after=VERSION) and the
// detached signature a host checks before it installs a KRL.
//
// The KRL itself is sent unsigned (OpenSSH's embedded KRL signatures are
// verified by 9.2 but skipped or refused by later releases). The response
// carries:
//
//	Devid-KRL-Version:   the KRL's version (decimal); only ever grows
//	Devid-KRL-Generated: when it was built (RFC 3339)
//	Devid-KRL-Signature: base64 of an SSH signature blob, by the CA's SSH
//	                     user CA key, over SignedData(version, KRL)
//
// It has no dependency beyond x/crypto: hosts use it.
package krldist

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"
)

// Path is where devid-ca serves the KRL.
const Path = "/devid/v1/krl"

// Header names.
const (
	HeaderVersion   = "Devid-KRL-Version"
	HeaderGenerated = "Devid-KRL-Generated"
	HeaderSignature = "Devid-KRL-Signature"
)

// SignedData is what the detached signature covers:
//
//	"devid-krl-v1\x00" || uint64 version (big-endian) || SHA-256(KRL)
func SignedData(version uint64, krl []byte) []byte {
	sum := sha256.Sum256(krl)
	b := append([]byte("devid-krl-v1\x00"), binary.BigEndian.AppendUint64(nil, version)...)
	return append(b, sum[:]...)
}

// Verify checks a KRL's detached signature against the user CA keys.
func Verify(version uint64, krl, sigBlob []byte, keys []ssh.PublicKey) error {
	var sig ssh.Signature
	if err := ssh.Unmarshal(sigBlob, &sig); err != nil {
		return fmt.Errorf("krldist: signature: %w", err)
	}
	data := SignedData(version, krl)
	for _, k := range keys {
		if k.Verify(data, &sig) == nil {
			return nil
		}
	}
	return errors.New("krldist: the KRL's signature does not verify with any user CA key")
}

// Signed is the answer Fetch got: a KRL with its version, the time it was
// built and its detached signature, not verified yet (Verify).
type Signed struct {
	Version   uint64
	Generated time.Time
	Body      []byte
	Signature []byte
}

// ErrNotModified: no newer KRL came while waiting.
var ErrNotModified = errors.New("krldist: no newer KRL")

// Fetch gets the KRL from caURL, waiting up to wait for a version newer
// than after (after 0: the current one at once). hc must trust only the
// pinned root.
func Fetch(ctx context.Context, hc *http.Client, caURL string, after uint64, wait time.Duration) (*Signed, error) {
	url := fmt.Sprintf("%s%s?after=%d&wait=%s", caURL, Path, after, wait)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("krldist: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified {
		return nil, ErrNotModified
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("krldist: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("krldist: GET %s: %s", Path, resp.Status)
	}
	k := &Signed{Body: body}
	if k.Version, err = strconv.ParseUint(resp.Header.Get(HeaderVersion), 10, 64); err != nil {
		return nil, fmt.Errorf("krldist: %s header: %w", HeaderVersion, err)
	}
	if k.Generated, err = time.Parse(time.RFC3339, resp.Header.Get(HeaderGenerated)); err != nil {
		return nil, fmt.Errorf("krldist: %s header: %w", HeaderGenerated, err)
	}
	if k.Signature, err = base64.StdEncoding.DecodeString(resp.Header.Get(HeaderSignature)); err != nil || len(k.Signature) == 0 {
		return nil, fmt.Errorf("krldist: %s header missing or not base64", HeaderSignature)
	}
	return k, nil
}

// Serve writes a KRL response.
func Serve(w http.ResponseWriter, version uint64, generated time.Time, body, sig []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set(HeaderVersion, strconv.FormatUint(version, 10))
	h.Set(HeaderGenerated, generated.UTC().Format(time.RFC3339))
	h.Set(HeaderSignature, base64.StdEncoding.EncodeToString(sig))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}
