package pkgbuild

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/devid-ssh/devid/packaging/pkgversion"
)

// contents are the files (not directories) each package must hold, with
// their modes, as "MODE PATH"; "(deb)" or "(rpm)" after the path: only in
// that format.
var contents = map[string][]string{
	"devid": {
		"0755 /usr/bin/devid",
		"0644 /usr/share/man/man1/devid.1.gz",
		"0644 /usr/share/bash-completion/completions/devid",
	},
	"devid-ca": {
		"0755 /usr/bin/devid-ca",
		"0644 /usr/share/man/man8/devid-ca.8.gz",
		"0644 /usr/share/bash-completion/completions/devid-ca",
		"0644 /usr/lib/systemd/system/devid-ca.service",
		"0644 /usr/lib/sysusers.d/devid-ca.conf",
		"0644 /usr/lib/tmpfiles.d/devid-ca.conf",
	},
	"devid-host": {
		"0755 /usr/bin/devid-hostd",
		"0755 /usr/libexec/devid/devid-principals",
		"0644 /usr/share/man/man8/devid-hostd.8.gz",
		"0644 /usr/share/man/man8/devid-principals.8.gz",
		"0644 /usr/share/bash-completion/completions/devid-hostd",
		"0644 /usr/share/bash-completion/completions/devid-principals",
		"0644 /usr/lib/systemd/system/devid-hostd.service",
		"0644 /usr/lib/systemd/system/devid-hostd.socket",
		"0644 /usr/lib/systemd/system/ssh.service.d/devid-hostkey.conf (deb)",
		"0644 /usr/lib/systemd/system/sshd.service.d/devid-hostkey.conf (rpm)",
		"0644 /usr/share/devid/sshd_config.d/devid.conf",
		"0644 /usr/share/doc/devid-host/examples/hostd.json",
		"0644 /usr/lib/sysusers.d/devid-host.conf",
		"0644 /usr/lib/tmpfiles.d/devid-host.conf",
	},
	"devid-agent": {
		"0755 /usr/bin/devid-agent",
		"0644 /usr/share/man/man1/devid-agent.1.gz",
		"0644 /usr/share/bash-completion/completions/devid-agent",
		"0644 /usr/lib/systemd/user/devid-agent.service",
		"0644 /usr/lib/systemd/user/devid-agent.socket",
	},
}

// control holds fields each .deb's control file must have (besides
// Package, Version, Architecture); "V" is the version.
var control = map[string]map[string]string{
	"devid":       {},
	"devid-ca":    {"Depends": "devid (= V), systemd"},
	"devid-host":  {"Depends": "openssh-server (>= 1:9.2), systemd", "Recommends": "devid (= V)"},
	"devid-agent": {"Depends": "openssh-client", "Suggests": "devid"},
}

// requires holds what each .rpm must require and recommend.
var requires = map[string]string{
	"devid":       "",
	"devid-ca":    "devid = V\nsystemd",
	"devid-host":  "openssh-server >= 9.2\nsystemd",
	"devid-agent": "openssh-clients",
}

// scripted are the packages with maintainer scripts.
var scripted = []string{"devid-ca", "devid-host"}

// TestPackages builds every package in both formats once, into a
// temporary directory, and reads them with dpkg-deb and rpm.
func TestPackages(t *testing.T) {
	dpkgDeb := tool(t, "dpkg-deb", "dpkg")
	rpmCmd := tool(t, "rpm", "rpm")
	ctx := context.Background()
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	want, err := pkgversion.FromGit(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	var log bytes.Buffer
	arts, err := Build(ctx, Options{Out: out, Dir: repo, Log: &log})
	t.Logf("Build:\n%s", log.String())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range arts {
		got = append(got, a.Package+" "+a.Format)
		if a.Version != want.Version || filepath.Dir(a.Path) != out {
			t.Errorf("%+v: want version %s in %s", a, want.Version, out)
		}
	}
	if w := []string{"devid deb", "devid rpm", "devid-ca deb", "devid-ca rpm", "devid-host deb", "devid-host rpm", "devid-agent deb", "devid-agent rpm"}; !slices.Equal(got, w) {
		t.Fatalf("artifacts %q, want %q", got, w)
	}
	root := t.TempDir() // every .deb unpacked
	for _, a := range arts {
		t.Run(a.Format+"/"+a.Package, func(t *testing.T) {
			if a.Format == "deb" {
				checkDeb(t, dpkgDeb, a, root)
			} else {
				checkRPM(t, rpmCmd, a)
			}
		})
	}
	t.Run("version", func(t *testing.T) { checkVersions(t, root, want) })
	t.Run("static", func(t *testing.T) { checkStatic(t, root) })
	t.Run("man", func(t *testing.T) { checkManPages(t, root, want.Version) })
	t.Run("completion", func(t *testing.T) {
		script, err := os.ReadFile(filepath.Join(root, "usr/share/bash-completion/completions/devid"))
		if err != nil {
			t.Fatal(err)
		}
		for line, want := range map[string]string{"devid dev": "device", "devid device q": "quarantine", "devid device show x --j": "--json", "devid -": "--help --version"} {
			if got := complete(t, script, line); got != want {
				t.Errorf("%q: %q, want %q", line, got, want)
			}
		}
		script, err = os.ReadFile(filepath.Join(root, "usr/share/bash-completion/completions/devid-principals"))
		if err != nil {
			t.Fatal(err)
		}
		if got := complete(t, script, "devid-principals "); got != "check explain" {
			t.Errorf("devid-principals: %q", got)
		}
	})
	t.Run("sysusers-tmpfiles", func(t *testing.T) { checkSysusersTmpfiles(t, root) })
	t.Run("scripts", func(t *testing.T) {
		for _, p := range scripted {
			checkScripts(t, filepath.Join(repo, "packaging", "scripts", p), p)
		}
	})
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return string(out)
}

// wantFiles returns pkg's files in format as "MODE PATH".
func wantFiles(pkg, format string) []string {
	var out []string
	for _, f := range contents[pkg] {
		f, only, _ := strings.Cut(f, " (")
		if only == "" || only == format+")" {
			out = append(out, f)
		}
	}
	slices.Sort(out)
	return out
}

// mode turns "-rwxr-xr-x" into "0755".
func mode(perm string) string {
	m := 0
	for i, c := range perm[1:10] {
		if c != '-' {
			m |= 1 << (8 - i)
		}
	}
	return fmt.Sprintf("%04o", m)
}

// checkFiles compares a package's listing (lines of ls -l form, the path
// last, the owner in the field named) with what it must hold.
func checkFiles(t *testing.T, a Artifact, listing string, owner func([]string) string) {
	t.Helper()
	var files, dirs []string
	for _, l := range strings.Split(strings.TrimSpace(listing), "\n") {
		f := strings.Fields(l)
		path := "/" + strings.TrimPrefix(strings.TrimPrefix(f[len(f)-1], "."), "/")
		if strings.Contains(path, "sshd_config.d") && !strings.HasPrefix(path, "/usr/share/devid/") {
			t.Errorf("%s installs %s: the sshd snippet must never be enabled by the package", a.Package, path)
		}
		if strings.HasPrefix(path, "/etc/ssh") {
			t.Errorf("%s installs %s, in sshd's configuration", a.Package, path)
		}
		if o := owner(f); o != "root/root" {
			t.Errorf("%s: %s is %s's", a.Package, path, o)
		}
		switch f[0][0] {
		case '-':
			files = append(files, mode(f[0])+" "+path)
		case 'd':
			dirs = append(dirs, path)
		default:
			t.Errorf("%s: %s is neither a file nor a directory: %s", a.Package, path, l)
		}
	}
	slices.Sort(files)
	if w := wantFiles(a.Package, a.Format); !slices.Equal(files, w) {
		t.Errorf("%s files:\n%s\nwant:\n%s", a.Path, strings.Join(files, "\n"), strings.Join(w, "\n"))
	}
	if a.Package == "devid-host" {
		for _, d := range []string{"/etc/devid", "/usr/libexec/devid", "/usr/share/devid/sshd_config.d"} {
			if !slices.Contains(dirs, strings.TrimSuffix(d, "/")) && !slices.Contains(dirs, d+"/") {
				t.Errorf("%s does not own the directory %s (has %q)", a.Path, d, dirs)
			}
		}
	}
}

func checkDeb(t *testing.T, dpkgDeb string, a Artifact, root string) {
	listing := run(t, dpkgDeb, "-c", a.Path)
	checkFiles(t, a, listing, func(f []string) string { return f[1] })

	info := run(t, dpkgDeb, "-I", a.Path)
	fields := map[string]string{}
	for _, l := range strings.Split(run(t, dpkgDeb, "-f", a.Path), "\n") {
		if k, v, ok := strings.Cut(l, ": "); ok && !strings.HasPrefix(l, " ") {
			fields[k] = v
		}
	}
	w := map[string]string{"Package": a.Package, "Version": a.Version, "Architecture": runtime.GOARCH, "Maintainer": DefaultMaintainer, "Homepage": Homepage}
	for k, v := range control[a.Package] {
		w[k] = strings.ReplaceAll(v, "V", a.Version)
	}
	for k, v := range w {
		if fields[k] != v {
			t.Errorf("%s: %s: %q, want %q\n%s", a.Path, k, fields[k], v, info)
		}
	}
	for _, k := range []string{"Depends", "Recommends", "Suggests"} {
		if _, ok := w[k]; !ok && fields[k] != "" {
			t.Errorf("%s: %s: %q, want none", a.Path, k, fields[k])
		}
	}

	ctl := t.TempDir()
	run(t, dpkgDeb, "-e", a.Path, ctl)
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		st, err := os.Stat(filepath.Join(ctl, s))
		if !slices.Contains(scripted, a.Package) {
			if err == nil {
				t.Errorf("%s has a %s", a.Path, s)
			}
			continue
		}
		if err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("%s: %s: %v, mode %v", a.Path, s, err, st)
			continue
		}
		b, _ := os.ReadFile(filepath.Join(ctl, s))
		repo, err := os.ReadFile(filepath.Join("..", "scripts", a.Package, s))
		if err != nil || !bytes.Equal(b, repo) {
			t.Errorf("%s: %s is not packaging/scripts/%s/%s (%v)", a.Path, s, a.Package, s, err)
		}
		if s == "postinst" {
			checkPostinstText(t, a.Path+": postinst", string(b))
		}
	}
	run(t, dpkgDeb, "-x", a.Path, root)
}

// enableOrStart matches a systemctl command that would enable or start a
// unit (try-restart, which only restarts a running one, does not match).
var enableOrStart = regexp.MustCompile(`systemctl\s+(?:-\S+\s+)*(?:enable|start|reenable|preset|restart|reload-or-restart)\b`)

func checkPostinstText(t *testing.T, what, s string) {
	t.Helper()
	if strings.Contains(s, "sshd_config.d") {
		t.Errorf("%s mentions sshd_config.d", what)
	}
	if m := enableOrStart.FindString(s); m != "" {
		t.Errorf("%s runs %q", what, m)
	}
	if !strings.HasPrefix(s, "#!/bin/sh\n") {
		t.Errorf("%s is not a /bin/sh script", what)
	}
}

func checkRPM(t *testing.T, rpmCmd string, a Artifact) {
	listing := run(t, rpmCmd, "-qlvp", a.Path)
	checkFiles(t, a, listing, func(f []string) string { return f[2] + "/" + f[3] })

	q := run(t, rpmCmd, "-qp", "--qf", "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}|%{LICENSE}|%{URL}|%{PACKAGER}", a.Path)
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH]
	if w := strings.Join([]string{a.Package, a.Version, "1", arch, License, Homepage, DefaultMaintainer}, "|"); q != w {
		t.Errorf("%s: %q, want %q", a.Path, q, w)
	}
	var reqs []string
	for _, r := range strings.Split(run(t, rpmCmd, "-qp", "--requires", a.Path), "\n") {
		if r != "" && !strings.HasPrefix(r, "rpmlib(") && !strings.HasPrefix(r, "/bin/sh") {
			reqs = append(reqs, r)
		}
	}
	if w := strings.ReplaceAll(requires[a.Package], "V", a.Version); strings.Join(reqs, "\n") != w {
		t.Errorf("%s requires %q, want %q", a.Path, reqs, w)
	}

	scripts := run(t, rpmCmd, "-qp", "--scripts", a.Path)
	if !slices.Contains(scripted, a.Package) {
		if strings.TrimSpace(scripts) != "" {
			t.Errorf("%s has scripts:\n%s", a.Path, scripts)
		}
		return
	}
	// rpm prints each as "NAME scriptlet (using /bin/sh):" and the body.
	parts := regexp.MustCompile(`(?m)^(\w+) scriptlet \(using /bin/sh\):\n`).Split(scripts, -1)
	names := regexp.MustCompile(`(?m)^(\w+) scriptlet`).FindAllStringSubmatch(scripts, -1)
	if len(names) != 3 || len(parts) != 4 {
		t.Fatalf("%s: scripts:\n%s", a.Path, scripts)
	}
	files := map[string]string{"postinstall": "postinst", "preuninstall": "prerm", "postuninstall": "postrm"}
	for i, n := range names {
		f, ok := files[n[1]]
		if !ok {
			t.Errorf("%s: a %s scriptlet", a.Path, n[1])
			continue
		}
		repo, err := os.ReadFile(filepath.Join("..", "scripts", a.Package, f))
		if err != nil || strings.TrimSpace(parts[i+1]) != strings.TrimSpace(string(repo)) {
			t.Errorf("%s: %s is not packaging/scripts/%s/%s (%v):\n%s", a.Path, n[1], a.Package, f, err, parts[i+1])
		}
		if f == "postinst" {
			checkPostinstText(t, a.Path+": %post", parts[i+1])
		}
	}
}

// binaries are the programs the packages install, under root.
var binaries = map[string]string{
	"devid": "usr/bin/devid", "devid-ca": "usr/bin/devid-ca", "devid-hostd": "usr/bin/devid-hostd",
	"devid-agent": "usr/bin/devid-agent", "devid-principals": "usr/libexec/devid/devid-principals",
}

// checkVersions: each packaged binary's --version is the packages'
// version; --version --json gives the commit.
func checkVersions(t *testing.T, root string, want pkgversion.Version) {
	for name, path := range binaries {
		got := run(t, filepath.Join(root, path), "--version")
		if w := fmt.Sprintf("%s %s (%s)\n", name, want.Version, runtime.Version()); got != w {
			t.Errorf("%s --version: %q, want %q", name, got, w)
		}
		if name == "devid-principals" {
			continue
		}
		var info struct{ Program, Version, Revision, GoVersion string }
		if err := json.Unmarshal([]byte(run(t, filepath.Join(root, path), "--version", "--json")), &info); err != nil {
			t.Fatal(err)
		}
		if info.Program != name || info.Version != want.Version || info.Revision != want.Revision || info.GoVersion != runtime.Version() {
			t.Errorf("%s --version --json: %+v, want %+v", name, info, want)
		}
	}
}

// checkStatic: the binaries need no C library (no ELF interpreter), so one
// package serves Debian, Ubuntu, Fedora and RHEL alike.
func checkStatic(t *testing.T, root string) {
	for name, path := range binaries {
		f, err := elf.Open(filepath.Join(root, path))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is linked dynamically", name)
			}
		}
		f.Close()
	}
}

// checkManPages: each program's page is there, gzipped, with a .TH line of
// its name, section and version, and (where groff is installed) groff
// renders it without a warning, NAME and SYNOPSIS first.
func checkManPages(t *testing.T, root, version string) {
	groff, _ := exec.LookPath("groff")
	if groff == "" {
		t.Log("groff not found (Debian package groff-base): the pages are not rendered")
	}
	for _, p := range programs {
		file := filepath.Join(root, "usr/share/man", fmt.Sprintf("man%d/%s.%d.gz", p.Section, p.Name, p.Section))
		b, err := os.ReadFile(file)
		if err != nil {
			t.Error(err)
			continue
		}
		r, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		page, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(page))
		sc.Scan()
		sc.Scan()
		th := fmt.Sprintf(".TH %s %d ", quote(strings.ToUpper(p.Name)), p.Section)
		if !strings.HasPrefix(sc.Text(), th) || !strings.Contains(sc.Text(), quote("devid "+version)) {
			t.Errorf("%s: second line %q, want %s… with the version %s", file, sc.Text(), th, version)
		}
		if groff == "" {
			continue
		}
		cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
		cmd.Stdin = bytes.NewReader(page)
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("%s: groff -ww: %v\n%s", file, err, out)
		}
		cmd = exec.Command(groff, "-man", "-Tascii", "-P-cbou")
		cmd.Stdin = bytes.NewReader(page)
		text, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		flat := strings.Join(strings.Fields(string(text)), " ")
		if !regexp.MustCompile(`^` + regexp.QuoteMeta(strings.ToUpper(p.Name)+fmt.Sprintf("(%d)", p.Section)) + ` .* NAME ` +
			regexp.QuoteMeta(p.Name+" - "+p.Summary) + ` SYNOPSIS ` + regexp.QuoteMeta(p.Name) + ` .* DESCRIPTION .* EXIT STATUS .* SEE ALSO `).MatchString(flat) {
			t.Errorf("%s rendered:\n%s", file, text)
		}
	}
}

// checkSysusersTmpfiles applies the packages' sysusers.d and tmpfiles.d
// files with systemd's own tools to the unpacked tree (--root), as the
// postinst scripts apply them, and checks the accounts and directories.
func checkSysusersTmpfiles(t *testing.T, root string) {
	sysusers := tool(t, "systemd-sysusers", "systemd")
	tmpfiles := tool(t, "systemd-tmpfiles", "systemd")
	if os.Getuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-tmpfiles needs root to give directories their owners, and CI=true")
		}
		t.Skip("systemd-tmpfiles needs root to give directories their owners")
	}
	run(t, sysusers, "--root="+root, "devid-host.conf", "devid-ca.conf")
	passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	uids := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(string(passwd)), "\n") {
		f := strings.Split(l, ":")
		if len(f) != 7 {
			t.Fatalf("passwd: %q", l)
		}
		var uid int
		fmt.Sscan(f[2], &uid)
		uids[f[0]] = uid
		if w := map[string]string{"devid-principals": "/", "devid-ca": "/var/lib/devid-ca"}[f[0]]; f[5] != w || f[6] != "/usr/sbin/nologin" || uid == 0 || uid >= 1000 {
			t.Errorf("passwd: %q: want a system account (uid under 1000) at home in %q, shell /usr/sbin/nologin", l, w)
		}
	}
	if len(uids) != 2 {
		t.Errorf("passwd:\n%s\nwant devid-principals and devid-ca", passwd)
	}
	run(t, tmpfiles, "--root="+root, "--create", "devid-host.conf", "devid-ca.conf")
	for _, d := range []struct {
		path     string
		mode     os.FileMode
		uid, gid string
	}{
		{"etc/devid", 0o755, "", ""},
		{"var/lib/devid-ca", 0o700, "devid-ca", "devid-ca"},
		{"etc/devid-ca", 0o750, "", "devid-ca"},
	} {
		st, err := os.Stat(filepath.Join(root, d.path))
		if err != nil {
			t.Error(err)
			continue
		}
		sys := st.Sys().(*syscall.Stat_t)
		if !st.IsDir() || st.Mode().Perm() != d.mode || int(sys.Uid) != uids[d.uid] || int(sys.Gid) != uids[d.gid] {
			t.Errorf("/%s: %v uid %d gid %d, want a directory %v of %q:%q", d.path, st.Mode(), sys.Uid, sys.Gid, d.mode, d.uid, d.gid)
		}
	}
}
