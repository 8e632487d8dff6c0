package statusfile_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devid-ssh/devid/internal/statusfile"
)

type status struct{ N int64 }

// TestWriter: the file is written at start and again after a Kick, whole,
// with the latest snapshot; Run returns when its context ends.
func TestWriter(t *testing.T) {
	file := filepath.Join(t.TempDir(), "run", "status.json")
	var n atomic.Int64
	w := statusfile.New[status](file, slog.New(slog.DiscardHandler))
	written := make(chan int64, 10)
	w.Snapshot = func() status { return status{N: n.Load()} }
	w.Written = func(s status) { written <- s.N }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	read := func() status {
		t.Helper()
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var s status
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		return s
	}
	wait := func(want int64) {
		t.Helper()
		select {
		case got := <-written:
			if got != want {
				t.Fatalf("written %d, want %d", got, want)
			}
		case <-time.After(time.Minute): // bounds a hang only
			t.Fatal("nothing written")
		}
		if s := read(); s.N != want {
			t.Fatalf("file says %d, want %d", s.N, want)
		}
	}
	wait(0)
	n.Store(7)
	w.Kick()
	wait(7)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
