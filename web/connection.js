// The connection to the edge: one WebSocket at a time, requests matched to
// their answers by ref, and a new socket after a lost one, with backoff and
// jitter so that the pages of a restarted edge do not all come back at
// once. What to do on a new socket (resume, or wait for the person to join)
// is the app's.

// jittered spreads retries of many pages: a random delay between half and
// all of ms.
export function jittered(ms) {
  return ms / 2 + Math.random() * (ms / 2);
}

export class Connection {
  // url is the WebSocket's; on are the app's handlers:
  //   open(socket)      a new socket is open;
  //   frame(f)          a server frame arrived (after its request, if any, is answered);
  //   closed(ev)        the socket closed: return "wait" to stay closed
  //                     until connected() is called, else it reconnects;
  //   reconnecting(ms)  the next try is in ms.
  constructor(url, on) {
    this.url = url;
    this.on = on;
    this.ws = null;
    this.nextRef = 1;
    this.pending = new Map(); // ref -> {resolve, reject}
    this.delay = 500;
  }

  connect() {
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.delay = 500;
      this.on.open(ws);
    });
    ws.addEventListener("message", (ev) => this.onMessage(JSON.parse(ev.data)));
    ws.addEventListener("close", (ev) => this.onClose(ws, ev));
  }

  // current reports whether socket is still the connection's socket.
  current(socket) {
    return socket === this.ws;
  }

  onMessage(f) {
    const waiter = f.ref && this.pending.get(f.ref);
    if (waiter) this.pending.delete(f.ref);
    this.on.frame(f, !!waiter);
    if (waiter) {
      if (f.type === "error") waiter.reject(f);
      else waiter.resolve(f);
    }
  }

  onClose(ws, ev) {
    if (ws !== this.ws) return;
    for (const { reject } of this.pending.values()) reject({ code: "closed", message: "The connection was lost; please try again." });
    this.pending.clear();
    if (this.on.closed(ev) === "wait") {
      this.ws = null;
      return;
    }
    const ms = jittered(this.delay);
    this.delay = Math.min(this.delay * 2, 5000);
    this.on.reconnecting(ms);
    setTimeout(() => this.connect(), ms);
  }

  // connected resolves once there is an open socket, opening one if the
  // connection is waiting.
  connected() {
    if (!this.ws) this.connect();
    const socket = this.ws;
    if (socket.readyState === WebSocket.OPEN) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const lost = () => reject({ code: "closed", message: "Not connected yet; please try again in a moment." });
      if (socket.readyState !== WebSocket.CONNECTING) return lost();
      socket.addEventListener("open", () => resolve(), { once: true });
      socket.addEventListener("close", lost, { once: true });
    });
  }

  // request sends a frame and resolves with the frame that answers it; an
  // error frame rejects.
  request(frame) {
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
        reject({ code: "closed", message: "Not connected; please try again in a moment." });
        return;
      }
      const ref = String(this.nextRef++);
      this.pending.set(ref, { resolve, reject });
      this.ws.send(JSON.stringify({ ...frame, ref }));
    });
  }
}
