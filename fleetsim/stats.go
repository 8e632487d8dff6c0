package fleetsim

import (
	"math"
	"slices"
	"sync"
	"time"
)

// Latencies collects durations, safe for concurrent use.
type Latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

// Add records one duration.
func (l *Latencies) Add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// Summary is a latency distribution, in milliseconds.
type Summary struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// Summary returns the distribution of what was recorded.
func (l *Latencies) Summary() Summary {
	l.mu.Lock()
	d := slices.Clone(l.d)
	l.mu.Unlock()
	return summarize(d)
}

func summarize(d []time.Duration) Summary {
	if len(d) == 0 {
		return Summary{}
	}
	slices.Sort(d)
	ms := func(x time.Duration) float64 { return math.Round(float64(x)/float64(time.Millisecond)*100) / 100 }
	return Summary{Count: len(d), P50: ms(quantile(d, 0.50)), P99: ms(quantile(d, 0.99)), Max: ms(d[len(d)-1])}
}

// quantile is the nearest-rank quantile of sorted d.
func quantile(d []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(d)))) - 1
	return d[max(0, min(i, len(d)-1))]
}

// Events counts events by time, to compare rates over windows.
type Events struct {
	mu sync.Mutex
	t  []time.Time
}

// Add records an event at t.
func (e *Events) Add(t time.Time) {
	e.mu.Lock()
	e.t = append(e.t, t)
	e.mu.Unlock()
}

// Count is the number of events in [from, to).
func (e *Events) Count(from, to time.Time) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, t := range e.t {
		if !t.Before(from) && t.Before(to) {
			n++
		}
	}
	return n
}

// Rate is the mean rate of events per second in [from, to).
func (e *Events) Rate(from, to time.Time) float64 {
	if !to.After(from) {
		return 0
	}
	return float64(e.Count(from, to)) / to.Sub(from).Seconds()
}

// PeakRate is the highest rate, events per second, over any window of
// width w starting in [from, to-w] (sliding by w/10).
func (e *Events) PeakRate(from, to time.Time, w time.Duration) float64 {
	e.mu.Lock()
	ts := slices.Clone(e.t)
	e.mu.Unlock()
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	var peak float64
	step := max(w/10, time.Millisecond)
	for s := from; !s.Add(w).After(to); s = s.Add(step) {
		lo, _ := slices.BinarySearchFunc(ts, s, func(a, b time.Time) int { return a.Compare(b) })
		hi, _ := slices.BinarySearchFunc(ts, s.Add(w), func(a, b time.Time) int { return a.Compare(b) })
		peak = max(peak, float64(hi-lo)/w.Seconds())
	}
	return peak
}
