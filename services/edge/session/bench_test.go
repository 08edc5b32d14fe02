package session

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/wsframe"
)

// A batch of frames encoded for one write.
func BenchmarkAppendTextFrames(b *testing.B) {
	frame, _ := json.Marshal(protocol.ServerFrame{Type: protocol.TypeUser, Revision: 123456,
		User: &protocol.User{ID: protocol.NewID(), Name: "someone", State: protocol.StateInviting, JoinedAt: 1764000000000}})
	for _, n := range []int{1, 4, 16} {
		b.Run(fmt.Sprint("frames=", n), func(b *testing.B) {
			b.ReportAllocs()
			var buf []byte
			for b.Loop() {
				buf = buf[:0]
				for range n {
					buf = wsframe.AppendText(buf, frame)
				}
			}
		})
	}
}
