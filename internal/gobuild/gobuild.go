// Package gobuild builds the programs tests run as separate processes: a
// main package is built once per test binary, with `go build -trimpath` as
// the Makefile builds it, into a temporary directory that Run removes when
// the tests end. It is the one "build a binary from a test" helper of devid.
//
// A test package that uses it runs its tests through Run:
//
//	func TestMain(m *testing.M) { os.Exit(gobuild.Run(m)) }
//
//	func TestSomething(t *testing.T) {
//		bin := gobuild.Binary(t, "github.com/devid-ssh/devid/cmd/devid-hostd")
//		…
//	}
//
// A package is named by its import path (built in the main module of the
// test's working directory), or by a directory: an absolute path, or one
// starting with "." relative to the test's working directory, built there,
// so a directory holding a module of its own builds with that module.
//
// Binary builds for one test (and fails it if the build fails); Dir links
// several programs into one directory, as a bin/ for scripts and the demo;
// Build is the same outside a test, for a TestMain.
//
// Safe for parallel tests: concurrent calls for one package wait for a single
// build, and a failed build is reported to every caller without being tried
// again.
package gobuild

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// The builds of this test binary.
var (
	mu     sync.Mutex
	dir    string                // the binaries' directory; "" until the first build
	builds = map[string]*build{} // by resolved package (see resolve)
	// running is set while Run runs the tests: Binary refuses to build
	// anything Run will not remove.
	running atomic.Bool
)

// build is one package's build, done once.
type build struct {
	done chan struct{} // closed when path and err are set
	path string
	err  error
}

// Run runs the tests, then removes every binary Build, Binary and Dir
// built, and returns m.Run's exit code.
func Run(m *testing.M) int {
	running.Store(true)
	code := m.Run()
	running.Store(false)
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		os.RemoveAll(dir)
	}
	dir, builds = "", map[string]*build{}
	return code
}

// Binary returns the path of pkg's program, built as Build builds it, or
// fails t. It must run under Run (see the package documentation).
func Binary(t testing.TB, pkg string) string {
	t.Helper()
	if !running.Load() {
		t.Fatalf("gobuild: Binary(%q) outside gobuild.Run: the test package's TestMain must call os.Exit(gobuild.Run(m))", pkg)
	}
	path, err := Build(pkg)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// Dir returns a new directory of t's holding the programs of pkgs, each
// under its command's name (the last element of its path), as `make build`
// leaves them in bin/: symbolic links to binaries built as Build builds
// them, in parallel. It must run under Run.
func Dir(t testing.TB, pkgs ...string) string {
	t.Helper()
	if !running.Load() {
		t.Fatalf("gobuild: Dir outside gobuild.Run: the test package's TestMain must call os.Exit(gobuild.Run(m))")
	}
	paths, errs := make([]string, len(pkgs)), make([]error, len(pkgs))
	var wg sync.WaitGroup
	for i, pkg := range pkgs {
		wg.Go(func() { paths[i], errs[i] = Build(pkg) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	for _, p := range paths {
		link := filepath.Join(bin, filepath.Base(p))
		if _, err := os.Lstat(link); err == nil {
			t.Fatalf("gobuild: Dir: two of %q are named %s", pkgs, filepath.Base(p))
		}
		if err := os.Symlink(p, link); err != nil {
			t.Fatalf("gobuild: %v", err)
		}
	}
	return bin
}

// Build builds pkg's program with `go build -trimpath`, unless this test
// binary built it already, and returns its path. The binary is removed when
// Run returns; a TestMain may call Build before it calls Run.
func Build(pkg string) (string, error) {
	key, workDir, target, err := resolve(pkg)
	if err != nil {
		return "", err
	}
	mu.Lock()
	if b, ok := builds[key]; ok {
		mu.Unlock()
		<-b.done
		return b.path, b.err
	}
	b := &build{done: make(chan struct{})}
	builds[key] = b
	out, err := newOutDir(len(builds))
	mu.Unlock()
	defer close(b.done)
	if err != nil {
		b.err = err
		return "", err
	}
	name := filepath.Base(strings.TrimSuffix(key, "/"))
	b.path, b.err = goBuild(workDir, target, filepath.Join(out, name))
	if b.err != nil {
		b.path = ""
		mu.Lock()
		os.RemoveAll(out)
		// The directory of a TestMain whose only build failed, and
		// which will not reach Run, is not left behind.
		if os.Remove(dir) == nil {
			dir = ""
		}
		mu.Unlock()
	}
	return b.path, b.err
}

// resolve returns pkg's cache key, the directory to run go build in, and
// the package argument to give it.
func resolve(pkg string) (key, workDir, target string, err error) {
	if pkg == "" {
		return "", "", "", errors.New("gobuild: no package")
	}
	if !filepath.IsAbs(pkg) && pkg != "." && !strings.HasPrefix(pkg, "./") && !strings.HasPrefix(pkg, "../") {
		return pkg, "", pkg, nil // an import path
	}
	abs, err := filepath.Abs(pkg)
	if err != nil {
		return "", "", "", fmt.Errorf("gobuild: %w", err)
	}
	return abs, abs, ".", nil
}

// newOutDir makes the directory for the n-th build. mu is held.
func newOutDir(n int) (string, error) {
	if dir == "" {
		d, err := os.MkdirTemp("", "devid-gobuild-")
		if err != nil {
			return "", fmt.Errorf("gobuild: %w", err)
		}
		dir = d
	}
	out := filepath.Join(dir, strconv.Itoa(n))
	if err := os.Mkdir(out, 0o755); err != nil {
		return "", fmt.Errorf("gobuild: %w", err)
	}
	return out, nil
}

// goBuild runs go build in workDir ("" for the current directory).
func goBuild(workDir, target, out string) (string, error) {
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, target)
	cmd.Dir = workDir
	if b, err := cmd.CombinedOutput(); err != nil {
		where := ""
		if workDir != "" {
			where = " in " + workDir
		}
		return "", fmt.Errorf("gobuild: go build -trimpath -o %s %s%s: %v\n%s", out, target, where, err, bytes.TrimSpace(b))
	}
	return out, nil
}
