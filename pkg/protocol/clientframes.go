package protocol

import (
	"bytes"
	"encoding/json"
)

// ClientFrameKind is one type of frame a browser may send: everything the
// edge needs to know of it besides what to do with it. ClientFrames lists
// every kind, once; the decoder, the edge's dispatcher, its metrics and a
// test of docs/protocol.md all read that table.
type ClientFrameKind struct {
	Type string
	// Fields are the JSON fields the frame carries besides type and ref,
	// as docs/protocol.md names them.
	Fields []string
	// BeforeJoin reports whether a connection that has no user yet may
	// send it.
	BeforeJoin bool
	// check refuses a frame of this kind whose fields break their rules,
	// and may put a field in canonical form (a join's name).
	check func(*ClientFrame) error
}

// ClientFrames are the frames a browser may send, in the order
// docs/protocol.md lists them.
var ClientFrames = []ClientFrameKind{
	{Type: TypeJoin, Fields: []string{"name", "room"}, BeforeJoin: true, check: checkJoin},
	{Type: TypeResume, Fields: []string{"user_id", "secret", "room"}, BeforeJoin: true, check: checkResume},
	{Type: TypeInvite, Fields: []string{"to"}, check: func(f *ClientFrame) error { return CheckID("to", f.To) }},
	{Type: TypeCancel, Fields: []string{"invitation"}, check: checkInvitation},
	{Type: TypeAccept, Fields: []string{"invitation"}, check: checkInvitation},
	{Type: TypeDecline, Fields: []string{"invitation"}, check: checkInvitation},
	{Type: TypeEndChat, Fields: []string{"chat"}, check: checkChat},
	{Type: TypeCredentials, Fields: []string{"chat"}, check: checkChat},
	{Type: TypeSignal, Fields: []string{"chat", "data"}, check: checkSignal},
	{Type: TypePing, BeforeJoin: true, check: func(*ClientFrame) error { return nil }},
}

// clientFrameKinds indexes ClientFrames by type.
var clientFrameKinds = func() map[string]ClientFrameKind {
	m := make(map[string]ClientFrameKind, len(ClientFrames))
	for _, k := range ClientFrames {
		m[k.Type] = k
	}
	return m
}()

// ClientFrameKindOf returns the kind of frame typ names, if a browser may
// send it.
func ClientFrameKindOf(typ string) (ClientFrameKind, bool) {
	k, ok := clientFrameKinds[typ]
	return k, ok
}

func checkJoin(f *ClientFrame) error {
	if err := checkFrameRoom(f); err != nil {
		return err
	}
	name, err := NormalizeName(f.Name)
	if err != nil {
		return err
	}
	f.Name = name
	return nil
}

func checkResume(f *ClientFrame) error {
	if err := checkFrameRoom(f); err != nil {
		return err
	}
	if !ValidID(f.UserID) || !ValidSecret(f.Secret) {
		return Errorf(CodeResumeFailed, "unknown user or wrong secret")
	}
	return nil
}

// checkFrameRoom checks the room a join or resume names; a frame that names
// none is for the lobby.
func checkFrameRoom(f *ClientFrame) error {
	if f.Room == "" {
		f.Room = Lobby
		return nil
	}
	return CheckRoom(f.Room)
}

func checkInvitation(f *ClientFrame) error { return CheckID("invitation", f.Invitation) }

func checkChat(f *ClientFrame) error { return CheckID("chat", f.Chat) }

func checkSignal(f *ClientFrame) error {
	if err := CheckID("chat", f.Chat); err != nil {
		return err
	}
	return CheckSignal(f.Data)
}

// DecodeClientFrame is the one place a browser's message is checked: its
// kind (text is false for a binary message), size, JSON, type and ref, and
// every field its type needs (IDs, the name, the signal), so that nothing
// malformed reaches a service or the NATS network. A join's name comes back
// normalised. On an error the frame holds as much as could be decoded (its
// ref, to answer with), and the error is a *Error with the code to send.
func DecodeClientFrame(text bool, data []byte) (ClientFrame, error) {
	var f ClientFrame
	if !text {
		return f, Errorf(CodeBadJSON, "only text frames holding JSON are accepted")
	}
	if len(data) > MaxFrameBytes {
		return f, Errorf(CodeFrameTooLarge, "frame is %d bytes; the limit is %d", len(data), MaxFrameBytes)
	}
	// A JSON null or a scalar would decode into an empty frame without an
	// error: only an object is a frame.
	if trimmed := bytes.TrimLeft(data, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' {
		return f, Errorf(CodeBadJSON, "frame is not a valid JSON object")
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return ClientFrame{}, Errorf(CodeBadJSON, "frame is not a valid JSON object")
	}
	if len(f.Ref) > MaxRefBytes {
		f.Ref = ""
		return f, Errorf(CodeBadRequest, "ref is longer than %d bytes", MaxRefBytes)
	}
	kind, ok := clientFrameKinds[f.Type]
	if !ok {
		return f, Errorf(CodeUnknownType, "unknown frame type %.40q", f.Type)
	}
	return f, kind.check(&f)
}

// ServerFrameTypes are the frame types an edge sends.
var ServerFrameTypes = []string{
	TypeWelcome, TypeUser, TypeUserLeft, TypeSync, TypeInvitation, TypeInvitationEnded,
	TypeChatStarted, TypeChatEnded, TypeCredentials, TypeSignal, TypeOK, TypeError, TypePong,
}
