package hostd

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/devid-ssh/devid/internal/atomicfile"
)

// Files writes the files sshd reads, whole (temporary file, fsync, rename,
// fsync of the directory), and remembers what it wrote so that Watch can
// put a file back.
type Files struct {
	mu    sync.Mutex
	files map[string]managed
}

type managed struct {
	data []byte
	perm os.FileMode
}

// NewFiles returns an empty set of managed files.
func NewFiles() *Files { return &Files{files: map[string]managed{}} }

// Write replaces path with data, creating its directory (0755) if needed,
// and manages it from now on.
func (f *Files) Write(path string, data []byte, perm os.FileMode) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("hostd: %w", err)
	}
	if err := atomicfile.WriteFile(path, data, perm); err != nil {
		return fmt.Errorf("hostd: %w", err)
	}
	f.files[path] = managed{bytes.Clone(data), perm}
	return nil
}

// WriteChecked replaces path with data, as Write does, and then runs check.
// If check fails, the file is put back as it was (or removed, if there was
// none) and what is remembered for path stays what it was before: the last
// good content, or nothing, so that Watch never brings back content check
// refused. It returns check's error, joined with any error putting back.
func (f *Files) WriteChecked(path string, data []byte, perm os.FileMode, check func() error) error {
	old, oldErr := os.ReadFile(path)
	if oldErr != nil && !errors.Is(oldErr, fs.ErrNotExist) {
		return fmt.Errorf("hostd: %w", oldErr)
	}
	f.mu.Lock()
	prev, had := f.files[path]
	f.mu.Unlock()
	if err := f.Write(path, data, perm); err != nil {
		return err
	}
	err := check()
	if err == nil {
		return nil
	}
	// Under the lock: Restore must not see the file put back while the
	// refused content is still remembered.
	f.mu.Lock()
	defer f.mu.Unlock()
	var rerr error
	if oldErr == nil {
		rerr = atomicfile.WriteFile(path, old, perm)
	} else if rerr = os.Remove(path); errors.Is(rerr, fs.ErrNotExist) {
		rerr = nil
	}
	if had {
		f.files[path] = prev
	} else {
		delete(f.files, path)
	}
	if rerr != nil {
		return errors.Join(err, fmt.Errorf("hostd: put back %s: %w", path, rerr))
	}
	return err
}

// Restore puts path back if it is managed and its content differs from
// what was written. It reports whether it did.
func (f *Files) Restore(path string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.files[path]
	if !ok {
		return false, nil
	}
	cur, err := os.ReadFile(path)
	if err == nil && bytes.Equal(cur, m.data) {
		return false, nil
	}
	if err := atomicfile.WriteFile(path, m.data, m.perm); err != nil {
		return false, fmt.Errorf("hostd: restore %s: %w", path, err)
	}
	return true, nil
}

// Paths lists the managed files.
func (f *Files) Paths() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.files))
	for p := range f.files {
		out = append(out, p)
	}
	return out
}

// remember manages path with data, already in place.
func (f *Files) remember(path string, data []byte, perm os.FileMode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files[path] = managed{bytes.Clone(data), perm}
}
