package protocol

// Lobby is the public room: the one buddy list everybody shared before
// rooms, kept for whoever opens the page without a room's link.
const Lobby = "lobby"

// MaxRoomLen is the longest room name.
const MaxRoomLen = 64

// CheckRoom applies the room name rule (docs/behaviour.md, Rooms): 1 to
// MaxRoomLen characters of lowercase a-z, digits and hyphens, beginning and
// ending with a letter or a digit. Nothing is rewritten: "Team" is refused,
// not read as "team", so that two names never silently become one room.
// A room name is a token of NATS subjects and keys, which the rule keeps
// safe (no '.', '*', '>' or space).
func CheckRoom(room string) error {
	switch {
	case room == "":
		return Errorf(CodeInvalidRoom, "room name is missing")
	case len(room) > MaxRoomLen:
		return Errorf(CodeInvalidRoom, "room name must be at most %d characters", MaxRoomLen)
	case room[0] == '-' || room[len(room)-1] == '-':
		return Errorf(CodeInvalidRoom, "room name must begin and end with a letter or a digit")
	}
	for i := 0; i < len(room); i++ {
		switch c := room[i]; {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
		case c >= 'A' && c <= 'Z':
			return Errorf(CodeInvalidRoom, "room names are lowercase")
		default:
			return Errorf(CodeInvalidRoom, "room name may hold only a-z, 0-9 and '-'")
		}
	}
	return nil
}
