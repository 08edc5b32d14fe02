// Rendering: the page from the view, the one-line messages, the connection
// indicator, and where the focus goes after an action. Nothing here talks
// to the server.

import { displayName, peerName, sortUsers } from "./view.js";

const $ = (id) => document.getElementById(id);

// ---- focus ------------------------------------------------------------------

// The element to focus once it is shown: an action's answer may come
// before the frame that shows what it led to (the chat after Accept).
let focusNext = null;

// focusWhenShown moves the focus to the element with id (or the one a
// function returns) as soon as a render shows it.
export function focusWhenShown(target) {
  focusNext = target;
  placeFocus();
}

function placeFocus() {
  if (!focusNext) return;
  const el = typeof focusNext === "function" ? focusNext() : $(focusNext);
  if (el && el.offsetParent !== null && !el.disabled) {
    focusNext = null;
    el.focus();
  }
}

// ---- messages ---------------------------------------------------------------

// One short line at a time: a notice fades after a few seconds, an error
// after a little longer; a new one replaces the last. A notice with a key
// can be taken back when what it said stops being true (clearNotice).
let shown = { key: "", timer: 0, fade: 0 };

export function notice(text, { error = false, key = "" } = {}) {
  clearTimeout(shown.timer);
  clearTimeout(shown.fade);
  for (const el of [$("notice"), $("alert")]) el.classList.remove("fading");
  $("notice").textContent = error ? "" : text;
  $("alert").textContent = error ? text : "";
  const el = error ? $("alert") : $("notice");
  shown = {
    key,
    fade: setTimeout(() => el.classList.add("fading"), error ? 8000 : 5000),
    timer: setTimeout(() => clearMessages(), error ? 8600 : 5600),
  };
}

function clearMessages() {
  clearTimeout(shown.timer);
  clearTimeout(shown.fade);
  shown = { key: "", timer: 0, fade: 0 };
  for (const el of [$("notice"), $("alert")]) {
    el.textContent = "";
    el.classList.remove("fading");
  }
}

// clearNotice removes the message on screen if it was said under key.
export function clearNotice(key) {
  if (shown.key === key) clearMessages();
}

// ---- connection -------------------------------------------------------------

// setConnection shows the connection's state ("connecting", "connected",
// "lost", "idle") in words and colour.
export function setConnection(state, text) {
  $("connection").dataset.state = state;
  $("connection-text").textContent = text;
}

// ---- the page -----------------------------------------------------------------

// initials are the avatar of a name: the first letter of its first two
// words.
function initials(name) {
  const words = name.trim().split(/\s+/u).filter(Boolean);
  const letters = words.slice(0, 2).map((w) => [...w][0]);
  return letters.join("").toLocaleUpperCase() || "?";
}

// colour gives each user a colour of their own, from their ID: one of a
// few that white initials read well on, in light and dark themes.
const palette = ["#0b63ce", "#137333", "#a142f4", "#c5221f", "#b06000", "#007b83", "#5f6368", "#c2185b"];
function colour(id) {
  let h = 0;
  for (const ch of id) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return palette[h % palette.length];
}

function avatar(user) {
  const a = document.createElement("span");
  a.className = "avatar";
  a.setAttribute("aria-hidden", "true");
  a.textContent = initials(user.name);
  a.style.background = colour(user.id);
  return a;
}

// age says how long ago t (Unix ms) was, in words.
export function age(t, now = Date.now()) {
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  return `${Math.floor(m / 60)} h ago`;
}

// tickAges updates the age of every invitation on screen, without touching
// anything else (the focus stays where it is).
export function tickAges() {
  for (const el of document.querySelectorAll("[data-since]")) el.textContent = age(Number(el.dataset.since));
}

// stateLabel is a state as the word the page contract names (available,
// inviting, chatting) and a colour.
function stateLabel(state) {
  const s = document.createElement("span");
  s.className = `state ${state}`;
  s.textContent = state;
  return s;
}

function button(label, key, onClick, cls = "") {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.dataset.key = key;
  if (cls) b.className = cls;
  b.addEventListener("click", onClick);
  return b;
}

function person(view, user, extra) {
  const p = document.createElement("span");
  p.className = "person";
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = displayName(view, user);
  p.append(name, extra);
  return p;
}

function buddyItem(view, u, actions) {
  const li = document.createElement("li");
  li.className = `buddy ${u.state}`;
  li.append(avatar(u), person(view, u, stateLabel(u.state)));
  if (u.state === "available" && view.me.state === "available") {
    const name = displayName(view, u);
    li.append(button(`Invite ${name}`, `invite-${u.id}`, () => actions.invite(u)));
  }
  return li;
}

function invitationItem(view, inv, actions) {
  const li = document.createElement("li");
  const from = view.users.get(inv.from) || { id: inv.from, name: inv.from_name };
  const who = displayName(view, from);
  const when = document.createElement("span");
  when.className = "age";
  when.dataset.since = String(inv.created_at);
  when.textContent = age(inv.created_at);
  const text = document.createElement("span");
  text.textContent = "invites you to a video chat · ";
  text.append(when);
  const row = document.createElement("span");
  row.className = "actions";
  row.append(
    button(`Accept ${who}`, `accept-${inv.id}`, () => actions.accept(inv)),
    button(`Decline ${who}`, `decline-${inv.id}`, () => actions.decline(inv), "secondary"),
  );
  li.append(avatar(from), person(view, from, text), row);
  return li;
}

// titleBase is the page's title before the count of invitations: the
// room's name (setTitle).
let titleBase = "BuddyTok";

export function setTitle(base) {
  titleBase = base;
  document.title = base;
}

// render shows view. actions are what the buttons do.
export function render(view, actions) {
  const focusKey = document.activeElement && document.activeElement.dataset.key;
  $("join-section").hidden = view.joined;
  $("you").hidden = !view.joined;
  $("buddies-section").hidden = !view.joined;
  $("mode").textContent = view.mode === "opentok" ? "Video: OpenTok" : view.mode === "webrtc" ? "Video: direct WebRTC (no OpenTok credentials)" : "";
  if (!view.joined) {
    $("invitations-section").hidden = true;
    $("chat").hidden = true;
    $("outgoing").hidden = true;
    document.title = titleBase;
    placeFocus();
    return;
  }
  const me = view.me;
  $("you-avatar").textContent = initials(me.name);
  $("you-avatar").style.background = colour(me.id);
  $("you-name").textContent = displayName(view, me);
  $("you-state").className = `state ${me.state}`;
  $("you-state").textContent = me.state;

  $("outgoing").hidden = !view.outgoing;
  if (view.outgoing) {
    const to = view.users.get(view.outgoing.to);
    $("outgoing-text").textContent = `Inviting ${to ? displayName(view, to) : view.outgoing.to_name}… waiting for an answer.`;
  }

  $("chat").hidden = !view.chat;
  $("chat").dataset.mode = view.chat ? view.chat.mode || view.mode : "";
  if (view.chat) {
    const peer = peerName(view, view.chat);
    $("chat-with").textContent = `In a chat with ${peer}`;
    $("remote-label").textContent = peer;
  }

  const invs = [...view.incoming.values()].sort((a, b) => a.created_at - b.created_at);
  $("invitations-section").hidden = invs.length === 0;
  $("invitations").replaceChildren(...invs.map((inv) => invitationItem(view, inv, actions)));

  const buddies = [...view.users.values()].filter((u) => u.id !== me.id).sort(sortUsers);
  $("alone").hidden = buddies.length > 0;
  $("buddies").replaceChildren(...buddies.map((u) => buddyItem(view, u, actions)));

  document.title = invs.length ? `(${invs.length}) ${titleBase}` : titleBase;
  if (focusKey) {
    const el = document.querySelector(`[data-key="${CSS.escape(focusKey)}"]`);
    if (el) el.focus();
  }
  placeFocus();
}
