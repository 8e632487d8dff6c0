package renew_test

import (
	"fmt"
	"time"

	"github.com/devid-ssh/devid/renew"
)

func ExamplePolicy_Decide() {
	var p renew.Policy // the defaults: 2/3, 5% jitter, 5s..5m backoff, 1m sleeps
	nb := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	s := renew.State{NotBefore: nb, NotAfter: nb.Add(24 * time.Hour), Rnd: 0.5}

	show := func(after time.Duration, s renew.State) {
		d := p.Decide(nb.Add(after), s)
		fmt.Printf("at +%v: renew %v, reattest %v, wait %v, due +%v\n",
			after, d.Renew, d.Reattest, d.Wait, d.At.Sub(nb))
	}
	show(time.Hour, s)                                  // long before due: re-check in a minute
	show(15*time.Hour+23*time.Minute+50*time.Second, s) // 10s before due
	show(15*time.Hour+24*time.Minute, s)                // due

	// The renewal failed twice, the last time just now: back off, and
	// spread the retry over part of the 8h left (re-check in a minute).
	s.Failures, s.LastFailure = 2, nb.Add(16*time.Hour)
	show(16*time.Hour, s)

	// The certificate expired: start over with a fresh attestation.
	s.Failures = 0
	show(25*time.Hour, s)
	// Output:
	// at +1h0m0s: renew false, reattest false, wait 1m0s, due +15h24m0s
	// at +15h23m50s: renew false, reattest false, wait 10s, due +15h24m0s
	// at +15h24m0s: renew true, reattest false, wait 0s, due +15h24m0s
	// at +16h0m0s: renew false, reattest false, wait 1m0s, due +15h24m0s
	// at +25h0m0s: renew true, reattest true, wait 0s, due +15h24m0s
}
