package edge

import (
	"bytes"
	"encoding/json"

	"github.com/fasthttp/websocket"

	"github.com/buddytok/buddytok/pkg/protocol"
)

// decodeFrame is the one place a client's message is checked: its kind,
// size, JSON, type and ref, and every field its type needs (IDs, the
// name, the signal), so that nothing malformed reaches a service or the
// NATS network. A join's name comes back normalised. On an error the frame
// holds as much as could be decoded (its ref, to answer with), and the
// error is a *protocol.Error with the code to send.
func decodeFrame(messageType int, data []byte) (protocol.ClientFrame, error) {
	var f protocol.ClientFrame
	if messageType != websocket.TextMessage {
		return f, protocol.Errorf(protocol.CodeBadJSON, "only text frames holding JSON are accepted")
	}
	if len(data) > protocol.MaxFrameBytes {
		return f, protocol.Errorf(protocol.CodeFrameTooLarge, "frame is %d bytes; the limit is %d", len(data), protocol.MaxFrameBytes)
	}
	// A JSON null or a scalar would decode into an empty frame without an
	// error: only an object is a frame.
	if trimmed := bytes.TrimLeft(data, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' {
		return f, protocol.Errorf(protocol.CodeBadJSON, "frame is not a valid JSON object")
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return protocol.ClientFrame{}, protocol.Errorf(protocol.CodeBadJSON, "frame is not a valid JSON object")
	}
	if len(f.Ref) > protocol.MaxRefBytes {
		f.Ref = ""
		return f, protocol.Errorf(protocol.CodeBadRequest, "ref is longer than %d bytes", protocol.MaxRefBytes)
	}
	switch f.Type {
	case protocol.TypePing:
	case protocol.TypeJoin:
		name, err := protocol.NormalizeName(f.Name)
		if err != nil {
			return f, err
		}
		f.Name = name
	case protocol.TypeResume:
		if !protocol.ValidID(f.UserID) || !protocol.ValidSecret(f.Secret) {
			return f, protocol.Errorf(protocol.CodeResumeFailed, "unknown user or wrong secret")
		}
	case protocol.TypeInvite:
		return f, protocol.CheckID("to", f.To)
	case protocol.TypeCancel, protocol.TypeAccept, protocol.TypeDecline:
		return f, protocol.CheckID("invitation", f.Invitation)
	case protocol.TypeEndChat, protocol.TypeCredentials:
		return f, protocol.CheckID("chat", f.Chat)
	case protocol.TypeSignal:
		if err := protocol.CheckID("chat", f.Chat); err != nil {
			return f, err
		}
		return f, protocol.CheckSignal(f.Data)
	default:
		return f, protocol.Errorf(protocol.CodeUnknownType, "unknown frame type %.40q", f.Type)
	}
	return f, nil
}
