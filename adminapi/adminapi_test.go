package adminapi_test

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/devid-ssh/devid/adminapi"
)

func TestRevokeRequestSerial(t *testing.T) {
	for _, in := range []string{`{"serial":"10071804687342786553"}`, `{"serial":10071804687342786553}`} {
		var req adminapi.RevokeRequest
		if err := json.Unmarshal([]byte(in), &req); err != nil || req.Serial != 10071804687342786553 {
			t.Errorf("%s: %d %v", in, req.Serial, err)
		}
	}
	b, _ := json.Marshal(adminapi.RevokeRequest{Serial: 10071804687342786553})
	if string(b) != `{"serial":"10071804687342786553"}` {
		t.Errorf("request sent as %s", b)
	}
}

// TestClientErrors: an error response comes back as an *APIError with the
// CA's message, field and line; a body that is not an ErrorResponse is
// the message itself.
func TestClientErrors(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case adminapi.Prefix + "import/devices":
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(adminapi.ErrorResponse{Error: "inventory: x.csv:3: ek: bad", Field: "ek", Line: 3})
		case adminapi.Prefix + "whoami":
			http.Error(w, "not here", http.StatusBadGateway)
		default:
			t.Errorf("unexpected request %s %s", r.Method, r.URL)
		}
	}))
	defer srv.Close()
	cl, err := adminapi.NewClient(srv.URL, srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs, &tls.Certificate{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.ImportDevices("x.csv", []byte("id\n"), true)
	var ae *adminapi.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Message != "inventory: x.csv:3: ek: bad" || ae.Field != "ek" || ae.Line != 3 {
		t.Errorf("import error: %#v", err)
	}
	_, err = cl.WhoAmI()
	if !errors.As(err, &ae) || ae.Status != http.StatusBadGateway || ae.Message != "not here" {
		t.Errorf("plain-text error: %#v", err)
	}
	if _, err := adminapi.NewClient("http://ca.example", nil, nil); err == nil {
		t.Error("NewClient took an http:// URL")
	}
}
