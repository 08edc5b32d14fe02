package session

import (
	"encoding/json"
	"testing"

	"github.com/buddytok/buddytok/pkg/protocol"
)

// The frames-out metric reads an event's type off the start of the frame a
// service encoded; that holds for every type an edge relays.
func TestEventTypeReadsTheFramesStart(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"not JSON", []byte("x"), "unknown"},
		{"type not first", []byte(`{"ref":"1","type":"signal"}`), "unknown"},
		{"unknown type", []byte(`{"type":"bogus"}`), "unknown"},
	}
	for typ := range serverFrameTypes {
		data, err := json.Marshal(protocol.ServerFrame{Type: typ, Ref: "r", Reason: "x"})
		if err != nil {
			t.Fatal(err)
		}
		tests = append(tests, struct {
			name string
			data []byte
			want string
		}{"encoded " + typ, data, typ})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := eventType(tt.data); got != tt.want {
				t.Errorf("eventType(%s) = %q, want %q", tt.data, got, tt.want)
			}
		})
	}
}
