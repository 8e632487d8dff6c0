package caserver_test

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/krl"
	"go.step.sm/crypto/pemutil"
	"golang.org/x/crypto/ssh"
)

// bigSerial is above 2^53: a JSON number this large loses precision in
// jq 1.6 (10071804687342787000) and in JavaScript.
const bigSerial = 10071804687342786553

// adminDo sends an admin API request and returns the status and the raw
// body.
func adminDo(t *testing.T, ca *catest.CA, method, path, body string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.TLSConfig(&ca.AdminCert)}, Timeout: 30 * time.Second}
	req, err := http.NewRequest(method, ca.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// userCert signs a user certificate with the CA's SSH user CA key, as
// step-ca would.
func userCert(t *testing.T, ca *catest.CA, serial uint64, keyID string) *ssh.Certificate {
	t.Helper()
	return userCertFor(t, ca, serial, keyID, time.Hour)
}

// userCertFor is userCert valid for life from a minute ago.
func userCertFor(t *testing.T, ca *catest.CA, serial uint64, keyID string, life time.Duration) *ssh.Certificate {
	t.Helper()
	k, err := pemutil.Read(filepath.Join(ca.Dir, "secrets/ssh_user_ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(k.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sshPub, _ := ssh.NewPublicKey(pub)
	now := time.Now()
	c := &ssh.Certificate{Key: sshPub, Serial: serial, CertType: ssh.UserCert, KeyId: keyID, ValidPrincipals: []string{"alice"},
		ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(life).Unix())}
	if err := c.SignCert(rand.Reader, signer); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRevokeBigSerial revokes a certificate whose serial is above 2^53
// through the admin API, and reads the raw JSON of every answer: the serial
// is a string everywhere, a request may give it as a string or a number,
// and a second revocation keeps the first one's reason and time.
func TestRevokeBigSerial(t *testing.T) {
	ca := catest.Start(t, nil)
	cert := userCert(t, ca, bigSerial, "alice-laptop")
	req, _ := json.Marshal(map[string]string{"certificate": string(ssh.MarshalAuthorizedKey(cert)), "reason": "key leaked"})
	code, body := adminDo(t, ca, "POST", "/devid/v1/certs/revoke", string(req))
	if code != http.StatusOK || !strings.Contains(body, `"serial": "10071804687342786553"`) {
		t.Fatalf("revoke: HTTP %d, want 200 and the serial as a JSON string:\n%s", code, body)
	}
	k, err := krl.Parse(ca.Server.PublishedKRL().Body)
	if err != nil {
		t.Fatal(err)
	}
	if !k.IsRevoked(cert) {
		t.Fatal("the served KRL does not revoke the certificate")
	}

	// Again, by the certificate and by its serial (a string, and a number
	// as older clients send it): 409, and the first revocation stays.
	req2, _ := json.Marshal(map[string]string{"certificate": string(ssh.MarshalAuthorizedKey(cert)), "reason": "again"})
	for _, again := range []string{string(req2), `{"serial": "10071804687342786553", "reason": "again"}`, `{"serial": 10071804687342786553, "reason": "again"}`} {
		code, body = adminDo(t, ca, "POST", "/devid/v1/certs/revoke", again)
		if code != http.StatusConflict || !strings.Contains(body, "certificate 10071804687342786553 was already revoked at") || !strings.Contains(body, "(key leaked); nothing changed") {
			t.Errorf("revoke %s again: HTTP %d, want 409 naming the first revocation:\n%s", again, code, body)
		}
	}

	code, body = adminDo(t, ca, "GET", "/devid/v1/audit", "")
	if code != http.StatusOK {
		t.Fatalf("audit: HTTP %d %s", code, body)
	}
	if n := strings.Count(body, `"action": "cert.revoke"`); n != 1 {
		t.Errorf("audit: %d cert.revoke entries, want 1:\n%s", n, body)
	}
	if !strings.Contains(body, `"serial": "10071804687342786553"`) || !strings.Contains(body, `"reason": "key leaked"`) || strings.Contains(body, "again") {
		t.Errorf("audit: want the serial as a string and the first reason only:\n%s", body)
	}
	if m := regexp.MustCompile(`"serial": *[0-9]`).FindString(body); m != "" {
		t.Errorf("audit: a serial as a JSON number: %s", m)
	}

	// A serial that names nothing: 404, the serial read exactly.
	for _, unknown := range []string{`{"serial": "10071804687342786555"}`, `{"serial": 10071804687342786555}`} {
		code, body = adminDo(t, ca, "POST", "/devid/v1/certs/revoke", unknown)
		if code != http.StatusNotFound || !strings.Contains(body, "10071804687342786555") {
			t.Errorf("revoke %s: HTTP %d, want 404 naming the serial:\n%s", unknown, code, body)
		}
	}
	for _, bad := range []string{`{"serial": "-1"}`, `{"serial": "1e3"}`, `{"serial": 1.5}`, `{"serial": "18446744073709551616"}`, `{"serial": "0x10"}`} {
		if code, body = adminDo(t, ca, "POST", "/devid/v1/certs/revoke", bad); code != http.StatusBadRequest {
			t.Errorf("revoke %s: HTTP %d, want 400:\n%s", bad, code, body)
		}
	}
}
