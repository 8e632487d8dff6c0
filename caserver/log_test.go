package caserver_test

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/devid-ssh/devid/caserver/catest"
)

// records is a slog handler that sends every record to a channel.
type records chan slog.Record

func (c records) Enabled(context.Context, slog.Level) bool { return true }
func (c records) Handle(_ context.Context, r slog.Record) error {
	c <- r.Clone()
	return nil
}
func (c records) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c records) WithGroup(string) slog.Handler      { return c }

// nextRequest returns the next access-log record for path.
func (c records) nextRequest(t *testing.T, path string) slog.Record {
	t.Helper()
	timeout := time.After(30 * time.Second) // bounds a hang only
	for {
		select {
		case r := <-c:
			if r.Message != "request" {
				continue
			}
			var p string
			r.Attrs(func(a slog.Attr) bool {
				if a.Key == "path" {
					p = a.Value.String()
				}
				return true
			})
			if p == path {
				return r
			}
		case <-timeout:
			t.Fatalf("no access-log record for %s", path)
		}
	}
}

// TestKRLPollLogLevel: hosts long-poll the KRL all the time; a routine poll
// (200 or 304) is logged at debug level, a refused one still at warn, and
// other requests still at info.
func TestKRLPollLogLevel(t *testing.T) {
	recs := make(records, 1000)
	ca := catest.StartLogged(t, nil, slog.New(recs))
	version := strconv.FormatUint(ca.Server.PublishedKRL().Version, 10)
	for _, c := range []struct {
		path, query string
		code        int
		level       slog.Level
	}{
		{"/devid/v1/krl", "", http.StatusOK, slog.LevelDebug},
		{"/devid/v1/krl", "?after=" + version + "&wait=10ms", http.StatusNotModified, slog.LevelDebug},
		{"/devid/v1/krl", "?after=x", http.StatusBadRequest, slog.LevelWarn},
		{"/health", "", http.StatusOK, slog.LevelInfo},
	} {
		code, body, err := get(t, ca.TLSConfig(nil), ca.URL+c.path+c.query)
		if err != nil || code != c.code {
			t.Fatalf("GET %s%s: HTTP %d %v %s, want %d", c.path, c.query, code, err, body, c.code)
		}
		if r := recs.nextRequest(t, c.path); r.Level != c.level {
			t.Errorf("GET %s%s (HTTP %d) logged at %v, want %v", c.path, c.query, code, r.Level, c.level)
		}
	}
}
