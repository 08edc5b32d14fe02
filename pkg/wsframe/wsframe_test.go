package wsframe_test

import (
	"bytes"
	"testing"

	"github.com/buddytok/buddytok/pkg/wsframe"
)

// A text frame's header carries its length in 7, 16 or 64 bits.
func TestAppendText(t *testing.T) {
	for _, tc := range []struct {
		n      int
		header []byte
	}{
		{0, []byte{0x81, 0}},
		{125, []byte{0x81, 125}},
		{126, []byte{0x81, 126, 0, 126}},
		{65535, []byte{0x81, 126, 0xFF, 0xFF}},
		{65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		payload := bytes.Repeat([]byte{'x'}, tc.n)
		got := wsframe.AppendText([]byte("before"), payload)
		want := append(append([]byte("before"), tc.header...), payload...)
		if !bytes.Equal(got, want) {
			t.Errorf("%d bytes: header %x, want %x", tc.n, got[6:min(len(got), 6+len(tc.header))], tc.header)
		}
	}
}
