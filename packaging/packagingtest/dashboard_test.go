package packagingtest

import (
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/caserver"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/hostd"
	dto "github.com/prometheus/client_model/go"
)

const dashboardPath = "contrib/grafana/devid-fleet.json"

type dashboardPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"` // a collapsed row's
}

// promIdent matches PromQL identifiers (metric names, functions, labels).
var promIdent = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)

// exposedMetric reports whether name is a metric of names, or a series one
// of histograms exposes (NAME_bucket, NAME_sum, NAME_count).
func exposedMetric(names, histograms []string, name string) bool {
	if slices.Contains(names, name) {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && slices.Contains(histograms, base) {
			return true
		}
	}
	return false
}

// exposedMetrics returns the names of the metrics devid-hostd and devid-ca
// export (hostd.MetricNames, caserver.MetricNames: what their registries'
// collectors describe), and those that are histograms, from a real CA's
// registry gathered after serving a request (devid-hostd has none).
func exposedMetrics(t *testing.T) (names, histograms []string) {
	t.Helper()
	ca := catest.Start(t, nil)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.TLSConfig(nil)}, Timeout: time.Minute}
	resp, err := c.Get(ca.URL + "/roots")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	families, err := ca.Server.Metrics().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetType() == dto.MetricType_HISTOGRAM {
			histograms = append(histograms, f.GetName())
		}
	}
	if len(histograms) == 0 {
		t.Fatal("a CA that served a request has no histogram")
	}
	return append(hostd.MetricNames(), caserver.MetricNames()...), histograms
}

// TestDashboard: contrib/grafana/devid-fleet.json is a dashboard whose
// panels all query Prometheus through its datasource variable, and every
// devid_ metric in their PromQL is one devid-hostd or devid-ca exports
// (exposedMetrics), so that a renamed metric fails here, not on a blank
// panel. up is used only with job devid-hostd or devid-ca.
func TestDashboard(t *testing.T) {
	var d struct {
		Title      string           `json:"title"`
		UID        string           `json:"uid"`
		Panels     []dashboardPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query string `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	dec := json.NewDecoder(strings.NewReader(readRepoFile(t, dashboardPath)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("%s: title %q, uid %q", dashboardPath, d.Title, d.UID)
	}
	if len(d.Templating.List) != 1 || d.Templating.List[0].Type != "datasource" || d.Templating.List[0].Query != "prometheus" {
		t.Errorf("%s: want one templating variable, a Prometheus datasource: %+v", dashboardPath, d.Templating.List)
	}
	exposed, histograms := exposedMetrics(t)
	var panels []dashboardPanel
	for _, p := range d.Panels {
		panels = append(panels, p)
		panels = append(panels, p.Panels...)
	}
	ids := map[int]bool{}
	used := map[string]bool{}
	exprs := 0
	for _, p := range panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: not on the datasource variable", p.Title)
		}
		for _, tg := range p.Targets {
			exprs++
			// Label values in quotes are not metric names.
			expr := regexp.MustCompile(`"[^"]*"`).ReplaceAllString(tg.Expr, `""`)
			for _, id := range promIdent.FindAllString(expr, -1) {
				if !strings.HasPrefix(id, "devid_") {
					continue
				}
				used[id] = true
				if !exposedMetric(exposed, histograms, id) {
					t.Errorf("panel %q: %s is no metric devid-hostd or devid-ca exports: %s", p.Title, id, tg.Expr)
				}
			}
			if regexp.MustCompile(`\bup\b`).MatchString(expr) && !strings.Contains(tg.Expr, `up{job="devid-hostd"}`) && !strings.Contains(tg.Expr, `up{job="devid-ca"}`) {
				t.Errorf("panel %q: up without job devid-hostd or devid-ca: %s", p.Title, tg.Expr)
			}
		}
	}
	if exprs < 10 {
		t.Fatalf("%s: %d queries found: the test would check little", dashboardPath, exprs)
	}
	// The dashboard shows both sides: a metric of each.
	for _, want := range []string{"devid_host_certificate_not_after_seconds", "devid_ca_http_request_duration_seconds_bucket", "devid_ca_certificate_not_after_seconds"} {
		if !used[want] {
			t.Errorf("%s does not show %s", dashboardPath, want)
		}
	}
}

// TestDashboardCatchesRenames: the check above fails for a metric neither
// exports.
func TestDashboardCatchesRenames(t *testing.T) {
	exposed, histograms := exposedMetrics(t)
	for name, want := range map[string]bool{
		"devid_ca_krl_version": true, "devid_ca_http_request_duration_seconds_count": true,
		"devid_ca_krl_versions": false, "devid_ca_krl_version_bucket": false, "devid_host_certificate_not_after": false,
	} {
		if got := exposedMetric(exposed, histograms, name); got != want {
			t.Errorf("exposedMetric(%s) = %v, want %v", name, got, want)
		}
	}
}
