// Package pkgbuild builds devid's .deb and .rpm packages with nFPM used as
// a library: it builds the binaries once (go build -trimpath, CGO off, the
// version from git set by the linker), makes each program's manual page
// and bash completion from its --help, and packs devid, devid-ca,
// devid-host and devid-agent in both formats. packaging/mkpackages is its
// command (make packages); packaging/README.md says what each package
// holds and what its maintainer scripts do.
//
// The packages are for the machine's architecture: the manual pages come
// from running the binaries.
package pkgbuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/devid-ssh/devid/packaging/pkgversion"
	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
	"github.com/goreleaser/nfpm/v2/rpm"
)

// Options says what Build makes and where.
type Options struct {
	// Out is the directory the packages are written to (created if
	// missing); existing packages of the same names are replaced.
	Out string
	// Dir is the repository's root; "" finds it from the working
	// directory (go env GOMOD).
	Dir string
	// Version, if its Version is set, is used instead of git's.
	Version pkgversion.Version
	// Formats are "deb" and "rpm"; nil means both.
	Formats []string
	// Packages names the packages to make (devid, devid-ca, devid-host,
	// devid-agent); nil means all.
	Packages []string
	// Maintainer is the packages' maintainer; "" is DefaultMaintainer.
	Maintainer string
	// Go is the go command; "" is "go" from PATH.
	Go string
	// Log, if set, gets a line per step.
	Log io.Writer
}

// DefaultMaintainer is the packages' maintainer unless Options says
// otherwise. The address is a placeholder (.invalid): the project has no
// list yet.
const DefaultMaintainer = "devid maintainers <maintainers@devid-ssh.invalid>"

// License is the packages' license field: the repository has no LICENSE
// file, so none is asserted.
const License = "NOASSERTION"

// Homepage is the packages' homepage.
const Homepage = "https://github.com/devid-ssh/devid"

// Artifact is one package file Build wrote.
type Artifact struct {
	Package string // "devid-host"
	Format  string // "deb" or "rpm"
	Path    string // in Options.Out
	Version string // the version in its metadata, as the binaries report it
}

// Build builds the binaries and writes the packages to o.Out, returning
// them in the order of the package list, .deb before .rpm.
func Build(ctx context.Context, o Options) ([]Artifact, error) {
	if o.Out == "" {
		return nil, errors.New("pkgbuild: Options.Out is empty")
	}
	if o.Go == "" {
		o.Go = "go"
	}
	if o.Maintainer == "" {
		o.Maintainer = DefaultMaintainer
	}
	formats := o.Formats
	if formats == nil {
		formats = []string{formatDeb, formatRPM}
	}
	for _, f := range formats {
		if f != formatDeb && f != formatRPM {
			return nil, fmt.Errorf("pkgbuild: format %q: want deb or rpm", f)
		}
	}
	defs, err := selectPackages(o.Packages)
	if err != nil {
		return nil, err
	}
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", args...)
		}
	}
	if o.Dir == "" {
		if o.Dir, err = repoRoot(ctx, o.Go); err != nil {
			return nil, err
		}
	}
	v := o.Version
	if v.Version == "" {
		if v, err = pkgversion.FromGit(ctx, o.Dir); err != nil {
			return nil, fmt.Errorf("pkgbuild: the version: %w (outside a git checkout, set Options.Version)", err)
		}
	}
	if v.Time.IsZero() {
		v.Time = time.Now().UTC().Truncate(time.Second)
	}
	work, err := os.MkdirTemp("", "devid-pkgbuild-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	var progs []string
	for _, d := range defs {
		for p := range d.Programs {
			progs = append(progs, p)
		}
	}
	slices.Sort(progs)
	start := time.Now()
	logf("building %s, version %s", strings.Join(progs, " "), v.Version)
	bin := filepath.Join(work, "bin")
	if err := buildBinaries(ctx, o.Go, o.Dir, bin, progs, v); err != nil {
		return nil, err
	}
	logf("built in %.1fs", time.Since(start).Seconds())

	start = time.Now()
	gen := filepath.Join(work, "gen")
	for _, name := range progs {
		if err := generateDocs(ctx, filepath.Join(bin, name), gen, programByName(name), v); err != nil {
			return nil, err
		}
	}

	logf("manual pages and completions in %.1fs", time.Since(start).Seconds())
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	// Pack in parallel, one package per core: compressing is most of it.
	start = time.Now()
	type job struct {
		d      pkgDef
		format string
	}
	var jobs []job
	for _, d := range defs {
		for _, f := range formats {
			jobs = append(jobs, job{d, f})
		}
	}
	out := make([]Artifact, len(jobs))
	errs := make([]error, len(jobs))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if ctx.Err() == nil {
				out[i], errs[i] = pack(j.d, j.format, o, v, bin, gen)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(append(errs, ctx.Err())...); err != nil {
		return nil, err
	}
	logf("packed %d packages in %.1fs", len(out), time.Since(start).Seconds())
	return out, nil
}

func selectPackages(names []string) ([]pkgDef, error) {
	if names == nil {
		return packages, nil
	}
	var defs []pkgDef
	for _, d := range packages {
		if slices.Contains(names, d.Name) {
			defs = append(defs, d)
		}
	}
	for _, n := range names {
		if !slices.ContainsFunc(defs, func(d pkgDef) bool { return d.Name == n }) {
			return nil, fmt.Errorf("pkgbuild: no package %q (there are devid, devid-ca, devid-host and devid-agent)", n)
		}
	}
	return defs, nil
}

// repoRoot is the directory of the main module's go.mod.
func repoRoot(ctx context.Context, goCmd string) (string, error) {
	out, err := exec.CommandContext(ctx, goCmd, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("pkgbuild: go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("pkgbuild: not in a Go module: run from the repository or set Options.Dir")
	}
	return filepath.Dir(mod), nil
}

// buildBinaries builds the programs into dir with one go build: static
// (CGO off: package net's and os/user's Go implementations, nothing else
// needs C), -trimpath, no symbol table, the version set.
func buildBinaries(ctx context.Context, goCmd, repo, dir string, progs []string, v pkgversion.Version) error {
	ld, err := pkgversion.LDFlags(v)
	if err != nil {
		return err
	}
	args := []string{"build", "-trimpath", "-ldflags", "-s -w " + ld, "-o", dir + string(filepath.Separator)}
	for _, p := range progs {
		args = append(args, "./cmd/"+p)
	}
	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pkgbuild: go %s in %s: %v\n%s", strings.Join(args, " "), repo, err, stderr.Bytes())
	}
	return nil
}

// generateDocs writes prog's manual page, gzipped, and bash completion
// into dir as NAME.SECTION.gz and NAME.bash.
func generateDocs(ctx context.Context, bin, dir string, p program, v pkgversion.Version) error {
	tree, err := helpTree(ctx, bin)
	if err != nil {
		return fmt.Errorf("pkgbuild: %s's help: %w", p.Name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	man := gzipped(manPage(p, tree, v.Version, v.Time))
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s.%d.gz", p.Name, p.Section)), man, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, p.Name+".bash"), bashCompletion(p.Name, tree), 0o644)
}

// pack writes one package.
func pack(d pkgDef, format string, o Options, v pkgversion.Version, bin, gen string) (Artifact, error) {
	file := func(src, dst string, mode os.FileMode) *files.Content {
		return &files.Content{Source: src, Destination: dst, Type: files.TypeFile,
			FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: v.Time}}
	}
	var contents files.Contents
	for _, name := range sortedProgs(d.Programs) {
		p := programByName(name)
		contents = append(contents,
			file(filepath.Join(bin, name), d.Programs[name], 0o755),
			file(filepath.Join(gen, fmt.Sprintf("%s.%d.gz", name, p.Section)), fmt.Sprintf("/usr/share/man/man%d/%s.%d.gz", p.Section, name, p.Section), 0o644),
			file(filepath.Join(gen, name+".bash"), "/usr/share/bash-completion/completions/"+name, 0o644),
		)
	}
	for _, f := range d.Files {
		if f.Format == "" || f.Format == format {
			contents = append(contents, file(filepath.Join(o.Dir, filepath.FromSlash(f.Src)), f.Dst, f.Mode))
		}
	}
	for _, dir := range d.Dirs {
		contents = append(contents, &files.Content{Destination: dir, Type: files.TypeDir,
			FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: 0o755, MTime: v.Time}})
	}
	subst := func(m map[string][]string) []string {
		var out []string
		for _, s := range m[format] {
			out = append(out, strings.ReplaceAll(s, "{{version}}", v.Version))
		}
		return out
	}
	summary, _, _ := strings.Cut(d.Description, "\n")
	info := &nfpm.Info{
		Name:          d.Name,
		Arch:          runtime.GOARCH,
		Platform:      "linux",
		Version:       v.Version,
		VersionSchema: "none",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    o.Maintainer,
		Description:   d.Description,
		Vendor:        "devid",
		Homepage:      Homepage,
		License:       License,
		MTime:         v.Time,
		Overridables: nfpm.Overridables{
			Depends:    subst(d.Depends),
			Recommends: subst(d.Recommends),
			Suggests:   subst(d.Suggests),
			Contents:   contents,
			RPM:        nfpm.RPM{Summary: summary, Group: "System Environment/Daemons", Compression: "zstd", BuildHost: "devid-pkgbuild"},
			Deb:        nfpm.Deb{Compression: "zstd"},
		},
	}
	if d.Scripts {
		dir := filepath.Join(o.Dir, "packaging", "scripts", d.Name)
		info.Scripts = nfpm.Scripts{
			PostInstall: filepath.Join(dir, "postinst"),
			PreRemove:   filepath.Join(dir, "prerm"),
			PostRemove:  filepath.Join(dir, "postrm"),
		}
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, format); err != nil {
		return Artifact{}, fmt.Errorf("pkgbuild: %s (%s): %w", d.Name, format, err)
	}
	var pk nfpm.Packager = deb.Default
	if format == formatRPM {
		pk = rpm.DefaultRPM
	}
	path := filepath.Join(o.Out, pk.ConventionalFileName(info))
	tmp, err := os.CreateTemp(o.Out, ".pkgbuild-*")
	if err != nil {
		return Artifact{}, err
	}
	defer os.Remove(tmp.Name())
	if err := pk.Package(info, tmp); err != nil {
		tmp.Close()
		return Artifact{}, fmt.Errorf("pkgbuild: %s (%s): %w", d.Name, format, err)
	}
	if err := tmp.Close(); err != nil {
		return Artifact{}, err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return Artifact{}, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return Artifact{}, err
	}
	return Artifact{Package: d.Name, Format: format, Path: path, Version: v.Version}, nil
}

func sortedProgs(m map[string]string) []string {
	var k []string
	for p := range m {
		k = append(k, p)
	}
	slices.Sort(k)
	return k
}
