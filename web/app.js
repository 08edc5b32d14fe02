// BuddyTok web client: one tab is one user. Plain ES modules, no build step:
//   connection.js  the WebSocket, requests and reconnects;
//   view.js        what the tab knows, from the server's frames (apply, pure);
//   render.js      the page, messages, focus;
//   video.js       the chat's video (WebRTC or OpenTok);
//   rooms.js       room names and links.
// This module wires them: each frame goes through apply, then the video
// and the messages react to what changed, then the page is rendered.
// Protocol: docs/protocol.md.

import { Connection, jittered } from "./connection.js";
import { apply, displayName, emptyView } from "./view.js";
import { clearNotice, focusWhenShown, notice, render, setConnection, setTitle, tickAges } from "./render.js";
import { initVideo, onSignal, startVideo, stopVideo, videoChat } from "./video.js";
import { LOBBY, newRoom, roomOfPath, roomPath, roomTitle } from "./rooms.js";

const $ = (id) => document.getElementById(id);
const SESSION_KEY = "buddytok.session"; // sessionStorage: two tabs are two users
const LAST_ROOM_KEY = "buddytok.lastRoom"; // localStorage: the room to go back to

// The tab's room, from its link: one room per tab. null until known, and
// for a page that names no room it can join (a bad name, or / without a
// lobby).
const place = roomOfPath(location.pathname);
let room = null;

let view = emptyView();
let joining = false;

// An operator who requires identity tokens links people to the page with
// #token=JWT: the fragment never reaches a server or its logs. The edge
// takes the name from the token.
const identityToken = new URLSearchParams(location.hash.slice(1)).get("token");

// The socket's URL names the tab's room, so that a load balancer can send
// a room's users to the same edge (docs/scaling.md, Rooms); the edge reads
// the room from the join or resume itself.
function socketURL() {
  const params = new URLSearchParams();
  if (place.room) params.set("room", place.room);
  if (identityToken) params.set("access_token", identityToken);
  const query = params.toString();
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws" + (query ? "?" + query : "");
}

const conn = new Connection(socketURL(), { open: onOpen, frame: onFrame, closed: onClosed, reconnecting: onReconnecting });

// ---- the session ------------------------------------------------------------

// loadSession returns the tab's user, if it is in this page's room: a tab
// that went to another room is someone new there (the user it was leaves
// once its grace period ends).
function loadSession() {
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(SESSION_KEY));
  } catch {
    saved = null;
  }
  if (saved && (saved.room || LOBBY) !== room) {
    clearSession();
    return null;
  }
  return saved;
}
function saveSession(userId, secret) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify({ user_id: userId, secret, room }));
  if (room !== LOBBY) {
    try {
      localStorage.setItem(LAST_ROOM_KEY, room);
    } catch {
      // Storage may be off; the link still works.
    }
  }
}
function clearSession() {
  sessionStorage.removeItem(SESSION_KEY);
}

// startOver forgets the user: the tab is a new visitor again.
function startOver() {
  clearSession();
  view = emptyView();
  stopVideo();
}

// ---- the connection ---------------------------------------------------------

function onOpen(socket) {
  if (loadSession()) {
    setConnection("connecting", "Connected — resuming…");
    resumeSaved(socket, 0);
  } else {
    setConnection("connected", "Connected");
    update(view);
  }
}

// resumeSaved resumes the saved user on socket. Only resume_failed (the
// user is gone, or the secret is wrong) starts over; any other error (a
// service restarting, a timeout) keeps the secret and tries again, with
// backoff and jitter, for as long as the socket lasts. A new socket starts
// again from onOpen.
async function resumeSaved(socket, attempt) {
  const saved = loadSession();
  if (!saved || !conn.current(socket)) return;
  try {
    await conn.request({ type: "resume", user_id: saved.user_id, secret: saved.secret, room });
    setConnection("connected", "Connected");
  } catch (err) {
    if (!conn.current(socket)) return;
    if (err.code === "resume_failed") {
      startOver();
      notice("Your earlier session has ended; please join again.", { error: true });
      setConnection("connected", "Connected");
      update(view);
      focusWhenShown("name");
      return;
    }
    if (err.code === "closed") return; // the connection reconnects, and resumes again
    setConnection("connecting", "Reconnecting — the server is busy; trying again…");
    setTimeout(() => resumeSaved(socket, attempt + 1), jittered(Math.min(250 * 2 ** attempt, 5000)));
  }
}

function onClosed(ev) {
  if (ev.code === 4001) {
    // Another tab of this browser (a duplicate of this one) resumed this
    // user: the user, and any chat, are that tab's now. This tab starts
    // over as a new user.
    const hadChat = !!view.chat;
    startOver();
    update(view);
    notice(hadChat
      ? "Your chat moved to another tab of this browser. Join again here to be someone new."
      : "You are now online in another tab of this browser. Join again here to be someone new.", { error: true });
  } else {
    stopVideo();
  }
  if (ev.code === 1008 && ev.reason === "join_timeout" && !loadSession()) {
    // The edge closes a socket that has not joined for a while; joining
    // connects again (conn.connected).
    setConnection("idle", "Not connected — joining connects");
    return "wait";
  }
  return "reconnect";
}

function onReconnecting(ms) {
  const secs = Math.max(1, Math.round(ms / 1000));
  setConnection("lost", view.joined
    ? `Connection lost — reconnecting in ${secs} s…`
    : `Disconnected — reconnecting in ${secs} s…`);
}

// ---- frames -------------------------------------------------------------------

function onFrame(f, answered) {
  const result = apply(view, f);
  for (const e of result.effects) effect(e);
  if (f.type === "error" && !answered) notice(f.message, { error: true });
  update(result.view);
}

function effect(e) {
  switch (e.kind) {
    case "notice":
      notice(e.text, { error: e.error });
      break;
    case "session":
      saveSession(e.userId, e.secret);
      break;
    case "invited":
      announceInvitation(e.invitation);
      break;
    case "signal":
      onSignal(e.frame);
      break;
  }
}

// update makes next the view, lets the video and the messages follow what
// changed, and renders.
function update(next) {
  const prev = view;
  view = next;
  // The video runs exactly while there is a chat (a resume after a lost
  // connection starts it again).
  if (view.chat && videoChat() !== view.chat.id) startVideo(view.chat);
  if (!view.chat && videoChat()) stopVideo();
  // "You invited Bob." is stale once the invitation has ended, one way or
  // another (the ending says how).
  if (prev.outgoing && !view.outgoing) clearNotice("invited");
  if (!prev.chat && view.chat) clearNotice("invited");
  // So is "Bob invites you…" once that invitation is answered or gone.
  for (const id of prev.incoming.keys()) if (!view.incoming.has(id)) clearNotice(`incoming-${id}`);
  render(view, actions);
}

// announceInvitation tells of a new invitation: in the page's live region
// while the tab is visible, with a browser notification while it is
// hidden (the title counts the invitations either way).
function announceInvitation(inv) {
  const from = view.users.get(inv.from);
  const who = from ? displayName(view, from) : inv.from_name;
  if (!document.hidden) {
    notice(`${who} invites you to a video chat.`, { key: `incoming-${inv.id}` });
    return;
  }
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  try {
    const n = new Notification("BuddyTok", { body: `${who} invites you to a video chat`, tag: inv.id });
    n.onclick = () => window.focus();
  } catch {
    // Some browsers only allow notifications from a service worker.
  }
}

// ---- actions ----------------------------------------------------------------

// act sends a request and says what went wrong, if anything; it resolves
// with the answer, or null.
async function act(frame, ok) {
  try {
    const reply = await conn.request(frame);
    if (ok) notice(ok.text, { key: ok.key });
    return reply;
  } catch (err) {
    notice(err.message || "Something went wrong.", { error: true });
    return null;
  }
}

async function join(event) {
  event.preventDefault();
  if (joining) return;
  const name = $("name").value;
  if (!name.trim()) {
    notice("Please enter a name.", { error: true });
    return;
  }
  // A sensible moment to ask: the person just acted, and invitations are
  // what they will want to hear of while the tab is in the background.
  if ("Notification" in window && Notification.permission === "default") {
    Notification.requestPermission().catch(() => {});
  }
  joining = true;
  try {
    await conn.connected();
    if (await act({ type: "join", name, room })) {
      setConnection("connected", "Connected");
      focusWhenShown("buddies-heading");
    }
  } catch (err) {
    notice(err.message, { error: true });
  }
  joining = false;
  update(view);
}

const actions = {
  async invite(user) {
    if (await act({ type: "invite", to: user.id }, { text: `You invited ${displayName(view, user)}.`, key: "invited" })) {
      focusWhenShown("cancel");
    }
  },
  async accept(inv) {
    if (await act({ type: "accept", invitation: inv.id })) focusWhenShown("end-chat");
  },
  async decline(inv) {
    if (await act({ type: "decline", invitation: inv.id })) {
      // The next invitation, if there is one; else the buddy list. (The
      // declined one may still be on screen: its removal comes in a frame
      // of its own.)
      focusWhenShown(() => [...document.querySelectorAll('#invitations button[data-key^="accept-"]')]
        .find((b) => b.dataset.key !== `accept-${inv.id}`) || $("buddies-heading"));
    }
  },
  async cancel() {
    if (view.outgoing && (await act({ type: "cancel", invitation: view.outgoing.id }))) focusWhenShown("buddies-heading");
  },
  async endChat() {
    if (view.chat && (await act({ type: "end_chat", chat: view.chat.id }))) focusWhenShown("buddies-heading");
  },
};

// ---- rooms ----------------------------------------------------------------------

function goToNewRoom() {
  location.assign(roomPath(newRoom()));
}

async function copyLink() {
  const link = location.origin + roomPath(room);
  try {
    await navigator.clipboard.writeText(link);
    notice("Link copied: send it to whoever you want in this room.");
  } catch {
    notice(`Copy this link to share the room: ${link}`);
  }
}

// lastRoom is the room this browser was last in, if any.
function lastRoom() {
  try {
    return localStorage.getItem(LAST_ROOM_KEY);
  } catch {
    return null;
  }
}

// showRooms shows, instead of joining, why this page is in no room and
// the ways into one.
function showRooms(text, error) {
  $("rooms-section").hidden = false;
  $("join-section").hidden = true;
  $("rooms-text").textContent = text;
  $("room-error").hidden = !error;
  $("room-error").textContent = error || "";
  const last = lastRoom();
  if (last && !roomOfPath(roomPath(last)).error) {
    $("last-room").hidden = false;
    $("last-room").href = roomPath(last);
    $("last-room").textContent = `Back to ${last}`;
  }
  setConnection("idle", "Not connected");
  focusWhenShown("make-room");
}

// enterRoom shows the tab's room in the header and title, and connects.
function enterRoom(r) {
  room = r;
  $("room").hidden = false;
  $("room-link").textContent = roomTitle(room);
  $("room-link").href = roomPath(room);
  $("leave-room").hidden = room === LOBBY;
  setTitle(`BuddyTok — ${roomTitle(room)}`);
  $("join-hint").textContent = room === LOBBY
    ? "Pick a name; everyone in the lobby sees it, and can invite you to a video chat. For a list of your own, make a new room and share its link."
    : "Pick a name; everyone in this room sees it, and can invite you to a video chat. Share the room's link to bring others in.";
  conn.connect();
}

// site asks the edge what this deployment offers (whether it has a
// lobby); an edge that cannot tell has one.
async function site() {
  try {
    const res = await fetch("/api/site", { cache: "no-store" });
    if (res.ok) return await res.json();
  } catch {
    // fall through
  }
  return { lobby: true };
}

async function start() {
  if (place.error) {
    showRooms("This link does not name a room.", `"${place.name ?? ""}": ${place.error}`);
    return;
  }
  if (!place.room) {
    showRooms("This page is not a room.");
    return;
  }
  if (place.room === LOBBY && !(await site()).lobby) {
    showRooms("This BuddyTok has no public lobby: make a new room and share its link, or open a room's link.");
    return;
  }
  enterRoom(place.room);
}

// ---- wiring -------------------------------------------------------------------

$("join-form").addEventListener("submit", join);
$("cancel").addEventListener("click", actions.cancel);
$("end-chat").addEventListener("click", actions.endChat);
$("copy-link").addEventListener("click", copyLink);
$("new-room").addEventListener("click", goToNewRoom);
$("make-room").addEventListener("click", goToNewRoom);
document.addEventListener("visibilitychange", () => room && render(view, actions));
initVideo({ request: (frame) => conn.request(frame) });
setInterval(tickAges, 1000);
start();
