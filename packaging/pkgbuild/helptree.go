package pkgbuild

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
)

// command is one command of a program, as its --help shows it.
type command struct {
	Path  []string // after the program's name: nil for the program, {"device", "add"}
	Help  string   // what `PROG PATH... --help` printed (standard output, then error)
	Flags []string // its flags, "--config", from Help
	Subs  []*command
}

var (
	// A line of a "Commands:" list, or of devid-principals' own list:
	// two spaces, the name, two or more spaces, the summary.
	subLine = regexp.MustCompile(`(?m)^  ([a-z][a-z0-9-]*)  +\S`)
	// A flag as package flag's PrintDefaults shows it: "  -config file".
	flagLine = regexp.MustCompile(`(?m)^  -([A-Za-z][A-Za-z0-9-]*)\b`)
)

// helpTree runs `bin PATH... --help` for the program and every command
// below it, as the "Commands:" lists name them (for a help without one,
// lines of the form "  NAME  summary" whose `--help` succeeds).
func helpTree(ctx context.Context, bin string) (*command, error) {
	return helpNode(ctx, bin, nil, 0)
}

func helpNode(ctx context.Context, bin string, path []string, depth int) (*command, error) {
	if depth > 4 {
		return nil, fmt.Errorf("%s %s: commands nested too deep", bin, strings.Join(path, " "))
	}
	help, err := runHelp(ctx, bin, path)
	if err != nil {
		return nil, err
	}
	c := &command{Path: path, Help: help}
	for _, m := range flagLine.FindAllStringSubmatch(help, -1) {
		c.Flags = append(c.Flags, "--"+m[1])
	}
	list, listed := help, false
	if _, after, ok := strings.Cut(help, "Commands:\n"); ok {
		list, _, _ = strings.Cut(after, "\n\n")
		listed = true
	}
	var names []string
	for _, m := range subLine.FindAllStringSubmatch(list, -1) {
		if !slices.Contains(names, m[1]) {
			names = append(names, m[1])
		}
	}
	for _, name := range names {
		sub := append(slices.Clone(path), name)
		s, err := helpNode(ctx, bin, sub, depth+1)
		if err != nil {
			if !listed {
				continue // a line that only looked like a command
			}
			return nil, err
		}
		c.Subs = append(c.Subs, s)
	}
	return c, nil
}

// runHelp runs `bin PATH... --help`: it must exit 0.
func runHelp(ctx context.Context, bin string, path []string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, append(slices.Clone(path), "--help")...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %v: %s", strings.Join(cmd.Args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String() + stderr.String(), nil
}

// walk calls f for c and every command below it, parents first.
func (c *command) walk(f func(*command)) {
	f(c)
	for _, s := range c.Subs {
		s.walk(f)
	}
}
