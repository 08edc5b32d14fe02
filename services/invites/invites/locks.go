package invites

import (
	"context"
	"slices"
	"sync"
)

// userLocks queues, within one replica, the transitions that involve the
// same users. Correctness never depends on it (every commit is guarded by
// revisions); it keeps a popular user from turning into a stampede. N
// transitions racing for one user's record optimistically cost up to N
// commits for each one that succeeds, and on a single-replica file stream
// every commit, failed or not, waits its turn behind all the others. Queued
// here, they conflict only with the other replicas' transitions.
type userLocks struct {
	mu   sync.Mutex
	held map[string]*userLock
}

type userLock struct {
	sem  chan struct{} // holds one token while the user is locked
	refs int           // holders and waiters; the entry goes at zero
}

func newUserLocks() *userLocks {
	return &userLocks{held: map[string]*userLock{}}
}

// lock takes the locks of every user in ids (in a fixed order, so that two
// callers cannot deadlock), waiting in line for each, until ctx ends. Empty
// IDs are ignored. The returned func releases them.
func (l *userLocks) lock(ctx context.Context, ids ...string) (unlock func(), err error) {
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	ids = slices.DeleteFunc(ids, func(id string) bool { return id == "" })
	for i, id := range ids {
		if err := l.lockOne(ctx, id); err != nil {
			l.unlock(ids[:i])
			return nil, err
		}
	}
	return func() { l.unlock(ids) }, nil
}

func (l *userLocks) lockOne(ctx context.Context, id string) error {
	l.mu.Lock()
	ul := l.held[id]
	if ul == nil {
		ul = &userLock{sem: make(chan struct{}, 1)}
		l.held[id] = ul
	}
	ul.refs++
	l.mu.Unlock()
	select {
	case ul.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		l.release(id, ul)
		return ctx.Err()
	}
}

func (l *userLocks) unlock(ids []string) {
	for _, id := range ids {
		l.mu.Lock()
		ul := l.held[id]
		l.mu.Unlock()
		<-ul.sem
		l.release(id, ul)
	}
}

func (l *userLocks) release(id string, ul *userLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ul.refs--; ul.refs == 0 {
		delete(l.held, id)
	}
}
