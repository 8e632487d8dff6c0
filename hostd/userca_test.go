package hostd_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/hostd"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"
)

// TestUserCANeverEmpty: TrustedUserCAKeys is written from the CA's keys,
// and an empty, unparsable or failed answer leaves the file as it was.
func TestUserCANeverEmpty(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := ssh.NewPublicKey(k.Public())
	answer := `{"userKey": ["` + base64.StdEncoding.EncodeToString(pub.Marshal()) + `"], "hostKey": []}`
	code := 200
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ssh/roots" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(code)
		io.WriteString(w, answer)
	}))
	defer srv.Close()
	file := filepath.Join(t.TempDir(), "devid", "user_ca.pub")
	reg := prometheus.NewRegistry()
	u := hostd.NewTrustedUserCAKeys(hostd.TrustedUserCAKeysConfig{CAURL: srv.URL, HTTP: srv.Client(), File: file, Interval: time.Hour,
		Files: hostd.NewFiles(), TaskOptions: hostd.TaskOptions{Registerer: reg}})
	ctx := context.Background()
	if err := u.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(file)
	if err != nil || !strings.Contains(string(good), "ecdsa-sha2-nistp256 AAAA") {
		t.Fatalf("TrustedUserCAKeys: %q, %v", good, err)
	}
	for _, bad := range []struct {
		code        int
		body, error string
	}{
		{200, `{"userKey": []}`, "sent none"},
		{200, `{"userKey": ["bm90IGEga2V5"]}`, "key 0"},
		{200, `not json`, "user CA keys"},
		{500, `{}`, "500"},
	} {
		code, answer = bad.code, bad.body
		err := u.Sync(ctx)
		if err == nil || !strings.Contains(err.Error(), bad.error) {
			t.Errorf("%d %s: err = %v, want %q", bad.code, bad.body, err, bad.error)
		}
		if now, _ := os.ReadFile(file); string(now) != string(good) {
			t.Fatalf("%d %s: the file changed to %q", bad.code, bad.body, now)
		}
	}
	// What the task tells is the file's content, not the last answer.
	if st := u.Status(); st.Keys != 1 {
		t.Errorf("status: %d keys, want the 1 in the file", st.Keys)
	}
	if n := metric(t, reg, "devid_user_ca_keys"); n != 1 {
		t.Errorf("devid_user_ca_keys = %v, want 1", n)
	}
}
