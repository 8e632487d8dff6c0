package attestca_test

import (
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"testing"
	"time"

	"github.com/devid-ssh/devid/inventory"
	"github.com/smallstep/nosql"
)

// fillPending writes n pending attestations of n other devices straight
// into the store, unexpired, as a flood of many devices' would leave.
func fillPending(b *testing.B, db nosql.DB, n int, expires time.Time) {
	b.Helper()
	for i := range n {
		h := sha256.Sum256([]byte(fmt.Sprint("outstanding", i)))
		rec, _ := json.Marshal(map[string]any{"secretHash": h[:], "deviceId": fmt.Sprintf("urn:ek:sha256:other%d", i), "expires": expires})
		if err := db.Set([]byte("devid_attest_pending"), h[:], rec); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAttestOutstanding: the CA's /attest (AK checks, the credential,
// storing the pending attestation) with 0 and 5,000 attestations of other
// devices outstanding. The cost per attestation should not grow with
// them.
//
//	go test -run '^$' -bench AttestOutstanding ./attestca
func BenchmarkAttestOutstanding(b *testing.B) {
	for _, outstanding := range []int{0, 5000} {
		b.Run(fmt.Sprint(outstanding), func(b *testing.B) {
			f := newFixture(b, nil, nil)
			d := newDevice(b)
			if _, err := f.inv.AddDevice("bench", inventory.NewDevice{EK: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d.ek.Certificate.Raw})), Name: "bench", Kind: "host"}); err != nil {
				b.Fatal(err)
			}
			fillPending(b, f.db, outstanding, f.clk.Now().Add(time.Hour))
			for b.Loop() {
				if _, err := f.ca.Attest(d.req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
