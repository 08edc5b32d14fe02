package invites

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestUserLocks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		first, then  []string
		thenMustWait bool
	}{
		{"same user", []string{"a"}, []string{"a"}, true},
		{"overlap in another order", []string{"b", "a"}, []string{"c", "a"}, true},
		{"disjoint", []string{"a", "b"}, []string{"c", "d"}, false},
		{"empty IDs lock nothing", []string{"", "a"}, []string{""}, false},
		{"duplicates in one call", []string{"a", "a"}, []string{"b"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newUserLocks()
			unlock, err := l.lock(context.Background(), tt.first...)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			unlock2, err := l.lock(ctx, tt.then...)
			if waited := errors.Is(err, context.DeadlineExceeded); waited != tt.thenMustWait {
				t.Fatalf("second lock: err %v, want waiting %v", err, tt.thenMustWait)
			}
			if err == nil {
				unlock2()
			}
			unlock()
			if len(l.held) != 0 {
				t.Fatalf("%d entries left after every lock was released", len(l.held))
			}
		})
	}
}

// Lockers of overlapping sets, in every order, neither deadlock nor
// overlap.
func TestUserLocksExclude(t *testing.T) {
	t.Parallel()
	l := newUserLocks()
	sets := [][]string{{"a", "b"}, {"b", "c"}, {"c", "a"}, {"a"}, {"b", "a", "c"}}
	inside := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids := sets[i%len(sets)]
			unlock, err := l.lock(context.Background(), ids...)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			for _, id := range ids {
				if inside[id]++; inside[id] > 1 {
					t.Errorf("two holders of %s", id)
				}
			}
			mu.Unlock()
			mu.Lock()
			for _, id := range ids {
				inside[id]--
			}
			mu.Unlock()
			unlock()
		}()
	}
	wg.Wait()
	if len(l.held) != 0 {
		t.Fatalf("%d entries left", len(l.held))
	}
}
