// Package buildinfo says which build of devid a program is: its version,
// the commit it was built from and the Go toolchain that built it, for
// `PROG --version` and the devid_build_info metric (package buildmetrics).
//
// The build sets the version and the commit with the linker:
//
//	go build -ldflags "-X github.com/devid-ssh/devid/internal/buildinfo.version=0.13.0+5.gabc1234 \
//	    -X github.com/devid-ssh/devid/internal/buildinfo.revision=abc1234…"
//
// as `make build` and `make packages` do, from git (package
// packaging/pkgversion computes both). A build without them, such as
// `go build ./cmd/...`, reports what Go recorded: the module's version
// ("(devel)" in a checkout) and, when Go stamped it, the VCS revision.
//
// The package does nothing at start-up and imports only the standard
// library's small packages: devid-principals, which sshd runs at every
// login, links it.
package buildinfo

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set by the linker (-X); see the package documentation.
var (
	version  string
	revision string
)

// Info describes a build.
type Info struct {
	Program string `json:"program"`
	// Version is devid's version: from git for make's builds
	// ("0.13.0+5.gabc1234", "0.0.0+20261202145612.gabc1234"), else what Go
	// recorded ("(devel)").
	Version string `json:"version"`
	// Revision is the full commit hash, "" when unknown.
	Revision string `json:"revision"`
	// GoVersion is the toolchain, "go1.26.8".
	GoVersion string `json:"goVersion"`
}

// Get returns the build's Info, named program.
func Get(program string) Info {
	return get(program, version, revision, debug.ReadBuildInfo)
}

// get is Get with the linker's values and the build information given.
func get(program, version, revision string, read func() (*debug.BuildInfo, bool)) Info {
	i := Info{Program: program, Version: version, Revision: revision, GoVersion: runtime.Version()}
	if i.Version != "" && i.Revision != "" {
		return i
	}
	bi, ok := read()
	if !ok {
		if i.Version == "" {
			i.Version = "(unknown)"
		}
		return i
	}
	if i.Version == "" {
		i.Version = bi.Main.Version
	}
	if i.Version == "" {
		i.Version = "(devel)"
	}
	if i.Revision == "" {
		modified := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				i.Revision = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if i.Revision != "" && modified {
			i.Revision += "-dirty"
		}
	}
	return i
}

// String is the line `PROG --version` prints (without the newline):
// "devid-hostd 0.13.0+5.gabc1234 (go1.26.8)".
func (i Info) String() string {
	return fmt.Sprintf("%s %s (%s)", i.Program, i.Version, i.GoVersion)
}

// Print writes the line String gives, and a newline, to w.
func Print(w io.Writer, program string) error {
	_, err := fmt.Fprintln(w, Get(program).String())
	return err
}

// PrintJSON writes program's Info to w as one JSON object (program,
// version, revision, goVersion) and a newline.
func PrintJSON(w io.Writer, program string) error {
	_, err := io.WriteString(w, Get(program).json()+"\n")
	return err
}

// json encodes i as encoding/json would, by hand: devid-principals links
// this package through package command, and encoding/json's encoder would
// add a third to its size.
func (i Info) json() string {
	var b strings.Builder
	for n, f := range [][2]string{{"program", i.Program}, {"version", i.Version}, {"revision", i.Revision}, {"goVersion", i.GoVersion}} {
		b.WriteString(map[bool]string{true: "{", false: ","}[n == 0])
		jsonString(&b, f[0])
		b.WriteByte(':')
		jsonString(&b, f[1])
	}
	b.WriteByte('}')
	return b.String()
}

// jsonString writes s as a JSON string: quotes, backslashes and control
// characters escaped, invalid UTF-8 as U+FFFD.
func jsonString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x2028 || r == 0x2029:
			fmt.Fprintf(b, "\\u%04x", r)
		default:
			b.WriteRune(r) // utf8.RuneError for invalid bytes
		}
	}
	b.WriteByte('"')
}
