package load

import (
	"bytes"
	"encoding/json"

	"github.com/buddytok/buddytok/pkg/protocol"
)

// With thousands of users the generator reads millions of user frames and
// welcomes holding thousands of users each: decoded with encoding/json
// they would take the whole machine. The frames BuddyTok's edge sends
// have a fixed shape, so the two that dominate are scanned for the few
// fields the generator reads; anything else is decoded.

// userFramePrefix starts every user frame the edge encodes; userKey
// starts the user in it.
var (
	userFramePrefix = []byte(`{"type":"user",`)
	userKey         = []byte(`"user":{"id":"`)
)

var stateKey = []byte(`"state":"`)

// scanUserFrame reads the user's ID and state from a user frame; ok is
// false for any other frame. Inside a JSON string every quote is escaped,
// so the keys searched for cannot match within a name.
func scanUserFrame(data []byte) (id string, st protocol.State, ok bool) {
	if !bytes.HasPrefix(data, userFramePrefix) {
		return "", "", false
	}
	_, rest, ok := bytes.Cut(data, userKey)
	if !ok {
		return "", "", false
	}
	return scanIDState(rest)
}

// scanIDState reads `ID","...,"state":"STATE"` from the start of an
// encoded user's ID on.
func scanIDState(rest []byte) (id string, st protocol.State, ok bool) {
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return "", "", false
	}
	id = string(rest[:end])
	_, after, found := bytes.Cut(rest[end:], stateKey)
	if !found {
		return "", "", false
	}
	end = bytes.IndexByte(after, '"')
	if end < 0 {
		return "", "", false
	}
	return id, protocol.State(after[:end]), true
}

// usersKey is how the edge appends a welcome's list: last, after every
// other field.
var usersKey = []byte(`,"users":[`)

// decodeFrame decodes a frame. A welcome's list is split off undecoded
// (list is the JSON array, for scanUsers); f.Users then stays empty.
func decodeFrame(data []byte) (f frame, list []byte, err error) {
	if bytes.HasPrefix(data, []byte(`{"type":"welcome"`)) && bytes.HasSuffix(data, []byte("]}")) {
		if i := bytes.Index(data, usersKey); i >= 0 {
			head := append(data[:i:i], '}')
			if err := json.Unmarshal(head, &f); err == nil {
				return f, data[i+len(usersKey)-1 : len(data)-1], nil
			}
		}
	}
	err = json.Unmarshal(data, &f)
	return f, nil, err
}

// userObjectStart begins each user in an encoded list.
var userObjectStart = []byte(`{"id":"`)

// scanUsers calls each with every user's ID and state in an encoded list.
func scanUsers(list []byte, each func(id string, st protocol.State)) {
	for {
		i := bytes.Index(list, userObjectStart)
		if i < 0 {
			return
		}
		list = list[i+len(userObjectStart):]
		id, st, ok := scanIDState(list)
		if !ok {
			return
		}
		each(id, st)
	}
}
