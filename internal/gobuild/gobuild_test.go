package gobuild_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/devid-ssh/devid/internal/gobuild"
)

func TestMain(m *testing.M) { os.Exit(gobuild.Run(m)) }

const hello = "github.com/devid-ssh/devid/internal/gobuild/testdata/hello"

// TestBinaryOnce: parallel callers for one package get one binary, which
// runs; by import path and by directory the same source builds, each once.
func TestBinaryOnce(t *testing.T) {
	paths := make([]string, 8)
	var wg sync.WaitGroup
	for i := range paths {
		wg.Go(func() {
			p, err := gobuild.Build(hello)
			if err != nil {
				t.Error(err)
			}
			paths[i] = p
		})
	}
	wg.Wait()
	for _, p := range paths[1:] {
		if p != paths[0] {
			t.Fatalf("one package, two binaries: %s and %s", paths[0], p)
		}
	}
	if got := gobuild.Binary(t, hello); got != paths[0] {
		t.Errorf("Binary after Build: %s, want %s", got, paths[0])
	}
	out, err := exec.Command(paths[0]).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "hello from") {
		t.Fatalf("%s: %v %q", paths[0], err, out)
	}
	if filepath.Base(paths[0]) != "hello" {
		t.Errorf("binary named %s, want hello", filepath.Base(paths[0]))
	}

	byDir := gobuild.Binary(t, "./testdata/hello")
	if byDir == paths[0] {
		t.Error("the directory's build is the import path's")
	}
	if again := gobuild.Binary(t, "./testdata/hello"); again != byDir {
		t.Errorf("the directory built twice: %s and %s", byDir, again)
	}
}

// TestBuildFails: a package that does not compile is an error naming it
// and carrying the compiler's message, for every caller.
func TestBuildFails(t *testing.T) {
	for range 2 {
		_, err := gobuild.Build("./testdata/broken")
		if err == nil || !strings.Contains(err.Error(), "testdata/broken") || !strings.Contains(err.Error(), "undefined") {
			t.Fatalf("Build of a broken package: %v", err)
		}
	}
	if _, err := gobuild.Build(""); err == nil {
		t.Error("Build of no package: no error")
	}
}

// TestDir: Dir links each program under its command's name.
func TestDir(t *testing.T) {
	bin := gobuild.Dir(t, hello)
	out, err := exec.Command(filepath.Join(bin, "hello")).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "hello from") {
		t.Fatalf("%s/hello: %v %q", bin, err, out)
	}
	if target, err := os.Readlink(filepath.Join(bin, "hello")); err != nil || target != gobuild.Binary(t, hello) {
		t.Errorf("%s/hello links to %q (%v), want the built binary", bin, target, err)
	}
}

// recordEnv makes TestRunRemoves, run again as a child, record the path of
// the binary it built in the file it names.
const recordEnv = "GOBUILD_TEST_RECORD"

// TestRunRemoves: once Run returns, the binaries built under it are gone,
// and their directory with them.
func TestRunRemoves(t *testing.T) {
	if rec := os.Getenv(recordEnv); rec != "" {
		if err := os.WriteFile(rec, []byte(gobuild.Binary(t, hello)), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	rec := filepath.Join(t.TempDir(), "path")
	cmd := exec.Command(os.Args[0], "-test.run=^TestRunRemoves$", "-test.count=1")
	cmd.Env = append(os.Environ(), recordEnv+"="+rec)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the child test binary: %v\n%s", err, out)
	}
	b, err := os.ReadFile(rec)
	if err != nil || len(b) == 0 {
		t.Fatalf("the child recorded no binary: %v", err)
	}
	built := string(b)
	for _, p := range []string{built, filepath.Dir(filepath.Dir(built))} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after Run returned: %v, want it gone", p, err)
		}
	}
}
