package packagingtest

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/caserver"
	"go.yaml.in/yaml/v2"
)

const (
	caRulesPath     = "contrib/prometheus/devid-ca.rules.yml"
	caRulesTestPath = "contrib/prometheus/devid-ca.rules_test.yml"
)

var wantCAAlerts = []string{
	"DevidCADown",
	"DevidCACertificateExpiringSoon",
	"DevidCATLSCertificateNotRenewed",
	"DevidCARefusalsSpike",
	"DevidCAStoreErrors",
	"DevidCAKRLNotRebuilt",
}

// TestCAAlertRulesCheck: promtool check rules accepts devid-ca's rules.
func TestCAAlertRulesCheck(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	if out, err := exec.Command(promtool, "check", "rules", repoPath(caRulesPath)).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// TestCAAlertRulesUnitTests: devid-ca's rules pass their unit tests
// (devid-ca.rules_test.yml, run by promtool test rules).
func TestCAAlertRulesUnitTests(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	cmd := exec.Command(promtool, "test", "rules", "devid-ca.rules_test.yml")
	cmd.Dir = repoPath("contrib/prometheus")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// TestCAAlertRulesContent: the alerts are the ones documented; they and
// their tests use only metrics devid-ca exports (caserver.MetricNames, from
// its registry's own collectors); each has a severity and says where to
// look; and the unit tests show each one both firing and not firing.
func TestCAAlertRulesContent(t *testing.T) {
	exported := caserver.MetricNames()
	if len(exported) == 0 {
		t.Fatal("devid-ca exports no metrics")
	}
	rules := readAlertRulesFile(t, caRulesPath)
	var names []string
	for _, r := range rules {
		names = append(names, r.Alert)
		for _, m := range metricName.FindAllString(r.Expr, -1) {
			if !slices.Contains(exported, m) {
				t.Errorf("%s: expr uses %s, which devid-ca does not export", r.Alert, m)
			}
		}
		if upMetric.MatchString(r.Expr) && !strings.Contains(r.Expr, `up{job="devid-ca"}`) {
			t.Errorf("%s: up without job=\"devid-ca\": %s", r.Alert, r.Expr)
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
		}
		if r.Annotations["summary"] == "" || !strings.Contains(r.Annotations["description"], "journalctl -u devid-ca") {
			t.Errorf("%s: want a summary, and a description that says where to look (journalctl -u devid-ca)", r.Alert)
		}
	}
	if !slices.Equal(names, wantCAAlerts) {
		t.Errorf("alerts %q, want %q", names, wantCAAlerts)
	}
	var tests ruleTests
	if err := yaml.Unmarshal([]byte(readRepoFile(t, caRulesTestPath)), &tests); err != nil {
		t.Fatalf("%s: %v", caRulesTestPath, err)
	}
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, s := range tc.InputSeries {
			for _, m := range metricName.FindAllString(s.Series, -1) {
				if !slices.Contains(exported, m) {
					t.Errorf("%s: test %q feeds %s, which devid-ca does not export", caRulesTestPath, tc.Name, m)
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
			t.Errorf("%s: %s tested firing %v, not firing %v; want both", caRulesTestPath, name, firing[name], quiet[name])
		}
	}
}

// TestCAAlertRulesREADME: contrib/README.md's devid-ca section lists every
// alert of devid-ca's rules, in order, with its severity, and no other.
func TestCAAlertRulesREADME(t *testing.T) {
	var want []string
	for _, r := range readAlertRulesFile(t, caRulesPath) {
		want = append(want, r.Alert+" "+r.Labels["severity"])
	}
	if got := readmeAlerts(t, true); !slices.Equal(got, want) {
		t.Errorf("contrib/README.md's devid-ca section lists alerts %q; %s has %q", got, caRulesPath, want)
	}
}
