// Package principalscli is the devid-principals command: sshd's
// AuthorizedPrincipalsCommand, and the check and explain subcommands. The
// decision itself is package principals.
//
// sshd runs the helper twice per successful login, so it imports little
// (no package net: see package idform) and does no work at start-up.
package principalscli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/devid-ssh/devid/internal/cliutil"
	"github.com/devid-ssh/devid/principals"
)

// Deadline bounds a decision: past it the helper denies and exits 0, well
// before sshd's LoginGraceTime.
const Deadline = 500 * time.Millisecond

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

Run 'devid-principals COMMAND --help' for a command's flags.
`

// Main runs devid-principals with args and returns its exit code.
//
// sshd's invocation is recognised before anything else: when the
// second-to-last argument is a certificate type, the last three arguments
// are the account, type and certificate whatever they look like (an account
// named check, or --help), and nothing but a principal ever reaches
// standard output.
func Main(args []string, env *cliutil.Env) int {
	if !sshdForm(args) && len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help", "help":
			if len(args) == 1 {
				io.WriteString(env.Stdout, usage)
				return cliutil.ExitOK
			}
		case "check":
			return cliutil.Run(checkCmd(), env, args[1:])
		case "explain":
			return cliutil.Run(explainCmd(), env, args[1:])
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

// helperArgs are the helper's command line.
type helperArgs struct {
	policy, log                string
	account, certType, certB64 string
}

func parseHelperArgs(args []string) (*helperArgs, error) {
	a := &helperArgs{}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	policyFlag(fs, &a.policy)
	fs.StringVar(&a.log, "log", "syslog", "")
	flags, pos := args, []string(nil)
	if sshdForm(args) {
		flags, pos = args[:len(args)-3], args[len(args)-3:]
	}
	if err := fs.Parse(flags); err != nil {
		return nil, err
	}
	pos = append(fs.Args(), pos...)
	if len(pos) != 3 {
		return nil, fmt.Errorf("want ACCOUNT CERT-TYPE BASE64-CERT, got %d argument(s)", len(pos))
	}
	if a.log != "syslog" && a.log != "stderr" {
		return nil, fmt.Errorf("--log %q: want syslog or stderr", a.log)
	}
	a.account, a.certType, a.certB64 = pos[0], pos[1], pos[2]
	return a, nil
}

// outcome is a decision and what its log line says.
type outcome struct {
	cert     *principals.Certificate // nil if it did not parse
	decision principals.Decision
	// failure is why the helper could not decide (a bad certificate, a
	// missing or broken policy, a panic, the deadline); it denies.
	failure string
}

// helper is what sshd runs: print the principal to allow, nothing to deny,
// exit 0 either way; exit 2 for a wrong command line.
func helper(args []string, env *cliutil.Env) int {
	start := time.Now()
	a, err := parseHelperArgs(args)
	if err != nil {
		fmt.Fprintf(env.Stderr, "%s: %v (see %s --help)\n", name, err, name)
		if l := openLog("syslog", nil); l != nil { // sshd discards standard error
			l.write(sevErr, record("usage", "reason", err.Error()))
			l.close()
		}
		return cliutil.ExitUsage
	}
	o := decideWithin(start.Add(Deadline), a)
	msg := "deny"
	if p := o.decision.Principal(); p != "" {
		if _, err := io.WriteString(env.Stdout, p+"\n"); err != nil {
			o.failure = "writing the principal for sshd: " + err.Error()
		} else {
			msg = "allow"
		}
	}
	fields := []string{"account", a.account}
	if c := o.cert; c != nil {
		id, _ := c.DeviceID() // "" when the certificate has none, or not one devid's CA would issue
		fields = append(fields, "device_id", id, "key_id", c.KeyID, "serial", strconv.FormatUint(c.Serial, 10))
	}
	fields = append(fields, "policy", a.policy)
	sev := sevInfo
	switch {
	case o.failure != "":
		sev = sevErr
		fields = append(fields, "reason", o.failure)
	case msg == "allow":
		fields = append(fields, "line", strconv.Itoa(o.decision.Rule.Line), "rule", o.decision.Rule.String())
	default:
		fields = append(fields, "reason", o.decision.Reason)
	}
	fields = append(fields, "elapsed", strconv.FormatFloat(float64(time.Since(start).Microseconds())/1000, 'f', 2, 64)+"ms")
	l := openLog(a.log, env.Stderr)
	l.write(sev, record(msg, fields...))
	l.close()
	return cliutil.ExitOK
}

// decideWithin decides, or denies when the decision panics or is not made
// by deadline (the policy file could be a FIFO, or on a hung file system).
func decideWithin(deadline time.Time, a *helperArgs) (o outcome) {
	defer func() {
		if r := recover(); r != nil {
			o = outcome{cert: o.cert, failure: fmt.Sprintf("internal error: %v", r)}
		}
	}()
	cert, err := principals.ParseCertificate(a.certType, a.certB64)
	if err != nil {
		return outcome{failure: err.Error()}
	}
	done := make(chan outcome, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- outcome{cert: cert, failure: fmt.Sprintf("internal error: %v", r)}
			}
		}()
		p, err := principals.LoadPolicy(a.policy)
		if err != nil {
			done <- outcome{cert: cert, failure: err.Error()}
			return
		}
		done <- outcome{cert: cert, decision: p.Decide(a.account, cert)}
	}()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case o = <-done:
		return o
	case <-t.C:
		return outcome{cert: cert, failure: fmt.Sprintf("no decision within %v: denied", Deadline)}
	}
}

// record formats a log line: msg=MSG then the key-value pairs kv, values
// quoted when they need it.
func record(msg string, kv ...string) string {
	var b strings.Builder
	b.WriteString("msg=" + msg)
	for i := 0; i+1 < len(kv); i += 2 {
		b.WriteString(" " + kv[i] + "=")
		if v := kv[i+1]; v == "" || strings.IndexFunc(v, func(r rune) bool { return r <= ' ' || r == '"' || r == '=' || r >= 0x7f }) >= 0 {
			b.WriteString(strconv.Quote(v))
		} else {
			b.WriteString(v)
		}
	}
	return b.String()
}

func checkCmd() *cliutil.Command {
	var path string
	return &cliutil.Command{
		Name:    name + " check",
		Usage:   "[--policy PATH]",
		Summary: "Checks a policy file as devid-principals reads it: exit 0 if it parses (warnings\non standard error), 1 with every error, as FILE:LINE: message, on standard error.",
		Flags:   func(fs *flag.FlagSet) { policyFlag(fs, &path) },
		Run: func(env *cliutil.Env, args []string) error {
			if err := cliutil.Args(args, 0, 0, "no arguments"); err != nil {
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

func explainCmd() *cliutil.Command {
	var path string
	return &cliutil.Command{
		Name:    name + " explain",
		Usage:   "[--policy PATH] ACCOUNT CERT.pub",
		Summary: "Says whether devid-principals would let the certificate in CERT.pub (as ssh-keygen\nwrites it) log in to ACCOUNT, and why: each line tried and what it lacks.\nExit 0 if allowed, 1 if denied. sshd's own checks (CA, validity, KRL) are not made.",
		Flags:   func(fs *flag.FlagSet) { policyFlag(fs, &path) },
		Run: func(env *cliutil.Env, args []string) error {
			if err := cliutil.Args(args, 2, 2, "ACCOUNT CERT.pub"); err != nil {
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
