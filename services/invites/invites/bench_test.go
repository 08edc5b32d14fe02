package invites_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/services/invites/invites"
)

// BenchmarkInviteCancel is the invites service's hot path as the load
// generator drives it: an invitation and its cancel, each a request as the
// edge sends it (the reads of the users, the three-key commit, the events).
// pairs is how many pairs do it at once, each its own two users.
func BenchmarkInviteCancel(b *testing.B) {
	for _, pairs := range []int{1, 16} {
		b.Run(fmt.Sprintf("pairs=%d", pairs), func(b *testing.B) {
			r := newRig(b, invites.Config{})
			for p := range pairs {
				r.join(fmt.Sprintf("a%d", p), fmt.Sprintf("b%d", p))
			}
			ops := make(chan struct{})
			var wg sync.WaitGroup
			for p := range pairs {
				from, to := fmt.Sprintf("a%d", p), fmt.Sprintf("b%d", p)
				wg.Go(func() {
					for range ops {
						inv, err := r.invite(from, to)
						if err != nil {
							b.Error(err)
							return
						}
						if err := r.act(protocol.SubjectInvitesCancel, from, inv.ID); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			for b.Loop() {
				ops <- struct{}{}
			}
			close(ops)
			wg.Wait()
		})
	}
}
