package principals

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	"github.com/devid-ssh/devid/deviceid/idform"
)

// DefaultPath is where devid-principals reads its policy.
const DefaultPath = "/etc/devid/principals.conf"

// MaxPolicySize is the largest policy file LoadPolicy reads.
const MaxPolicySize = 1 << 20

// AnyAccount in a rule's account field matches every account.
const AnyAccount = "*"

// accountPlaceholder stands for the local account in a principal.
const accountPlaceholder = "{account}"

// Policy is a parsed policy file.
type Policy struct {
	File  string // the name errors and logs give it
	Rules []Rule // in file order
}

// Rule is one line of a policy.
type Rule struct {
	Line       int      // line number in the file, from 1
	Account    string   // a login name, or AnyAccount
	Principals []string // as written, {account} not replaced; at least one
}

// String returns the rule as a policy line, fields separated by one space.
func (r *Rule) String() string {
	return r.Account + " " + strings.Join(r.Principals, " ")
}

// ForAccount reports whether the rule applies to logins to account.
func (r *Rule) ForAccount(account string) bool {
	return r.Account == AnyAccount || r.Account == account
}

// principal returns the rule's i-th principal with {account} replaced by
// account (without allocating when there is none).
func (r *Rule) principal(i int, account string) string {
	return strings.ReplaceAll(r.Principals[i], accountPlaceholder, account)
}

// carriedBy reports whether have holds every principal of r, for account.
func (r *Rule) carriedBy(account string, have []string) bool {
	for i := range r.Principals {
		if !slices.Contains(have, r.principal(i, account)) {
			return false
		}
	}
	return true
}

// ParseError is a line of a policy that does not parse, or, from
// Policy.Warnings, a line that can never allow a login.
type ParseError struct {
	File string
	Line int
	Msg  string
}

func (e *ParseError) Error() string { return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Msg }

// ParseErrors lists every line of a policy that does not parse, in order.
type ParseErrors []*ParseError

// Error returns the first error, and how many more there are.
func (e ParseErrors) Error() string {
	switch len(e) {
	case 0:
		return "principals: no error"
	case 1:
		return e[0].Error()
	default:
		return fmt.Sprintf("%s (and %d more errors)", e[0].Error(), len(e)-1)
	}
}

// ParsePolicy parses a policy file's contents; file names it in errors. A
// policy with errors returns every one of them as ParseErrors, and no
// Policy: it must allow nobody in.
func ParsePolicy(file string, data []byte) (*Policy, error) {
	p := &Policy{File: file}
	var errs ParseErrors
	for n := 1; len(data) > 0; n++ {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte("\n"))
		r, msg := parseLine(line)
		switch {
		case msg != "":
			errs = append(errs, &ParseError{File: file, Line: n, Msg: msg})
		case r != nil:
			r.Line = n
			p.Rules = append(p.Rules, *r)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return p, nil
}

// parseLine parses one line without its newline: a rule, or nil for a
// blank or comment line, or why it does not parse.
func parseLine(line []byte) (*Rule, string) {
	if msg := checkText(line); msg != "" {
		return nil, msg
	}
	var fields []string
	for _, f := range strings.FieldsFunc(string(line), func(r rune) bool { return r == ' ' || r == '\t' }) {
		if strings.HasPrefix(f, "#") {
			break
		}
		fields = append(fields, f)
	}
	if len(fields) == 0 {
		return nil, ""
	}
	r := &Rule{Account: fields[0], Principals: fields[1:]}
	if msg := checkAccount(r.Account); msg != "" {
		return nil, msg
	}
	if len(r.Principals) == 0 {
		return nil, fmt.Sprintf("account %s lists no principals", r.Account)
	}
	for i, p := range r.Principals {
		if msg := checkPrincipal(p); msg != "" {
			return nil, msg
		}
		if slices.Contains(r.Principals[:i], p) {
			return nil, fmt.Sprintf("%s is listed twice", p)
		}
	}
	return r, ""
}

// checkText says what is wrong with a line's characters, if anything.
func checkText(line []byte) string {
	for i := 0; i < len(line); {
		c, size := utf8.DecodeRune(line[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			return fmt.Sprintf("not UTF-8 text (byte %#02x at column %d)", line[i], i+1)
		case c == '\r':
			return "control character U+000D (a CRLF line ending?)"
		case c == ' ' || c == '\t':
		case unicode.IsControl(c):
			return fmt.Sprintf("control character %U", c)
		case unicode.IsSpace(c):
			return fmt.Sprintf("%U is white space other than space or tab", c)
		case unicode.In(c, unicode.Cf):
			return fmt.Sprintf("invisible formatting character %U", c)
		}
		i += size
	}
	return ""
}

func checkAccount(a string) string {
	switch {
	case a == AnyAccount:
		return ""
	case strings.Contains(a, "{"), strings.Contains(a, "}"):
		return fmt.Sprintf("%s: placeholders belong in principals, not in the account field", a)
	case strings.Contains(a, "*"):
		return fmt.Sprintf("account %s: patterns are not supported; * alone matches any account", a)
	case !validLogin(a):
		return fmt.Sprintf("account %s is not a login name (letters, digits, . _ - @, an optional final $, not starting with -)", a)
	}
	return ""
}

// validLogin reports whether a is a login name the policy accepts: see the
// package documentation.
func validLogin(a string) bool {
	a = strings.TrimSuffix(a, "$")
	if a == "" || a[0] == '-' {
		return false
	}
	for i := 0; i < len(a); i++ {
		c := a[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._-@", c) >= 0) {
			return false
		}
	}
	return true
}

func checkPrincipal(p string) string {
	if name, _, ok := strings.Cut(p, "="); ok && !strings.Contains(name, ":") && isOptionName(name) {
		return fmt.Sprintf("%s looks like an option; options (%s=) are not supported", p, name)
	}
	for rest := p; rest != ""; {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			break
		}
		if rest[open] == '}' {
			return fmt.Sprintf("%s has } without {", p)
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return fmt.Sprintf("%s has { without }", p)
		}
		if ph := rest[open : open+end+1]; ph != accountPlaceholder {
			return fmt.Sprintf("unknown placeholder %s (the only one is %s)", ph, accountPlaceholder)
		}
		rest = rest[open+end+1:]
	}
	if strings.HasPrefix(p, "urn:ek:") && !idform.Valid(p) {
		return fmt.Sprintf("%s is not a device ID (%s and 44 characters of standard base64)", p, idform.Prefix)
	}
	return ""
}

func isOptionName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && ('0' <= c && c <= '9' || c == '-' || c == '_')) {
			return false
		}
	}
	return true
}

// LoadPolicy reads and parses the policy at path. Besides ParsePolicy's
// errors it refuses a file that is not regular, is writable by group or
// others, is owned by neither root nor the calling user, or is larger than
// MaxPolicySize.
func LoadPolicy(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("principals: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("principals: %w", err)
	}
	if msg := checkMode(fi); msg != "" {
		return nil, fmt.Errorf("principals: %s: %s", path, msg)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("principals: read %s: %w", path, err)
	}
	if len(data) > MaxPolicySize {
		return nil, fmt.Errorf("principals: %s: larger than %d bytes", path, MaxPolicySize)
	}
	return ParsePolicy(path, data)
}

func checkMode(fi os.FileInfo) string {
	if !fi.Mode().IsRegular() {
		return fmt.Sprintf("not a regular file (%s)", fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Sprintf("writable by group or others (mode %#o)", perm)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Sprintf("owned by uid %d, neither root nor the user reading it (uid %d)", st.Uid, os.Geteuid())
	}
	return ""
}

// String returns the policy as a file that parses to the same rules.
func (p *Policy) String() string {
	var b strings.Builder
	for i := range p.Rules {
		b.WriteString(p.Rules[i].String())
		b.WriteByte('\n')
	}
	return b.String()
}

// Warnings lists the rules that can never allow a login, because an earlier
// rule matches every login they would, and says so for a policy without
// rules. A policy with warnings is valid; the warnings point at mistakes.
func (p *Policy) Warnings() []*ParseError {
	var ws []*ParseError
	if len(p.Rules) == 0 {
		ws = append(ws, &ParseError{File: p.File, Line: 1, Msg: "no rules: every login is denied"})
	}
	for j := range p.Rules {
		later := &p.Rules[j]
		for i := range p.Rules[:j] {
			earlier := &p.Rules[i]
			if !earlier.covers(later) {
				continue
			}
			msg := fmt.Sprintf("never used: line %d (%s) matches every login this line would", earlier.Line, earlier)
			if earlier.String() == later.String() {
				msg = fmt.Sprintf("duplicate of line %d", earlier.Line)
			}
			ws = append(ws, &ParseError{File: p.File, Line: later.Line, Msg: msg})
			break
		}
	}
	return ws
}

// covers reports whether r matches every login that later matches: it
// applies to every account later does, and for each of them requires no
// principal later does not.
func (r *Rule) covers(later *Rule) bool {
	if !r.ForAccount(later.Account) {
		return false
	}
	if later.Account == AnyAccount {
		// Both rules apply to every account: compare the principals as
		// written, placeholders and all.
		for _, p := range r.Principals {
			if !slices.Contains(later.Principals, p) {
				return false
			}
		}
		return true
	}
	have := make([]string, len(later.Principals))
	for k := range later.Principals {
		have[k] = later.principal(k, later.Account)
	}
	return r.carriedBy(later.Account, have)
}
