package caserver_test

import (
	"crypto/tls"
	"net/http"
	"testing"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/krldist"
)

// TestPublicRoutes: the KRL, though under the admin API's prefix, is served
// to anyone by the revocation store (its headers say so), never by the
// admin API; every other path under the prefix needs an admin certificate.
func TestPublicRoutes(t *testing.T) {
	ca := catest.Start(t, nil)
	device, _, _ := leaf(t, ca, "a-device")
	do := func(cert *tls.Certificate, path string) *http.Response {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.TLSConfig(cert)}, Timeout: time.Minute}
		resp, err := c.Get(ca.URL + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		return resp
	}
	for name, cert := range map[string]*tls.Certificate{"no certificate": nil, "device certificate": &device, "admin certificate": &ca.AdminCert} {
		resp := do(cert, krldist.Path)
		if resp.StatusCode != http.StatusOK || resp.Header.Get(krldist.HeaderVersion) == "" || resp.Header.Get(krldist.HeaderSignature) == "" {
			t.Errorf("GET %s with %s: HTTP %d, headers %v; want the KRL", krldist.Path, name, resp.StatusCode, resp.Header)
		}
	}
	for _, path := range []string{adminapi.Prefix + "whoami", adminapi.Prefix + "devices", adminapi.Prefix + "krl/", adminapi.Prefix + "no-such-route"} {
		if resp := do(nil, path); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a certificate: HTTP %d, want 401", path, resp.StatusCode)
		}
		if resp := do(&device, path); resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET %s with a device certificate: HTTP %d, want 403", path, resp.StatusCode)
		}
	}
	if resp := do(&ca.AdminCert, adminapi.Prefix+"whoami"); resp.StatusCode != http.StatusOK {
		t.Errorf("GET whoami with the admin certificate: HTTP %d", resp.StatusCode)
	}
}
