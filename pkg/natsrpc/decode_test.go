package natsrpc_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/buddytok/buddytok/pkg/natsrpc"
	"github.com/buddytok/buddytok/pkg/protocol"
)

// requestKinds decode data as each service request, and check what a
// request that passed may be relied on for: every ID well formed, the
// name normalised, the secret and signal data in shape.
var requestKinds = []func(t *testing.T, data []byte){
	check(func(r protocol.JoinRequest) []string {
		if again, err := protocol.NormalizeName(r.Name); err != nil || again != r.Name {
			return []string{"name not normalised: " + r.Name}
		}
		return slices.Concat(room(r.Room), ids(r.UserID, r.Edge, r.Conn), proof(r.Secret))
	}),
	check(func(r protocol.ResumeRequest) []string {
		if !protocol.ValidSecret(r.Secret) {
			return []string{"secret " + r.Secret}
		}
		return slices.Concat(room(r.Room), ids(r.UserID, r.Edge, r.Conn))
	}),
	check(func(r protocol.DisconnectRequest) []string {
		return slices.Concat(room(r.Room), ids(r.UserID, r.Conn), proof(r.Secret))
	}),
	check(func(r protocol.AttachRequest) []string {
		return slices.Concat(room(r.Room), ids(r.UserID, r.Edge, r.Conn), proof(r.Secret))
	}),
	check(func(r protocol.LeaveRequest) []string { return slices.Concat(room(r.Room), ids(r.UserID, r.Conn)) }),
	check(func(r protocol.InviteRequest) []string {
		return slices.Concat(room(r.Room), ids(r.From, r.To), proof(r.Secret))
	}),
	check(func(r protocol.InvitationRequest) []string {
		return slices.Concat(room(r.Room), ids(r.UserID, r.Invitation), proof(r.Secret))
	}),
	check(func(r protocol.ChatRequest) []string {
		return slices.Concat(room(r.Room), ids(r.UserID, r.Chat), proof(r.Secret))
	}),
	check(func(r protocol.SignalRequest) []string {
		if len(r.Data) > protocol.MaxSignalBytes || !json.Valid(r.Data) || r.Data[0] != '{' {
			return []string{fmt.Sprintf("signal data %.40q", r.Data)}
		}
		return slices.Concat(room(r.Room), ids(r.UserID, r.Chat), proof(r.Secret))
	}),
	check(func(r protocol.SessionRequest) []string { return ids(r.ChatID, r.Parties[0], r.Parties[1]) }),
}

// room finds fault with a room name that is not one.
func room(name string) []string {
	if protocol.CheckRoom(name) != nil {
		return []string{"room " + name}
	}
	return nil
}

// proof finds fault with a secret that cannot prove anything.
func proof(secret string) []string {
	if !protocol.ValidSecret(secret) {
		return []string{"secret " + secret}
	}
	return nil
}

func ids(values ...string) []string {
	var bad []string
	for _, v := range values {
		if !protocol.ValidID(v) {
			bad = append(bad, "ID "+v)
		}
	}
	return bad
}

// check makes a requestKinds entry for Req: Decode never panics, refuses
// with a code a caller can act on, and passes only what ok finds sound.
func check[Req any](ok func(Req) []string) func(t *testing.T, data []byte) {
	return func(t *testing.T, data []byte) {
		req, err := natsrpc.Decode[Req](data)
		if err != nil {
			switch protocol.CodeOf(err) {
			case protocol.CodeBadRequest, protocol.CodeInvalidName, protocol.CodeInvalidRoom, protocol.CodeResumeFailed, protocol.CodeForbidden:
			default:
				t.Fatalf("Decode[%T](%q): %v, not a request error", req, data, err)
			}
			return
		}
		if bad := ok(req); len(bad) > 0 {
			t.Fatalf("Decode[%T](%q) passed %+v: %v", req, data, req, bad)
		}
	}
}

// FuzzDecodeRequests feeds any bytes to the decoder of every NATS request
// a service reads.
func FuzzDecodeRequests(f *testing.F) {
	id := protocol.NewID()
	for _, seed := range []string{
		`{"room":"lobby","user_id":"` + id + `","name":"Ann","edge":"` + id + `","conn":"` + id + `","secret":"` + protocol.NewSecret() + `"}`,
		`{"room":"lobby","user_id":"` + id + `","secret":"` + protocol.NewSecret() + `","edge":"` + id + `","conn":"` + id + `"}`,
		`{"room":"a-b","from":"` + id + `","to":"a.>"}`, `{"room":"lobby","user_id":"` + id + `","chat":"` + id + `","data":{"a":1},"secret":"` + protocol.NewSecret() + `"}`,
		`{"room":"r.>","user_id":"` + id + `"}`,
		`{"chat_id":"` + id + `","parties":["` + id + `","` + id + `"]}`, `null`, `[]`, `{"parties":[1]}`,
	} {
		for kind := range requestKinds {
			f.Add(uint8(kind), []byte(seed))
		}
	}
	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		requestKinds[int(kind)%len(requestKinds)](t, data)
	})
}

func TestDecodeRequests(t *testing.T) {
	t.Parallel()
	id, secret := protocol.NewID(), protocol.NewSecret()
	invite := func(data []byte) error { _, err := natsrpc.Decode[protocol.InviteRequest](data); return err }
	join := func(data []byte) error { _, err := natsrpc.Decode[protocol.JoinRequest](data); return err }
	disconnect := func(data []byte) error { _, err := natsrpc.Decode[protocol.DisconnectRequest](data); return err }
	attach := func(data []byte) error { _, err := natsrpc.Decode[protocol.AttachRequest](data); return err }
	for _, tc := range []struct {
		name   string
		decode func([]byte) error
		data   string
		code   protocol.Code
	}{
		{"valid", invite, `{"room":"lobby","from":"` + id + `","to":"` + id + `","secret":"` + secret + `"}`, ""},
		{"no proof", invite, `{"room":"lobby","from":"` + id + `","to":"` + id + `"}`, protocol.CodeForbidden},
		{"not JSON", invite, `{"from":`, protocol.CodeBadRequest},
		{"a wildcard ID", invite, `{"room":"lobby","from":"` + id + `","to":"*"}`, protocol.CodeBadRequest},
		{"no ID", invite, `{"room":"lobby"}`, protocol.CodeBadRequest},
		{"no room", invite, `{"from":"` + id + `","to":"` + id + `","secret":"` + secret + `"}`, protocol.CodeInvalidRoom},
		{"a wildcard room", invite, `{"room":"r.>","from":"` + id + `","to":"` + id + `","secret":"` + secret + `"}`, protocol.CodeInvalidRoom},
		{"a join", join, `{"room":"a-team","user_id":"` + id + `","name":"Ann","edge":"` + id + `","conn":"` + id + `","secret":"` + secret + `"}`, ""},
		{"a join without the secret the edge picked", join, `{"room":"lobby","user_id":"` + id + `","name":"Ann","edge":"` + id + `","conn":"` + id + `"}`, protocol.CodeBadRequest},
		{"a join in a room in capitals", join, `{"room":"Lobby","user_id":"` + id + `","name":"Ann","edge":"` + id + `","conn":"` + id + `","secret":"` + secret + `"}`, protocol.CodeInvalidRoom},
		{"a disconnect", disconnect, `{"room":"lobby","user_id":"` + id + `","conn":"` + id + `","secret":"` + secret + `"}`, ""},
		{"a disconnect without proof", disconnect, `{"room":"lobby","user_id":"` + id + `","conn":"` + id + `"}`, protocol.CodeForbidden},
		{"an attach without proof", attach, `{"room":"lobby","user_id":"` + id + `","edge":"` + id + `","conn":"` + id + `","secret":"x"}`, protocol.CodeForbidden},
	} {
		err := tc.decode([]byte(tc.data))
		if got := protocol.CodeOf(err); err != nil && got != tc.code || err == nil && tc.code != "" {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.code)
		}
	}
}
