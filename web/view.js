// The view: what a tab knows of the world, built only from the server's
// frames. apply is a pure function: it returns the next view and what the
// person should be told, and touches nothing else; the video and the
// notices react to what it returns (app.js).

import { skeleton } from "./names.js";

// emptyView is the view of a tab that has not joined.
export function emptyView() {
  return {
    joined: false,
    me: null, // {id, name, state, joined_at}
    mode: "", // "webrtc" or "opentok"
    users: new Map(), // id -> user, everyone online including me
    incoming: new Map(), // invitation id -> invitation
    outgoing: null,
    chat: null,
    // incoming, outgoing and chat come only from the welcome and the sync
    // frames that follow it, which the edge derives from the state in the
    // order of its changes. Events and replies only add a notice: they
    // come from whichever replica made a change, may overtake each other,
    // and may be lost.
  };
}

// apply returns the view after frame f, with the effects it calls for:
//   {kind: "notice", text, error}     tell the person, in one short line;
//   {kind: "invited", invitation}     an invitation arrived (a sync frame's new one);
//   {kind: "session", userId, secret} keep the user's resume secret (a welcome);
//   {kind: "signal", frame}           WebRTC signalling for the video.
export function apply(view, f) {
  const effects = [];
  const next = { ...view };
  switch (f.type) {
    case "welcome": {
      next.joined = true;
      next.mode = f.mode || "";
      if (f.secret) effects.push({ kind: "session", userId: f.you.id, secret: f.secret });
      next.users = new Map([[f.you.id, f.you]]);
      for (const u of f.users || []) next.users.set(u.id, u);
      next.me = next.users.get(f.you.id);
      setPersonal(next, f, null);
      break;
    }
    case "sync":
      setPersonal(next, f, effects);
      break;
    case "user":
      next.users = new Map(view.users).set(f.user.id, f.user);
      if (view.me && f.user.id === view.me.id) next.me = f.user;
      break;
    case "user_left":
      next.users = new Map(view.users);
      next.users.delete(f.user_id);
      break;
    case "invitation_ended": {
      const text = invitationEnded(view, f.invitation, f.reason);
      if (text) effects.push({ kind: "notice", text, error: f.reason === "failed" });
      break;
    }
    case "chat_ended":
      if (view.me && f.chat.parties.includes(view.me.id)) {
        const peer = peerName(view, f.chat);
        effects.push({ kind: "notice", text: f.reason === "left" ? `${peer} went offline; the chat ended.` : `The chat with ${peer} ended.` });
      }
      break;
    case "signal":
      effects.push({ kind: "signal", frame: f });
      break;
  }
  return { view: next, effects };
}

// setPersonal takes the user's invitations and chat from a welcome or sync
// frame, which carries them complete; with effects, it notes each
// invitation that was not there before.
function setPersonal(next, f, effects) {
  const before = next.incoming;
  next.incoming = new Map((f.incoming || []).map((i) => [i.id, i]));
  if (effects) {
    for (const [id, inv] of next.incoming) if (!before.has(id)) effects.push({ kind: "invited", invitation: inv });
  }
  next.outgoing = f.outgoing || null;
  next.chat = f.chat || null;
}

function invitationEnded(view, inv, reason) {
  if (view.me && inv.from === view.me.id) {
    const who = inv.to_name;
    return {
      declined: `${who} declined your invitation.`,
      busy: `${who} started another chat; your invitation was declined.`,
      left: `${who} went offline; your invitation ended.`,
      failed: `The video chat with ${who} could not be set up.`,
    }[reason];
  }
  if (view.me && inv.to === view.me.id) {
    const who = inv.from_name;
    return {
      cancelled: `${who} cancelled their invitation.`,
      left: `${who} went offline; their invitation ended.`,
      failed: `The video chat with ${who} could not be set up.`,
    }[reason];
  }
  return undefined;
}

// peerName is the name of the other party of chat, told apart from
// look-alikes.
export function peerName(view, chat) {
  const i = view.me && chat.parties[0] === view.me.id ? 1 : 0;
  const u = view.users.get(chat.parties[i]);
  return u ? displayName(view, u) : chat.names[i];
}

// displayName tells apart people whose names are the same or only look
// alike ("Alice" and a Cyrillic "Аlice"): each of them gets a short suffix
// from their ID.
const skeletons = new Map(); // name -> skeleton, a cache
function skeletonOf(name) {
  let s = skeletons.get(name);
  if (s === undefined) {
    if (skeletons.size > 10000) skeletons.clear();
    s = skeleton(name);
    skeletons.set(name, s);
  }
  return s;
}

export function displayName(view, user) {
  const key = skeletonOf(user.name);
  let alike = 0;
  for (const u of view.users.values()) if (skeletonOf(u.name) === key) alike++;
  return alike > 1 ? `${user.name} (#${user.id.slice(0, 4)})` : user.name;
}

// sortUsers orders the buddy list: by name, then by who came first, so
// that it stays put as people come and go.
export function sortUsers(a, b) {
  return a.name.localeCompare(b.name) || a.joined_at - b.joined_at || (a.id < b.id ? -1 : 1);
}
