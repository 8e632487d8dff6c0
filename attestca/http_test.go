package attestca_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/attestca"
	"github.com/devid-ssh/devid/attestca/wire"
)

// TestHTTPStatus: the handler answers a refusal with the status of its
// kind (ErrInvalid 400, ErrRefused 403) and the reason as {"error": ...}.
func TestHTTPStatus(t *testing.T) {
	f := newFixture(t, nil, nil)
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ekDER, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	unregistered, _ := json.Marshal(attestca.AttestRequest{TPMInfo: attestca.TPMInfo{Version: 2}, EKPub: ekDER})
	for _, c := range []struct {
		method, path, body string
		code               int
		msg                string
	}{
		{"POST", wire.AttestPath, string(unregistered), http.StatusForbidden, "is not registered"},
		{"POST", wire.AttestPath, `{"tpmInfo": {}}`, http.StatusBadRequest, "no EK: send the EK public key or its certificate"},
		{"POST", wire.AttestPath, `{"bogus": 1}`, http.StatusBadRequest, `request body: json: unknown field "bogus"`},
		{"POST", wire.SecretPath, `{"secret": "c2VjcmV0"}`, http.StatusForbidden, "wrong secret, or its attestation expired"},
		{"POST", wire.SecretPath, `{}`, http.StatusBadRequest, "no secret"},
		{"GET", wire.AttestPath, ``, http.StatusMethodNotAllowed, "use POST"},
		{"POST", wire.AttestationPath + "/other", `{}`, http.StatusNotFound, "not found"},
	} {
		rec := httptest.NewRecorder()
		f.ca.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, bytes.NewReader([]byte(c.body))))
		var body struct{ Error string }
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != c.code || !strings.Contains(body.Error, c.msg) {
			t.Errorf("%s %s %s: HTTP %d %s, want %d with %q", c.method, c.path, c.body, rec.Code, rec.Body, c.code, c.msg)
		}
	}
}
