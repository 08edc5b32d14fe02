package state

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// oldLayout are the key prefixes of a store written before rooms
// (user.<id>, inv.<id>, chat.<id>: everyone in one list).
var oldLayout = []string{"user.", "inv.", "chat."}

// ClearOldLayout removes the records a release before rooms wrote, and
// returns how many keys it removed. Those records name users, invitations
// and chats of connections that ended when that release stopped: the
// users join again (their resume is refused, and the page then joins), and
// nothing else reads the old keys. Presence calls it at start; it is
// idempotent, and costs one stream info when there is nothing to clear.
func (s *Store) ClearOldLayout(ctx context.Context) (int, error) {
	var n int
	err := retryJetStream(ctx, func(ctx context.Context) error {
		var err error
		n, err = s.clearOldLayout(ctx)
		return err
	})
	return n, err
}

func (s *Store) clearOldLayout(ctx context.Context) (int, error) {
	st, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return 0, fmt.Errorf("state: old layout: %w", err)
	}
	n := 0
	for _, p := range oldLayout {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(s.prefix+p+">"))
		if err != nil {
			return n, fmt.Errorf("state: old layout: %w", err)
		}
		if len(info.State.Subjects) == 0 {
			continue
		}
		if err := st.Purge(ctx, jetstream.WithPurgeSubject(s.prefix+p+">")); err != nil {
			return n, fmt.Errorf("state: clear old layout %s*: %w", p, err)
		}
		n += len(info.State.Subjects)
	}
	return n, nil
}
