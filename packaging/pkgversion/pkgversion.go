// Package pkgversion computes devid's version from git: one string that
// the binaries report (package internal/buildinfo, set by the linker) and
// the .deb and .rpm packages carry, so that `devid-hostd --version`,
// devid_build_info and `dpkg -l devid-host` agree.
//
// `git describe --tags --always --dirty` becomes a version both dpkg and
// rpm order correctly (no "-", which both reserve for the release):
//
//	v0.13.0                      0.13.0
//	v0.13.0-dirty                0.13.0+0.dirty
//	v0.13.0-5-gabc1234           0.13.0+5.gabc1234
//	v0.13.0-5-gabc1234-dirty     0.13.0+5.gabc1234.dirty
//	v0.14.0-rc.1                 0.14.0~rc.1   (before 0.14.0)
//	v0.14.0-rc.1-2-gabc1234      0.14.0~rc.1+2.gabc1234
//	abc1234 (no tag yet)         0.0.0+20261202145612.gabc1234 (commit time, UTC)
//
// Each is also a valid semantic version (the part after "+" is build
// metadata), apart from "~", which only a pre-release tag brings.
package pkgversion

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// BuildinfoPackage is the package whose variables LDFlags sets.
const BuildinfoPackage = "github.com/devid-ssh/devid/internal/buildinfo"

// Version is one build's version.
type Version struct {
	// Version is the package and binary version, "0.13.0+5.gabc1234".
	Version string
	// Revision is the commit's full hash.
	Revision string
	// Time is the commit's time (UTC): the date of the man pages and the
	// modification time of every file in the packages.
	Time time.Time
}

// FromGit returns the version of the checkout at dir, from git describe,
// rev-parse and log. Tags that count are those of the form vN.N.N….
func FromGit(ctx context.Context, dir string) (Version, error) {
	describe, err := git(ctx, dir, "describe", "--tags", "--always", "--dirty", "--match", "v[0-9]*")
	if err != nil {
		return Version{}, err
	}
	rev, err := git(ctx, dir, "rev-parse", "HEAD")
	if err != nil {
		return Version{}, err
	}
	ct, err := git(ctx, dir, "log", "-1", "--format=%ct", "HEAD")
	if err != nil {
		return Version{}, err
	}
	secs, err := strconv.ParseInt(ct, 10, 64)
	if err != nil {
		return Version{}, fmt.Errorf("git log -1 --format=%%ct in %s: %q is no time: %v", dir, ct, err)
	}
	t := time.Unix(secs, 0).UTC()
	v, err := FromDescribe(describe, t)
	if err != nil {
		return Version{}, fmt.Errorf("%s: %w", dir, err)
	}
	return Version{Version: v, Revision: rev, Time: t}, nil
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s in %s: %v: %s", strings.Join(args, " "), dir, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return strings.TrimSpace(string(out)), nil
}

var (
	distance = regexp.MustCompile(`^(.*)-([0-9]+)-g([0-9a-f]{4,64})$`)
	hash     = regexp.MustCompile(`^[0-9a-f]{4,64}$`)
	release  = regexp.MustCompile(`^v?([0-9]+(?:\.[0-9]+){0,3})(?:-([0-9A-Za-z]+(?:[.-][0-9A-Za-z]+)*))?$`)
)

// FromDescribe converts git describe's output (with --tags --always
// --dirty) to a version, as the package documentation shows; commit is
// the commit's time, used when no tag precedes it.
func FromDescribe(describe string, commit time.Time) (string, error) {
	d, dirty := strings.CutSuffix(describe, "-dirty")
	var meta []string
	if hash.MatchString(d) {
		meta = append(meta, commit.UTC().Format("20060102150405"), "g"+d)
		d = "0.0.0"
	} else if m := distance.FindStringSubmatch(d); m != nil {
		d = m[1]
		meta = append(meta, m[2], "g"+m[3])
	}
	m := release.FindStringSubmatch(d)
	if m == nil {
		return "", fmt.Errorf("git describe gave %q: want a tag vMAJOR.MINOR.PATCH[-PRERELEASE], optionally followed by -N-gHASH and -dirty", describe)
	}
	v := m[1]
	if m[2] != "" {
		v += "~" + strings.ReplaceAll(m[2], "-", ".")
	}
	if dirty {
		if len(meta) == 0 {
			meta = append(meta, "0") // after the tag, before a commit after it
		}
		meta = append(meta, "dirty")
	}
	if len(meta) > 0 {
		v += "+" + strings.Join(meta, ".")
	}
	return v, nil
}

// LDFlags returns the linker flags that set v in package buildinfo:
// "-X …buildinfo.version=V -X …buildinfo.revision=R".
func LDFlags(v Version) (string, error) {
	for _, s := range []string{v.Version, v.Revision} {
		if strings.ContainsAny(s, " \t\n'\"\\") {
			return "", errors.New("pkgversion: a version or revision with spaces or quotes cannot be passed to the linker: " + strconv.Quote(s))
		}
	}
	return "-X " + BuildinfoPackage + ".version=" + v.Version + " -X " + BuildinfoPackage + ".revision=" + v.Revision, nil
}
