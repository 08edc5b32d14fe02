// The chat's video: direct WebRTC between the two pages (signalled through
// BuddyTok) or OpenTok (opentok.js, loaded only for a chat). It runs
// exactly while the view has a chat: app.js starts and stops it as the
// view changes.

const $ = (id) => document.getElementById(id);

let request = null; // the connection's request, set by initVideo

// initVideo gives the video what it needs of the page: a way to send
// requests to the edge.
export function initVideo(deps) {
  request = deps.request;
  $("mute").addEventListener("click", toggleMute);
  $("camera-off").addEventListener("click", toggleCamera);
}

// videoChat is the ID of the chat the video runs for, or "".
export function videoChat() {
  return video ? video.chatId : "";
}

let video = null; // the running video: its chat, peer connection or OpenTok session, media, signals waiting

export async function startVideo(chat) {
  stopVideo();
  const v = {
    chatId: chat.id, pc: null, stream: null, queue: [], session: null, publisher: null,
    remoteSet: false, candidates: [], muted: false, cameraOff: false, problem: "",
    ready: false, chain: Promise.resolve(),
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

export function stopVideo() {
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
  v.ready = true;
  for (const data of v.queue.splice(0)) v.chain = v.chain.then(() => handleSignal(v, data));
}

function signal(v, data) {
  request({ type: "signal", chat: v.chatId, data }).catch(() => {});
}

export function onSignal(f) {
  const v = video;
  if (!v || !f.chat || f.chat.id !== v.chatId) return;
  // Until this side's media is on its peer connection, an offer answered
  // would leave it out: signals wait for startWebRTC.
  // Signals are handled one at a time, in order.
  if (!v.ready) v.queue.push(f.data);
  else v.chain = v.chain.then(() => handleSignal(v, f.data));
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
