package adminapi

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/inventory"
)

// TestAuditSerialsAsStrings: a cert.revoke entry written before serials
// were strings is answered with its serial as a string, exactly.
func TestAuditSerialsAsStrings(t *testing.T) {
	old := inventory.AuditEntry{Action: "cert.revoke", After: json.RawMessage(`{"serial":10071804687342786553,"type":"user","keyId":"k","notAfter":"2026-11-01T12:00:00Z","revokedAt":"2026-11-01T11:00:00Z","reason":"key leaked"}`)}
	got := string(serialsAsStrings(old))
	if !strings.Contains(got, `"serial":"10071804687342786553"`) || !strings.Contains(got, `"reason":"key leaked"`) {
		t.Errorf("old cert.revoke entry: %s", got)
	}
	dev := inventory.AuditEntry{Action: "device.add", After: json.RawMessage(`{"id":"x"}`)}
	if got := string(serialsAsStrings(dev)); got != `{"id":"x"}` {
		t.Errorf("device entry changed: %s", got)
	}
}

func TestRevokeRequestSerial(t *testing.T) {
	for _, in := range []string{`{"serial":"10071804687342786553"}`, `{"serial":10071804687342786553}`} {
		var req RevokeRequest
		if err := json.Unmarshal([]byte(in), &req); err != nil || req.Serial != 10071804687342786553 {
			t.Errorf("%s: %d %v", in, req.Serial, err)
		}
	}
	b, _ := json.Marshal(RevokeRequest{Serial: 10071804687342786553})
	if string(b) != `{"serial":"10071804687342786553"}` {
		t.Errorf("request sent as %s", b)
	}
}
