// Rooms: a buddy list that people share by its link, /r/<room>. The lobby
// is the public room at /, which an operator may switch off. The room name
// rule is the one the edge and the services apply (protocol.CheckRoom,
// docs/protocol.md): nothing is rewritten, so two names never become one
// room.

export const LOBBY = "lobby";
export const MAX_ROOM_LEN = 64;

// checkRoom returns why name is not a room name, or "" if it is one.
export function checkRoom(name) {
  if (name === "") return "The room name is missing.";
  if (name.length > MAX_ROOM_LEN) return `A room name has at most ${MAX_ROOM_LEN} characters.`;
  if (name[0] === "-" || name[name.length - 1] === "-") return "A room name begins and ends with a letter or a digit.";
  for (const c of name) {
    if ((c >= "a" && c <= "z") || (c >= "0" && c <= "9") || c === "-") continue;
    if (c >= "A" && c <= "Z") return "Room names are lowercase.";
    return "A room name holds only a-z, 0-9 and '-'.";
  }
  return "";
}

// Crockford's base32, lowercase: no i, l, o or u to misread.
const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";

// newRoom makes a room name nobody can guess: 20 symbols of 5 bits (100
// bits from the browser's cryptographic random source) in groups of four.
export function newRoom() {
  const bytes = crypto.getRandomValues(new Uint8Array(20));
  let out = "";
  bytes.forEach((b, i) => {
    if (i > 0 && i % 4 === 0) out += "-";
    out += ALPHABET[b & 31];
  });
  return out;
}

// roomOfPath reads the room a page's path names: { room } for the lobby
// (at /) or a room (at /r/<room>), { error } for a name that breaks the
// rule, {} for a path that names none.
export function roomOfPath(path) {
  if (path === "/" || path === "/index.html") return { room: LOBBY };
  const m = /^\/r\/([^/]*)\/?$/.exec(path);
  if (!m) return {};
  let name;
  try {
    name = decodeURIComponent(m[1]);
  } catch {
    return { error: "The link does not name a room." };
  }
  const why = checkRoom(name);
  return why ? { error: why, name } : { room: name };
}

// roomPath is the path of room's link.
export function roomPath(room) {
  return room === LOBBY ? "/" : "/r/" + room;
}

// roomTitle is how the page names room.
export function roomTitle(room) {
  return room === LOBBY ? "Lobby" : room;
}
