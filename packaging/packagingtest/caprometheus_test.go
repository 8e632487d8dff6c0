package packagingtest

import (
	"testing"

	"github.com/devid-ssh/devid/caserver"
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
	promtoolCheckRules(t, caRulesPath)
}

// TestCAAlertRulesUnitTests: devid-ca's rules pass their unit tests
// (devid-ca.rules_test.yml, run by promtool test rules).
func TestCAAlertRulesUnitTests(t *testing.T) {
	promtoolTestRules(t, caRulesTestPath)
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
	checkAlertRulesContent(t, "devid-ca", caRulesPath, caRulesTestPath, exported, wantCAAlerts)
}

// TestCAAlertRulesREADME: contrib/README.md's devid-ca section lists every
// alert of devid-ca's rules, in order, with its severity, and no other.
func TestCAAlertRulesREADME(t *testing.T) {
	checkREADMEAlerts(t, caRulesPath, true)
}
