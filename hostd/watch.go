package hostd

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
)

// WatchConfig configures the Watch task.
type WatchConfig struct {
	Files    *Files
	Interval time.Duration // sweep; default 30s
	// Dirs to watch (the managed files' directories).
	Dirs []string
	// ConfigFile, if set, triggers ConfigChanged when written.
	ConfigFile    string
	ConfigChanged func()
	TaskOptions
}

// Watch puts back managed files that someone else changed or deleted,
// within seconds (fsnotify on their directories, and a sweep every
// Interval in case an event was missed), and reports config file changes.
type Watch struct {
	c        WatchConfig
	log      *slog.Logger
	h        *health
	restored *prometheus.CounterVec

	mu     sync.Mutex
	counts map[string]int
}

// WatchStatus is a snapshot of the task.
type WatchStatus struct {
	// Restored counts, by file, the times a file was put back.
	Restored map[string]int
	Task     TaskStatus
}

// NewWatch returns the task, its metrics registered.
func NewWatch(c WatchConfig) *Watch {
	c.TaskOptions = c.TaskOptions.withDefaults()
	if c.Interval <= 0 {
		c.Interval = 30 * time.Second
	}
	return &Watch{c: c, log: c.Log, h: newHealth(TaskWatch, c.TaskOptions),
		restored: counterVec(c.Registerer, "devid_files_restored_total",
			"Managed files put back after someone else changed or deleted them.", "file"),
		counts: map[string]int{}}
}

// Name is the task's name.
func (w *Watch) Name() string { return TaskWatch }

// Status returns a snapshot.
func (w *Watch) Status() WatchStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return WatchStatus{Restored: maps.Clone(w.counts), Task: w.h.status()}
}

// Run watches until ctx is done.
func (w *Watch) Run(ctx context.Context) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	defer fw.Close()
	dirs := map[string]bool{}
	for _, d := range w.c.Dirs {
		dirs[d] = true
	}
	if w.c.ConfigFile != "" {
		dirs[filepath.Dir(w.c.ConfigFile)] = true
	}
	for d := range dirs {
		if err := fw.Add(d); err != nil {
			w.h.fail(fmt.Errorf("watch %s: %w", d, err))
		}
	}
	sweep := time.NewTicker(w.c.Interval)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-fw.Events:
			if w.c.ConfigFile != "" && filepath.Clean(ev.Name) == filepath.Clean(w.c.ConfigFile) && ev.Has(fsnotify.Write|fsnotify.Create) {
				if w.c.ConfigChanged != nil {
					w.c.ConfigChanged()
				}
				continue
			}
			w.restore(ev.Name)
		case err := <-fw.Errors:
			w.h.fail(fmt.Errorf("watch: %w", err))
		case <-sweep.C:
			for _, p := range w.c.Files.Paths() {
				w.restore(p)
			}
		}
	}
}

func (w *Watch) restore(path string) {
	done, err := w.c.Files.Restore(path)
	switch {
	case err != nil:
		w.h.fail(err)
	case done:
		w.restored.WithLabelValues(path).Inc()
		w.log.Warn("managed file changed or deleted by someone else: put back", "file", path)
		w.mu.Lock()
		w.counts[path]++
		w.mu.Unlock()
		w.h.ok()
	}
}
