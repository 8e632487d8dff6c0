package hostd_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestHostdRenewNow: with a certificate good for an hour, `devid-hostd
// renew` gets a new one at once, and so does a change of the configured
// principals, without waiting for the renewal at 2/3 of the lifetime.
func TestHostdRenewNow(t *testing.T) {
	t.Parallel()
	h := newHost(t, time.Hour)
	h.start(t)
	waitFor(t, 3*time.Minute, "the first host certificate", func() bool { return h.cert(t) != nil })
	c1 := h.cert(t)

	out, err := exec.Command(hostdBin, "renew", "--config", h.cfgFile).CombinedOutput()
	if err != nil {
		t.Fatalf("devid-hostd renew: %v\n%s", err, out)
	}
	waitFor(t, 3*time.Minute, "a certificate renewed on request", func() bool { c := h.cert(t); return c != nil && c.Serial != c1.Serial })

	want := []string{"localhost", "127.0.0.1", "web-1.example.com"}
	h.cfg["principals"] = want
	h.writeConfig(t)
	waitFor(t, 3*time.Minute, "a certificate with the new principals", func() bool {
		c := h.cert(t)
		return c != nil && slices.Equal(c.ValidPrincipals, want)
	})
	if !strings.Contains(h.log.String(), "the configured principals differ") {
		t.Errorf("the log does not say why it renewed")
	}
}

// TestHostdPrincipalsRetried: a change of the configured principals whose
// first renewal fails (the CA is down) is retried after the failure
// back-off, not left for the renewal at 2/3 of an hour's lifetime.
func TestHostdPrincipalsRetried(t *testing.T) {
	t.Parallel()
	h := newHost(t, time.Hour)
	h.start(t)
	c1 := h.waitServing(t, 0)

	h.ca.Stop()
	want := []string{"localhost", "127.0.0.1", "web-2.example.com"}
	h.cfg["principals"] = want
	h.writeConfig(t)
	waitFor(t, 3*time.Minute, "the renewal for the new principals to fail", func() bool { return h.metric(t, failure) >= 1 })
	if c := h.cert(t); c == nil || c.Serial != c1.Serial {
		t.Fatalf("the certificate changed while the CA was down")
	}
	if err := h.ca.Restart(); err != nil {
		t.Fatal(err)
	}
	st := h.waitServing(t, c1.Serial)
	if !slices.Equal(st.Principals, want) {
		t.Fatalf("after the CA came back: principals %v, want %v", st.Principals, want)
	}
}
