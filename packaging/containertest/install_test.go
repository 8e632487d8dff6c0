package containertest

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/internal/debimage"
	"github.com/devid-ssh/devid/internal/dockertest"
	"github.com/devid-ssh/devid/packaging/containerpkgs"
)

// TestInstall installs devid's four packages in a clean container of each
// image: they install, every program runs, the system accounts
// devid-principals and devid-ca exist, and sshd's configuration is as
// Debian left it (sshd_config unchanged, sshd -t passes and prints
// nothing, no devid snippet in sshd_config.d: it goes in only once
// devid-hostd has written its files).
func TestInstall(t *testing.T) {
	dockertest.Need(t)
	pkgs := containerpkgs.ForTest(t)
	for _, suite := range debimage.Suites() {
		t.Run(suite, func(t *testing.T) {
			t.Parallel()
			img := dockertest.Image(t, suite)
			c := dockertest.Start(t, "--network", "none", img, "sleep", "infinity")
			before := dockertest.Exec(t, c, "sha256sum", "/etc/ssh/sshd_config")
			dockertest.Install(t, c, pkgs, "devid", "devid-host", "devid-ca", "devid-agent")
			if out := dockertest.Exec(t, c, "dpkg-query", "-W", "-f", "${db:Status-Abbrev}${Package}\n", "devid", "devid-host", "devid-ca", "devid-agent"); strings.Count(out, "ii ") != 4 {
				t.Errorf("dpkg-query after dpkg -i:\n%s", out)
			}
			for _, prog := range []string{"devid", "devid-ca", "devid-hostd", "devid-agent", "/usr/libexec/devid/devid-principals"} {
				if out, err := dockertest.RunErr("exec", c, prog, "--version"); err != nil || !strings.HasPrefix(out, filepath.Base(prog)+" ") {
					t.Errorf("%s --version: %q, %v", prog, out, err)
				}
			}
			for _, account := range []string{"devid-principals", "devid-ca"} {
				if pw := dockertest.Exec(t, c, "getent", "passwd", account); !strings.HasSuffix(pw, ":/usr/sbin/nologin") {
					t.Errorf("%s account: %q, want a nologin shell", account, pw)
				}
			}
			if after := dockertest.Exec(t, c, "sha256sum", "/etc/ssh/sshd_config"); after != before {
				t.Errorf("sshd_config changed by the install: %s, then %s", before, after)
			}
			if ls := dockertest.Exec(t, c, "sh", "-c", "ls /etc/ssh/sshd_config.d/"); strings.Contains(ls, "devid") {
				t.Errorf("a devid snippet enabled by the install: %s", ls)
			}
			out, err := dockertest.RunErr("exec", c, "sh", "-c", "ssh-keygen -A >/dev/null && mkdir -p /run/sshd && sshd -t 2>&1")
			if err != nil || out != "" {
				t.Errorf("sshd -t after the install: %v, %q", err, out)
			}
		})
	}
}
