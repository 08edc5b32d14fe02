package session

import (
	"bytes"

	"github.com/buddytok/buddytok/pkg/protocol"
)

// serverFrameTypes are the frame types an edge sends, the only values its
// frames-out metric takes.
var serverFrameTypes = func() map[string]bool {
	m := map[string]bool{}
	for _, t := range protocol.ServerFrameTypes {
		m[t] = true
	}
	return m
}()

// eventType is the type of an event frame a service published, for the
// frames-out metric. Services encode protocol.ServerFrame, whose first
// field is its type, so the type is read off the frame's start: a signal
// may be tens of KiB, and is relayed, not parsed.
func eventType(data []byte) string {
	rest, ok := bytes.CutPrefix(data, []byte(`{"type":"`))
	if !ok {
		return "unknown"
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 || !serverFrameTypes[string(rest[:end])] {
		return "unknown"
	}
	return string(rest[:end])
}

// frameTypeLabel is a received frame's type for the frames-in metric:
// "invalid" for a frame the decoder refused, whose type (if any) is the
// sender's to choose, so that the metric's label values are not.
func frameTypeLabel(typ string, err error) string {
	if _, known := protocol.ClientFrameKindOf(typ); err != nil || !known {
		return "invalid"
	}
	return typ
}
