package adminapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// BackupPath is GET: a consistent copy of the CA's embedded (bbolt) store,
// taken while it serves (application/octet-stream, with Content-Length).
// 501 when the store is PostgreSQL (use pg_dump).
const BackupPath = Prefix + "backup"

// Backup writes a backup of the CA's store to w and returns its size. A
// copy cut short (fewer bytes than the CA announced) is an error. There is
// no overall timeout: ctx bounds it.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+BackupPath, nil)
	if err != nil {
		return 0, fmt.Errorf("adminapi: %w", err)
	}
	hc := *c.hc
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("adminapi: GET %s: %w", BackupPath, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e ErrorResponse
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
			if e.Error == "" {
				e.Error = resp.Status
			}
		}
		return 0, &APIError{Status: resp.StatusCode, Message: e.Error, Field: e.Field, Line: e.Line}
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("adminapi: GET %s: after %d bytes: %w", BackupPath, n, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, fmt.Errorf("adminapi: GET %s: %d bytes of %d: the copy was cut short", BackupPath, n, resp.ContentLength)
	}
	return n, nil
}
