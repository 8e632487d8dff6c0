package caserver_test

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/devid-ssh/devid/caserver/catest"
)

// TestHTTPMethodLabel: methods a client makes up (any client: no
// certificate needed) are all counted as method "other", so that they add
// no series; the standard ones keep their names.
func TestHTTPMethodLabel(t *testing.T) {
	ca := catest.Start(t, nil)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.TLSConfig(nil)}, Timeout: time.Minute}
	do := func(method string) {
		t.Helper()
		req, err := http.NewRequest(method, ca.URL+"/health", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for i := range 50 {
		do(fmt.Sprintf("X%d", i))
	}
	do("get") // methods are case-sensitive: not GET
	do(http.MethodGet)
	reg := ca.Server.Metrics().Registry()
	const name = "devid_ca_http_request_duration_seconds"
	methods := labelValues(t, reg, name, "method")
	for _, m := range methods {
		if !slices.Contains([]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}, m) {
			t.Errorf("method label %q", m)
		}
	}
	if !slices.Contains(methods, "GET") {
		t.Errorf("no method GET in %q", methods)
	}
	// chi reaches no route for a method it does not know (route "none").
	var other float64
	for _, route := range labelValues(t, reg, name, "route") {
		for _, code := range labelValues(t, reg, name, "code") {
			n, _ := metricValue(t, reg, name, map[string]string{"route": route, "method": "other", "code": code})
			other += n
		}
	}
	if other != 51 {
		t.Errorf("%v requests of method other, want 51 (methods %q)", other, methods)
	}
}
