package principals

import (
	"fmt"
	"io"
	"slices"
)

// Decision is the outcome for one login.
type Decision struct {
	Allow bool
	// DeviceID is the certificate's device-ID principal, or "" when the
	// certificate fails Certificate.DeviceID.
	DeviceID string
	// Rule is the rule that allowed the login; nil when denied.
	Rule *Rule
	// Reason says why the login is denied; "" when allowed.
	Reason string
}

// Principal returns what the helper prints: the device-ID principal when
// the login is allowed, "" when it is denied.
func (d *Decision) Principal() string {
	if !d.Allow {
		return ""
	}
	return d.DeviceID
}

// Decide decides a login to account with certificate c: the first rule for
// the account whose principals c all carries allows it, provided c passes
// Certificate.DeviceID.
func (p *Policy) Decide(account string, c *Certificate) Decision {
	for i := range p.Rules {
		r := &p.Rules[i]
		if allows(r.Account, r.Principals, account, c.Principals) {
			return decision(p.File, len(p.Rules), r, account, c)
		}
	}
	return decision(p.File, len(p.Rules), nil, account, c)
}

// DecideFile decides as LoadPolicy(path) then Policy.Decide would, and
// fails as LoadPolicy would, in one pass over the file that builds no
// Policy: it is what devid-principals does at every login, where each
// allocation costs exec time.
func DecideFile(path, account string, c *Certificate) (Decision, error) {
	f, err := openPolicy(path)
	if err != nil {
		return Decision{}, err
	}
	defer f.Close()
	return decideReader(path, f, account, c)
}

// decideReader is DecideFile for a policy file read from r.
func decideReader(file string, r io.Reader, account string, c *Certificate) (Decision, error) {
	var match *Rule
	rules := 0
	err := scanReader(file, r, func(line int, fields [][]byte) {
		rules++
		if match == nil && allows(fields[0], fields[1:], account, c.Principals) {
			r := newRule(line, fields)
			match = &r
		}
	})
	if err != nil {
		return Decision{}, err
	}
	return decision(file, rules, match, account, c), nil
}

// decision is the outcome for a login to account with c, when match (nil
// if none) is the first of the policy's rules that allows it.
func decision(file string, rules int, match *Rule, account string, c *Certificate) Decision {
	id, err := c.DeviceID()
	switch {
	case err != nil:
		return Decision{Reason: err.Error()}
	case account == "":
		return Decision{DeviceID: id, Reason: "no account given"}
	case match == nil:
		return Decision{DeviceID: id, Reason: fmt.Sprintf("no line of %s matches (%d rules)", file, rules)}
	}
	return Decision{Allow: true, DeviceID: id, Rule: match}
}

// RuleResult is what Explain found for one rule.
type RuleResult struct {
	Rule *Rule
	// ForAccount reports whether the rule applies to the account.
	ForAccount bool
	// Want holds the rule's principals with {account} replaced, and Missing
	// those of them the certificate does not carry; both are nil when the
	// rule is not for the account.
	Want, Missing []string
}

// Matched reports whether the rule allows the login, if the certificate
// passes Certificate.DeviceID.
func (r *RuleResult) Matched() bool { return r.ForAccount && len(r.Missing) == 0 }

// Explain decides like Decide and also says, for each rule Decide tried, why
// it matched or did not: the results end with the first rule that matched
// (even when the certificate itself is refused), or cover every rule.
func (p *Policy) Explain(account string, c *Certificate) (Decision, []RuleResult) {
	var rs []RuleResult
	for i := range p.Rules {
		rr := RuleResult{Rule: &p.Rules[i], ForAccount: p.Rules[i].ForAccount(account)}
		if rr.ForAccount {
			for k := range rr.Rule.Principals {
				want := rr.Rule.principal(k, account)
				rr.Want = append(rr.Want, want)
				if !slices.Contains(c.Principals, want) {
					rr.Missing = append(rr.Missing, want)
				}
			}
		}
		rs = append(rs, rr)
		if rr.Matched() {
			break
		}
	}
	return p.Decide(account, c), rs
}
