package packagingtest

import (
	"testing"

	"github.com/devid-ssh/devid/hostd"
)

const (
	rulesPath     = "contrib/prometheus/devid-hostd.rules.yml"
	rulesTestPath = "contrib/prometheus/devid-hostd.rules_test.yml"
)

var wantAlerts = []string{
	"DevidHostCertificateExpiringSoon",
	"DevidHostCertificateExpired",
	"DevidRenewalsFailing",
	"DevidHostdDown",
	"DevidUserCAKeysStale",
	"DevidKRLStale",
	"DevidFilesBeingRestored",
}

// TestAlertRulesCheck: promtool check rules accepts the rules.
func TestAlertRulesCheck(t *testing.T) {
	promtoolCheckRules(t, rulesPath)
}

// TestAlertRulesUnitTests: the rules pass their unit tests
// (devid-hostd.rules_test.yml, run by promtool test rules).
func TestAlertRulesUnitTests(t *testing.T) {
	promtoolTestRules(t, rulesTestPath)
}

// TestAlertRulesContent: the alerts are the seven devid documents; they use
// only metrics devid-hostd exports (hostd.MetricNames, from hostd's own
// registry rather than a copy); each has a severity and tells whoever is
// paged what is wrong and where to look; and the unit tests show each one
// both firing and not firing.
func TestAlertRulesContent(t *testing.T) {
	exported := hostd.MetricNames()
	if len(exported) == 0 {
		t.Fatal("devid-hostd exports no metrics")
	}
	checkAlertRulesContent(t, "devid-hostd", rulesPath, rulesTestPath, exported, wantAlerts)
}

// TestAlertRulesREADME: contrib/README.md lists every alert of the rules
// file, in its order, with its severity, and no other.
func TestAlertRulesREADME(t *testing.T) {
	checkREADMEAlerts(t, rulesPath, false)
}
