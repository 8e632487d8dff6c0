package adminhttp

import (
	"testing"
	"time"

	"github.com/devid-ssh/devid/revocation"
)

func (f fakeRevoker) IssuedTo(string) ([]*revocation.IssuedCert, error) { return nil, f.err }

// TestIssuedCertJSON: a device's certificate is on the wire as the
// revocation store has it.
func TestIssuedCertJSON(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	c := &revocation.IssuedCert{Serial: 10071804687342786553, Type: "host", KeyID: "urn:ek:sha256:x", Principals: []string{"web-1"},
		ValidAfter: t0, ValidBefore: t0.Add(time.Hour), RevokedAt: t0.Add(time.Minute)}
	w := issuedCert(c)
	sameJSON(t, c, &w)
}
