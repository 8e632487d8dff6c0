package packagingtest

import (
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/hostd"
	"go.yaml.in/yaml/v2"
)

const (
	rulesPath     = "contrib/prometheus/devid-hostd.rules.yml"
	rulesTestPath = "contrib/prometheus/devid-hostd.rules_test.yml"
)

// exportedMetrics returns the names of the metrics devid-hostd exports,
// the only devid_ names the rules may use (a misspelt name makes an alert
// that never fires), from hostd's own registry rather than a copy.
func exportedMetrics(t *testing.T) []string {
	t.Helper()
	names := hostd.MetricNames()
	if len(names) == 0 {
		t.Fatal("devid-hostd exports no metrics")
	}
	return names
}

var wantAlerts = []string{
	"DevidHostCertificateExpiringSoon",
	"DevidHostCertificateExpired",
	"DevidRenewalsFailing",
	"DevidHostdDown",
	"DevidUserCAKeysStale",
	"DevidKRLStale",
	"DevidFilesBeingRestored",
}

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

func readAlertRules(t *testing.T) []alertRule {
	t.Helper()
	return readAlertRulesFile(t, rulesPath)
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

// TestAlertRulesCheck: promtool check rules accepts the rules.
func TestAlertRulesCheck(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	if out, err := exec.Command(promtool, "check", "rules", repoPath(rulesPath)).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// TestAlertRulesUnitTests: the rules pass their unit tests
// (devid-hostd.rules_test.yml, run by promtool test rules).
func TestAlertRulesUnitTests(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	cmd := exec.Command(promtool, "test", "rules", "devid-hostd.rules_test.yml")
	cmd.Dir = repoPath("contrib/prometheus")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// TestAlertRulesContent: the alerts are the seven devid documents; they use
// only metrics devid-hostd exports; each has a severity and tells whoever
// is paged what is wrong and where to look; and the unit tests show each
// one both firing and not firing.
func TestAlertRulesContent(t *testing.T) {
	exported := exportedMetrics(t)
	rules := readAlertRules(t)
	var names []string
	for _, r := range rules {
		names = append(names, r.Alert)
		for _, m := range metricName.FindAllString(r.Expr, -1) {
			if !slices.Contains(exported, m) {
				t.Errorf("%s: expr uses %s, which devid-hostd does not export", r.Alert, m)
			}
		}
		if upMetric.MatchString(r.Expr) && !strings.Contains(r.Expr, `up{job="devid-hostd"}`) {
			t.Errorf("%s: up without job=\"devid-hostd\": %s", r.Alert, r.Expr)
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
		}
		if r.Annotations["summary"] == "" || !strings.Contains(r.Annotations["description"], "journalctl -u devid-hostd") {
			t.Errorf("%s: want a summary, and a description that says where to look (journalctl -u devid-hostd)", r.Alert)
		}
	}
	if !slices.Equal(names, wantAlerts) {
		t.Errorf("alerts %q, want %q", names, wantAlerts)
	}

	var tests ruleTests
	if err := yaml.Unmarshal([]byte(readRepoFile(t, rulesTestPath)), &tests); err != nil {
		t.Fatalf("%s: %v", rulesTestPath, err)
	}
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, s := range tc.InputSeries {
			for _, m := range metricName.FindAllString(s.Series, -1) {
				if !slices.Contains(exported, m) {
					t.Errorf("%s: test %q feeds %s, which devid-hostd does not export", rulesTestPath, tc.Name, m)
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
			t.Errorf("%s: tested firing %v, not firing %v; want both", rulesTestPath, firing[name], quiet[name])
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

// TestAlertRulesREADME: contrib/README.md lists every alert of the rules
// file, in its order, with its severity, and no other.
func TestAlertRulesREADME(t *testing.T) {
	const readme = "contrib/README.md"
	var want []string
	for _, r := range readAlertRules(t) {
		want = append(want, r.Alert+" "+r.Labels["severity"])
	}
	got := readmeAlerts(t, false)
	if !slices.Equal(got, want) {
		t.Errorf("%s lists alerts %q; %s has %q", readme, got, rulesPath, want)
	}
}
