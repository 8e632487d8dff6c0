package hostd

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watch puts back managed files that someone else changed or deleted,
// within seconds (fsnotify on their directories, and a sweep every
// Interval in case an event was missed), and reports config file changes.
type Watch struct {
	Files    *Files
	Report   *Reporter
	Interval time.Duration // sweep; default 30s
	// Dirs to watch (the managed files' directories).
	Dirs []string
	// ConfigFile, if set, triggers ConfigChanged when written.
	ConfigFile    string
	ConfigChanged func()
}

// Run watches until ctx is done.
func (w *Watch) Run(ctx context.Context) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	defer fw.Close()
	dirs := map[string]bool{}
	for _, d := range w.Dirs {
		dirs[d] = true
	}
	if w.ConfigFile != "" {
		dirs[filepath.Dir(w.ConfigFile)] = true
	}
	for d := range dirs {
		if err := fw.Add(d); err != nil {
			w.Report.Failure(TaskWatch, fmt.Errorf("watch %s: %w", d, err))
		}
	}
	interval := w.Interval
	if interval <= 0 {
		interval = 30 * time.Second
	}
	sweep := time.NewTicker(interval)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-fw.Events:
			if w.ConfigFile != "" && filepath.Clean(ev.Name) == filepath.Clean(w.ConfigFile) && ev.Has(fsnotify.Write|fsnotify.Create) {
				if w.ConfigChanged != nil {
					w.ConfigChanged()
				}
				continue
			}
			w.restore(ev.Name)
		case err := <-fw.Errors:
			w.Report.Failure(TaskWatch, fmt.Errorf("watch: %w", err))
		case <-sweep.C:
			for _, p := range w.Files.Paths() {
				w.restore(p)
			}
		}
	}
}

func (w *Watch) restore(path string) {
	done, err := w.Files.Restore(path)
	switch {
	case err != nil:
		w.Report.Failure(TaskWatch, err)
	case done:
		w.Report.M.FilesRestored.WithLabelValues(path).Inc()
		w.Report.Log.Warn("managed file changed or deleted by someone else: put back", "file", path)
		w.Report.update(func(d *StatusData) { d.Restored[path]++ })
		w.Report.Success(TaskWatch)
	}
}
