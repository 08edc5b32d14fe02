package retry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/buddytok/buddytok/pkg/retry"
)

var (
	errTransient = errors.New("transient")
	errPermanent = errors.New("permanent")
)

func TestDo(t *testing.T) {
	t.Parallel()
	onlyTransient := func(err error) bool { return errors.Is(err, errTransient) }
	tests := []struct {
		name      string
		policy    retry.Policy
		failures  []error // returned by the first attempts, then nil
		want      error
		attempts  int
		cancelled bool
	}{
		{name: "first try", policy: retry.Policy{Initial: time.Millisecond}, attempts: 1},
		{name: "after transient failures", policy: retry.Policy{Initial: time.Millisecond, Retryable: onlyTransient},
			failures: []error{errTransient, errTransient}, attempts: 3},
		{name: "permanent error stops at once", policy: retry.Policy{Initial: time.Millisecond, Retryable: onlyTransient},
			failures: []error{errTransient, errPermanent, errTransient}, want: errPermanent, attempts: 2},
		{name: "attempts used up", policy: retry.Policy{Initial: time.Millisecond, Attempts: 3},
			failures: []error{errTransient, errTransient, errTransient, errTransient}, want: errTransient, attempts: 3},
		{name: "context ends the retries", policy: retry.Policy{Initial: time.Millisecond},
			failures: []error{errTransient, errTransient, errTransient}, want: context.Canceled, attempts: 2, cancelled: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			n := 0
			err := retry.Do(ctx, tt.policy, func(context.Context) error {
				n++
				if tt.cancelled && n == 2 {
					cancel()
				}
				if n <= len(tt.failures) {
					return tt.failures[n-1]
				}
				return nil
			})
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.cancelled && !errors.Is(err, errTransient) {
				t.Fatalf("err = %v: want the last failure kept too", err)
			}
			if n != tt.attempts {
				t.Fatalf("%d attempts, want %d", n, tt.attempts)
			}
		})
	}
}

// A pause in progress ends with the context: a shutdown never waits for it.
func TestDoStopsWaitingWhenTheContextEnds(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- retry.Do(ctx, retry.Policy{Initial: time.Hour, Max: time.Hour}, func(context.Context) error { return errTransient })
	}()
	time.AfterFunc(10*time.Millisecond, cancel)
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Do kept waiting after its context ended")
	}
}

func TestPauseStaysWithinItsCeiling(t *testing.T) {
	t.Parallel()
	p := retry.Policy{Initial: time.Millisecond, Max: 50 * time.Millisecond}
	for n := range 100 {
		ceiling := min(time.Millisecond<<min(n, 30), 50*time.Millisecond)
		if d := p.Pause(n); d <= 0 || d > ceiling {
			t.Fatalf("pause %d = %s, want in (0, %s]", n, d, ceiling)
		}
	}
}
