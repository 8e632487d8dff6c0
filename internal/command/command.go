// Package command is the small framework devid's commands share: subcommand dispatch,
// flags that may follow positional arguments, usage errors and exit codes.
package command

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Exit codes of every devid command.
const (
	ExitOK    = 0 // success
	ExitError = 1 // the operation failed
	ExitUsage = 2 // the command line was wrong
)

// UsageError is a command-line mistake: exit code 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// ExitCodeError ends a command with its own exit code, for commands whose codes
// follow another tool's (devid krl query follows ssh-keygen -Q). Run prints
// Err, if any, as it prints other errors.
type ExitCodeError struct {
	Code int
	Err  error
}

func (e *ExitCodeError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitCodeError) Unwrap() error { return e.Err }

// Env is what a command runs with.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

// OSEnv is the process's own environment.
func OSEnv() *Env {
	return &Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

// Command is one subcommand.
type Command struct {
	Name    string
	Summary string // one line, for the parent's help
	Usage   string // argument synopsis, after the command path
	// Flags, if set, adds the command's flags.
	Flags func(fs *flag.FlagSet)
	// Run runs the command with its positional arguments, after flags.
	Run func(env *Env, args []string) error
	// Sub holds subcommands, for a command that only dispatches.
	Sub []*Command
}

// Run dispatches args through root and returns the exit code. Errors are
// printed as "prog: error" on stderr.
func Run(root *Command, env *Env, args []string) int {
	var err error
	if len(root.Sub) > 0 && len(args) > 0 && args[0] == "--version" {
		err = printVersion(root.Name, env, args[1:])
	} else {
		err = run(root, root.Name, env, args)
	}
	var ue *UsageError
	var ee *ExitCodeError
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.As(err, &ue):
		fmt.Fprintf(env.Stderr, "%s: %s\n", root.Name, ue.Msg)
		return ExitUsage
	case errors.As(err, &ee):
		if ee.Err != nil {
			fmt.Fprintf(env.Stderr, "%s: %v\n", root.Name, ee.Err)
		}
		return ee.Code
	default:
		fmt.Fprintf(env.Stderr, "%s: %v\n", root.Name, err)
		return ExitError
	}
}

func run(c *Command, path string, env *Env, args []string) error {
	if len(c.Sub) > 0 {
		if len(args) == 0 {
			printSubs(c, path, env.Stderr)
			return Usagef("%s needs a subcommand", path)
		}
		if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			printSubs(c, path, env.Stdout)
			return flag.ErrHelp
		}
		for _, s := range c.Sub {
			if s.Name == args[0] {
				return run(s, path+" "+s.Name, env, args[1:])
			}
		}
		return Usagef("unknown command %q (see %s --help)", path+" "+args[0], path)
	}
	fs := flag.NewFlagSet(path, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	if c.Flags != nil {
		c.Flags(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "Usage: %s %s\n\n%s\n", path, c.Usage, c.Summary)
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintln(env.Stderr, "\nFlags:")
			fs.PrintDefaults()
		}
	}
	pos, err := ParseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &UsageError{Msg: err.Error()}
	}
	return c.Run(env, pos)
}

func printSubs(c *Command, path string, w io.Writer) {
	fmt.Fprintf(w, "Usage: %s COMMAND [flags] [args]\n\n", path)
	if c.Summary != "" {
		fmt.Fprintf(w, "%s\n\n", c.Summary)
	}
	fmt.Fprintln(w, "Commands:")
	for _, s := range c.Sub {
		fmt.Fprintf(w, "  %-12s %s\n", s.Name, s.Summary)
	}
	fmt.Fprintf(w, "\nRun '%s COMMAND --help' for a command's flags.\n", path)
	if !strings.Contains(path, " ") {
		fmt.Fprintf(w, "'%s --version [--json]' prints the version.\n", path)
	}
}

// ParseInterleaved parses flags that may come before, between or after
// positional arguments ("devid device show NAME --json"). A "--" ends flags.
func ParseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// flag stops at the first non-flag, or after "--".
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// Args checks the number of positional arguments.
func Args(args []string, min, max int, names string) error {
	if len(args) < min || (max >= 0 && len(args) > max) {
		return Usagef("want %s, got %d argument(s): %s", names, len(args), strings.Join(args, " "))
	}
	return nil
}

// Logger is the logger of a daemon's --log-format flag: text or json on
// standard error (which journald keeps); anything else is a usage error.
func Logger(env *Env, format string) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(env.Stderr, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(env.Stderr, nil)), nil
	}
	return nil, Usagef("--log-format %q: want text or json", format)
}
