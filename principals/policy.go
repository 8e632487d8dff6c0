package principals

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

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

// newRule makes the rule of line from its fields, as scan gives them.
func newRule(line int, fields [][]byte) Rule {
	r := Rule{Line: line, Account: string(fields[0]), Principals: make([]string, len(fields)-1)}
	for i, f := range fields[1:] {
		r.Principals[i] = string(f)
	}
	return r
}

// ForAccount reports whether the rule applies to logins to account.
func (r *Rule) ForAccount(account string) bool { return forAccount(r.Account, account) }

// principal returns the rule's i-th principal with {account} replaced by
// account.
func (r *Rule) principal(i int, account string) string {
	return strings.ReplaceAll(r.Principals[i], accountPlaceholder, account)
}

// ParseError is a line of a policy that does not parse.
type ParseError struct {
	File string
	Line int
	Msg  string
}

func (e *ParseError) Error() string { return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Msg }

// Warning is a line of a valid policy that points at a mistake: it can
// never allow a login (Policy.Warnings). Not an error: the policy is used.
type Warning struct {
	File string
	Line int
	Msg  string
}

func (w Warning) String() string { return w.File + ":" + strconv.Itoa(w.Line) + ": " + w.Msg }

// issuedPrefixes start every principal devid puts in a certificate: the
// device ID, and for a workstation's owner user:EMAIL, login:LOGIN,
// group:GROUP and collection:COLLECTION (package issuance). A policy
// principal that starts with none of them matches no devid certificate.
var issuedPrefixes = []string{idform.Prefix, "user:", "login:", "group:", "collection:"}

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
	s := &scanner{file: file, each: p.add}
	s.scan(data)
	if s.errs != nil {
		return nil, s.errs
	}
	return p, nil
}

// LoadPolicy reads and parses the policy at path. Besides ParsePolicy's
// errors it refuses a file that is not regular, is writable by group or
// others, is owned by neither root nor the calling user, or is larger than
// MaxPolicySize.
func LoadPolicy(path string) (*Policy, error) {
	f, err := openPolicy(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p := &Policy{File: path}
	if err := scanReader(path, f, p.add); err != nil {
		return nil, err
	}
	return p, nil
}

// add adds the rule of line, from its fields as the scanner gives them.
func (p *Policy) add(line int, fields [][]byte) {
	p.Rules = append(p.Rules, newRule(line, fields))
}

// checkMode says why the policy file st describes is not to be trusted, if
// it is not: see LoadPolicy.
func checkMode(st *syscall.Stat_t) string {
	if typ := st.Mode & syscall.S_IFMT; typ != syscall.S_IFREG {
		kind := map[uint32]string{syscall.S_IFDIR: "a directory", syscall.S_IFIFO: "a FIFO",
			syscall.S_IFSOCK: "a socket", syscall.S_IFCHR: "a device", syscall.S_IFBLK: "a device"}[typ]
		return "not a regular file but " + kind
	}
	if perm := os.FileMode(st.Mode).Perm(); perm&0o022 != 0 {
		return fmt.Sprintf("writable by group or others (mode %#o)", perm)
	}
	if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
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

// Warnings lists the rules that can never allow a login with a devid
// certificate: those an earlier rule matches every login of, and those
// requiring a principal of no kind devid issues (issuedPrefixes); and says
// so for a policy without rules. A policy with warnings is valid; the
// warnings point at mistakes.
func (p *Policy) Warnings() []Warning {
	var ws []Warning
	if len(p.Rules) == 0 {
		ws = append(ws, Warning{File: p.File, Line: 1, Msg: "no rules: every login is denied"})
	}
	for j := range p.Rules {
		later := &p.Rules[j]
		if pr, ok := later.foreignPrincipal(); ok {
			ws = append(ws, Warning{File: p.File, Line: later.Line, Msg: fmt.Sprintf(
				"principal %q is of no kind devid issues (device IDs %s…, user:, login:, group:, collection:): this line allows no devid certificate", pr, idform.Prefix)})
			continue
		}
		for i := range p.Rules[:j] {
			earlier := &p.Rules[i]
			if !earlier.covers(later) {
				continue
			}
			msg := fmt.Sprintf("never used: line %d (%s) matches every login this line would", earlier.Line, earlier)
			if earlier.String() == later.String() {
				msg = fmt.Sprintf("duplicate of line %d", earlier.Line)
			}
			ws = append(ws, Warning{File: p.File, Line: later.Line, Msg: msg})
			break
		}
	}
	return ws
}

// foreignPrincipal returns the first principal of r that starts with none
// of issuedPrefixes.
func (r *Rule) foreignPrincipal() (string, bool) {
	for _, pr := range r.Principals {
		if !slices.ContainsFunc(issuedPrefixes, func(prefix string) bool { return strings.HasPrefix(pr, prefix) }) {
			return pr, true
		}
	}
	return "", false
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
	return allows(r.Account, r.Principals, later.Account, have)
}
