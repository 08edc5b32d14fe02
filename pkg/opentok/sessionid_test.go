package opentok

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"testing"
)

// §5.3: ownership fixtures, including the ones that must be rejected.
func TestValidateSessionOwner(t *testing.T) {
	t.Parallel()
	tests := []struct {
		session, key string
		want         error
	}{
		{"1_MX4xMjM0NTZ-flNhdCBNYXIgMTUgMTQ6NDI6MjMgUERUIDIwMTR-MC40OTAxMzAyNX4", "123456", nil},
		{"1_MX4xMjM0NTY3OH4-VGh1IEZlYiAyNyAwNDozODozMSBQU1QgMjAxNH4wLjI0NDgyMjI", "12345678", nil},
		{"2_MX4xNzAxMjYzMX4xMjcuMC4wLjF-V2VkIEZlYiAyNiAxODo1NzoyNCBQU1QgMjAxNH4wLjU0MDU4ODc0fg", "17012631", nil},
		{"1_MX40MDAwMDAwMX5-MTU3Nzg2NTYwMDAwMH54N2I0OE1RZ0RmK1lRRnFQUWg4dlZmT0t-QX4", "40000001", nil},
		{"1_MX4yOWY3NjBmOC03Y2UxLTQ2YzktYWRlMy1mMmRlZGVlNGVkNWZ-fjE3MjY0NjI1ODg2NDd-MTF4TGExYmJoelBlR1FHbVhzbWd4STBrfn5-", "29f760f8-7ce1-46c9-ade3-f2dedee4ed5f", nil},
		{"1_MX40NzY2NTk3MX5-MTczOTUzODg5NDk1OX5ROW1jWEcxUXJOM1RJWXU4eStwcHgvZ3N-UH5-", "47665971", nil},
		{"1_MX42NTQzMjF-flNhdCBNYXIgMTUgMTQ6NDI6MjMgUERUIDIwMTR-MC40OTAxMzAyNX4", "123456", ErrSessionNotOwned},
		// The key must be field 1 exactly, not a substring or another field.
		{"1_MX4xMjM0NTY3OH4-VGh1IEZlYiAyNyAwNDozODozMSBQU1QgMjAxNH4wLjI0NDgyMjI", "123456", ErrSessionNotOwned},
		{"", "123456", ErrInvalidSessionID},
		{"NOT A REAL SESSIONID", "123456", ErrInvalidSessionID},
		{"blahblahblah", "123456", ErrInvalidSessionID},
		{"SESSIONID", "123456", ErrInvalidSessionID},
		{"1_", "123456", ErrInvalidSessionID},
	}
	for _, tc := range tests {
		t.Run(tc.session, func(t *testing.T) {
			t.Parallel()
			err := ValidateSessionOwner(tc.session, tc.key)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzValidateSessionOwner: any input gets an answer, never a panic, and
// an ID built around a key is accepted for that key.
func FuzzValidateSessionOwner(f *testing.F) {
	for _, s := range []string{
		"1_MX4xMjM0NTZ-flNhdCBNYXIgMTUgMTQ6NDI6MjMgUERUIDIwMTR-MC40OTAxMzAyNX4", "", "1_", "1_MX4", "2_fn5-",
		"NOT A REAL SESSIONID", "1_====", "1_MX4xMjM0NTZ-",
	} {
		f.Add(s, "123456")
	}
	f.Fuzz(func(t *testing.T, session, key string) {
		err := ValidateSessionOwner(session, key)
		if err != nil && !errors.Is(err, ErrInvalidSessionID) && !errors.Is(err, ErrSessionNotOwned) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		if key == "" || len(key) > 100 {
			return
		}
		built := "1_" + base64.RawURLEncoding.EncodeToString([]byte("1~"+key+"~~"+strconv.Itoa(len(session))+"~x~"))
		if len(built) <= maxSessionID {
			if err := ValidateSessionOwner(built, key); err != nil && !strings.Contains(key, "~") {
				t.Fatalf("own ID %q refused for key %q: %v", built, key, err)
			}
		}
	})
}
