package pkgversion

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var commit = time.Date(2026, 12, 2, 14, 56, 12, 0, time.FixedZone("CET", 3600))

func TestFromDescribe(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"v0.13.0", "0.13.0"},
		{"0.13.0", "0.13.0"},
		{"v0.13.0-dirty", "0.13.0+0.dirty"},
		{"v0.13.0-5-gabc1234", "0.13.0+5.gabc1234"},
		{"v0.13.0-5-gabc1234-dirty", "0.13.0+5.gabc1234.dirty"},
		{"v0.14.0-rc.1", "0.14.0~rc.1"},
		{"v0.14.0-rc.1-2-gabc1234", "0.14.0~rc.1+2.gabc1234"},
		{"v0.14.0-beta-2-2-gabc1234", "0.14.0~beta.2+2.gabc1234"},
		{"v1.2", "1.2"},
		{"abc1234", "0.0.0+20261202135612.gabc1234"},
		{"abc1234-dirty", "0.0.0+20261202135612.gabc1234.dirty"},
		{"1234567", "0.0.0+20261202135612.g1234567"},
	} {
		got, err := FromDescribe(c.in, commit)
		if err != nil || got != c.want {
			t.Errorf("FromDescribe(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "-dirty", "release-1", "v1.2.3 x", "v1.2.3-", "vx", "v1.2.3-rc_1", "v1.2.3.4.5"} {
		if got, err := FromDescribe(bad, commit); err == nil {
			t.Errorf("FromDescribe(%q) = %q, want an error", bad, got)
		}
	}
}

// debVersion and rpmVersion are what dpkg and rpm accept as an upstream
// version without a release: a digit first, then alphanumerics and
// . + ~ (rpm also _ and ^), no "-".
var (
	debVersion = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)
	rpmVersion = regexp.MustCompile(`^[A-Za-z0-9._+~^]+$`)
)

// TestOrder: dpkg and rpm order the versions as their commits are ordered,
// asked of the real tools where they are installed.
func TestOrder(t *testing.T) {
	ordered := []string{
		"abc1234", "abc1234-dirty", "v0.1.0", "v0.13.0-rc.1", "v0.13.0-rc.1-1-gabc1234", "v0.13.0-rc.2",
		"v0.13.0", "v0.13.0-dirty", "v0.13.0-5-gabc1234", "v0.13.0-5-gabc1234-dirty", "v0.13.0-12-gdef5678", "v0.13.1", "v1.0.0",
	}
	var vs []string
	for _, d := range ordered {
		v, err := FromDescribe(d, commit)
		if err != nil {
			t.Fatal(err)
		}
		if !debVersion.MatchString(v) || !rpmVersion.MatchString(v) {
			t.Errorf("%q -> %q: not a valid dpkg and rpm version", d, v)
		}
		vs = append(vs, v)
	}
	if dpkg, err := exec.LookPath("dpkg"); err == nil {
		for i := 1; i < len(vs); i++ {
			if out, err := exec.Command(dpkg, "--compare-versions", vs[i-1], "lt", vs[i]).CombinedOutput(); err != nil {
				t.Errorf("dpkg: %s is not before %s: %v %s", vs[i-1], vs[i], err, out)
			}
		}
	} else if os.Getenv("CI") == "true" {
		t.Fatal("dpkg not found, and CI=true")
	}
	if rpm, err := exec.LookPath("rpm"); err == nil {
		var lua strings.Builder
		for i := 1; i < len(vs); i++ {
			lua.WriteString("print(rpm.vercmp('" + vs[i-1] + "', '" + vs[i] + "') .. ' ');")
		}
		out, err := exec.Command(rpm, "--eval", "%{lua:"+lua.String()+"}").CombinedOutput()
		if err != nil {
			t.Fatalf("rpm --eval: %v %s", err, out)
		}
		for i, r := range strings.Fields(string(out)) {
			if r != "-1" {
				t.Errorf("rpm: vercmp(%s, %s) = %s, want -1", vs[i], vs[i+1], r)
			}
		}
	} else if os.Getenv("CI") == "true" {
		t.Fatal("rpm not found, and CI=true: install the Debian package rpm")
	}
}

// TestFromGit: a repository with no tag, then a tag, a commit after it and
// a change not committed.
func TestFromGit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("git not found, and CI=true")
		}
		t.Skip(err)
	}
	dir := t.TempDir()
	env := append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com",
		"GIT_AUTHOR_DATE=2026-12-02T14:56:12Z", "GIT_COMMITTER_DATE=2026-12-02T14:56:12Z", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	sh := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	write := func(s string) {
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sh("init", "-q")
	write("1")
	sh("add", "f")
	sh("commit", "-qm", "one")
	ctx := context.Background()
	rev := sh("rev-parse", "HEAD")
	short := sh("rev-parse", "--short", "HEAD")
	check := func(want string) {
		t.Helper()
		v, err := FromGit(ctx, dir)
		if err != nil || v.Version != want || v.Revision != sh("rev-parse", "HEAD") || !v.Time.Equal(time.Date(2026, 12, 2, 14, 56, 12, 0, time.UTC)) {
			t.Errorf("FromGit = %+v, %v; want version %s", v, err, want)
		}
	}
	check("0.0.0+20261202145612.g" + short)
	sh("tag", "-a", "-m", "release", "v0.13.0")
	sh("tag", "not-a-version") // ignored: --match v[0-9]*
	check("0.13.0")
	write("2")
	sh("commit", "-qam", "two")
	check("0.13.0+1.g" + sh("rev-parse", "--short", "HEAD"))
	write("3")
	check("0.13.0+1.g" + sh("rev-parse", "--short", "HEAD") + ".dirty")
	if rev == sh("rev-parse", "HEAD") {
		t.Fatal("no new commit")
	}
	if _, err := FromGit(ctx, t.TempDir()); err == nil || !strings.Contains(err.Error(), "git describe") {
		t.Errorf("not a repository: %v", err)
	}
}

func TestLDFlags(t *testing.T) {
	f, err := LDFlags(Version{Version: "0.13.0+5.gabc1234", Revision: "abc"})
	if want := "-X github.com/devid-ssh/devid/internal/buildinfo.version=0.13.0+5.gabc1234 -X github.com/devid-ssh/devid/internal/buildinfo.revision=abc"; err != nil || f != want {
		t.Errorf("LDFlags = %q, %v", f, err)
	}
	if _, err := LDFlags(Version{Version: "1 2"}); err == nil {
		t.Error("a space passed")
	}
}
