package opsserver_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/buddytok/buddytok/pkg/metrics"
	"github.com/buddytok/buddytok/pkg/natstest"
	"github.com/buddytok/buddytok/pkg/opsserver"
	"github.com/buddytok/buddytok/pkg/state"
)

// /readyz says which check fails until the process takes requests: its
// endpoints subscribed and the state bucket there.
func TestReadyzReportsEachCheck(t *testing.T) {
	t.Parallel()
	nc := natstest.Conn(t)
	ready := make(chan struct{})
	m := metrics.New()
	checks, err := opsserver.ServiceChecks(nc, ready)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(opsserver.New(checks, m).Handler())
	t.Cleanup(hs.Close)

	readyz := func() (int, map[string]bool) {
		t.Helper()
		resp, err := http.Get(hs.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var checks map[string]bool
		if err := json.NewDecoder(resp.Body).Decode(&checks); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, checks
	}
	steps := []struct {
		name   string
		do     func()
		status int
		checks map[string]bool
	}{
		{"nothing yet", func() {}, http.StatusServiceUnavailable,
			map[string]bool{"nats": true, "endpoints": false, "state_bucket": false}},
		{"endpoints subscribed", func() { close(ready) }, http.StatusServiceUnavailable,
			map[string]bool{"nats": true, "endpoints": true, "state_bucket": false}},
		{"state bucket made", func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := state.Open(ctx, nc, state.Options{}); err != nil {
				t.Fatal(err)
			}
		}, http.StatusOK, map[string]bool{"nats": true, "endpoints": true, "state_bucket": true}},
	}
	for _, st := range steps {
		st.do()
		status, checks := readyz()
		if status != st.status {
			t.Errorf("%s: /readyz %d, want %d", st.name, status, st.status)
		}
		for k, want := range st.checks {
			if checks[k] != want {
				t.Errorf("%s: check %s = %t, want %t (all: %v)", st.name, k, checks[k], want, checks)
			}
		}
	}

	resp, err := http.Get(hs.URL + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	m.ReaperActions.WithLabelValues("detach", metrics.OK).Inc()
	samples, err := metrics.Scrape(context.Background(), hs.URL)
	if err != nil {
		t.Fatal(err)
	}
	if v := samples[`buddytok_presence_reaper_actions_total{action="detach",outcome="ok"}`]; v != 1 {
		t.Errorf("/metrics: detach count %g, want 1", v)
	}
	var goStats bool
	for k := range samples {
		goStats = goStats || strings.HasPrefix(k, "go_goroutines")
	}
	if !goStats {
		t.Error("/metrics has no Go runtime metrics")
	}
}
