package packagingtest

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v2"
)

// What devid-hostd's and devid-ca's Prometheus alert rules share: how
// promtool checks them, what their content must be, and how
// contrib/README.md lists them.

var (
	metricName = regexp.MustCompile(`\bdevid_[a-z0-9_]+`)
	upMetric   = regexp.MustCompile(`\bup\b`)
)

type alertRule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type ruleTests struct {
	Tests []struct {
		Name        string `yaml:"name"`
		InputSeries []struct {
			Series string `yaml:"series"`
		} `yaml:"input_series"`
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// readAlertRulesFile reads the alert rules of a rules file, given relative
// to the repository's root.
func readAlertRulesFile(t *testing.T, rulesPath string) []alertRule {
	t.Helper()
	var f struct {
		Groups []struct {
			Name  string      `yaml:"name"`
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.UnmarshalStrict([]byte(readRepoFile(t, rulesPath)), &f); err != nil {
		t.Fatalf("%s: %v", rulesPath, err)
	}
	var rules []alertRule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

// promtoolCheckRules: promtool check rules accepts the rules file (relative
// to the repository's root).
func promtoolCheckRules(t *testing.T, rulesPath string) {
	t.Helper()
	promtool := tool(t, "promtool", "prometheus")
	if out, err := exec.Command(promtool, "check", "rules", repoPath(rulesPath)).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// promtoolTestRules: the rules pass their unit tests (testsPath, relative
// to the repository's root, run by promtool test rules from its directory,
// as its rule_files are relative to it).
func promtoolTestRules(t *testing.T, testsPath string) {
	t.Helper()
	promtool := tool(t, "promtool", "prometheus")
	cmd := exec.Command(promtool, "test", "rules", filepath.Base(testsPath))
	cmd.Dir = repoPath(filepath.Dir(testsPath))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// checkAlertRulesContent: daemon's rules (rulesPath) hold the alerts want,
// in order; they and their unit tests (testsPath) use only metrics in
// exported (a misspelt name makes an alert that never fires), and up only
// as up{job="DAEMON"}; each has a severity, a summary, and a description
// that says where to look (journalctl -u DAEMON); and the unit tests show
// each one both firing and not firing.
func checkAlertRulesContent(t *testing.T, daemon, rulesPath, testsPath string, exported, want []string) {
	t.Helper()
	var names []string
	for _, r := range readAlertRulesFile(t, rulesPath) {
		names = append(names, r.Alert)
		for _, m := range metricName.FindAllString(r.Expr, -1) {
			if !slices.Contains(exported, m) {
				t.Errorf("%s: expr uses %s, which %s does not export", r.Alert, m, daemon)
			}
		}
		if upMetric.MatchString(r.Expr) && !strings.Contains(r.Expr, `up{job="`+daemon+`"}`) {
			t.Errorf("%s: up without job=%q: %s", r.Alert, daemon, r.Expr)
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
		}
		if r.Annotations["summary"] == "" || !strings.Contains(r.Annotations["description"], "journalctl -u "+daemon) {
			t.Errorf("%s: want a summary, and a description that says where to look (journalctl -u %s)", r.Alert, daemon)
		}
	}
	if !slices.Equal(names, want) {
		t.Errorf("alerts %q, want %q", names, want)
	}

	var tests ruleTests
	if err := yaml.Unmarshal([]byte(readRepoFile(t, testsPath)), &tests); err != nil {
		t.Fatalf("%s: %v", testsPath, err)
	}
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, s := range tc.InputSeries {
			for _, m := range metricName.FindAllString(s.Series, -1) {
				if !slices.Contains(exported, m) {
					t.Errorf("%s: test %q feeds %s, which %s does not export", testsPath, tc.Name, m, daemon)
				}
			}
		}
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, name := range names {
		if !firing[name] || !quiet[name] {
			t.Errorf("%s: %s tested firing %v, not firing %v; want both", testsPath, name, firing[name], quiet[name])
		}
	}
}

// readmeAlertRow is a row of contrib/README.md's alert table.
var readmeAlertRow = regexp.MustCompile(`(?m)^\| (Devid[A-Za-z]+) \| ([a-z]+) \|`)

// caRulesHeading starts contrib/README.md's section on devid-ca's rules,
// after devid-hostd's.
const caRulesHeading = "### devid-ca.rules.yml"

// readmeAlerts returns the alerts of contrib/README.md's alert table in
// devid-hostd's section (caRules false) or devid-ca's: "NAME SEVERITY".
func readmeAlerts(t *testing.T, caRules bool) []string {
	t.Helper()
	text := readRepoFile(t, "contrib/README.md")
	hostdPart, caPart, ok := strings.Cut(text, "\n"+caRulesHeading+"\n")
	if !ok {
		t.Fatalf("contrib/README.md has no heading %q", caRulesHeading)
	}
	part := hostdPart
	if caRules {
		part = caPart
	}
	var out []string
	for _, m := range readmeAlertRow.FindAllStringSubmatch(part, -1) {
		out = append(out, m[1]+" "+m[2])
	}
	return out
}

// checkREADMEAlerts: contrib/README.md's section on the rules file
// (devid-ca's if caRules, else devid-hostd's) lists every alert of the
// rules file, in its order, with its severity, and no other.
func checkREADMEAlerts(t *testing.T, rulesPath string, caRules bool) {
	t.Helper()
	var want []string
	for _, r := range readAlertRulesFile(t, rulesPath) {
		want = append(want, r.Alert+" "+r.Labels["severity"])
	}
	section := "devid-hostd's"
	if caRules {
		section = "devid-ca's"
	}
	if got := readmeAlerts(t, caRules); !slices.Equal(got, want) {
		t.Errorf("contrib/README.md's %s section lists alerts %q; %s has %q", section, got, rulesPath, want)
	}
}
