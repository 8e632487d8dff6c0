package command

import (
	"strings"

	"github.com/devid-ssh/devid/internal/buildinfo"
)

// printVersion is `PROG --version [--json]`, which Run answers for every
// root command that dispatches: one line, "PROG VERSION (GOVERSION)", or
// with --json one object (see package buildinfo).
func printVersion(prog string, env *Env, args []string) error {
	asJSON := false
	switch {
	case len(args) == 0:
	case len(args) == 1 && (args[0] == "--json" || args[0] == "-json"):
		asJSON = true
	default:
		return Usagef("--version takes no arguments but --json, got: %s", strings.Join(args, " "))
	}
	if asJSON {
		return buildinfo.PrintJSON(env.Stdout, prog)
	}
	return buildinfo.Print(env.Stdout, prog)
}
