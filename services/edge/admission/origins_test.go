package admission

import (
	"strings"
	"testing"
)

func TestCanonicalOrigin(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"https://buddytok.example", "https://buddytok.example", true},
		{"HTTPS://BuddyTok.Example/", "https://buddytok.example", true},
		{"https://buddytok.example:443", "https://buddytok.example", true},
		{"http://buddytok.example:80", "http://buddytok.example", true},
		{"http://buddytok.example:8080", "http://buddytok.example:8080", true},
		{"https://buddytok.example:80", "https://buddytok.example:80", true},
		{"http://[::1]:8080", "http://[::1]:8080", true},
		{"buddytok.example", "", false},
		{"ftp://buddytok.example", "", false},
		{"null", "", false},
		{"https://user@buddytok.example", "", false},
		{"https://buddytok.example/path", "", false},
		{"https://buddytok.example?q", "", false},
		{"https://", "", false},
		{"*", "", false},
	} {
		got, ok := canonicalOrigin(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("canonicalOrigin(%q) = %q, %t; want %q, %t", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestOriginsAllow(t *testing.T) {
	t.Parallel()
	listed, err := ParseOrigins([]string{"https://app.example", "http://localhost:3000"})
	if err != nil {
		t.Fatal(err)
	}
	anyOrigin, err := ParseOrigins([]string{"*"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name                 string
		o                    Origins
		origin, scheme, host string
		want                 bool
	}{
		{"no Origin: not a browser", listed, "", "http", "edge.example", true},
		{"own origin", listed, "https://edge.example", "https", "edge.example", true},
		{"own origin, default port spelt out", listed, "https://edge.example", "https", "edge.example:443", true},
		{"own host, other scheme", listed, "http://edge.example", "https", "edge.example", false},
		{"own host, https page on an http edge", listed, "https://edge.example", "http", "edge.example", false},
		{"own host, other port", listed, "https://edge.example:8443", "https", "edge.example", false},
		{"listed", listed, "https://app.example", "https", "edge.example", true},
		{"listed, other scheme", listed, "http://app.example", "https", "edge.example", false},
		{"listed with a port", listed, "http://localhost:3000", "http", "edge.example", true},
		{"listed host, other port", listed, "http://localhost:3001", "http", "edge.example", false},
		{"a suffix of a listed host", listed, "https://evilapp.example", "https", "edge.example", false},
		{"a listed host inside another", listed, "https://app.example.evil.test", "https", "edge.example", false},
		{"null origin", listed, "null", "https", "edge.example", false},
		{"any", anyOrigin, "https://evil.test", "https", "edge.example", true},
	}
	for _, tc := range tests {
		if got := tc.o.Allows(tc.origin, tc.scheme, tc.host); got != tc.want {
			t.Errorf("%s: allows(%q, %q, %q) = %t", tc.name, tc.origin, tc.scheme, tc.host, got)
		}
	}
	if _, err := ParseOrigins([]string{"app.example"}); err == nil || !strings.Contains(err.Error(), "app.example") {
		t.Errorf("an origin without a scheme: %v, want an error naming it", err)
	}
}

// The scheme a browser used: https over TLS; what a trusted proxy says it
// was (http or https only); never what anyone else says.
func TestScheme(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		tls, trusted   bool
		forwardedProto string
		want           string
	}{
		{"plain", false, false, "", "http"},
		{"TLS", true, false, "", "https"},
		{"TLS, a proxy says http", true, true, "http", "https"},
		{"a trusted proxy terminated TLS", false, true, "HTTPS", "https"},
		{"an untrusted peer claims https", false, false, "https", "http"},
		{"a trusted proxy says something else", false, true, "gopher", "http"},
	} {
		if got := Scheme(tc.tls, tc.trusted, tc.forwardedProto); got != tc.want {
			t.Errorf("%s: Scheme(%t, %t, %q) = %q, want %q", tc.name, tc.tls, tc.trusted, tc.forwardedProto, got, tc.want)
		}
	}
}
