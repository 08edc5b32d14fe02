package tokens

import (
	"slices"
	"strings"
	"testing"
)

func TestParseIceServers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		in      string
		urls    [][]string // of each server
		problem string     // "" : accepted
	}{
		{"none", "", nil, ""},
		{"one STUN URL", `[{"urls":"stun:stun.example.org:3478"}]`, [][]string{{"stun:stun.example.org:3478"}}, ""},
		{"STUN and TURN", `[{"urls":["stun:a.example.org"]},{"urls":["turn:t.example.org:3478?transport=udp","turns:t.example.org:5349"],"username":"u","credential":"p"}]`,
			[][]string{{"stun:a.example.org"}, {"turn:t.example.org:3478?transport=udp", "turns:t.example.org:5349"}}, ""},
		{"not JSON", `stun:a.example.org`, nil, "not a JSON array"},
		{"an object, not a list", `{"urls":"stun:a.example.org"}`, nil, "not a JSON array"},
		{"an unknown field", `[{"urls":"stun:a.example.org","password":"p"}]`, nil, "not a JSON array"},
		{"no URLs", `[{"urls":[]}]`, nil, "non-empty list"},
		{"an HTTP URL", `[{"urls":"https://a.example.org"}]`, nil, "scheme"},
		{"no host", `[{"urls":"stun:"}]`, nil, "no host"},
		{"TURN without credentials", `[{"urls":"turn:t.example.org"}]`, nil, "username and a credential"},
		{"too many", "[" + strings.Repeat(`{"urls":"stun:a.example.org"},`, maxIceServers) + `{"urls":"stun:a.example.org"}]`, nil, "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseIceServers(tc.in)
			if tc.problem != "" {
				if err == nil || !strings.Contains(err.Error(), tc.problem) {
					t.Fatalf("%v, want an error about %q", err, tc.problem)
				}
				if strings.Contains(err.Error(), `"p"`) {
					t.Fatalf("the error shows a credential: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.urls) {
				t.Fatalf("%d servers, want %d", len(got), len(tc.urls))
			}
			for i, s := range got {
				if !slices.Equal(s.URLs, tc.urls[i]) {
					t.Errorf("server %d: %v, want %v", i, s.URLs, tc.urls[i])
				}
			}
		})
	}
}
