package protocol_test

import (
	"strings"
	"testing"

	"github.com/buddytok/buddytok/pkg/protocol"
)

func TestNormalizeName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{"plain", "Ann", "Ann", true},
		{"trimmed", "  Ann \t", "Ann", true},
		{"inner spaces kept", "Ann Lee", "Ann Lee", true},
		{"unicode", "Zoë 🎥", "Zoë 🎥", true},
		{"100 characters", strings.Repeat("é", 100), strings.Repeat("é", 100), true},
		{"101 characters", strings.Repeat("é", 101), "", false},
		{"empty", "", "", false},
		{"only spaces", "   ", "", false},
		{"bell", "Ann\a", "", false},
		{"newline", "Ann\nLee", "", false},
		{"delete", "Ann\x7f", "", false},
		{"C1 control", "Ann\u0085Lee", "", false},
		{"line separator", "Ann\u2028Lee", "", false},
		{"invalid UTF-8", "Ann\xff", "", false},
		{"replacement character", "Ann\ufffd", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := protocol.NormalizeName(tc.in)
			if tc.ok != (err == nil) || got != tc.want {
				t.Fatalf("NormalizeName(%q) = %q, %v; want %q, ok=%t", tc.in, got, err, tc.want, tc.ok)
			}
			if err != nil && protocol.CodeOf(err) != protocol.CodeInvalidName {
				t.Fatalf("code %s, want invalid_name", protocol.CodeOf(err))
			}
		})
	}
}

func TestValidID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{protocol.NewID(), true},
		{"abc123", true},
		{"", false},
		{"ABC", false},
		{"a.b", false},
		{"a>", false},
		{"a*", false},
		{strings.Repeat("a", 65), false},
	} {
		if protocol.ValidID(tc.in) != tc.ok {
			t.Errorf("ValidID(%q) = %t", tc.in, !tc.ok)
		}
	}
}

func TestAsErrorHidesInternals(t *testing.T) {
	t.Parallel()
	pe := protocol.AsError(errorString("dial tcp 10.0.0.3:4222: secret detail"))
	if pe.Code != protocol.CodeInternal || strings.Contains(pe.Message, "10.0.0.3") {
		t.Fatalf("AsError leaked: %+v", pe)
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }
