package hostd_test

import (
	"container/heap"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/devid-ssh/devid/hostd"
	"github.com/devid-ssh/devid/renew"
)

// A fleet after a CA outage, simulated: 10,000 hosts, each renewing a 24h
// host certificate by renew.Policy.Decide (as HostCertificate.Run does:
// a failure counts in State.Failures and LastFailure, a success starts a
// new State with a new draw) and long-polling the KRL (held 55 s by the
// CA; a failed poll pauses hostd.krlRetry, at least a second, as
// RevokedKeys.Run does), on a simulated clock, deterministic (seeded
// draws). The CA is down for an hour; every poll held when it goes down
// fails then. The requests the fleet makes to the CA are counted per
// minute.

const (
	stormHosts    = 10_000
	stormLifetime = 24 * time.Hour
	stormWait     = 55 * time.Second          // the long-poll's
	outageStart   = 40 * time.Hour            // after a day and more of steady state
	outageEnd     = outageStart + time.Hour   // the CA is down in [outageStart, outageEnd)
	steadyFrom    = outageStart - 8*time.Hour // the steady state measured: 8 hours before the outage
	simEnd        = outageEnd + time.Hour     // and the hour after
)

type stormEvent struct {
	at   time.Duration // since the simulation's start
	host int
	krl  bool // a KRL poll; else a renewal decision
}

type eventHeap []stormEvent

func (h eventHeap) Len() int           { return len(h) }
func (h eventHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h eventHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)        { *h = append(*h, x.(stormEvent)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// stormCounts are the requests to the CA in each minute of the simulation.
type stormCounts struct {
	renewals, polls []int
	expired         int // renewals that found their certificate expired
}

func down(at time.Duration) bool { return at >= outageStart && at < outageEnd }

// simulateOutage runs the fleet with the renewal policy p and the KRL
// retry pause krlRetry(failures, draw).
func simulateOutage(p renew.Policy, krlRetry func(int, float64) time.Duration) *stormCounts {
	rng := rand.New(rand.NewPCG(2026, 14))
	epoch := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC) // simulated wall clock at the start
	p.MaxSleep = 100 * time.Hour                          // a daemon wakes at least every minute; Wait caps change no decision
	minutes := int(simEnd/time.Minute) + 1
	c := &stormCounts{renewals: make([]int, minutes), polls: make([]int, minutes)}
	states := make([]renew.State, stormHosts)
	krlFailures := make([]int, stormHosts)
	h := &eventHeap{}
	for i := range states {
		// Certificates issued at any time in the renewal period before
		// (2/3 of their lifetime): renewals fall due evenly.
		nb := epoch.Add(-time.Duration(rng.Int64N(int64(stormLifetime * 2 / 3))))
		states[i] = renew.State{NotBefore: nb, NotAfter: nb.Add(stormLifetime), Rnd: rng.Float64()}
		heap.Push(h, stormEvent{at: 0, host: i})
		heap.Push(h, stormEvent{at: time.Duration(rng.Int64N(int64(stormWait))), host: i, krl: true})
	}
	for h.Len() > 0 {
		e := heap.Pop(h).(stormEvent)
		if e.at >= simEnd {
			continue
		}
		min := int(e.at / time.Minute)
		if e.krl {
			c.polls[min]++
			var next time.Duration
			switch {
			case down(e.at):
				krlFailures[e.host]++
				next = e.at + max(krlRetry(krlFailures[e.host], rng.Float64()), time.Second)
			case e.at < outageStart && e.at+stormWait > outageStart: // held when the CA goes down
				krlFailures[e.host]++
				next = outageStart + max(krlRetry(krlFailures[e.host], rng.Float64()), time.Second-(outageStart-e.at))
			default: // held for the wait, answered 304: poll again at once
				krlFailures[e.host] = 0
				next = e.at + stormWait
			}
			heap.Push(h, stormEvent{at: next, host: e.host, krl: true})
			continue
		}
		now := epoch.Add(e.at)
		s := &states[e.host]
		d := p.Decide(now, *s)
		if !d.Renew {
			heap.Push(h, stormEvent{at: e.at + d.Wait, host: e.host})
			continue
		}
		c.renewals[min]++
		if down(e.at) {
			s.Failures++
			s.LastFailure = now
		} else {
			if !now.Before(s.NotAfter) {
				c.expired++
			}
			*s = renew.State{NotBefore: now, NotAfter: now.Add(stormLifetime), Rnd: rng.Float64()}
		}
		heap.Push(h, stormEvent{at: e.at, host: e.host})
	}
	return c
}

// rates are a count's mean and peak per minute from `from` to `to`.
func rates(perMinute []int, from, to time.Duration) (mean float64, peak int) {
	sum := 0
	for _, n := range perMinute[from/time.Minute : to/time.Minute] {
		sum += n
		peak = max(peak, n)
	}
	return float64(sum) / (to - from).Minutes(), peak
}

// TestOutageStorm: after a 1-hour CA outage, a 10,000-host fleet's
// renewals (attempts, failed or not) and KRL polls per minute, in the hour
// after the CA is back, stay under twice their steady rate: the busiest
// minute of the hour after is compared with the busiest minute of the 8
// steady hours before the outage (and the means are logged). No
// certificate expires.
func TestOutageStorm(t *testing.T) {
	c := simulateOutage(renew.Policy{}, hostd.KRLRetry)
	check := func(what string, perMinute []int) {
		t.Helper()
		sMean, sPeak := rates(perMinute, steadyFrom, outageStart)
		dMean, dPeak := rates(perMinute, outageStart, outageEnd)
		aMean, aPeak := rates(perMinute, outageEnd, simEnd)
		t.Logf("%s per minute: steady mean %.1f, busiest minute %d; during the outage mean %.1f, busiest %d; the hour after mean %.1f (%.2f×), busiest %d (%.2f×)",
			what, sMean, sPeak, dMean, dPeak, aMean, aMean/sMean, aPeak, float64(aPeak)/float64(sPeak))
		if float64(aPeak) >= 2*float64(sPeak) || aMean >= 2*sMean {
			t.Errorf("%s: the hour after the outage peaks at %d a minute (mean %.1f), the steady state at %d (mean %.1f): a storm of %.2f×",
				what, aPeak, aMean, sPeak, sMean, float64(aPeak)/float64(sPeak))
		}
	}
	check("renewals", c.renewals)
	check("KRL polls", c.polls)
	if c.expired > 0 {
		t.Errorf("%d certificates expired before their renewal, with the CA down for an hour only", c.expired)
	}
}
