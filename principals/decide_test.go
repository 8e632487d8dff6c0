package principals_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/principals"
)

func TestDecide(t *testing.T) {
	dev, other := devID("laptop-1"), devID("laptop-2")
	deployID := "urn:ek:sha256:q1w2e3r4t5y6u7i8o9p0q1w2e3r4t5y6u7i8o9p0q1w="
	user := func(keyID string, ps ...string) *principals.Certificate {
		return &principals.Certificate{Type: "ssh-ed25519-cert-v01@openssh.com", CertType: principals.UserCert, KeyID: keyID, Principals: ps, Serial: 7}
	}
	host := user(dev, dev, "login:alice")
	host.CertType = principals.HostCert

	design := mustParse(t, designPolicy)
	firstWins := mustParse(t, "alice group:dev\n* login:{account}\nalice login:alice\n")
	multi := mustParse(t, "admin group:sre collection:sre-laptops\n* user:{account}@example.com login:{account}\n")

	for _, tc := range []struct {
		name    string
		policy  *principals.Policy
		account string
		cert    *principals.Certificate
		line    int    // the rule that allows; 0 = deny
		reason  string // when denied
	}{
		{"account and all principals", design, "admin", user(dev, dev, "group:sre", "collection:sre-laptops"), 2, ""},
		{"one principal missing", design, "admin", user(dev, dev, "group:sre", "login:bob"), 0, "no line of principals.conf matches (3 rules)"},
		{"other account's line", design, "alice", user(dev, dev, "group:sre", "collection:sre-laptops"), 0, "no line of principals.conf matches (3 rules)"},
		{"* with {account}", design, "alice", user(dev, dev, "login:alice"), 4, ""},
		{"{account} is the account logged in to", design, "bob", user(dev, dev, "login:alice"), 0, "no line of principals.conf matches (3 rules)"},
		{"literal {account} principal is not a wildcard", design, "bob", user(dev, dev, "login:{account}"), 0, "no line of principals.conf matches (3 rules)"},
		{"device ID as the required principal", design, "deploy", user(deployID, deployID), 3, ""},
		{"device ID of another device", design, "deploy", user(dev, dev), 0, "no line of principals.conf matches (3 rules)"},
		{"first match wins", firstWins, "alice", user(dev, dev, "group:dev", "login:alice"), 1, ""},
		{"later line when the first does not match", firstWins, "alice", user(dev, dev, "login:alice"), 2, ""},
		{"all principals of a line required", multi, "carol", user(dev, dev, "user:carol@example.com"), 0, "no line of principals.conf matches (2 rules)"},
		{"all principals of a line present", multi, "carol", user(dev, dev, "login:carol", "user:carol@example.com"), 2, ""},
		{"case matters", design, "Alice", user(dev, dev, "login:alice"), 0, "no line of principals.conf matches (3 rules)"},
		{"no device-ID principal", design, "alice", user(dev, "login:alice"), 0, "the certificate has no device-ID principal"},
		{"malformed device ID", design, "alice", user(dev[:len(dev)-1], dev[:len(dev)-1], "login:alice"), 0, "the certificate has no device-ID principal"},
		{"two device IDs", design, "alice", user(dev, dev, other, "login:alice"), 0, "the certificate has 2 device-ID principals; devid's CA issues one"},
		{"key ID mismatch", design, "alice", user(other, dev, "login:alice"), 0, `key ID "` + other + `" is not the device-ID principal ` + dev},
		{"empty key ID", design, "alice", user("", dev, "login:alice"), 0, `key ID "" is not the device-ID principal ` + dev},
		{"host certificate", design, "alice", host, 0, "a host certificate, not a user certificate"},
		{"empty policy", mustParse(t, ""), "alice", user(dev, dev, "login:alice"), 0, "no line of principals.conf matches (0 rules)"},
		{"no account", design, "", user(dev, dev, "login:"), 0, "no account given"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.policy.Decide(tc.account, tc.cert)
			if tc.line == 0 {
				if d.Allow || d.Rule != nil || d.Principal() != "" || d.Reason != tc.reason {
					t.Fatalf("Decide = %+v, want deny: %s", d, tc.reason)
				}
				return
			}
			if !d.Allow || d.Rule == nil || d.Rule.Line != tc.line || d.Reason != "" {
				t.Fatalf("Decide = %+v (rule %+v), want allow by line %d", d, d.Rule, tc.line)
			}
			if d.Principal() != tc.cert.KeyID || d.DeviceID != tc.cert.KeyID {
				t.Fatalf("prints %q, want the device ID %s", d.Principal(), tc.cert.KeyID)
			}
			// Explain agrees, and its last result is the rule that matched.
			e, rs := tc.policy.Explain(tc.account, tc.cert)
			if last := rs[len(rs)-1]; e.Principal() != d.Principal() || last.Rule != d.Rule || !last.Matched() {
				t.Fatalf("Explain = %+v, %+v", e, rs)
			}
		})
	}
}

func TestExplain(t *testing.T) {
	dev := devID("laptop-1")
	p := mustParse(t, designPolicy+"alice group:dev\n")
	cert := &principals.Certificate{CertType: principals.UserCert, KeyID: dev, Principals: []string{dev, "group:sre", "login:alice"}}
	d, rs := p.Explain("alice", cert)
	if !d.Allow || d.Rule.Line != 4 {
		t.Fatalf("decision %+v", d)
	}
	// Lines 2 and 3 are for other accounts; line 4 matches; line 5 is not tried.
	if len(rs) != 3 || rs[0].ForAccount || rs[1].ForAccount || !rs[2].Matched() || strings.Join(rs[2].Want, " ") != "login:alice" {
		t.Fatalf("results %+v", rs)
	}
	d, rs = p.Explain("admin", cert)
	if d.Allow || len(rs) != 4 || !rs[0].ForAccount || strings.Join(rs[0].Missing, " ") != "collection:sre-laptops" || strings.Join(rs[2].Missing, " ") != "login:admin" {
		t.Fatalf("admin: %+v %+v", d, rs)
	}
	// A rule that would match, but the certificate is refused.
	cert.KeyID = "laptop-1"
	d, rs = p.Explain("alice", cert)
	if d.Allow || !rs[len(rs)-1].Matched() || !strings.HasPrefix(d.Reason, "key ID") {
		t.Fatalf("refused certificate: %+v %+v", d, rs)
	}
}

// TestDecideFile: the helper's one-pass decision reads the file as
// LoadPolicy does, decides as Decide does, and allocates nothing per line.
func TestDecideFile(t *testing.T) {
	dev := devID("laptop-1")
	c := &principals.Certificate{CertType: principals.UserCert, KeyID: dev, Principals: []string{dev, "login:alice", "group:sre"}}
	dir := t.TempDir()
	write := func(name, text string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	small := write("small.conf", designPolicy)
	d, err := principals.DecideFile(small, "alice", c)
	if err != nil || !d.Allow || d.Rule.Line != 4 || d.Rule.String() != "* login:{account}" || d.Principal() != dev {
		t.Fatalf("DecideFile = %+v, %v", d, err)
	}
	if _, err := principals.DecideFile(filepath.Join(dir, "missing.conf"), "alice", c); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing: %v", err)
	}
	broken := write("broken.conf", designPolicy+"ops\n")
	if _, err := principals.DecideFile(broken, "alice", c); err == nil || err.Error() != broken+":5: account ops lists no principals" {
		t.Fatalf("broken: %v", err)
	}
	// A line after the match that does not parse still denies.
	if _, err := principals.DecideFile(write("late.conf", "* login:{account}\n* login:{user}\n"), "alice", c); err == nil {
		t.Fatal("an error after the matching line passed")
	}

	// Lines across the reads of an 8 KiB buffer, and one longer than it.
	long := "* login:{account} group:" + strings.Repeat("x", 20000) + "\n"
	var chunky strings.Builder
	for i := range 700 {
		fmt.Fprintf(&chunky, "user%d group:g%d\n", i, i)
	}
	chunkyFile := write("chunky.conf", chunky.String()+long+"* login:{account}\n")
	d, err = principals.DecideFile(chunkyFile, "alice", c)
	if p, perr := principals.LoadPolicy(chunkyFile); err != nil || perr != nil || !d.Allow || d.Rule.Line != 702 || len(p.Rules) != 702 || p.Rules[700].Principals[1] != long[18:len(long)-1] {
		t.Fatalf("chunky: %+v, %v, %v", d, err, perr)
	}

	var big strings.Builder
	for i := range 999 {
		fmt.Fprintf(&big, "* group:team-%d login:{account}\n", i)
	}
	big.WriteString("* login:{account}\n")
	bigFile := write("big.conf", big.String())
	allocs := func(path string) float64 {
		return testing.AllocsPerRun(20, func() {
			if d, err := principals.DecideFile(path, "alice", c); err != nil || !d.Allow {
				t.Fatal(d, err)
			}
		})
	}
	if a, b := allocs(small), allocs(bigFile); b > a {
		t.Errorf("DecideFile allocates %v times for 4 lines, %v times for 1,000", a, b)
	}
}
