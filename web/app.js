// BuddyTok web client: one tab is one user. Plain ES module, no build step.
// It keeps a view of the world (buddy list, invitations, chat) built only
// from the server's frames, and renders it. Protocol: docs/protocol.md.

import { skeleton } from "./names.js";

const $ = (id) => document.getElementById(id);
const SESSION_KEY = "buddytok.session"; // sessionStorage: two tabs are two users

const view = {
  joined: false,
  me: null, // {id, name, state, joined_at}
  mode: "",
  users: new Map(), // id -> user, everyone online including me
  incoming: new Map(), // invitation id -> invitation
  outgoing: null,
  chat: null,
  // incoming, outgoing and chat come only from the welcome and the sync
  // frames that follow it, which the edge derives from the state in the
  // order of its changes. Events and replies only add a notice: they come
  // from whichever replica made a change, may overtake each other, and may
  // be lost.
};

let ws = null;
let nextRef = 1;
const pending = new Map(); // ref -> {resolve, reject}
let reconnectDelay = 500;
let joining = false;

// ---- connection -----------------------------------------------------------

// An operator who requires identity tokens links people to the page with
// #token=JWT: the fragment never reaches a server or its logs. The edge
// takes the name from the token.
const identityToken = new URLSearchParams(location.hash.slice(1)).get("token");

function connect() {
  let url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  if (identityToken) url += "?access_token=" + encodeURIComponent(identityToken);
  ws = new WebSocket(url);
  ws.addEventListener("open", onOpen);
  ws.addEventListener("message", (ev) => onFrame(JSON.parse(ev.data)));
  ws.addEventListener("close", onClose);
}

async function onOpen() {
  reconnectDelay = 500;
  setConnection("Connected");
  if (loadSession()) {
    resumeSaved(ws, 0);
  } else {
    render();
  }
}

// resumeSaved resumes the saved user on socket. Only resume_failed (the
// user is gone, or the secret is wrong) starts over; any other error (a
// service restarting, a timeout) keeps the secret and tries again, with
// backoff and jitter, for as long as the socket lasts. A new socket starts
// again from onOpen.
async function resumeSaved(socket, attempt) {
  const saved = loadSession();
  if (!saved || socket !== ws) return;
  try {
    await request({ type: "resume", user_id: saved.user_id, secret: saved.secret });
    setConnection("Connected");
  } catch (err) {
    if (socket !== ws) return;
    if (err.code === "resume_failed") {
      clearSession();
      view.joined = false;
      notice("Your earlier session has ended; please join again.", true);
      render();
      return;
    }
    if (err.code === "closed") return; // onClose reconnects, and resumes again
    setConnection("Reconnecting — the server is busy; trying again…");
    setTimeout(() => resumeSaved(socket, attempt + 1), jittered(Math.min(250 * 2 ** attempt, 5000)));
  }
}

// jittered spreads retries of many pages: a random delay between half and
// all of ms.
function jittered(ms) {
  return ms / 2 + Math.random() * (ms / 2);
}

function onClose(ev) {
  for (const { reject } of pending.values()) reject({ code: "closed", message: "connection lost" });
  pending.clear();
  stopVideo();
  if (ev.code === 4001) {
    // Another tab (a duplicate of this one) resumed this user: it is that
    // tab's now. This tab starts over as a new user.
    clearSession();
    view.joined = false;
    view.chat = null;
    notice("You are now online from another tab. Join again to be someone new here.", true);
    render();
  }
  if (ev.code === 1008 && ev.reason === "join_timeout" && !loadSession()) {
    // The edge closes a socket that has not joined for a while; joining
    // connects again (connected).
    ws = null;
    setConnection("Not connected — joining connects");
    return;
  }
  setConnection(view.joined ? "Connection lost — reconnecting…" : "Disconnected — reconnecting…");
  setTimeout(connect, jittered(reconnectDelay));
  reconnectDelay = Math.min(reconnectDelay * 2, 5000);
}

// connected resolves once there is an open socket, opening one if the
// edge closed the last for being idle.
function connected() {
  if (!ws) connect();
  const socket = ws;
  if (socket.readyState === WebSocket.OPEN) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const lost = () => reject({ code: "closed", message: "Not connected yet; please try again in a moment." });
    if (socket.readyState !== WebSocket.CONNECTING) return lost();
    socket.addEventListener("open", () => resolve(), { once: true });
    socket.addEventListener("close", lost, { once: true });
  });
}

function send(frame) {
  if (!ws || ws.readyState !== WebSocket.OPEN) throw { code: "closed", message: "not connected" };
  ws.send(JSON.stringify(frame));
}

// request sends a frame and resolves with the frame that answers it.
function request(frame) {
  return new Promise((resolve, reject) => {
    const ref = String(nextRef++);
    pending.set(ref, { resolve, reject });
    try {
      send({ ...frame, ref });
    } catch (err) {
      pending.delete(ref);
      reject(err);
    }
  });
}

function loadSession() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY));
  } catch {
    return null;
  }
}
function saveSession(userId, secret) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify({ user_id: userId, secret }));
}
function clearSession() {
  sessionStorage.removeItem(SESSION_KEY);
}

// ---- frames ---------------------------------------------------------------

function onFrame(f) {
  apply(f);
  const waiter = f.ref && pending.get(f.ref);
  if (waiter) {
    pending.delete(f.ref);
    if (f.type === "error") waiter.reject(f);
    else waiter.resolve(f);
  } else if (f.type === "error") {
    notice(f.message, true);
  }
  render();
}

// apply updates the view; it mirrors pkg/client's View.
function apply(f) {
  switch (f.type) {
    case "welcome": {
      view.joined = true;
      view.mode = f.mode || "";
      if (f.secret) saveSession(f.you.id, f.secret);
      view.users = new Map([[f.you.id, f.you]]);
      for (const u of f.users || []) view.users.set(u.id, u);
      view.me = view.users.get(f.you.id);
      setPersonal(f, false);
      break;
    }
    case "sync":
      setPersonal(f, true);
      break;
    case "user":
      view.users.set(f.user.id, f.user);
      if (view.me && f.user.id === view.me.id) view.me = f.user;
      break;
    case "user_left":
      view.users.delete(f.user_id);
      break;
    case "invitation_ended":
      onInvitationEnded(f.invitation, f.reason);
      break;
    case "chat_ended":
      if (view.me && f.chat.parties.includes(view.me.id)) {
        const peer = peerName(f.chat);
        notice(f.reason === "left" ? `${peer} went offline; the chat ended.` : `The chat with ${peer} ended.`);
      }
      break;
    case "signal":
      onSignal(f);
      break;
  }
}

// setPersonal takes the user's invitations and chat from a welcome or sync
// frame, which carries them complete, and starts or stops the video.
function setPersonal(f, announce) {
  const before = view.incoming;
  view.incoming = new Map((f.incoming || []).map((i) => [i.id, i]));
  if (announce) {
    for (const [id, inv] of view.incoming) if (!before.has(id)) announceInvitation(inv);
  }
  view.outgoing = f.outgoing || null;
  view.chat = f.chat || null;
  // The video runs exactly while there is a chat (a resume after a lost
  // connection starts it again).
  if (view.chat && (!video || video.chatId !== view.chat.id)) startVideo(view.chat);
  if (!view.chat && video) stopVideo();
}

function onInvitationEnded(inv, reason) {
  if (view.me && inv.from === view.me.id) {
    const who = inv.to_name;
    const why = {
      declined: `${who} declined your invitation.`,
      busy: `${who} started another chat; your invitation was declined.`,
      left: `${who} went offline; your invitation ended.`,
      failed: `The video chat with ${who} could not be set up.`,
    }[reason];
    if (why) notice(why, reason === "failed");
  } else if (view.me && inv.to === view.me.id) {
    const who = inv.from_name;
    const why = {
      cancelled: `${who} cancelled their invitation.`,
      left: `${who} went offline; their invitation ended.`,
      failed: `The video chat with ${who} could not be set up.`,
    }[reason];
    if (why) notice(why, reason === "failed");
  }
}

// ---- actions --------------------------------------------------------------

async function act(frame, okMessage) {
  try {
    const reply = await request(frame);
    if (okMessage) notice(okMessage);
    return reply;
  } catch (err) {
    notice(err.message || "Something went wrong.", true);
    return null;
  }
}

async function join(event) {
  event.preventDefault();
  if (joining) return;
  const name = $("name").value;
  if (!name.trim()) {
    notice("Please enter a name.", true);
    return;
  }
  if ("Notification" in window && Notification.permission === "default") {
    Notification.requestPermission().catch(() => {});
  }
  joining = true;
  try {
    await connected();
    await act({ type: "join", name });
  } catch (err) {
    notice(err.message, true);
  }
  joining = false;
  render();
}

function invite(user) {
  return act({ type: "invite", to: user.id }, `You invited ${displayName(user)}.`);
}

// ---- rendering ------------------------------------------------------------

// displayName tells apart people whose names are the same or only look
// alike ("Alice" and a Cyrillic "Аlice"): each of them gets a short suffix
// from their ID.
function displayName(user) {
  const key = skeleton(user.name);
  let alike = 0;
  for (const u of view.users.values()) if (skeletonOf(u) === key) alike++;
  return alike > 1 ? `${user.name} (#${user.id.slice(0, 4)})` : user.name;
}

// skeletonOf caches the skeleton of each name seen.
const skeletons = new Map();
function skeletonOf(user) {
  let s = skeletons.get(user.name);
  if (s === undefined) {
    if (skeletons.size > 10000) skeletons.clear();
    s = skeleton(user.name);
    skeletons.set(user.name, s);
  }
  return s;
}

function peerName(chat) {
  const i = view.me && chat.parties[0] === view.me.id ? 1 : 0;
  const u = view.users.get(chat.parties[i]);
  return u ? displayName(u) : chat.names[i];
}

function sortUsers(a, b) {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : a.joined_at - b.joined_at || (a.id < b.id ? -1 : 1);
}

function render() {
  const focusKey = document.activeElement && document.activeElement.dataset.key;
  $("join-section").hidden = view.joined;
  $("you").hidden = !view.joined;
  $("buddies-section").hidden = !view.joined;
  $("mode").textContent = view.mode === "opentok" ? "Video: OpenTok" : view.mode === "webrtc" ? "Video: direct WebRTC (no OpenTok credentials)" : "";
  if (!view.joined) {
    $("invitations-section").hidden = true;
    $("chat").hidden = true;
    document.title = "BuddyTok";
    return;
  }
  const me = view.me;
  $("you-name").textContent = displayName(me);
  $("you-state").textContent = me.state;

  $("outgoing").hidden = !view.outgoing;
  if (view.outgoing) {
    const to = view.users.get(view.outgoing.to);
    $("outgoing-text").textContent = `Waiting for ${to ? displayName(to) : view.outgoing.to_name} to answer…`;
  }

  $("chat").hidden = !view.chat;
  if (view.chat) $("chat-with").textContent = `In a chat with ${peerName(view.chat)}`;

  const invs = [...view.incoming.values()].sort((a, b) => a.created_at - b.created_at);
  $("invitations-section").hidden = invs.length === 0;
  $("invitations").replaceChildren(...invs.map(invitationItem));

  const buddies = [...view.users.values()].filter((u) => u.id !== me.id).sort(sortUsers);
  $("alone").hidden = buddies.length > 0;
  $("buddies").replaceChildren(...buddies.map(buddyItem));

  document.title = invs.length ? `(${invs.length}) BuddyTok` : "BuddyTok";
  if (focusKey) {
    const el = document.querySelector(`[data-key="${CSS.escape(focusKey)}"]`);
    if (el) el.focus();
  }
}

function button(label, key, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.dataset.key = key;
  b.addEventListener("click", onClick);
  return b;
}

function buddyItem(u) {
  const li = document.createElement("li");
  li.className = `buddy ${u.state}`;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = displayName(u);
  const state = document.createElement("span");
  state.className = "state";
  state.textContent = u.state;
  li.append(name, " ", state);
  if (u.state === "available" && view.me.state === "available") {
    li.append(" ", button(`Invite ${displayName(u)}`, `invite-${u.id}`, () => invite(u)));
  }
  return li;
}

function invitationItem(inv) {
  const li = document.createElement("li");
  const from = view.users.get(inv.from);
  const who = from ? displayName(from) : inv.from_name;
  const since = new Date(inv.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  li.append(`${who} invites you (since ${since}) `);
  li.append(
    button(`Accept ${who}`, `accept-${inv.id}`, () => act({ type: "accept", invitation: inv.id })),
    " ",
    button(`Decline ${who}`, `decline-${inv.id}`, () => act({ type: "decline", invitation: inv.id })),
  );
  return li;
}

function notice(text, isError = false) {
  $("notice").textContent = isError ? "" : text;
  $("alert").textContent = isError ? text : "";
}

function setConnection(text) {
  $("connection").textContent = text;
}

function announceInvitation(inv) {
  if (!document.hidden || !("Notification" in window) || Notification.permission !== "granted") return;
  try {
    const n = new Notification("BuddyTok", { body: `${inv.from_name} invites you to a video chat`, tag: inv.id });
    n.onclick = () => window.focus();
  } catch {
    // Some browsers only allow notifications from a service worker.
  }
}

// ---- video ----------------------------------------------------------------

let video = null; // {chatId, pc, stream, initiator, queue: []}

async function startVideo(chat) {
  stopVideo();
  const v = {
    chatId: chat.id, pc: null, stream: null, queue: [], session: null, publisher: null,
    remoteSet: false, candidates: [], muted: false, cameraOff: false, problem: "",
  };
  video = v;
  let cred;
  try {
    cred = (await request({ type: "credentials", chat: chat.id })).credentials;
  } catch (err) {
    videoStatus(`Video unavailable: ${err.message}`);
    return;
  }
  if (video !== v) return;
  if (cred.mode === "opentok") startOpenTok(v, cred);
  else startWebRTC(v, cred);
}

function stopVideo() {
  if (!video) return;
  const v = video;
  video = null;
  if (v.pc) v.pc.close();
  if (v.stream) v.stream.getTracks().forEach((t) => t.stop());
  if (v.session) v.session.disconnect();
  $("remote-video").srcObject = null;
  $("local-video").srcObject = null;
  videoStatus("");
  setToggles(null);
}

// ---- microphone and camera toggles ------------------------------------------

// setToggles enables Mute and Camera off for what v sends (a track of each
// kind, or an OpenTok publisher), and shows whether each is on.
function setToggles(v) {
  const audio = !!v && (v.publisher ? true : !!v.stream && v.stream.getAudioTracks().length > 0);
  const videoOn = !!v && (v.publisher ? true : !!v.stream && v.stream.getVideoTracks().length > 0);
  $("mute").disabled = !audio;
  $("camera-off").disabled = !videoOn;
  $("mute").setAttribute("aria-pressed", String(!!v && v.muted));
  $("camera-off").setAttribute("aria-pressed", String(!!v && v.cameraOff));
}

function toggleMute() {
  const v = video;
  if (!v) return;
  v.muted = !v.muted;
  if (v.stream) v.stream.getAudioTracks().forEach((t) => (t.enabled = !v.muted));
  if (v.publisher) v.publisher.publishAudio(!v.muted);
  setToggles(v);
}

function toggleCamera() {
  const v = video;
  if (!v) return;
  v.cameraOff = !v.cameraOff;
  if (v.stream) v.stream.getVideoTracks().forEach((t) => (t.enabled = !v.cameraOff));
  if (v.publisher) v.publisher.publishVideo(!v.cameraOff);
  setToggles(v);
}

function videoStatus(text) {
  $("video-status").textContent = text;
}

// localMedia asks for the camera and microphone, else the microphone
// alone, and says what the user should know: {stream, problem}. Without
// either, the chat still shows and plays the other side.
async function localMedia() {
  try {
    return { stream: await navigator.mediaDevices.getUserMedia({ video: true, audio: true }), problem: "" };
  } catch (err) {
    const refused = err && (err.name === "NotAllowedError" || err.name === "SecurityError");
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      return {
        stream,
        problem: refused
          ? "Your camera was refused: your buddy hears you but does not see you."
          : "No camera found: your buddy hears you but does not see you.",
      };
    } catch {
      return {
        stream: null,
        problem: refused
          ? "Camera and microphone refused: you can still see and hear your buddy. Allow them in the browser's site settings to be seen and heard."
          : "No camera or microphone found: you can still see and hear your buddy.",
      };
    }
  }
}

async function startWebRTC(v, cred) {
  // STUN and TURN servers come with the credentials (the tokens service's
  // ICE_SERVERS); none: a direct connection, which works on one network.
  const pc = new RTCPeerConnection({ iceServers: cred.ice_servers || [] });
  v.pc = pc;
  pc.addEventListener("icecandidate", (e) => {
    if (e.candidate) signal(v, { candidate: e.candidate.toJSON() });
  });
  pc.addEventListener("track", (e) => {
    $("remote-video").srcObject = e.streams[0];
    videoStatus(v.problem || "Connected.");
  });
  const { stream, problem } = await localMedia();
  if (video !== v) return stream && stream.getTracks().forEach((t) => t.stop());
  v.stream = stream;
  v.problem = problem;
  if (problem) videoStatus(problem);
  if (stream) {
    $("local-video").srcObject = stream;
    stream.getTracks().forEach((t) => pc.addTrack(t, stream));
  }
  // Receive what this side does not send.
  if (!stream || stream.getVideoTracks().length === 0) pc.addTransceiver("video", { direction: "recvonly" });
  if (!stream || stream.getAudioTracks().length === 0) pc.addTransceiver("audio", { direction: "recvonly" });
  setToggles(v);
  if (cred.initiator) {
    await pc.setLocalDescription(await pc.createOffer());
    signal(v, { description: pc.localDescription.toJSON() });
  }
  for (const data of v.queue.splice(0)) await handleSignal(v, data);
}

function signal(v, data) {
  request({ type: "signal", chat: v.chatId, data }).catch(() => {});
}

function onSignal(f) {
  const v = video;
  if (!v || !f.chat || f.chat.id !== v.chatId) return;
  if (!v.pc) v.queue.push(f.data);
  else handleSignal(v, f.data);
}

async function handleSignal(v, data) {
  const pc = v.pc;
  try {
    if (data.description) {
      await pc.setRemoteDescription(data.description);
      v.remoteSet = true;
      for (const c of v.candidates.splice(0)) await pc.addIceCandidate(c);
      if (data.description.type === "offer") {
        await pc.setLocalDescription(await pc.createAnswer());
        signal(v, { description: pc.localDescription.toJSON() });
      }
    } else if (data.candidate) {
      if (v.remoteSet) await pc.addIceCandidate(data.candidate);
      else v.candidates.push(data.candidate);
    }
  } catch (err) {
    videoStatus(`Video problem: ${err.message}`);
  }
}

// opentok.js comes from OpenTok's CDN, and only when a chat uses OpenTok.
const OPENTOK_JS = "https://static.opentok.com/v2/js/opentok.min.js";

function loadOpenTok() {
  if (window.OT) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = OPENTOK_JS;
    s.onload = resolve;
    s.onerror = () => reject(new Error("OpenTok's library (opentok.js) could not be loaded"));
    document.head.append(s);
  });
}

async function startOpenTok(v, cred) {
  try {
    await loadOpenTok();
  } catch (err) {
    videoStatus(err.message);
    return;
  }
  if (video !== v) return;
  const session = window.OT.initSession(cred.api_key, cred.session_id);
  v.session = session;
  session.on("streamCreated", (e) => {
    session.subscribe(e.stream, "opentok-remote", { insertMode: "append", width: "100%", height: "100%" });
    videoStatus("Connected.");
  });
  session.connect(cred.token, (err) => {
    if (err) return videoStatus(`OpenTok: ${err.message}`);
    const publisher = window.OT.initPublisher("opentok-local", { insertMode: "append", width: "100%", height: "100%" });
    if (video !== v) return;
    v.publisher = publisher;
    session.publish(publisher);
    setToggles(v);
    videoStatus("Waiting for your buddy's video…");
  });
}

// ---- wiring ---------------------------------------------------------------

$("join-form").addEventListener("submit", join);
$("cancel").addEventListener("click", () => view.outgoing && act({ type: "cancel", invitation: view.outgoing.id }));
$("end-chat").addEventListener("click", () => view.chat && act({ type: "end_chat", chat: view.chat.id }));
$("mute").addEventListener("click", toggleMute);
$("camera-off").addEventListener("click", toggleCamera);
document.addEventListener("visibilitychange", render);
connect();
