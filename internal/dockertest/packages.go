package dockertest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/internal/gobuild"
)

// Packages returns a new directory of t's holding devid's packages for
// Debian, built from this checkout, and contrib/compose/install-devid.sh,
// which installs them: what Install copies into a container, and what
// contrib/compose's Dockerfiles install from. The test package's TestMain
// must run gobuild.Run (see package gobuild).
func Packages(t testing.TB) string {
	t.Helper()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := stagePackages(root, dir); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(filepath.Join(root, "contrib", "compose", "install-devid.sh"), filepath.Join(dir, "install-devid.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// stagePackages puts devid's packages in dir. Until package
// packaging/pkgbuild makes .deb files, it lays out the files the packages
// will hold, per package, in dir/root-PACKAGE/ (install-devid.sh copies
// them); the day it does, this is the one function to change:
// pkgbuild.Build's .deb files into dir, and install-devid.sh runs dpkg -i.
func stagePackages(root, dir string) error {
	type file struct {
		from string // a command's package (built), or a file of the module
		to   string
		mode os.FileMode
	}
	const cmd = "github.com/devid-ssh/devid/cmd/"
	packages := map[string][]file{
		"devid-host": {
			{cmd + "devid-hostd", "usr/bin/devid-hostd", 0o755},
			{cmd + "devid", "usr/bin/devid", 0o755},
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
			{cmd + "devid", "usr/bin/devid", 0o755},
		},
		"devid-agent": {
			{cmd + "devid-agent", "usr/bin/devid-agent", 0o755},
			{"packaging/user/devid-agent.service", "usr/lib/systemd/user/devid-agent.service", 0o644},
			{"packaging/user/devid-agent.socket", "usr/lib/systemd/user/devid-agent.socket", 0o644},
		},
	}
	sysusers := "u devid-principals - \"devid-principals (sshd's AuthorizedPrincipalsCommandUser)\" / /usr/sbin/nologin\n"
	var errs []error
	for pkg, files := range packages {
		pkgRoot := filepath.Join(dir, "root-"+pkg)
		for _, f := range files {
			from := filepath.Join(root, filepath.FromSlash(f.from))
			if strings.HasPrefix(f.from, cmd) {
				var err error
				if from, err = gobuild.Build(f.from); err != nil {
					errs = append(errs, err)
					continue
				}
			}
			errs = append(errs, copyFile(from, filepath.Join(pkgRoot, filepath.FromSlash(f.to)), f.mode))
		}
		if pkg == "devid-host" {
			f := filepath.Join(pkgRoot, "usr", "lib", "sysusers.d", "devid-host.conf")
			errs = append(errs, os.MkdirAll(filepath.Dir(f), 0o755), os.WriteFile(f, []byte(sysusers), 0o644))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dockertest: staging devid's packages: %w", err)
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
			return "", errors.New("dockertest: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Install copies the packages in dir (from Packages) into the running
// container and installs those named (devid-host, devid-ca, devid-agent)
// with install-devid.sh. It fails t if they do not install.
func Install(t testing.TB, container, dir string, packages ...string) {
	t.Helper()
	Run(t, "cp", dir+"/.", container+":/tmp/devid-packages")
	Run(t, append([]string{"exec", container, "sh", "/tmp/devid-packages/install-devid.sh", "/tmp/devid-packages"}, packages...)...)
	Run(t, "exec", container, "rm", "-rf", "/tmp/devid-packages")
}
