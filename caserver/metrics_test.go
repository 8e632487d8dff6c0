package caserver_test

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/attestca/wire"
	"github.com/devid-ssh/devid/caserver"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/krldist"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// metricValue is the value of the series name{labels} in reg (counter,
// gauge, or a histogram's count), and whether it exists.
func metricValue(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue series
				}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue(), true
			case dto.MetricType_GAUGE:
				return m.GetGauge().GetValue(), true
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

// labelValues lists the values label takes in name's series.
func labelValues(t *testing.T, reg prometheus.Gatherer, name, label string) []string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && !slices.Contains(out, l.GetValue()) {
					out = append(out, l.GetValue())
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestMetrics exercises a real CA and reads its registry: certificates
// issued and refused by kind and reason, attestation refusals, the KRL's
// gauges (waiting long-polls included), request latency by route pattern
// (never a raw path), and the CA's own certificates' expiry.
func TestMetrics(t *testing.T) {
	ca := catest.Start(t, nil)
	reg := ca.Server.Metrics().Registry()
	dev := addDevice(t, ca, inventory.NewDevice{Name: "host-1", Kind: "host", HostNames: []string{"host-1.example.com"}})
	hostNames := []string{"host-1.example.com"}
	if code, _, _ := sshSign(t, ca, "host-1", dev.ID, "host", hostNames, time.Now()); code != http.StatusCreated {
		t.Fatalf("host certificate: HTTP %d", code)
	}
	if code, _, _ := sshSign(t, ca, "host-1", dev.ID, "user", hostNames, time.Now()); code != http.StatusForbidden {
		t.Errorf("a host's user certificate: HTTP %d, want 403", code)
	}
	if code, _, _ := sshSign(t, ca, "host-1", dev.ID, "host", hostNames, time.Now().Add(-time.Hour)); code == http.StatusCreated {
		t.Errorf("an expired token: HTTP %d, want a refusal", code)
	}
	if _, err := ca.Server.Inventory().SetStatus("test", dev.ID, inventory.StatusQuarantined, "lost"); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := sshSign(t, ca, "host-1", dev.ID, "host", hostNames, time.Now()); code != http.StatusForbidden {
		t.Errorf("a quarantined host's certificate: HTTP %d, want 403", code)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.TLSConfig(nil)}, Timeout: time.Minute}
	resp, err := c.Post(ca.URL+wire.AttestationPath+"/attest", "application/json", strings.NewReader(`{"nonsense": true}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	for _, s := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"devid_ca_certificates_issued_total", map[string]string{"type": "ssh", "kind": "host"}, 1},
		{"devid_ca_certificates_refused_total", map[string]string{"type": "ssh", "kind": "user", "reason": "wrong_kind"}, 1},
		{"devid_ca_certificates_refused_total", map[string]string{"type": "ssh", "kind": "host", "reason": "not_active"}, 1},
		{"devid_ca_attestation_refusals_total", map[string]string{"step": "attest", "reason": "invalid"}, 1},
		{"devid_ca_attestations_total", nil, 0},
		{"devid_ca_krl_entries", nil, 2}, // the quarantined device's key ID, in the host and the user CA's sections
		{"devid_ca_krl_behind", nil, 0},
		{"devid_ca_krl_waiting_clients", nil, 0},
	} {
		if got, ok := metricValue(t, reg, s.name, s.labels); !ok || got != s.want {
			t.Errorf("%s%v = %v (exists: %v), want %v", s.name, s.labels, got, ok, s.want)
		}
	}
	// Refusals by the policy are not counted twice, as step-ca's too; a
	// token step-ca refuses before signing shows in the route's codes.
	if got := labelValues(t, reg, "devid_ca_certificates_refused_total", "reason"); !slices.Equal(got, []string{"not_active", "wrong_kind"}) {
		t.Errorf("refusal reasons %q", got)
	}
	if _, ok := metricValue(t, reg, "devid_ca_http_request_duration_seconds", map[string]string{"route": "/1.0/ssh/sign", "code": "401"}); !ok {
		t.Errorf("the expired token's refusal (401) is not among /1.0/ssh/sign's codes %q", labelValues(t, reg, "devid_ca_http_request_duration_seconds", "code"))
	}
	version := ca.Server.PublishedKRL().Version
	if got, _ := metricValue(t, reg, "devid_ca_krl_version", nil); got != float64(version) || version == 0 {
		t.Errorf("devid_ca_krl_version = %v, the CA serves %d", got, version)
	}
	if got, _ := metricValue(t, reg, "devid_ca_krl_bytes", nil); got != float64(len(ca.Server.PublishedKRL().Body)) {
		t.Errorf("devid_ca_krl_bytes = %v, the KRL has %d", got, len(ca.Server.PublishedKRL().Body))
	}
	if got, _ := metricValue(t, reg, "devid_ca_krl_last_rebuild_seconds", nil); got < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("devid_ca_krl_last_rebuild_seconds = %v: no rebuild", got)
	}
	if got := labelValues(t, reg, "devid_ca_certificate_not_after_seconds", "certificate"); !slices.Equal(got, []string{"admin_root", "attestation", "intermediate", "root", "tls"}) {
		t.Errorf("certificates with an expiry: %q", got)
	}
	if got, _ := metricValue(t, reg, "devid_ca_certificate_not_after_seconds", map[string]string{"certificate": "root"}); got != float64(ca.Root.NotAfter.Unix()) {
		t.Errorf("root expires at %v, the metric says %v", ca.Root.NotAfter.Unix(), got)
	}

	// A long-poll waiting shows in the gauge, and is gone once answered.
	ctx, cancel := context.WithCancel(context.Background())
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ca.URL+krldist.Path+"?after="+strconv.FormatUint(version, 10)+"&wait=5m", nil)
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	waitFor(t, "a waiting long-poll", func() bool { v, _ := metricValue(t, reg, "devid_ca_krl_waiting_clients", nil); return v == 1 })
	cancel()
	<-polled
	waitFor(t, "no waiting long-poll", func() bool { v, _ := metricValue(t, reg, "devid_ca_krl_waiting_clients", nil); return v == 0 })

	routes := labelValues(t, reg, "devid_ca_http_request_duration_seconds", "route")
	for _, want := range []string{"/1.0/ssh/sign", "/attestation/*", krldist.Path} {
		if !slices.Contains(routes, want) {
			t.Errorf("routes %q lack %s", routes, want)
		}
	}
	for _, r := range routes {
		if strings.Contains(r, "urn:") || strings.Contains(r, "?") {
			t.Errorf("route label %q is a raw path", r)
		}
	}
	if n, ok := metricValue(t, reg, "devid_ca_http_request_duration_seconds", map[string]string{"route": "/1.0/ssh/sign", "method": "POST", "code": "201"}); !ok || n != 1 {
		t.Errorf("/1.0/ssh/sign 201: %v requests timed", n)
	}

	// Every metric the registry holds is one MetricNames lists.
	names := caserver.MetricNames()
	families, _ := reg.Gather()
	for _, f := range families {
		if !slices.Contains(names, f.GetName()) {
			t.Errorf("the registry has %s, which MetricNames does not list", f.GetName())
		}
	}
}

// waitFor polls cond until it holds; the deadline only bounds a hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within a minute", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
