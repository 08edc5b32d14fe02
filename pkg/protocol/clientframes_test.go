package protocol_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/buddytok/buddytok/pkg/protocol"
)

func TestDecodeClientFrame(t *testing.T) {
	t.Parallel()
	id := protocol.NewID()
	secret := protocol.NewSecret()
	const text, binary = true, false
	tests := []struct {
		name  string
		text  bool
		frame string
		code  protocol.Code // "" for a good frame
		ref   string        // the ref the answer carries
		want  protocol.ClientFrame
	}{
		{"ping", text, `{"type":"ping","ref":"1"}`, "", "1", protocol.ClientFrame{Type: "ping", Ref: "1"}},
		{"join, name normalised", text, `{"type":"join","ref":"j","name":"  Zoe\u0308  Lee "}`, "", "j",
			protocol.ClientFrame{Type: "join", Ref: "j", Name: "Zoë Lee", Room: protocol.Lobby}},
		{"join a room", text, `{"type":"join","name":"Zoe","room":"smith-family"}`, "", "",
			protocol.ClientFrame{Type: "join", Name: "Zoe", Room: "smith-family"}},
		{"resume", text, `{"type":"resume","user_id":"` + id + `","secret":"` + secret + `"}`, "", "",
			protocol.ClientFrame{Type: "resume", UserID: id, Secret: secret, Room: protocol.Lobby}},
		{"resume in a room", text, `{"type":"resume","user_id":"` + id + `","secret":"` + secret + `","room":"a1"}`, "", "",
			protocol.ClientFrame{Type: "resume", UserID: id, Secret: secret, Room: "a1"}},
		{"invite", text, `{"type":"invite","to":"` + id + `"}`, "", "", protocol.ClientFrame{Type: "invite", To: id}},
		{"accept", text, `{"type":"accept","invitation":"` + id + `"}`, "", "", protocol.ClientFrame{Type: "accept", Invitation: id}},
		{"signal", text, `{"type":"signal","chat":"` + id + `","data":{"sdp":"x"}}`, "", "",
			protocol.ClientFrame{Type: "signal", Chat: id, Data: json.RawMessage(`{"sdp":"x"}`)}},
		{"fields of other types are ignored", text, `{"type":"ping","to":"../x"}`, "", "", protocol.ClientFrame{Type: "ping", To: "../x"}},

		{"binary", binary, `{"type":"ping"}`, protocol.CodeBadJSON, "", protocol.ClientFrame{}},
		{"too large", text, `{"type":"ping","name":"` + strings.Repeat("x", protocol.MaxFrameBytes) + `"}`, protocol.CodeFrameTooLarge, "", protocol.ClientFrame{}},
		{"not JSON", text, `{"type":"invite",`, protocol.CodeBadJSON, "", protocol.ClientFrame{}},
		{"an array", text, `["ping"]`, protocol.CodeBadJSON, "", protocol.ClientFrame{}},
		{"null", text, `null`, protocol.CodeBadJSON, "", protocol.ClientFrame{}},
		{"a string", text, `"ping"`, protocol.CodeBadJSON, "", protocol.ClientFrame{}},
		{"empty", text, ``, protocol.CodeBadJSON, "", protocol.ClientFrame{}},
		{"a field of the wrong kind", text, `{"type":"ping","ref":7}`, protocol.CodeBadJSON, "", protocol.ClientFrame{}},
		{"no type", text, `{"ref":"r"}`, protocol.CodeUnknownType, "r", protocol.ClientFrame{Ref: "r"}},
		{"unknown type", text, `{"type":"teleport","ref":"r"}`, protocol.CodeUnknownType, "r", protocol.ClientFrame{Type: "teleport", Ref: "r"}},
		{"a server frame's type", text, `{"type":"welcome"}`, protocol.CodeUnknownType, "", protocol.ClientFrame{Type: "welcome"}},
		{"long ref", text, `{"type":"ping","ref":"` + strings.Repeat("r", protocol.MaxRefBytes+1) + `"}`, protocol.CodeBadRequest, "", protocol.ClientFrame{Type: "ping"}},
		{"join, bad name", text, `{"type":"join","ref":"j","name":"Al\u200bice"}`, protocol.CodeInvalidName, "j", protocol.ClientFrame{Type: "join", Ref: "j", Name: "Al\u200bice"}},
		{"join, no name", text, `{"type":"join"}`, protocol.CodeInvalidName, "", protocol.ClientFrame{Type: "join", Room: protocol.Lobby}},
		{"join, room in capitals", text, `{"type":"join","name":"Zoe","room":"Team"}`, protocol.CodeInvalidRoom, "", protocol.ClientFrame{Type: "join", Name: "Zoe", Room: "Team"}},
		{"join, room with a wildcard", text, `{"type":"join","name":"Zoe","room":"a.>"}`, protocol.CodeInvalidRoom, "", protocol.ClientFrame{Type: "join", Name: "Zoe", Room: "a.>"}},
		{"resume, bad room", text, `{"type":"resume","user_id":"` + id + `","secret":"` + secret + `","room":"-"}`, protocol.CodeInvalidRoom, "", protocol.ClientFrame{Type: "resume", UserID: id, Secret: secret, Room: "-"}},
		{"resume, bad ID", text, `{"type":"resume","user_id":"A*","secret":"` + secret + `"}`, protocol.CodeResumeFailed, "", protocol.ClientFrame{Type: "resume", UserID: "A*", Secret: secret, Room: protocol.Lobby}},
		{"resume, short secret", text, `{"type":"resume","user_id":"` + id + `","secret":"short"}`, protocol.CodeResumeFailed, "", protocol.ClientFrame{Type: "resume", UserID: id, Secret: "short", Room: protocol.Lobby}},
		{"invite, subject wildcard", text, `{"type":"invite","to":"a.>"}`, protocol.CodeBadRequest, "", protocol.ClientFrame{Type: "invite", To: "a.>"}},
		{"invite nobody", text, `{"type":"invite"}`, protocol.CodeBadRequest, "", protocol.ClientFrame{Type: "invite"}},
		{"cancel, path", text, `{"type":"cancel","invitation":"../../etc"}`, protocol.CodeBadRequest, "", protocol.ClientFrame{Type: "cancel", Invitation: "../../etc"}},
		{"decline, upper case", text, `{"type":"decline","invitation":"ABC"}`, protocol.CodeBadRequest, "", protocol.ClientFrame{Type: "decline", Invitation: "ABC"}},
		{"end chat without one", text, `{"type":"end_chat"}`, protocol.CodeBadRequest, "", protocol.ClientFrame{Type: "end_chat"}},
		{"credentials, long ID", text, `{"type":"credentials","chat":"` + strings.Repeat("a", 65) + `"}`, protocol.CodeBadRequest, "", protocol.ClientFrame{Type: "credentials", Chat: strings.Repeat("a", 65)}},
		{"signal, no chat", text, `{"type":"signal","data":{}}`, protocol.CodeBadRequest, "", protocol.ClientFrame{Type: "signal", Data: json.RawMessage(`{}`)}},
		{"signal, a string", text, `{"type":"signal","chat":"` + id + `","data":"hi"}`, protocol.CodeBadRequest, "", protocol.ClientFrame{Type: "signal", Chat: id, Data: json.RawMessage(`"hi"`)}},
		{"signal, too large", text, `{"type":"signal","chat":"` + id + `","data":{"x":"` + strings.Repeat("x", protocol.MaxSignalBytes) + `"}}`, protocol.CodeBadRequest, "", protocol.ClientFrame{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, err := protocol.DecodeClientFrame(tc.text, []byte(tc.frame))
			if code := protocol.CodeOf(err); err != nil && code != tc.code || err == nil && tc.code != "" {
				t.Fatalf("DecodeClientFrame: %v, want code %q", err, tc.code)
			}
			if f.Ref != tc.ref {
				t.Fatalf("ref %q, want %q", f.Ref, tc.ref)
			}
			if tc.want.Type != "" && (f.Type != tc.want.Type || f.Name != tc.want.Name || f.UserID != tc.want.UserID || f.Secret != tc.want.Secret ||
				f.To != tc.want.To || f.Invitation != tc.want.Invitation || f.Chat != tc.want.Chat || string(f.Data) != string(tc.want.Data)) {
				t.Fatalf("frame %+v, want %+v", f, tc.want)
			}
		})
	}
}

// FuzzDecodeFrame holds DecodeClientFrame to its promise on any message: it never
// panics; what it refuses it refuses with a protocol error code; and what it
// passes is a frame a handler may use without checking anything again.
func FuzzDecodeFrame(f *testing.F) {
	id := protocol.NewID()
	for _, seed := range []string{
		`{"type":"ping","ref":"1"}`, `{"type":"join","name":"Ann"}`, `{"type":"join","name":"\u3164"}`,
		`{"type":"resume","user_id":"` + id + `","secret":"` + protocol.NewSecret() + `"}`,
		`{"type":"invite","to":"` + id + `"}`, `{"type":"cancel","invitation":"x.y"}`,
		`{"type":"signal","chat":"` + id + `","data":{"candidate":"a"}}`, `{"type":"end_chat","chat":"` + id + `"}`,
		`null`, `[]`, `{"type":1}`, `{"TYPE":"ping"}`, "{\"type\":\"join\",\"name\":\"\xff\"}",
	} {
		f.Add(true, []byte(seed))
	}
	f.Add(false, []byte(`{"type":"ping"}`))
	f.Fuzz(func(t *testing.T, text bool, data []byte) {
		fr, err := protocol.DecodeClientFrame(text, data)
		if err != nil {
			var pe *protocol.Error
			if !errors.As(err, &pe) || pe.Code == "" || pe.Code == protocol.CodeInternal || pe.Message == "" {
				t.Fatalf("DecodeClientFrame(%q): %v is not a protocol error with a code and a message", data, err)
			}
			if len(fr.Ref) > protocol.MaxRefBytes {
				t.Fatalf("DecodeClientFrame(%q): answers with ref of %d bytes", data, len(fr.Ref))
			}
			return
		}
		if !text || len(data) > protocol.MaxFrameBytes || !known(fr.Type) || len(fr.Ref) > protocol.MaxRefBytes {
			t.Fatalf("DecodeClientFrame(%q) passed %+v", data, fr)
		}
		switch fr.Type {
		case protocol.TypeJoin:
			if again, err := protocol.NormalizeName(fr.Name); err != nil || again != fr.Name {
				t.Fatalf("DecodeClientFrame(%q) passed name %q, not normalised", data, fr.Name)
			}
			if protocol.CheckRoom(fr.Room) != nil {
				t.Fatalf("DecodeClientFrame(%q) passed room %q", data, fr.Room)
			}
		case protocol.TypeResume:
			if !protocol.ValidID(fr.UserID) || !protocol.ValidSecret(fr.Secret) || protocol.CheckRoom(fr.Room) != nil {
				t.Fatalf("DecodeClientFrame(%q) passed %+v", data, fr)
			}
		case protocol.TypeInvite:
			mustID(t, data, fr.To)
		case protocol.TypeCancel, protocol.TypeAccept, protocol.TypeDecline:
			mustID(t, data, fr.Invitation)
		case protocol.TypeEndChat, protocol.TypeCredentials:
			mustID(t, data, fr.Chat)
		case protocol.TypeSignal:
			mustID(t, data, fr.Chat)
			if len(fr.Data) > protocol.MaxSignalBytes || !json.Valid(fr.Data) || fr.Data[0] != '{' {
				t.Fatalf("DecodeClientFrame(%q) passed signal data %q", data, fr.Data)
			}
		}
	})
}

func mustID(t *testing.T, data []byte, id string) {
	t.Helper()
	if !protocol.ValidID(id) {
		t.Fatalf("DecodeClientFrame(%q) passed the ID %q", data, id)
	}
}

func known(typ string) bool {
	_, ok := protocol.ClientFrameKindOf(typ)
	return ok
}
