// Package statusfile is the task that keeps a daemon's status file: JSON,
// written whole (atomicfile), from a snapshot of the daemon's tasks — once
// at start, then after every change a task reports. A burst of changes is
// one write of the latest state. `devid-hostd status` and `devid-agent
// status` read what it writes.
package statusfile

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/devid-ssh/devid/internal/atomicfile"
)

// Writer writes File from Snapshot. Set the fields before Run.
type Writer[T any] struct {
	File     string
	Log      *slog.Logger
	Snapshot func() T
	// Written, if set, is called with every snapshot written (or that
	// could not be written: the daemon's state is what it is either way).
	Written func(T)

	kicks chan struct{}
}

// New returns a Writer of file.
func New[T any](file string, log *slog.Logger) *Writer[T] {
	return &Writer[T]{File: file, Log: log, kicks: make(chan struct{}, 1)}
}

// Kick asks for a write; it never blocks.
func (w *Writer[T]) Kick() {
	select {
	case w.kicks <- struct{}{}:
	default:
	}
}

// Name is the task's name.
func (w *Writer[T]) Name() string { return "status" }

// Run writes the file now and after every Kick until ctx is done.
func (w *Writer[T]) Run(ctx context.Context) error {
	for {
		s := w.Snapshot()
		if err := Write(w.File, s); err != nil {
			w.Log.Warn("cannot write the status file", "file", w.File, "err", err)
		}
		if w.Written != nil {
			w.Written(s)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.kicks:
		}
	}
}

// Write writes v to file as indented JSON, whole, making its directory
// (0755) if it is missing.
func Write(file string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(file, append(b, '\n'), 0o644)
}
