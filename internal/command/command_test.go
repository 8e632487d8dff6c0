package command

import (
	"bytes"
	"flag"
	"fmt"
	"strings"
	"testing"
)

func TestParseInterleaved(t *testing.T) {
	for _, c := range []struct {
		args []string
		pos  string
		json bool
		name string
	}{
		{[]string{"a", "--json", "b"}, "a b", true, ""},
		{[]string{"--name", "x", "a"}, "a", false, "x"},
		{[]string{"a", "--", "--json"}, "a --json", false, ""},
		{nil, "", false, ""},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		j := fs.Bool("json", false, "")
		n := fs.String("name", "", "")
		pos, err := ParseInterleaved(fs, c.args)
		if err != nil || strings.Join(pos, " ") != c.pos || *j != c.json || *n != c.name {
			t.Errorf("%q: pos %q json %v name %q err %v", c.args, pos, *j, *n, err)
		}
	}
}

func TestRunExitCodes(t *testing.T) {
	var ran []string
	root := &Command{Name: "prog", Sub: []*Command{{
		Name: "do", Usage: "ARG",
		Run: func(env *Env, args []string) error {
			ran = append(ran, args...)
			if len(args) == 0 {
				return Usagef("want ARG")
			}
			if args[0] == "fail" {
				return bytes.ErrTooLarge
			}
			if args[0] == "exit3" {
				return &ExitCodeError{Code: 3}
			}
			if args[0] == "exit255" {
				return fmt.Errorf("wrapped: %w", &ExitCodeError{Code: 255, Err: bytes.ErrTooLarge})
			}
			return nil
		},
	}}}
	var out, errb bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errb}
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"do", "x"}, ExitOK},
		{[]string{"do", "fail"}, ExitError},
		{[]string{"do", "exit3"}, 3},
		{[]string{"do", "exit255"}, 255},
		{[]string{"do"}, ExitUsage},
		{[]string{"nope"}, ExitUsage},
		{nil, ExitUsage},
		{[]string{"--help"}, ExitOK},
		{[]string{"do", "--bogus"}, ExitUsage},
	} {
		if got := Run(root, env, c.args); got != c.code {
			t.Errorf("%q: exit %d, want %d (stderr %q)", c.args, got, c.code, errb.String())
		}
	}
	if !strings.Contains(errb.String(), "prog: "+bytes.ErrTooLarge.Error()) {
		t.Errorf("error not printed: %q", errb.String())
	}
}

func TestRunVersion(t *testing.T) {
	root := &Command{Name: "prog", Sub: []*Command{{Name: "do", Run: func(*Env, []string) error { return nil }}}}
	for _, c := range []struct {
		args       []string
		code       int
		out, errIn string
	}{
		{[]string{"--version"}, ExitOK, "prog ", ""},
		{[]string{"--version", "--json"}, ExitOK, `{"program":"prog","version":`, ""},
		{[]string{"--version", "x"}, ExitUsage, "", "prog: --version takes no arguments but --json, got: x\n"},
		{[]string{"--help"}, ExitOK, "'prog --version [--json]' prints the version.", ""},
	} {
		var out, errb bytes.Buffer
		code := Run(root, &Env{Stdout: &out, Stderr: &errb}, c.args)
		if code != c.code || !strings.Contains(out.String(), c.out) || errb.String() != c.errIn {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", c.args, code, out.String(), errb.String())
		}
	}
	// A command that does not dispatch parses --version as a flag: not
	// one it has.
	var errb bytes.Buffer
	leaf := &Command{Name: "leaf", Run: func(*Env, []string) error { return nil }}
	if code := Run(leaf, &Env{Stdout: &bytes.Buffer{}, Stderr: &errb}, []string{"--version"}); code != ExitUsage {
		t.Errorf("leaf --version: exit %d, stderr %q", code, errb.String())
	}
}
