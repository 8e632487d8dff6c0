package hostd

import (
	"context"
	"log/slog"
)

// statusWriter is the task that writes StateDir/status.json from the
// tasks' snapshots: once at start (this run's PID), then after every
// change a task reports (kick). Writes are coalesced: a burst of changes
// is one write of the latest state.
type statusWriter struct {
	dir      string
	log      *slog.Logger
	kicks    chan struct{}
	snapshot func() *StatusData
	// written, if set, is called with every snapshot written.
	written func(*StatusData)
}

func newStatusWriter(dir string, log *slog.Logger) *statusWriter {
	return &statusWriter{dir: dir, log: log, kicks: make(chan struct{}, 1)}
}

// kick asks for a write; it never blocks.
func (w *statusWriter) kick() {
	select {
	case w.kicks <- struct{}{}:
	default:
	}
}

func (w *statusWriter) Name() string { return "status" }

func (w *statusWriter) Run(ctx context.Context) error {
	for {
		s := w.snapshot()
		s.Updated = wallClock()
		if err := writeStatus(w.dir, s); err != nil {
			w.log.Warn("cannot write the status file", "dir", w.dir, "err", err)
		}
		if w.written != nil {
			w.written(s)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.kicks:
		}
	}
}
