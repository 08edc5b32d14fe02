package system_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/buddytok/buddytok/cmd/buddytok/allinone"
	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/test/kit"
)

// scrape reads what the process serves on /metrics.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	samples, err := metrics.Scrape(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	return samples
}

// After a chat between two users, the process's /metrics shows what happened:
// the sockets, the frames each way, the requests each service handled,
// the buddy list's fan-out.
func TestMetricsMoveWithAFlow(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second})
	before := scrape(t, w.Sys.OpsURL)
	alice, bob := w.Join("Alice"), w.Join("Bob")
	w.Sees(kit.ID(bob), protocol.StateAvailable, alice)
	_, chat := w.Chat(alice, bob)
	ctx, cancel := w.WaitCtx()
	defer cancel()
	if err := alice.EndChat(ctx, chat.ID); err != nil {
		t.Fatal(err)
	}
	w.Sees(kit.ID(alice), protocol.StateAvailable, bob)
	after := scrape(t, w.Sys.OpsURL)

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

// The operator endpoints are served apart from the users' port: /metrics
// there is not found, and the operator port's /readyz reports the edges'
// checks, failing once no edge runs.
func TestOperatorEndpointsApart(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, kit.Topologies[0], kit.Settings{Grace: time.Second})
	get := func(url string) (int, map[string]bool) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var checks map[string]bool
		_ = json.NewDecoder(resp.Body).Decode(&checks)
		return resp.StatusCode, checks
	}
	if status, _ := get(w.Sys.EdgeURLs[0] + "/metrics"); status != http.StatusNotFound {
		t.Errorf("the users' port serves /metrics: %d, want 404", status)
	}
	if status, _ := get(w.Sys.OpsURL + "/healthz"); status != http.StatusOK {
		t.Errorf("operator /healthz: %d", status)
	}
	// The edge's rooms' hub may still be starting: ready within the wait.
	for deadline := time.Now().Add(kit.WaitFor); ; time.Sleep(20 * time.Millisecond) {
		status, checks := get(w.Sys.OpsURL + "/readyz")
		if status == http.StatusOK && checks["edge"] && checks["lease"] && checks["nats"] && checks["buddy_list"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("operator /readyz: %d %v, want 200 with the edge's checks", status, checks)
		}
	}
	if err := w.Sys.Stop(allinone.Edge, 0); err != nil {
		t.Fatal(err)
	}
	if status, checks := get(w.Sys.OpsURL + "/readyz"); status != http.StatusServiceUnavailable || checks["edge"] {
		t.Errorf("operator /readyz with no edge running: %d %v, want 503, edge false", status, checks)
	}
}
