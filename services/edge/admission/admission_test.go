package admission

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/buddytok/buddytok/pkg/config"
	"github.com/buddytok/buddytok/pkg/protocol"
)

func TestClientAddr(t *testing.T) {
	t.Parallel()
	a := New(Limits{TrustedProxies: []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8"),
	}})
	tests := []struct {
		name, peer, xff, want string
	}{
		{"no proxy", "203.0.113.7", "", "203.0.113.7"},
		{"an untrusted peer's header is ignored", "203.0.113.7", "198.51.100.1", "203.0.113.7"},
		{"a trusted proxy's client", "10.1.2.3", "198.51.100.1", "198.51.100.1"},
		{"the nearest untrusted hop wins", "10.1.2.3", "192.0.2.66, 198.51.100.1, 10.9.9.9", "198.51.100.1"},
		{"a forged first hop is not believed", "10.1.2.3", "1.1.1.1, 198.51.100.1", "198.51.100.1"},
		{"only proxies: the first", "10.1.2.3", "10.0.0.5, 10.0.0.6", "10.0.0.5"},
		{"a malformed header: the peer", "10.1.2.3", "not-an-address", "10.1.2.3"},
		{"IPv6 through a proxy", "fd00::1", "2001:db8::1", "2001:db8::1"},
		{"IPv4-mapped peer", "::ffff:203.0.113.7", "", "203.0.113.7"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := a.ClientAddr(netip.MustParseAddr(tc.peer), tc.xff)
			if got != netip.MustParseAddr(tc.want) {
				t.Fatalf("clientAddr(%s, %q) = %s, want %s", tc.peer, tc.xff, got, tc.want)
			}
		})
	}
}

func TestAddrKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"203.0.113.7", "203.0.113.7", true},
		{"203.0.113.7", "203.0.113.8", false},
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9", true}, // one /64: one subscriber
		{"2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"::ffff:203.0.113.7", "203.0.113.7", true},
	} {
		if same := AddrKey(netip.MustParseAddr(tc.a)) == AddrKey(netip.MustParseAddr(tc.b)); same != tc.same {
			t.Errorf("AddrKey(%s) == AddrKey(%s): %t, want %t", tc.a, tc.b, same, tc.same)
		}
	}
}

func TestAdmissionCounts(t *testing.T) {
	t.Parallel()
	a := New(Limits{ConnsPerAddr: 2, MaxSockets: 3, JoinRatePerAddr: 0.001, JoinBurstPerAddr: 2})
	one, two := AddrKey(netip.MustParseAddr("198.51.100.1")), AddrKey(netip.MustParseAddr("198.51.100.2"))
	type step struct {
		name string
		do   func() error
		code protocol.Code
	}
	failResume := func() error {
		if err := a.AllowResume(one); err != nil {
			return err
		}
		a.ResumeFailed(one)
		return nil
	}
	steps := []step{
		{"first from one", func() error { return a.Admit(one) }, ""},
		{"second from one", func() error { return a.Admit(one) }, ""},
		{"third from one: the address is full", func() error { return a.Admit(one) }, protocol.CodeTooManyConns},
		{"check lets it upgrade, for a place on probation", func() error { return checkErr(a, one) }, ""},
		{"first from two", func() error { return a.Admit(two) }, ""},
		{"second from two: the edge is full", func() error { return a.Admit(two) }, protocol.CodeEdgeFull},
		{"one leaves", func() error { a.Release(one); return nil }, ""},
		{"two may come in now", func() error { return a.Admit(two) }, ""},
		{"a join", func() error { return a.AllowJoin(one) }, ""},
		{"a second join", func() error { return a.AllowJoin(one) }, ""},
		{"a third join: too many from one", func() error { return a.AllowJoin(one) }, protocol.CodeRateLimited},
		{"two still joins", func() error { return a.AllowJoin(two) }, ""},
	}
	for range resumeFailuresBurst {
		steps = append(steps, step{"a failed resume", failResume, ""})
	}
	steps = append(steps,
		step{"a resume after a burst of failures", func() error { return a.AllowResume(one) }, protocol.CodeRateLimited},
		step{"two may still resume", func() error { return a.AllowResume(two) }, ""})
	for _, s := range steps {
		err := s.do()
		if got := protocol.CodeOf(err); err != nil && got != s.code || err == nil && s.code != "" {
			t.Fatalf("%s: %v, want %q", s.name, err, s.code)
		}
	}
}

func TestSocketsForFiles(t *testing.T) {
	t.Parallel()
	if got := socketsForFiles(20_000); got != 20_000-256 {
		t.Errorf("socketsForFiles(20000) = %d", got)
	}
	if got := socketsForFiles(100); got != 64 {
		t.Errorf("socketsForFiles(100) = %d", got)
	}
}

func checkErr(a *Gate, key netip.Prefix) error {
	if r := a.Check(key); r != nil {
		return r.Err
	}
	return nil
}

// An address whose socket was closed for abuse is refused new connections
// for a second, then twice as long at each further abuse up to PenaltyMax,
// and starts again from a second once it has behaved for PenaltyMax; other
// addresses are never affected.
func TestAbusePenalty(t *testing.T) {
	t.Parallel()
	a := New(Limits{PenaltyMax: 4 * time.Second})
	now := time.Unix(1_800_000_000, 0)
	a.now = func() time.Time { return now }
	one, two := AddrKey(netip.MustParseAddr("198.51.100.1")), AddrKey(netip.MustParseAddr("2001:db8::1"))
	refusedFor := func(key netip.Prefix) time.Duration {
		r := a.Check(key)
		if r == nil {
			return 0
		}
		if r.Status != http.StatusTooManyRequests || r.Reason != "abuse_penalty" || protocol.CodeOf(r.Err) != protocol.CodeRateLimited {
			t.Fatalf("refusal %+v", r)
		}
		return r.RetryAfter
	}
	for _, step := range []struct {
		name    string
		abuse   bool
		advance time.Duration
		want    time.Duration
	}{
		{"no abuse yet", false, 0, 0},
		{"first abuse: a second", true, 0, time.Second},
		{"half of it served", false, 500 * time.Millisecond, 500 * time.Millisecond},
		{"served", false, 500 * time.Millisecond, 0},
		{"again: two seconds", true, 0, 2 * time.Second},
		{"again: four", true, 0, 4 * time.Second},
		{"again: at most PenaltyMax", true, 0, 4 * time.Second},
		{"served, and behaved for less than PenaltyMax", false, 7 * time.Second, 0},
		{"so the next is still the longest", true, 0, 4 * time.Second},
		{"served, and behaved for PenaltyMax", false, 9 * time.Second, 0},
		{"starts again from a second", true, 0, time.Second},
	} {
		now = now.Add(step.advance)
		if step.abuse {
			a.Penalise(one)
		}
		if got := refusedFor(one); got != step.want {
			t.Fatalf("%s: refused for %v, want %v", step.name, got, step.want)
		}
		if got := refusedFor(two); got != 0 {
			t.Fatalf("%s: another address refused for %v", step.name, got)
		}
	}
	off := New(Limits{PenaltyMax: -1})
	off.Penalise(one)
	if r := off.Check(one); r != nil {
		t.Fatalf("penalties off, but refused: %+v", r)
	}
}

// An address at its cap may open a few connections more on probation;
// one promoted (it resumed a user) counts like any other, and places on
// probation are given back when their connections end.
func TestAdmissionProbation(t *testing.T) {
	t.Parallel()
	a := New(Limits{ConnsPerAddr: 1, JoinRatePerAddr: -1})
	one := AddrKey(netip.MustParseAddr("198.51.100.1"))
	must := func(what string, err error, code protocol.Code) {
		t.Helper()
		if got := protocol.CodeOf(err); err != nil && got != code || err == nil && code != "" {
			t.Fatalf("%s: %v, want %q", what, err, code)
		}
	}
	must("the first", a.Admit(one), "")
	must("the second: the address is full", a.Admit(one), protocol.CodeTooManyConns)
	for i := range probationPerAddr {
		must(fmt.Sprint("on probation ", i), a.AdmitOnProbation(one), "")
	}
	must("past the places on probation", a.AdmitOnProbation(one), protocol.CodeTooManyConns)
	must("check agrees", checkErr(a, one), protocol.CodeTooManyConns)
	a.Promote(one) // it resumed: the address now holds two counted ones
	must("a place on probation freed by the promotion", a.AdmitOnProbation(one), "")
	a.ReleaseProbation(one)
	a.Release(one)
	a.Release(one)
	for range probationPerAddr - 1 {
		a.ReleaseProbation(one)
	}
	must("everything given back: an ordinary connection again", a.Admit(one), "")
	if a.sockets != 1 {
		t.Fatalf("%d sockets counted, want 1", a.sockets)
	}
}

// TRUSTED_PROXIES takes addresses, prefixes and host names; anything else
// stops the start.
func TestTrustedProxiesSetting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		value    string
		prefixes int
		hosts    []string
		bad      bool
	}{
		{"10.0.0.0/8,192.0.2.1", 2, nil, false},
		{"lb", 0, []string{"lb"}, false},
		{"lb.buddytok.svc.cluster.local, 10.0.0.0/8", 1, []string{"lb.buddytok.svc.cluster.local"}, false},
		{"not_a_host", 0, nil, true},
		{"-lb", 0, nil, true},
		{"10.0.0.0/33", 0, nil, true},
	} {
		env := config.FromMap(map[string]string{"TRUSTED_PROXIES": tc.value})
		got := LimitsFromEnv(env)
		if bad := env.Err() != nil; bad != tc.bad || !tc.bad && (len(got.TrustedProxies) != tc.prefixes || !slices.Equal(got.TrustedHosts, tc.hosts)) {
			t.Errorf("%q: prefixes %v, hosts %v, error %v", tc.value, got.TrustedProxies, got.TrustedHosts, env.Err())
		}
	}
}

// A trusted proxy named by host is believed once its name resolves, and
// again at its new address after it moved; a name that stops resolving
// keeps its last addresses.
func TestTrustedHostsResolved(t *testing.T) {
	t.Parallel()
	a := New(Limits{TrustedHosts: []string{"lb"}})
	a.hostsEvery = 10 * time.Millisecond
	lb, moved := netip.MustParseAddr("172.18.0.5"), netip.MustParseAddr("172.18.0.9")
	if a.Trusted(lb) {
		t.Fatal("trusted before its name was resolved")
	}
	answers := make(chan []netip.Addr)
	failures := make(chan error, 1)
	resolved := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Each round answers what the test sends, however long it takes.
	resolve := func(context.Context, string) ([]netip.Addr, error) {
		select {
		case addrs := <-answers:
			defer func() { resolved <- struct{}{} }()
			if addrs == nil {
				return nil, errors.New("no such host")
			}
			return addrs, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	go a.ResolveTrustedHosts(ctx, resolve, func(_ string, err error) {
		if ctx.Err() == nil {
			failures <- err
		}
	})
	answers <- []netip.Addr{lb}
	<-resolved
	waitTrusted := func(addr netip.Addr, want bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); a.Trusted(addr) != want; {
			if time.Now().After(deadline) {
				t.Fatalf("Trusted(%s) = %v, want %v", addr, !want, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitTrusted(lb, true)
	if got := a.ClientAddr(lb, "198.51.100.1"); got != netip.MustParseAddr("198.51.100.1") {
		t.Fatalf("through the named proxy: %s", got)
	}
	answers <- []netip.Addr{moved} // the next round, hostsEvery later
	<-resolved
	waitTrusted(moved, true)
	waitTrusted(lb, false)
	answers <- nil // the name stops resolving: the last address stays
	<-resolved
	<-failures
	waitTrusted(moved, true)
}
