// Package retry is BuddyTok's one way to try an operation again: attempts
// spaced by exponential backoff with full jitter, that end as soon as the
// caller's context does. Every loop that waits and tries again uses it, so
// that a shutdown never waits on a retry.
package retry

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// Policy says how often and for how long to try.
type Policy struct {
	// Initial is the ceiling of the first pause; each later pause may be
	// up to twice as long as the one before, at most Max. Pauses are drawn
	// at random below the ceiling (full jitter), so that callers that failed
	// together do not try again together.
	Initial, Max time.Duration
	// Attempts bounds the attempts; 0 tries until the context ends.
	Attempts int
	// Retryable says whether an error is worth another attempt; nil means
	// every error is.
	Retryable func(error) bool
}

// Do runs op until it succeeds, fails with an error Retryable refuses, uses
// up the attempts, or ctx ends. It returns op's last error; when ctx ended
// first, the error wraps both that and ctx.Err().
func Do(ctx context.Context, p Policy, op func(context.Context) error) error {
	for attempt := 0; ; attempt++ {
		err := op(ctx)
		if err == nil || p.Retryable != nil && !p.Retryable(err) {
			return err
		}
		if p.Attempts > 0 && attempt+1 >= p.Attempts {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (gave up after %d attempts: %w)", err, attempt+1, ctx.Err())
		}
		t := time.NewTimer(p.Pause(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up after %d attempts: %w)", err, attempt+1, ctx.Err())
		case <-t.C:
		}
	}
}

// Pause is the pause after attempt n (from 0) failed: a random duration up
// to Initial doubled n times, at most Max (never zero).
func (p Policy) Pause(n int) time.Duration {
	initial := max(p.Initial, time.Microsecond)
	ceiling := max(p.Max, initial)
	c := initial << min(n, 30)
	if c <= 0 || c > ceiling {
		c = ceiling
	}
	return time.Duration(1 + rand.Int64N(int64(c)))
}
