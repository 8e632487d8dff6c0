package pkgbuild

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakes are the commands the maintainer scripts may run; the test puts
// stand-ins that record their arguments first, and nothing else, in PATH.
var fakes = []string{"systemctl", "systemd-sysusers", "systemd-tmpfiles", "getent", "useradd", "mkdir", "chmod", "chown"}

// runScript runs a maintainer script of the package with args, its PATH
// holding only stand-ins (without systemd-sysusers and systemd-tmpfiles
// when noSystemd), in a mount namespace whose /run is an empty tmpfs,
// holding /run/systemd/system when booted (systemd is the init). It
// returns the commands the script ran, one a line.
func runScript(t *testing.T, script string, booted, noSystemd bool, args ...string) string {
	t.Helper()
	unshare := tool(t, "unshare", "util-linux")
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	log := filepath.Join(dir, "log")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range fakes {
		if noSystemd && strings.HasPrefix(f, "systemd-") {
			continue
		}
		// getent finds no account: useradd must run.
		rc := map[bool]string{true: "2", false: "0"}[f == "getent"]
		stub := fmt.Sprintf("#!/bin/sh\necho \"${0##*/} $*\" >> %s\nexit %s\n", log, rc)
		if err := os.WriteFile(filepath.Join(bin, f), []byte(stub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	setup := `/bin/mount -t tmpfs devid-test /run || exit 125; `
	if booted {
		setup += `/bin/mkdir -p /run/systemd/system || exit 125; `
	}
	flags := "--mount"
	if os.Getuid() != 0 {
		flags = "--mount --map-root-user"
	}
	cmd := exec.Command(unshare, append(append(strings.Fields(flags), "/bin/sh", "-c", setup+`PATH=$0 exec /bin/sh "$@"`, bin, script), args...)...)
	cmd.Env = []string{"LANG=C"}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 125 || err != nil && strings.Contains(string(out), "unshare") {
		if os.Getenv("CI") == "true" {
			t.Fatalf("cannot run the script in a mount namespace (CI=true: run as root): %v\n%s", err, out)
		}
		t.Skipf("cannot run the script in a mount namespace: %v\n%s", err, out)
	}
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", script, strings.Join(args, " "), err, out)
	}
	b, err := os.ReadFile(log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// checkScripts runs pkg's postinst, prerm and postrm as dpkg and rpm call
// them, with and without systemd, and checks what they ran.
func checkScripts(t *testing.T, dir, pkg string) {
	unit := map[string]string{"devid-host": "devid-hostd.service", "devid-ca": "devid-ca.service"}[pkg]
	units := map[string]string{"devid-host": "devid-hostd.service devid-hostd.socket", "devid-ca": "devid-ca.service"}[pkg]
	user := map[string]string{"devid-host": "devid-principals", "devid-ca": "devid-ca"}[pkg]
	create := "systemd-sysusers " + pkg + ".conf\nsystemd-tmpfiles --create " + pkg + ".conf\n"
	reload := "systemctl daemon-reload\n"
	restart := "systemctl try-restart " + unit + "\n"
	stop := "systemctl stop " + units + "\n"
	disable := "systemctl --no-reload disable " + units + "\n"
	for _, c := range []struct {
		script            string
		booted, noSystemd bool
		args              []string
		want              string
	}{
		{"postinst", true, false, []string{"configure", ""}, create + reload},
		{"postinst", true, false, []string{"configure", "0.12.0"}, create + reload + restart},
		{"postinst", false, false, []string{"configure", "0.12.0"}, create},
		{"postinst", true, false, []string{"abort-upgrade", "0.12.0"}, ""},
		{"postinst", true, false, []string{"1"}, create + reload},
		{"postinst", true, false, []string{"2"}, create + reload + restart},
		{"prerm", true, false, []string{"remove"}, stop + disable},
		{"prerm", false, false, []string{"remove"}, disable},
		{"prerm", true, false, []string{"upgrade", "0.14.0"}, ""},
		{"prerm", true, false, []string{"0"}, stop + disable},
		{"prerm", true, false, []string{"1"}, ""},
		{"postrm", true, false, []string{"remove"}, reload},
		{"postrm", true, false, []string{"purge"}, reload},
		{"postrm", true, false, []string{"upgrade", "0.14.0"}, ""},
		{"postrm", true, false, []string{"0"}, reload},
		{"postrm", true, false, []string{"1"}, ""},
	} {
		got := runScript(t, filepath.Join(dir, c.script), c.booted, c.noSystemd, c.args...)
		if got != c.want {
			t.Errorf("%s %s %q (systemd running: %v): ran\n%s\nwant\n%s", pkg, c.script, c.args, c.booted, got, c.want)
		}
	}
	// Without systemd's tools, the account and directories by hand.
	got := runScript(t, filepath.Join(dir, "postinst"), false, true, "configure")
	if !strings.HasPrefix(got, "getent passwd "+user+"\nuseradd --system ") || !strings.Contains(got, " --shell /usr/sbin/nologin ") ||
		!strings.HasSuffix(strings.TrimSpace(strings.Split(got, "\n")[1]), " "+user) || !strings.Contains(got, "\nmkdir -p ") {
		t.Errorf("%s postinst configure without systemd-sysusers: ran\n%s", pkg, got)
	}
	if m := enableOrStart.FindString(got); m != "" {
		t.Errorf("%s postinst ran %q", pkg, m)
	}
}
