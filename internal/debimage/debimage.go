// Package debimage builds the Debian container images devid's container
// tests and its compose set (contrib/compose) run on, without a registry:
// debootstrap makes a minimal Debian root from Debian's own packages into a
// temporary directory, and `tar | docker import` turns it into an image.
//
//	ref, err := debimage.Ensure(ctx, debimage.Default("trixie"))
//	// ref is "devid-debian:trixie-3f2a9c0d1b7e"
//
// An image holds Debian packages only (OpenSSH, swtpm, systemd, …; see
// [DefaultPackages]); devid itself is installed from its packages at test
// time, so the image outlives every change of devid's code.
//
// # The tag is a hash of the inputs
//
// An image is tagged REPOSITORY:SUITE-HASH, HASH the first 12 hex digits of
// the SHA-256 of what it is built from: the suite, the sorted package list,
// the mirror (a date-pinned snapshot.debian.org mirror makes the image
// reproducible; deb.debian.org gives the suite's packages of the day the
// image is built), the architecture, and [BuilderVersion], which changes
// whenever this package changes what it puts in an image. [Ensure] does
// nothing when the tag exists in the local engine: delete the image
// (docker rmi) to build it again from the mirror of the day.
//
// # One build at a time
//
// Ensure holds an exclusive flock(2) on LockDir/devid-debimage-HASH.lock
// while it checks for the image and builds it, so two tests (or two test
// binaries, or `make images` beside them) wanting the same image build it
// once: the second waits for the first and finds the tag.
//
// # What is in an image
//
// debootstrap --variant=minbase --include=PACKAGES (and their Depends, not
// their Recommends), then, to keep it small and right for containers:
// no documentation, manual pages or translations (and a dpkg.cfg.d file
// that keeps packages installed later from adding them), no apt lists or
// downloaded .deb files, no SSH host keys (every container makes its own:
// ssh-keygen -A, which the image's ssh-hostkeys.service runs before
// ssh.service under systemd), an empty /etc/machine-id, and no
// /etc/hostname or /etc/resolv.conf (the engine provides both). The image's
// configuration: CMD ["/bin/bash"], ENV container=docker (what systemd
// looks for when it runs as PID 1 in a container), and labels naming the
// inputs (devid.debimage.*).
//
// debootstrap needs root, and the debootstrap program (Debian's package
// of that name).
package debimage

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// BuilderVersion is part of every image's hash: raise it whenever this
// package changes what goes into an image, so that images built the old way
// are not reused.
const BuilderVersion = 1

// DefaultMirror is the Debian mirror used when a Spec names none.
const DefaultMirror = "http://deb.debian.org/debian"

// DefaultRepository is the image repository used when a Spec names none.
const DefaultRepository = "devid-debian"

// DefaultPackages returns what devid's images hold: sshd and ssh, a
// software TPM with the tools that manufacture one, systemd as an init
// (for the tests that run it as PID 1) with D-Bus (devid-hostd reloads sshd
// through it), ip and ss, ps and pkill, the CA certificates, and jq (the
// compose set's scripts edit and read JSON with it).
func DefaultPackages() []string {
	return []string{
		"openssh-server", "openssh-client",
		"swtpm", "swtpm-tools",
		"systemd", "systemd-sysv", "dbus",
		"iproute2", "procps", "ca-certificates", "jq",
	}
}

// Suites are the Debian suites devid's images are made of: Debian 12
// (OpenSSH 9.2) and Debian 13 (OpenSSH 10.0).
func Suites() []string { return []string{"bookworm", "trixie"} }

// Spec says what an image is made of.
type Spec struct {
	// Suite is the Debian suite, "bookworm" or "trixie" (any suite
	// debootstrap knows is accepted).
	Suite string
	// Packages are installed with debootstrap --include, with the
	// packages they depend on. Their order does not matter.
	Packages []string
	// Mirror is the Debian mirror; DefaultMirror if empty. A
	// snapshot.debian.org URL pins a date.
	Mirror string
	// Repository is the image's repository; DefaultRepository if empty.
	Repository string
}

// Default returns the Spec of devid's image for suite: DefaultPackages from
// DefaultMirror.
func Default(suite string) Spec {
	return Spec{Suite: suite, Packages: DefaultPackages()}
}

var (
	suiteRE   = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	packageRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`) // Debian Policy 5.6.1
	repoRE    = regexp.MustCompile(`^[a-z0-9]+(?:[._/-][a-z0-9]+)*$`)
)

// Validate checks every field: a suite and package names as Debian
// spells them (nothing debootstrap could take for an option), at least one
// package, an http or https mirror, a repository name docker accepts.
func (s Spec) Validate() error {
	if !suiteRE.MatchString(s.Suite) {
		return fmt.Errorf("debimage: suite %q: not a Debian suite name", s.Suite)
	}
	if len(s.Packages) == 0 {
		return fmt.Errorf("debimage: suite %s: no packages", s.Suite)
	}
	for _, p := range s.Packages {
		if !packageRE.MatchString(p) {
			return fmt.Errorf("debimage: package %q: not a Debian package name", p)
		}
	}
	if s.Mirror != "" {
		u, err := url.Parse(s.Mirror)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("debimage: mirror %q: not an http or https URL", s.Mirror)
		}
	}
	if s.Repository != "" && (!repoRE.MatchString(s.Repository) || len(s.Repository) > 128) {
		return fmt.Errorf("debimage: repository %q: not an image repository name", s.Repository)
	}
	return nil
}

func (s Spec) mirror() string {
	if s.Mirror == "" {
		return DefaultMirror
	}
	return strings.TrimSuffix(s.Mirror, "/")
}

func (s Spec) repository() string {
	if s.Repository == "" {
		return DefaultRepository
	}
	return s.Repository
}

// packages returns the sorted, deduplicated package list.
func (s Spec) packages() []string {
	p := slices.Clone(s.Packages)
	slices.Sort(p)
	return slices.Compact(p)
}

// inputs are what an image's hash covers, in a fixed order.
type inputs struct {
	Builder  int      `json:"builder"`
	Suite    string   `json:"suite"`
	Packages []string `json:"packages"`
	Mirror   string   `json:"mirror"`
	Arch     string   `json:"arch"`
}

func (s Spec) inputs() inputs {
	return inputs{Builder: BuilderVersion, Suite: s.Suite, Packages: s.packages(), Mirror: s.mirror(), Arch: runtime.GOARCH}
}

// Hash returns the SHA-256 of the image's inputs, in hex.
func (s Spec) Hash() string {
	b, _ := json.Marshal(s.inputs())
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Ref returns the image's reference, REPOSITORY:SUITE-HASH12.
func (s Spec) Ref() string {
	return s.repository() + ":" + s.Suite + "-" + s.Hash()[:12]
}

// Builder builds images. The zero value uses docker and debootstrap from
// PATH, os.TempDir() for the root file systems and the locks, and logs
// nothing.
type Builder struct {
	Docker      string    // the docker command; "docker" if empty
	Debootstrap string    // the debootstrap command; "debootstrap" if empty
	WorkDir     string    // where debootstrap makes the root; os.TempDir() if empty
	LockDir     string    // where the lock files are; os.TempDir() if empty
	Log         io.Writer // progress: one line per build; nothing if nil
	Output      io.Writer // debootstrap's output; nothing if nil (a failure's error has its end)

	// exists and build stand in for docker and debootstrap in tests.
	exists func(ctx context.Context, ref string) (bool, error)
	build  func(ctx context.Context, s Spec, ref string) error
}

// Ensure is [Builder.Ensure] with the zero Builder.
func Ensure(ctx context.Context, s Spec) (string, error) {
	return (&Builder{}).Ensure(ctx, s)
}

// Ensure returns the reference of the image s describes, building it first
// unless the local engine has it. Concurrent calls for one Spec, in this
// process or others, build it once (see the package documentation).
func (b *Builder) Ensure(ctx context.Context, s Spec) (string, error) {
	if err := s.Validate(); err != nil {
		return "", err
	}
	ref := s.Ref()
	exists, build := b.exists, b.build
	if exists == nil {
		exists = b.imageExists
	}
	if build == nil {
		build = b.buildImage
	}
	if ok, err := exists(ctx, ref); err != nil || ok {
		return ref, err
	}
	unlock, err := lock(ctx, filepath.Join(orTemp(b.LockDir), "devid-debimage-"+s.Hash()[:12]+".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	// Another build may have finished while this one waited.
	if ok, err := exists(ctx, ref); err != nil || ok {
		return ref, err
	}
	start := time.Now()
	b.logf("debimage: building %s (%s: %s from %s)", ref, s.Suite, strings.Join(s.packages(), " "), s.mirror())
	if err := build(ctx, s, ref); err != nil {
		return "", err
	}
	b.logf("debimage: built %s in %s", ref, time.Since(start).Round(time.Second))
	return ref, nil
}

func (b *Builder) logf(format string, args ...any) {
	if b.Log != nil {
		fmt.Fprintf(b.Log, format+"\n", args...)
	}
}

func (b *Builder) docker() string { return orDefault(b.Docker, "docker") }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func orTemp(dir string) string { return orDefault(dir, os.TempDir()) }

// lock takes an exclusive flock on file, polling until ctx ends.
func lock(ctx context.Context, file string) (unlock func(), err error) {
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("debimage: lock: %w", err)
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing drops the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("debimage: lock %s: %w", file, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("debimage: waiting for another build's lock %s: %w", file, ctx.Err())
		case <-tick.C:
		}
	}
}

// imageExists asks the engine whether it has ref.
func (b *Builder) imageExists(ctx context.Context, ref string) (bool, error) {
	cmd := exec.CommandContext(ctx, b.docker(), "image", "ls", "--quiet", ref)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return false, fmt.Errorf("debimage: %s: %w: %s", cmd, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return len(bytes.TrimSpace(out)) > 0, nil
}

// buildImage makes the root with debootstrap, trims it, and imports it as
// ref.
func (b *Builder) buildImage(ctx context.Context, s Spec, ref string) (err error) {
	if os.Geteuid() != 0 {
		return fmt.Errorf("debimage: building %s needs root (debootstrap)", ref)
	}
	deboot := orDefault(b.Debootstrap, "debootstrap")
	if _, err := exec.LookPath(deboot); err != nil {
		return fmt.Errorf("debimage: building %s: %w (apt-get install debootstrap)", ref, err)
	}
	dir, err := os.MkdirTemp(orTemp(b.WorkDir), "devid-debimage-")
	if err != nil {
		return fmt.Errorf("debimage: %w", err)
	}
	defer func() {
		if cerr := removeRoot(dir); cerr != nil && err == nil {
			err = cerr
		}
	}()
	root := filepath.Join(dir, "root")
	// Validate made sure that no argument starts with "-" (debootstrap
	// takes no "--").
	args := []string{"--variant=minbase", "--include=" + strings.Join(s.packages(), ","), s.Suite, root, s.mirror()}
	if err := b.run(ctx, deboot, args...); err != nil {
		return err
	}
	if err := trim(root); err != nil {
		return err
	}
	return b.importRoot(ctx, s, root, ref)
}

// run runs a command with its output in the log, and in the error if it
// fails. The command gets its own process group, all of which ends with ctx.
func (b *Builder) run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Minute
	var tail tailBuffer
	out := io.Writer(&tail)
	if b.Output != nil {
		out = io.MultiWriter(b.Output, &tail)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("debimage: %s: %w\n%s", cmd, err, tail.String())
	}
	return nil
}

// importRoot pipes root as a tar stream into docker import.
func (b *Builder) importRoot(ctx context.Context, s Spec, root, ref string) error {
	tarCmd := exec.CommandContext(ctx, "tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", root, "-c", ".")
	changes := []string{
		`CMD ["/bin/bash"]`,
		`ENV container=docker`,
		"LABEL devid.debimage.suite=" + strconv.Quote(s.Suite),
		"LABEL devid.debimage.packages=" + strconv.Quote(strings.Join(s.packages(), " ")),
		"LABEL devid.debimage.mirror=" + strconv.Quote(s.mirror()),
		"LABEL devid.debimage.builder=" + strconv.Quote(strconv.Itoa(BuilderVersion)),
		"LABEL devid.debimage.hash=" + strconv.Quote(s.Hash()),
	}
	args := []string{"import"}
	for _, c := range changes {
		args = append(args, "--change", c)
	}
	args = append(args, "--message", "devid debimage "+s.Suite, "-", ref)
	importCmd := exec.CommandContext(ctx, b.docker(), args...)
	pipe, err := tarCmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("debimage: %w", err)
	}
	importCmd.Stdin = pipe
	var tarErr, importOut tailBuffer
	tarCmd.Stderr = &tarErr
	importCmd.Stdout, importCmd.Stderr = &importOut, &importOut
	if err := tarCmd.Start(); err != nil {
		return fmt.Errorf("debimage: %s: %w", tarCmd, err)
	}
	ierr := importCmd.Run()
	if ierr != nil {
		tarCmd.Process.Kill()
	}
	terr := tarCmd.Wait()
	switch {
	case terr != nil && ierr == nil:
		// The engine took a partial stream: drop what it made.
		exec.Command(b.docker(), "rmi", ref).Run()
		return fmt.Errorf("debimage: %s: %w\n%s", tarCmd, terr, tarErr.String())
	case ierr != nil:
		return fmt.Errorf("debimage: docker import %s: %w\n%s%s", ref, ierr, importOut.String(), tarErr.String())
	}
	return nil
}

// excludes keep documentation, manual pages and translations out of the
// image, now (trim removes them) and for packages installed later (dpkg
// reads the file).
const excludes = `# devid debimage: no documentation, manual pages or translations.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
`

// hostKeysUnit makes sshd's host keys at a container's first boot under
// systemd: the image has none, so that no two containers share one.
const hostKeysUnit = `[Unit]
Description=Make sshd's host keys if missing (devid debimage)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
`

// trim removes from root what a container image does without (see the
// package documentation).
func trim(root string) error {
	r := func(p string) string { return filepath.Join(root, filepath.FromSlash(p)) }
	var errs []error
	removeGlob := func(pattern string, keep ...string) {
		matches, err := filepath.Glob(r(pattern))
		if err != nil {
			errs = append(errs, err)
			return
		}
		for _, m := range matches {
			if slices.Contains(keep, filepath.Base(m)) {
				continue
			}
			errs = append(errs, os.RemoveAll(m))
		}
	}
	removeGlob("var/cache/apt/archives/*.deb")
	removeGlob("var/cache/apt/*.bin")
	removeGlob("var/lib/apt/lists/*", "partial", "lock")
	removeGlob("usr/share/man/*")
	removeGlob("usr/share/info/*")
	removeGlob("usr/share/groff/*")
	removeGlob("usr/share/lintian/*")
	removeGlob("usr/share/locale/*", "locale.alias")
	removeGlob("var/log/*.log")
	removeGlob("var/log/apt/*")
	removeGlob("etc/ssh/ssh_host_*")
	removeGlob("etc/hostname")
	removeGlob("etc/resolv.conf")
	// Documentation but the copyright files.
	docs, err := filepath.Glob(r("usr/share/doc/*/*"))
	errs = append(errs, err)
	for _, d := range docs {
		if filepath.Base(d) != "copyright" {
			errs = append(errs, os.RemoveAll(d))
		}
	}
	errs = append(errs,
		os.WriteFile(r("etc/machine-id"), nil, 0o444),
		os.WriteFile(r("etc/dpkg/dpkg.cfg.d/devid-debimage-excludes"), []byte(excludes), 0o644),
		os.WriteFile(r("etc/systemd/system/ssh-hostkeys.service"), []byte(hostKeysUnit), 0o644),
		os.MkdirAll(r("etc/systemd/system/ssh.service.wants"), 0o755),
	)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("debimage: trimming %s: %w", root, err)
	}
	link := r("etc/systemd/system/ssh.service.wants/ssh-hostkeys.service")
	if err := os.Symlink("/etc/systemd/system/ssh-hostkeys.service", link); err != nil {
		return fmt.Errorf("debimage: trimming %s: %w", root, err)
	}
	return nil
}

// removeRoot unmounts whatever debootstrap left mounted under dir (an
// interrupted debootstrap leaves /proc mounted in the root), and then,
// only if nothing is mounted there any more, removes dir.
func removeRoot(dir string) error {
	mounts, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	// Deepest first.
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	for _, m := range mounts {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	if mounts, err = mountsUnder(dir); err != nil {
		return err
	}
	if len(mounts) > 0 {
		return fmt.Errorf("debimage: not removing %s: %s still mounted", dir, strings.Join(mounts, ", "))
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("debimage: removing %s: %w", dir, err)
	}
	return nil
}

// mountsUnder lists the mount points at or under dir, from
// /proc/self/mountinfo.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("debimage: %w", err)
	}
	defer f.Close()
	dir = filepath.Clean(dir)
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMountPath(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			out = append(out, p)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("debimage: /proc/self/mountinfo: %w", err)
	}
	return out, nil
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// tailBuffer keeps the last 8 KiB written to it, for error messages.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if over := len(t.b) - 8<<10; over > 0 {
		t.b = t.b[over:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }
