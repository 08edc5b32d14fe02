package protocol_test

import (
	"strings"
	"testing"
	"unicode"

	"golang.org/x/text/unicode/norm"

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
		// One canonical form for what reads the same.
		{"NFC: a decomposed accent is composed", "Zoe\u0308", "Zo\u00eb", true},
		{"runs of white space are one space", "Ann \u00a0\u3000 Lee", "Ann Lee", true},
		{"a Cyrillic look-alike is a name of its own", "\u0410lice", "\u0410lice", true},
		{"an emoji ZWJ sequence", "Ann \U0001F468\u200D\U0001F469\u200D\U0001F467", "Ann \U0001F468\u200D\U0001F469\u200D\U0001F467", true},
		{"a keycap emoji", "Ann 1\ufe0f\u20e3", "Ann 1\ufe0f\u20e3", true},
		{"a Persian non-joiner between letters", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", true},
		{"Devanagari vowel signs", "\u0905\u0928\u093f\u0932", "\u0905\u0928\u093f\u0932", true},
		// Invisible, zero-width and bidi characters.
		{"zero-width space", "Alice\u200b", "", false},
		{"zero-width space inside", "Al\u200bice", "", false},
		{"zero-width joiner at the end", "Alice\u200d", "", false},
		{"two joiners", "A\u200d\u200dB", "", false},
		{"byte order mark", "\ufeffAlice", "", false},
		{"soft hyphen", "Al\u00adice", "", false},
		{"right-to-left override", "Ann\u202eLee", "", false},
		{"left-to-right isolate", "\u2066Ann\u2069", "", false},
		{"right-to-left mark", "Ann\u200f", "", false},
		{"word joiner", "Ann\u2060", "", false},
		{"Hangul filler only", "\u3164", "", false},
		{"Hangul filler beside a name", "Ann\u3164", "", false},
		{"Braille blank only", "\u2800\u2800", "", false},
		{"combining grapheme joiner", "Ann\u034f", "", false},
		{"variation selector after a letter", "Alice\ufe00", "", false},
		{"tag characters", "Ann\U000e0041", "", false},
		{"private use", "Ann\ue000", "", false},
		{"unassigned", "Ann\u0378", "", false},
		{"a mark with nothing to mark", "\u0301Ann", "", false},
		{"a mark after a space", "Ann \u0301", "", false},
		{"marks stacked high", "Ann" + strings.Repeat("\u0336", protocol.MaxNameMarks+1), "", false},
		{"marks up to the bound", "Ann" + strings.Repeat("\u0336", protocol.MaxNameMarks), "Ann" + strings.Repeat("\u0336", protocol.MaxNameMarks), true},
		{"only marks and spaces", " \u0301 ", "", false},
		{"a huge name", strings.Repeat("a", 10_000), "", false},
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

// FuzzNormalizeName checks the name rules' promises on any input: a name
// that passes is canonical (normalising it again changes nothing), in NFC,
// within the length, with a visible character, no white space but single
// inner spaces, and no invisible or formatting character but a joiner
// between two visible ones; a name that fails fails with invalid_name.
func FuzzNormalizeName(f *testing.F) {
	for _, seed := range []string{"Ann", " Ann  Lee ", "Zoe\u0308", "\u0410lice", "Alice\u200b", "\u3164", "A\u200dB",
		"1\ufe0f\u20e3", "\u2066x\u2069", "Ann\xff", strings.Repeat("\u0336", 9)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		name, err := protocol.NormalizeName(raw)
		if err != nil {
			if protocol.CodeOf(err) != protocol.CodeInvalidName || name != "" {
				t.Fatalf("NormalizeName(%q) = %q, %v: want invalid_name and no name", raw, name, err)
			}
			return
		}
		if again, err := protocol.NormalizeName(name); err != nil || again != name {
			t.Fatalf("NormalizeName(%q) = %q, but that normalises to %q, %v", raw, name, again, err)
		}
		if !norm.NFC.IsNormalString(name) {
			t.Fatalf("NormalizeName(%q) = %q, not NFC", raw, name)
		}
		runes := []rune(name)
		if len(runes) == 0 || len(runes) > protocol.MaxNameRunes {
			t.Fatalf("NormalizeName(%q) = %q: %d characters", raw, name, len(runes))
		}
		if strings.TrimSpace(name) != name || strings.Contains(name, "  ") {
			t.Fatalf("NormalizeName(%q) = %q: spaces not canonical", raw, name)
		}
		visible := false
		for i, r := range runes {
			switch {
			case unicode.IsSpace(r) && r != ' ', unicode.IsControl(r), unicode.Is(unicode.Co, r):
				t.Fatalf("NormalizeName(%q) = %q: holds U+%04X", raw, name, r)
			case unicode.Is(unicode.Cf, r):
				if r != '\u200c' && r != '\u200d' || i == 0 || i == len(runes)-1 {
					t.Fatalf("NormalizeName(%q) = %q: holds U+%04X at %d", raw, name, r, i)
				}
			case unicode.In(r, unicode.L, unicode.N, unicode.P, unicode.S):
				visible = true
			}
		}
		if !visible {
			t.Fatalf("NormalizeName(%q) = %q: nothing visible", raw, name)
		}
	})
}
