// Package containerpkgs stages devid's packages for Debian containers: a
// directory holding the .deb files of devid, devid-host, devid-ca and
// devid-agent (package packaging/pkgbuild), built from this checkout, and
// contrib/compose/install-devid.sh, which installs them in a container
// with dpkg -i. The container tests install from it (dockertest.Install),
// and contrib/compose's Dockerfile does (make compose stages it as
// contrib/compose/packages).
package containerpkgs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/devid-ssh/devid/packaging/pkgbuild"
)

// Stage puts devid's .deb packages, built from the module in root, and
// install-devid.sh in dir. log, if not nil, gets pkgbuild's progress.
func Stage(ctx context.Context, root, dir string, log io.Writer) error {
	arts, err := pkgbuild.Build(ctx, pkgbuild.Options{Out: dir, Dir: root, Formats: []string{"deb"}, Log: log})
	if err != nil {
		return fmt.Errorf("containerpkgs: %w", err)
	}
	if len(arts) == 0 {
		return errors.New("containerpkgs: pkgbuild made no package")
	}
	if err := copyFile(filepath.Join(root, "contrib", "compose", "install-devid.sh"), filepath.Join(dir, "install-devid.sh"), 0o755); err != nil {
		return fmt.Errorf("containerpkgs: %w", err)
	}
	return nil
}

// BuildTimeout bounds Stage in a test: it only bounds a hang.
const BuildTimeout = 10 * time.Minute

// ForTest stages the packages (Stage) in a new directory of t's, or fails
// t.
func ForTest(t testing.TB) string {
	t.Helper()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), BuildTimeout)
	defer cancel()
	if err := Stage(ctx, root, dir, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

// copyFile copies from to to (making its directory) with mode.
func copyFile(from, to string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(to, mode)
}

// ModuleRoot returns the directory holding the module's go.mod, looking
// up from the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("containerpkgs: no go.mod above the working directory")
		}
		dir = parent
	}
}
