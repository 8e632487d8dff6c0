// Package principalscli is the devid-principals command: sshd's
// AuthorizedPrincipalsCommand, and the check and explain subcommands. The
// decision itself is package principals.
//
// sshd runs the helper twice per successful login, and every login waits
// for it: it imports little (no package net: see package idform), does no
// work at start-up, and allocates little (see helper.go).
package principalscli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/devid-ssh/devid/internal/buildinfo"
	"github.com/devid-ssh/devid/internal/command"
	"github.com/devid-ssh/devid/principals"
)

const name = "devid-principals"

const usage = `Usage:
  devid-principals [--policy PATH] [--log syslog|stderr] ACCOUNT CERT-TYPE BASE64-CERT
  devid-principals check [--policy PATH]
  devid-principals explain [--policy PATH] ACCOUNT CERT.pub

sshd's AuthorizedPrincipalsCommand. In sshd_config:

  AuthorizedPrincipalsCommand /usr/libexec/devid/devid-principals %u %t %k
  AuthorizedPrincipalsCommandUser devid-principals

Prints the certificate's device-ID principal when the policy (default
/etc/devid/principals.conf) lets it log in to ACCOUNT, nothing otherwise, and
exits 0 either way; a missing or broken policy, a bad certificate, a panic or
no decision within 500 ms deny. A wrong command line prints nothing and exits
2. Each decision is one line in syslog (authpriv, tag devid-principals:
journalctl -t devid-principals), or on standard error without syslog.

  check     check a policy file: exit 0 if it parses, 1 with its errors
  explain   say why a login with a certificate file would be allowed or denied

Run 'devid-principals COMMAND --help' for a command's flags;
'devid-principals --version' prints the version.
`

// Main runs devid-principals with args and returns its exit code.
//
// sshd's invocation is recognised before anything else: when the
// second-to-last argument is a certificate type, the last three arguments
// are the account, type and certificate whatever they look like (an account
// named check, or --help), and nothing but a principal ever reaches
// standard output.
func Main(args []string, env *command.Env) int {
	if !sshdForm(args) && len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help", "help":
			if len(args) == 1 {
				io.WriteString(env.Stdout, usage)
				return command.ExitOK
			}
		case "--version":
			if len(args) == 1 {
				buildinfo.Print(env.Stdout, name)
				return command.ExitOK
			}
		case "check":
			return command.Run(checkCmd(), env, args[1:])
		case "explain":
			return command.Run(explainCmd(), env, args[1:])
		}
	}
	return helper(args, env)
}

// sshdForm reports whether args end in ACCOUNT CERT-TYPE BASE64-CERT.
func sshdForm(args []string) bool {
	return len(args) >= 3 && principals.IsCertType(args[len(args)-2])
}

func policyFlag(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "policy", principals.DefaultPath, "policy `file`")
}

func checkCmd() *command.Command {
	var path string
	return &command.Command{
		Name:    name + " check",
		Usage:   "[--policy PATH]",
		Summary: "Checks a policy file as devid-principals reads it: exit 0 if it parses (warnings on\nstandard error: lines never used, principals of no kind devid issues), 1 with every error, as FILE:LINE: message, on standard error.",
		Flags:   func(fs *flag.FlagSet) { policyFlag(fs, &path) },
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			p, err := loadPolicy(env.Stderr, path)
			if err != nil {
				return err
			}
			for _, w := range p.Warnings() {
				fmt.Fprintf(env.Stderr, "%s:%d: warning: %s\n", w.File, w.Line, w.Msg)
			}
			fmt.Fprintf(env.Stdout, "%s: OK, %d rules\n", path, len(p.Rules))
			return nil
		},
	}
}

// loadPolicy loads a policy, listing its parse errors, if any, on w.
func loadPolicy(w io.Writer, path string) (*principals.Policy, error) {
	p, err := principals.LoadPolicy(path)
	var errs principals.ParseErrors
	if errors.As(err, &errs) {
		for _, e := range errs {
			fmt.Fprintln(w, e)
		}
		return nil, fmt.Errorf("%s does not parse (%d errors): devid-principals would deny every login", path, len(errs))
	}
	return p, err
}

func explainCmd() *command.Command {
	var path string
	return &command.Command{
		Name:    name + " explain",
		Usage:   "[--policy PATH] ACCOUNT CERT.pub",
		Summary: "Says whether devid-principals would let the certificate in CERT.pub (as ssh-keygen\nwrites it) log in to ACCOUNT, and why: each line tried and what it lacks.\nExit 0 if allowed, 1 if denied. sshd's own checks (CA, validity, KRL) are not made.",
		Flags:   func(fs *flag.FlagSet) { policyFlag(fs, &path) },
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 2, 2, "ACCOUNT CERT.pub"); err != nil {
				return err
			}
			return explain(env.Stdout, env.Stderr, path, args[0], args[1])
		},
	}
}

func explain(out, errOut io.Writer, path, account, certFile string) error {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return err
	}
	f := strings.Fields(string(data))
	if len(f) < 2 {
		return fmt.Errorf("%s: not an OpenSSH certificate file (TYPE BASE64 [COMMENT])", certFile)
	}
	c, err := principals.ParseCertificate(f[0], f[1])
	if err != nil {
		return fmt.Errorf("%s: %w", certFile, err)
	}
	kind := "user"
	if c.CertType == principals.HostCert {
		kind = "host"
	}
	fmt.Fprintf(out, "certificate: %s %s certificate, serial %d, key ID %q\n", c.Type, kind, c.Serial, c.KeyID)
	fmt.Fprintf(out, "  principals: %s\n", strings.Join(c.Principals, " "))
	fmt.Fprintf(out, "  valid: %s\n", validity(c, time.Now()))
	p, err := loadPolicy(errOut, path)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "policy: %s, %d rules\n", p.File, len(p.Rules))
	d, rs := p.Explain(account, c)
	for _, r := range rs {
		fmt.Fprintf(out, "line %d: %s\n", r.Rule.Line, r.Rule)
		switch {
		case !r.ForAccount:
			fmt.Fprintf(out, "  no: for account %s, not %s\n", r.Rule.Account, account)
		case r.Matched():
			fmt.Fprintf(out, "  matches: the certificate carries %s\n", strings.Join(r.Want, " "))
		default:
			fmt.Fprintf(out, "  no: the certificate lacks %s\n", strings.Join(r.Missing, " "))
		}
	}
	if n := len(rs); n > 0 && n < len(p.Rules) {
		fmt.Fprintf(out, "lines after %d are not tried: the first line that matches decides\n", rs[n-1].Rule.Line)
	}
	if !d.Allow {
		fmt.Fprintf(out, "denied: %s\n", d.Reason)
		return errors.New("denied")
	}
	fmt.Fprintf(out, "allowed by line %d: devid-principals prints %q for sshd\n", d.Rule.Line, d.Principal())
	return nil
}

// validity describes a certificate's validity period at now.
func validity(c *principals.Certificate, now time.Time) string {
	const forever = 1<<64 - 1
	at := func(t uint64) string {
		if t >= 1<<63 {
			return "forever"
		}
		return time.Unix(int64(t), 0).UTC().Format(time.RFC3339)
	}
	s := "from " + at(c.ValidAfter) + " to " + at(c.ValidBefore)
	if c.ValidAfter == 0 && c.ValidBefore == forever {
		s = "always"
	}
	switch n := uint64(now.Unix()); {
	case n < c.ValidAfter:
		s += " (not yet valid: sshd refuses it before asking devid-principals)"
	case n >= c.ValidBefore:
		s += " (expired: sshd refuses it before asking devid-principals)"
	}
	return s
}
