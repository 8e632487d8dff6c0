// Package containerpkgs stages devid's packages for Debian containers: a
// directory holding devid, devid-host, devid-ca and devid-agent, built from this
// checkout, and contrib/compose/install-devid.sh, which installs them in a
// container (dpkg -i). The container tests install from it
// (dockertest.Install), and contrib/compose's Dockerfile does (make compose
// stages it as contrib/compose/packages).
//
// Until package packaging/pkgbuild makes .deb files, the packages are
// their files laid out per package (DIR/root-PACKAGE/), which
// install-devid.sh copies to / before running systemd-sysusers as the
// packages' scripts will: [Stage] is the one function that changes when
// they come.
package containerpkgs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/internal/gobuild"
)

// stagePackages puts devid's packages in dir. Until package
// packaging/pkgbuild makes .deb files, it lays out the files the packages
// will hold, per package, in dir/root-PACKAGE/ (install-devid.sh copies
// them); the day it does, this is the one function to change:
// pkgbuild.Build's .deb files into dir, and install-devid.sh runs dpkg -i.
func stagePackages(root, dir string, build func(pkg string) (string, error)) error {
	type file struct {
		from string // a command's package (built), or a file of the module
		to   string
		mode os.FileMode
	}
	const cmd = "github.com/devid-ssh/devid/cmd/"
	// As packaging/pkgbuild will lay them out.
	packages := map[string][]file{
		"devid": {
			{cmd + "devid", "usr/bin/devid", 0o755},
		},
		"devid-host": {
			{cmd + "devid-hostd", "usr/bin/devid-hostd", 0o755},
			{cmd + "devid-principals", "usr/libexec/devid/devid-principals", 0o755},
			{"packaging/devid-hostd.service", "usr/lib/systemd/system/devid-hostd.service", 0o644},
			{"packaging/devid-hostd.socket", "usr/lib/systemd/system/devid-hostd.socket", 0o644},
			{"contrib/systemd/ssh.service.d/devid-hostkey.conf", "usr/lib/systemd/system/ssh.service.d/devid-hostkey.conf", 0o644},
			// Not enabled: sshd_config.d/devid.conf goes in once
			// devid-hostd has written /etc/ssh/devid.
			{"contrib/sshd_config.d/devid.conf", "usr/share/devid/sshd_config.d/devid.conf", 0o644},
			{"packaging/hostd.json.example", "usr/share/doc/devid-host/examples/hostd.json", 0o644},
		},
		"devid-ca": {
			{cmd + "devid-ca", "usr/bin/devid-ca", 0o755},
		},
		"devid-agent": {
			{cmd + "devid-agent", "usr/bin/devid-agent", 0o755},
			{"packaging/user/devid-agent.service", "usr/lib/systemd/user/devid-agent.service", 0o644},
			{"packaging/user/devid-agent.socket", "usr/lib/systemd/user/devid-agent.socket", 0o644},
		},
	}
	// The system users the packages' postinst scripts make
	// (systemd-sysusers).
	sysusers := map[string]string{
		"devid-host": "u devid-principals - \"devid principals helper (sshd AuthorizedPrincipalsCommandUser)\" / /usr/sbin/nologin\n",
		"devid-ca":   "u devid-ca - \"devid CA\" /var/lib/devid-ca /usr/sbin/nologin\n",
	}
	var errs []error
	for pkg, files := range packages {
		pkgRoot := filepath.Join(dir, "root-"+pkg)
		for _, f := range files {
			from := filepath.Join(root, filepath.FromSlash(f.from))
			if strings.HasPrefix(f.from, cmd) {
				var err error
				if from, err = build(f.from); err != nil {
					errs = append(errs, err)
					continue
				}
			}
			errs = append(errs, copyFile(from, filepath.Join(pkgRoot, filepath.FromSlash(f.to)), f.mode))
		}
		if users, ok := sysusers[pkg]; ok {
			f := filepath.Join(pkgRoot, "usr", "lib", "sysusers.d", pkg+".conf")
			errs = append(errs, os.MkdirAll(filepath.Dir(f), 0o755), os.WriteFile(f, []byte(users), 0o644))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("containerpkgs: staging devid's packages: %w", err)
	}
	return nil
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

// Stage puts devid's packages, built from the module in root, and
// install-devid.sh in dir. build builds a command's package (an import
// path) and returns the binary's path: GoBuild, or gobuild.Build in a test.
func Stage(root, dir string, build func(pkg string) (string, error)) error {
	if err := stagePackages(root, dir, build); err != nil {
		return err
	}
	if err := copyFile(filepath.Join(root, "contrib", "compose", "install-devid.sh"), filepath.Join(dir, "install-devid.sh"), 0o755); err != nil {
		return fmt.Errorf("containerpkgs: %w", err)
	}
	return nil
}

// ForTest stages the packages (Stage) in a new directory of t's, built
// with gobuild.Build: the test package's TestMain must run gobuild.Run.
func ForTest(t testing.TB) string {
	t.Helper()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := Stage(root, dir, gobuild.Build); err != nil {
		t.Fatal(err)
	}
	return dir
}

// GoBuild returns a build function for Stage that runs go build -trimpath
// in root, the binaries going to binDir.
func GoBuild(ctx context.Context, root, binDir string) func(pkg string) (string, error) {
	return func(pkg string) (string, error) {
		out := filepath.Join(binDir, filepath.Base(pkg))
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, pkg)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
		}
		return out, nil
	}
}
