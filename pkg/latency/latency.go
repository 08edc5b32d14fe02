// Package latency records durations from many goroutines and summarises
// them as percentiles: how the system tests and the load generator report
// what they measured (measured, never asserted).
package latency

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// Recorder collects durations; its zero value is ready and safe for
// concurrent use.
type Recorder struct {
	mu sync.Mutex
	d  []time.Duration
}

// Add records one duration.
func (r *Recorder) Add(d time.Duration) {
	r.mu.Lock()
	r.d = append(r.d, d)
	r.mu.Unlock()
}

// Summary is a distribution: how many, the median, the 99th percentile
// and the largest.
type Summary struct {
	Count         int
	P50, P99, Max time.Duration
}

// Summary summarises what was recorded so far (zero when nothing was).
func (r *Recorder) Summary() Summary {
	r.mu.Lock()
	d := slices.Clone(r.d)
	r.mu.Unlock()
	if len(d) == 0 {
		return Summary{}
	}
	slices.Sort(d)
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return Summary{Count: len(d), P50: at(0.5), P99: at(0.99), Max: d[len(d)-1]}
}

func (s Summary) String() string {
	return fmt.Sprintf("p50 %s p99 %s max %s (n=%d)", ms(s.P50), ms(s.P99), ms(s.Max), s.Count)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }
