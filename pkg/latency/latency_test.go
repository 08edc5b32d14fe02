package latency

import (
	"sync"
	"testing"
	"time"
)

func TestSummary(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		add  []time.Duration
		want Summary
	}{
		{"nothing", nil, Summary{}},
		{"one", []time.Duration{5}, Summary{Count: 1, P50: 5, P99: 5, Max: 5}},
		{"hundred, unordered", hundred(), Summary{Count: 100, P50: 51, P99: 100, Max: 100}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var r Recorder
			var wg sync.WaitGroup
			for _, d := range tc.add {
				wg.Go(func() { r.Add(d) })
			}
			wg.Wait()
			if got := r.Summary(); got != tc.want {
				t.Errorf("Summary() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// hundred is 1..100 in a scrambled order.
func hundred() []time.Duration {
	d := make([]time.Duration, 100)
	for i := range d {
		d[i] = time.Duration((i*37)%100 + 1)
	}
	return d
}
