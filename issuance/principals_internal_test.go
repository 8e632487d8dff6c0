package issuance

import (
	"errors"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/inventory"
)

// TestCheckPrincipals: a certificate with no principals, or an empty one,
// is refused with a message naming the device; any other list passes.
// hostPrincipals and userPrincipals never give such a list today (the
// enroll tests show the refusals on the way): this is the last check.
func TestCheckPrincipals(t *testing.T) {
	d := &inventory.Device{Name: "web-1"}
	for _, tc := range []struct {
		pr []string
		ok bool
	}{
		{nil, false},
		{[]string{}, false},
		{[]string{""}, false},
		{[]string{"web-1", ""}, false},
		{[]string{"web-1"}, true},
		{[]string{"urn:ek:sha256:x", "login:alice"}, true},
	} {
		err := checkPrincipals(d, "host", tc.pr)
		if tc.ok != (err == nil) {
			t.Errorf("checkPrincipals(%q) = %v, want ok %v", tc.pr, err, tc.ok)
			continue
		}
		var den *Denied
		if err != nil && (!errors.As(err, &den) || !strings.Contains(den.Msg, "device web-1: refusing an SSH host certificate with no principals")) {
			t.Errorf("checkPrincipals(%q) = %v, want a refusal naming the device", tc.pr, err)
		}
	}
}
