package protocol

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// MaxNameMarks is the most combining marks one character of a name may
// carry: enough for every script's accents and vowel signs, too few to
// stack marks over the neighbouring lines of a list.
const MaxNameMarks = 4

// NormalizeName puts a display name in its one canonical form and checks
// it against the name rules, so that two names that read alike are, as
// far as the server can tell, the same string:
//   - valid UTF-8, in Unicode normalisation form NFC;
//   - every run of white space one ASCII space, none at either end;
//   - 1–100 characters, at least one of them visible (a letter, digit,
//     punctuation or symbol that is not blank);
//   - no control, format (zero-width, bidi control, tag), private-use or
//     unassigned characters, and none of the blank fillers that render as
//     nothing (U+3164, U+2800, ...), except a zero-width joiner or
//     non-joiner between two visible characters (emoji sequences, Indic
//     and Persian words need them), and an emoji presentation selector
//     after a symbol, digit or punctuation (keycaps, emoji);
//   - at most MaxNameMarks combining marks on one character.
func NormalizeName(raw string) (string, error) {
	// JSON decoding turns invalid UTF-8 into U+FFFD, so that is refused too.
	if !utf8.ValidString(raw) || strings.ContainsRune(raw, utf8.RuneError) {
		return "", Errorf(CodeInvalidName, "name is not valid UTF-8")
	}
	if len(raw) > 4*MaxNameRunes*(MaxNameMarks+1) {
		return "", Errorf(CodeInvalidName, "name must be at most %d characters", MaxNameRunes)
	}
	runes := []rune(strings.TrimFunc(norm.NFC.String(raw), unicode.IsSpace))
	out := make([]rune, 0, len(runes))
	visible, marks := false, 0
	for i, r := range runes {
		switch {
		case r == '\u2028' || r == '\u2029' || unicode.IsControl(r):
			return "", Errorf(CodeInvalidName, "name must not contain control characters")
		case unicode.IsSpace(r):
			if len(out) > 0 && out[len(out)-1] != ' ' {
				out = append(out, ' ')
			}
			marks = 0
			continue
		case r == '\u200c' || r == '\u200d': // zero-width non-joiner, joiner
			if i == 0 || i == len(runes)-1 || !shows(runes[i-1]) || !shows(runes[i+1]) {
				return "", Errorf(CodeInvalidName, "name must not contain invisible characters (U+%04X)", r)
			}
		case unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Co, r) || blank(r):
			return "", Errorf(CodeInvalidName, "name must not contain invisible or formatting characters (U+%04X)", r)
		case unicode.Is(unicode.Variation_Selector, r):
			// An emoji's text or emoji presentation; after anything else
			// a selector changes nothing that shows.
			if r != '\ufe0e' && r != '\ufe0f' || i == 0 || !unicode.In(runes[i-1], unicode.S, unicode.N, unicode.P) {
				return "", Errorf(CodeInvalidName, "name must not contain invisible characters (U+%04X)", r)
			}
			out = append(out, r)
			continue
		case unicode.Is(unicode.M, r):
			if marks++; marks > MaxNameMarks || len(out) == 0 || out[len(out)-1] == ' ' {
				return "", Errorf(CodeInvalidName, "name has a combining mark with nothing to combine with, or more than %d on one character", MaxNameMarks)
			}
			out = append(out, r)
			continue
		case !assigned(r):
			return "", Errorf(CodeInvalidName, "name must not contain unassigned characters (U+%04X)", r)
		default:
			visible = true
		}
		marks = 0
		out = append(out, r)
	}
	if len(out) > 0 && out[len(out)-1] == ' ' {
		out = out[:len(out)-1]
	}
	switch n := len(out); {
	case n == 0:
		return "", Errorf(CodeInvalidName, "name must not be empty")
	case n > MaxNameRunes:
		return "", Errorf(CodeInvalidName, "name must be at most %d characters (got %d)", MaxNameRunes, n)
	case !visible:
		return "", Errorf(CodeInvalidName, "name must have a visible character")
	}
	return string(out), nil
}

// shows reports whether r is drawn as something: a letter, digit,
// punctuation, symbol or mark that is not blank.
func shows(r rune) bool {
	return unicode.In(r, unicode.L, unicode.N, unicode.P, unicode.S, unicode.M) && !blank(r)
}

// blank reports whether r is a letter or symbol that fonts draw as
// nothing: the Hangul fillers, the blank Braille pattern, and the like.
// They are not white space to Unicode, so they would pass for a name.
func blank(r rune) bool {
	switch r {
	case '\u115f', '\u1160', '\u3164', '\uffa0', // Hangul fillers
		'\u2800',           // Braille pattern blank
		'\u034f',           // combining grapheme joiner
		'\u17b4', '\u17b5', // Khmer inherent vowels
		'\u180b', '\u180c', '\u180d', '\u180f', // Mongolian variation selectors
		'\U0001d159',                                           // musical symbol null notehead
		'\U0001d173', '\U0001d174', '\U0001d175', '\U0001d176', // musical begin and end of beam, tie, slur
		'\U0001d177', '\U0001d178', '\U0001d179', '\U0001d17a': // and phrase
		return true
	}
	return false
}

// assigned reports whether the Unicode version of this Go has given r a
// meaning.
func assigned(r rune) bool {
	return unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs)
}
