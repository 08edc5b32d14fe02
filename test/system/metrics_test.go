package system_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/test/kit"
)

// scrape reads what an edge serves on /metrics.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	samples, err := metrics.Scrape(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	return samples
}

// After a chat between two users, the edge's /metrics shows what happened:
// the sockets, the frames each way, the requests each service handled,
// the buddy list's fan-out.
func TestMetricsMoveWithAFlow(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second})
	before := scrape(t, w.Sys.EdgeURLs[0])
	alice, bob := w.Join("Alice"), w.Join("Bob")
	w.Sees(kit.ID(bob), protocol.StateAvailable, alice)
	_, chat := w.Chat(alice, bob)
	ctx, cancel := w.WaitCtx()
	defer cancel()
	if err := alice.EndChat(ctx, chat.ID); err != nil {
		t.Fatal(err)
	}
	w.Sees(kit.ID(alice), protocol.StateAvailable, bob)
	after := scrape(t, w.Sys.EdgeURLs[0])

	request := func(subject string) string {
		return fmt.Sprintf(`buddytok_requests_seconds_count{code="ok",subject=%q}`, subject)
	}
	tests := []struct {
		sample  string
		atLeast float64 // how much it must have grown
	}{
		{`buddytok_edge_sockets`, 2},
		{`buddytok_edge_frames_in_total{type="join"}`, 2},
		{`buddytok_edge_frames_in_total{type="invite"}`, 1},
		{`buddytok_edge_frames_in_total{type="accept"}`, 1},
		{`buddytok_edge_frames_out_total{type="welcome"}`, 2},
		{`buddytok_edge_frames_out_total{type="user"}`, 4},
		{`buddytok_edge_frames_out_total{type="sync"}`, 4},
		{`buddytok_edge_fanout_lag_seconds_count`, 4},
		{request(protocol.SubjectPresenceJoin), 2},
		{request(protocol.SubjectInvitesInvite), 1},
		{request(protocol.SubjectInvitesAccept), 1},
		{request(protocol.SubjectInvitesEnd), 1},
		{request(protocol.SubjectTokensSession), 1},
	}
	for _, tt := range tests {
		if got := after[tt.sample] - before[tt.sample]; got < tt.atLeast {
			t.Errorf("%s grew by %g over the flow, want at least %g", tt.sample, got, tt.atLeast)
		}
	}
}
