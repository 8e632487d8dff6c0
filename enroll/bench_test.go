package enroll_test

import (
	"context"
	"testing"
	"time"

	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/inventory"
)

// BenchmarkEnrolment is a whole enrolment of a host on swtpm: a new RSA AK
// and its attestation, a TPM key and ACME device-attest-01, and an SSH host
// certificate. The AK's creation (RSA key generation in libtpms) dominates;
// it is reported on its own as ak-ms.
func BenchmarkEnrolment(b *testing.B) {
	ca := catest.Start(b, nil)
	sw, _ := deviceTB(b, ca, "bench-host", inventory.KindHost)
	c := enroll.New(ca.URL, ca.Roots, quiet())
	ctx := context.Background()
	var akTime time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		att, err := c.Attest(ctx, sw.TPM)
		if err != nil {
			b.Fatal(err)
		}
		akTime += time.Since(t0)
		dc, err := c.DeviceCertificate(ctx, att, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.SSHCertificate(ctx, dc, "host", []string{"bench-host"}, tpmKey(b, dc)); err != nil {
			b.Fatal(err)
		}
		dc.Close()
		att.Close()
	}
	b.ReportMetric(float64(akTime.Milliseconds())/float64(b.N), "attest-ms")
}
