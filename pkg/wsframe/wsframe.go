// Package wsframe writes WebSocket frames as a server sends them
// (RFC 6455 §5.2: final, unmasked text frames), for writers that put
// several frames into one write of their own instead of the WebSocket
// library's one write per message.
package wsframe

import "encoding/binary"

// AppendText appends data as one text frame.
func AppendText(b, data []byte) []byte {
	return append(AppendHeader(b, len(data)), data...)
}

// AppendHeader appends the header of a text frame of n bytes; its payload
// follows.
func AppendHeader(b []byte, n int) []byte {
	const finText = 0x81
	switch {
	case n <= 125:
		return append(b, finText, byte(n))
	case n <= 0xffff:
		b = append(b, finText, 126)
		return binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, finText, 127)
		return binary.BigEndian.AppendUint64(b, uint64(n))
	}
}
