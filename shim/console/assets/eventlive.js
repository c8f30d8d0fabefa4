// eventlive.js: the viewer side of the hot path, as front ends should do it by default.
// An ES module with no dependencies and no build step, served by the shim at /eventlive.js:
//
//   import { join } from "https://api.example.com/eventlive.js";
//   const viewer = join({ baseUrl: "https://api.example.com", webinarId: 149402, token });
//   viewer.addEventListener("superseded", () => showBanner("Opened on another device"));
//   viewer.addEventListener("stopped", (e) => console.log("stopped:", e.detail.reason));
//   const chat = viewer.chat({ onMessages: (msgs) => render(msgs) });
//
// join() enters with track_access, pings at first_ping_in then every heartbeat_seconds
// (with jitter, so a crowd that entered together does not ping together), re-tracks every
// track_seconds, pauses while the tab is hidden (and re-enters when it is shown), stops on
// a 4xx (a 409 session_superseded is announced as "superseded"), and backs off on 5xx,
// 429 and network errors (exponential with jitter, never sooner than Retry-After), then
// resumes. chat() listens on the live room (Supabase Realtime protocol at
// /realtime/v1/websocket) and falls back to chat_since polling at the server's
// poll_after_seconds, behind a circuit breaker: after `breakerFailures` failed polls in a
// row it stops polling for `breakerCooldown` seconds (doubling, at most 5 minutes), then
// tries once; it keeps trying to get back to the live room.
//
// send(text) and ask(text, {anonymous}) call chat_send and question_ask once the viewer
// has entered, with an idempotency id (client_msg_id, a crypto.randomUUID()) made here:
// sending the same text again while its last attempt has not succeeded reuses that id
// (and err.retry() does the same), so a retry never posts twice. They resolve with the
// server's receipt {id, seq, created_at, status} and reject with an EventliveError
// {status, reason, message, retryAfter, clientMsgId}: 429 rate_limited carries the
// server's Retry-After in seconds. A failed send never stops the viewer.
//
// Events (CustomEvent, detail in e.detail): entered, ping, tracked, paused, resumed,
// backoff {status, delay}, superseded, stopped {reason, status}, mode {mode}
// (live | polling | open | stopped), messages {messages}, sent {fn, text, clientMsgId,
// receipt}, send_failed {fn, text, clientMsgId, error}. README.md documents it all.

const MAX_BACKOFF = 60;

// What a refused send or ask rejects with: the HTTP status (0: no answer), the server's
// machine-readable reason (details), its sentence, Retry-After in seconds (0: none).
export class EventliveError extends Error {
  constructor({ fn, status, body, retryAfter = 0, clientMsgId = null, retry = null }) {
    const b = body && typeof body === "object" ? body : {};
    super(b.message || (status ? `${fn} answered ${status}` : `${fn}: no answer`));
    this.name = "EventliveError";
    this.fn = fn;
    this.status = status;
    this.code = b.code || null;
    this.reason = b.details || (status ? `http_${status}` : "network");
    this.hint = b.hint || null;
    this.retryAfter = retryAfter;
    this.clientMsgId = clientMsgId;
    this.retry = retry; // () => the same send again, with the same client_msg_id
  }
}

export function join(options) {
  return new Viewer(options);
}

export class Viewer extends EventTarget {
  constructor({
    baseUrl = "",
    webinarId,
    token = null,
    getToken = null,
    client = null,
    jitter = 0.1,
    timeScale = 1, // multiplies every server-given delay: for demos and tests
    fetch: fetchImpl = globalThis.fetch.bind(globalThis),
    document: doc = globalThis.document,
    autoStart = true,
  }) {
    super();
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.webinarId = webinarId;
    this._token = token;
    this._getToken = getToken;
    this._client = client;
    this.jitter = jitter;
    this.timeScale = timeScale;
    this._fetch = fetchImpl;
    this._doc = doc;
    this.sessionId = null;
    this.state = "idle";
    this.settings = null;
    this.failures = 0;
    this._timers = { ping: null, track: null, retry: null };
    this._onVisibility = () => this._visibility();
    if (doc && doc.addEventListener) doc.addEventListener("visibilitychange", this._onVisibility);
    if (autoStart) this._enter();
  }

  stop(reason = "stopped", status = null) {
    if (this.state === "stopped") return;
    this._clear();
    this.state = "stopped";
    if (this._doc && this._doc.removeEventListener) {
      this._doc.removeEventListener("visibilitychange", this._onVisibility);
    }
    if (this._chat) this._chat.stop();
    this._emit("stopped", { reason, status });
  }

  async leave() {
    const session = this.sessionId;
    this.stop("left");
    if (session) {
      await this._call("presence_leave", { webinar_id: this.webinarId, session_id: session }).catch(() => {});
    }
  }

  chat(options = {}) {
    this._chat = new Room(this, options);
    return this._chat;
  }

  // A chat message: chat_send with an idempotency id (see the top of this file).
  send(text, { clientMsgId = null } = {}) {
    return this._post("chat_send", text, {}, clientMsgId);
  }

  // A question: question_ask, anonymous (no author shown to viewers) when asked so.
  ask(text, { anonymous = false, clientMsgId = null } = {}) {
    return this._post("question_ask", text, { anonymous: Boolean(anonymous) }, clientMsgId);
  }

  // -- internals ---------------------------------------------------------------------

  // Resolves once the viewer has entered (a message needs the registration entering
  // makes); rejects if it stops first.
  _entered() {
    if (this.sessionId) return Promise.resolve();
    if (this.state === "stopped") return Promise.reject(new EventliveError({ fn: "track_access", status: 0, body: { details: "stopped", message: "The viewer has stopped." } }));
    return new Promise((resolve, reject) => {
      const entered = () => { this.removeEventListener("stopped", stopped); resolve(); };
      const stopped = (e) => {
        this.removeEventListener("entered", entered);
        reject(new EventliveError({ fn: "track_access", status: e.detail.status || 0, body: { details: e.detail.reason, message: `The viewer stopped: ${e.detail.reason}.` } }));
      };
      this.addEventListener("entered", entered, { once: true });
      this.addEventListener("stopped", stopped, { once: true });
    });
  }

  // One send or ask. The id of a message whose last attempt did not succeed is kept by
  // (function, text): the same text sent again is a retry of it, not a new message.
  async _post(fn, text, extra, clientMsgId) {
    const key = `${fn}\u0000${text}`;
    if (!this._pending) this._pending = new Map();
    const id = clientMsgId || this._pending.get(key) || globalThis.crypto.randomUUID();
    this._pending.set(key, id);
    const retry = () => this._post(fn, text, extra, id);
    let result;
    try {
      await this._entered();
      result = await this._call(fn, { webinar_id: this.webinarId, body: text, client_msg_id: id, ...extra });
    } catch (e) {
      const error = e instanceof EventliveError
        ? Object.assign(e, { clientMsgId: id, retry })
        : new EventliveError({ fn, status: 0, body: { details: "network", message: String(e && e.message || e) }, clientMsgId: id, retry });
      this._emit("send_failed", { fn, text, clientMsgId: id, error });
      throw error;
    }
    if (result.status === 200) {
      this._pending.delete(key);
      this._emit("sent", { fn, text, clientMsgId: id, receipt: result.body });
      return result.body;
    }
    const error = new EventliveError({ fn, status: result.status, body: result.body, retryAfter: result.retryAfter, clientMsgId: id, retry });
    this._emit("send_failed", { fn, text, clientMsgId: id, error });
    throw error;
  }

  _emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _clear() {
    for (const k of Object.keys(this._timers)) {
      clearTimeout(this._timers[k]);
      this._timers[k] = null;
    }
  }

  _later(kind, seconds, fn) {
    clearTimeout(this._timers[kind]);
    this._timers[kind] = setTimeout(() => {
      this._timers[kind] = null;
      fn();
    }, Math.max(0, seconds * 1000 * this.timeScale));
  }

  _jittered(seconds) {
    return seconds * (1 - this.jitter + 2 * this.jitter * Math.random());
  }

  async _headers() {
    const token = this._getToken ? await this._getToken() : this._token;
    const h = { "Content-Type": "application/json" };
    if (token) h.Authorization = `Bearer ${token}`;
    return h;
  }

  async _call(fn, args, method = "POST") {
    const headers = await this._headers();
    let url = `${this.baseUrl}/rpc/${fn}`;
    const init = { method, headers };
    if (method === "GET") url += "?" + new URLSearchParams(args).toString();
    else init.body = JSON.stringify(args);
    const response = await this._fetch(url, init);
    let body = null;
    const text = await response.text();
    if (text) {
      try { body = JSON.parse(text); } catch (e) { body = text; }
    }
    return { status: response.status, body, retryAfter: Number(response.headers.get("Retry-After")) || 0 };
  }

  // One outcome handler for every call: true when the caller may go on.
  _outcome(result) {
    const { status, body, retryAfter } = result;
    if (status < 400) {
      if (this.failures > 0) this._emit("resumed", { after: this.failures });
      this.failures = 0;
      return true;
    }
    const reason = body && typeof body === "object" ? body.details || body.code : null;
    if (status === 409 && reason === "session_superseded") {
      this._emit("superseded", { reason });
      this.stop("superseded", status);
      return false;
    }
    if (status >= 500 || status === 429 || status === 408) {
      this._backoff(status, retryAfter);
      return false;
    }
    this.stop(reason || `http_${status}`, status);
    return false;
  }

  // One retry loop whatever failed: every timer stops, and the retry re-enters with the
  // same session (track_access re-confirms it, or says it was superseded), which then
  // schedules the pings and re-tracks again.
  _backoff(status, retryAfter) {
    this.failures += 1;
    const exp = Math.min(MAX_BACKOFF, 2 ** (this.failures - 1));
    const delay = Math.max(retryAfter, exp * (0.5 + Math.random() / 2));
    this._clear();
    this.state = "backoff";
    this._emit("backoff", { status, delay, failures: this.failures });
    this._later("retry", delay, () => this._enter());
  }

  async _enter() {
    if (this.state === "stopped") return;
    if (this._doc && this._doc.hidden) {
      this._pause();
      return;
    }
    let result;
    try {
      const args = { webinar_id: this.webinarId };
      if (this.sessionId) args.session_id = this.sessionId;
      if (this._client) args.client = this._client;
      result = await this._call("track_access", args);
    } catch (e) {
      this._backoff(0, 0);
      return;
    }
    if (this.state === "stopped") return;
    if (!this._outcome(result)) return;
    const first = this.sessionId === null;
    this.settings = result.body;
    this.sessionId = result.body.session_id;
    this.state = "live";
    this._emit(first ? "entered" : "tracked", result.body);
    this._later("track", this.settings.track_seconds, () => this._enter());
    if (!this._timers.ping) {
      // first_ping_in is the server's spread (uniform over a heartbeat): after an outage a
      // crowd that comes back together does not ping together either.
      this._later("ping", this.settings.first_ping_in, () => this._ping());
    }
  }

  async _ping() {
    if (this.state === "stopped" || !this.sessionId) return;
    let result;
    try {
      result = await this._call("presence_ping", { webinar_id: this.webinarId, session_id: this.sessionId });
    } catch (e) {
      this._backoff(0, 0);
      return;
    }
    if (this.state === "stopped") return;
    if (!this._outcome(result)) return;
    this.state = "live";
    this._emit("ping", { status: result.status });
    this._later("ping", this._jittered(this.settings.heartbeat_seconds), () => this._ping());
  }

  _pause() {
    if (this.state === "stopped" || this.state === "paused") return;
    this._clear();
    this.state = "paused";
    this._emit("paused");
  }

  _visibility() {
    if (this.state === "stopped") return;
    if (this._doc.hidden) this._pause();
    else if (this.state === "paused") {
      this._emit("resumed", { after: "hidden" });
      this._enter();
    }
  }
}

// The live room with its fallback. Messages are delivered once each, in seq order.
export class Room {
  constructor(viewer, {
    onMessages = () => {},
    realtime = true,
    breakerFailures = 3,
    breakerCooldown = 15,
    retryLive = 30,
    WebSocket: WS = globalThis.WebSocket,
  } = {}) {
    this.viewer = viewer;
    this.onMessages = onMessages;
    this.breakerFailures = breakerFailures;
    this.breakerCooldown = breakerCooldown;
    this.retryLive = retryLive;
    this._WS = realtime ? WS : null;
    this.afterSeq = 0;
    this.mode = null;
    this.failures = 0;
    this._cooldown = breakerCooldown;
    this._timer = null;
    this._ws = null;
    this._stopped = false;
    // The room is for viewers who entered (entering registers them on automatic entry).
    if (viewer.sessionId) this._connect();
    else viewer.addEventListener("entered", () => this._connect(), { once: true });
  }

  stop() {
    this._stopped = true;
    clearTimeout(this._timer);
    clearTimeout(this._liveTimer);
    if (this._ws) this._ws.close();
  }

  // The viewer's send and ask, from the room too.
  send(text, options) { return this.viewer.send(text, options); }
  ask(text, options) { return this.viewer.ask(text, options); }

  _setMode(mode) {
    if (this.mode === mode) return;
    this.mode = mode;
    this.viewer._emit("mode", { mode });
  }

  _deliver(messages) {
    const fresh = messages.filter((m) => typeof m.seq === "number" && m.seq > this.afterSeq);
    if (!fresh.length) return;
    fresh.sort((a, b) => a.seq - b.seq);
    this.afterSeq = fresh[fresh.length - 1].seq;
    this.onMessages(fresh);
    this.viewer._emit("messages", { messages: fresh });
  }

  _later(seconds, fn) {
    clearTimeout(this._timer);
    this._timer = setTimeout(fn, seconds * 1000 * this.viewer.timeScale);
  }

  async _connect() {
    if (this._stopped) return;
    if (!this._WS) {
      this._poll();
      return;
    }
    let token = null;
    try {
      token = this.viewer._getToken ? await this.viewer._getToken() : this.viewer._token;
    } catch (e) { /* polling will say */ }
    const base = this.viewer.baseUrl || globalThis.location.origin;
    const url = base.replace(/^http/, "ws") + `/realtime/v1/websocket?apikey=${encodeURIComponent(token || "")}&vsn=1.0.0`;
    let ws;
    try {
      ws = new this._WS(url);
    } catch (e) {
      this._poll();
      return;
    }
    this._ws = ws;
    const topic = `realtime:webinar:${this.viewer.webinarId}:chat`;
    ws.onopen = () => {
      ws.send(JSON.stringify({
        topic, event: "phx_join", ref: "1", join_ref: "1",
        payload: { config: { broadcast: { self: false }, private: true }, access_token: token },
      }));
    };
    ws.onmessage = (e) => {
      let msg;
      try { msg = JSON.parse(e.data); } catch (err) { return; }
      if (msg.event === "phx_reply" && msg.ref === "1") {
        if (msg.payload && msg.payload.status === "ok") {
          this.failures = 0;
          this._setMode("live");
          clearTimeout(this._timer);
          this._catchUp();
        } else {
          ws.close();
        }
      } else if (msg.event === "broadcast" && msg.payload) {
        const p = msg.payload.payload || msg.payload;
        if (typeof p.seq === "number") {
          if (p.seq > this.afterSeq + 1) this._catchUp();
          else this._deliver([p]);
        }
      }
    };
    ws.onclose = () => {
      this._ws = null;
      if (this._stopped) return;
      // The room dropped (or never opened): poll (unless a poll loop, or its open
      // breaker, is already in charge), and try the room again later.
      if (this.mode === null || this.mode === "live") {
        this.mode = null;
        this._poll();
      }
      this._retryLiveLater();
    };
  }

  _retryLiveLater() {
    clearTimeout(this._liveTimer);
    this._liveTimer = setTimeout(() => {
      if (!this._stopped && this.mode !== "live") this._connect();
    }, this.retryLive * 1000 * this.viewer.timeScale);
  }

  async _catchUp() {
    try {
      const r = await this.viewer._call("chat_since", { webinar_id: this.viewer.webinarId, after_seq: this.afterSeq }, "GET");
      if (r.status === 200 && r.body) this._deliver(r.body.messages || []);
    } catch (e) { /* the next event or poll catches up */ }
  }

  async _poll() {
    if (this._stopped || this.mode === "live") return;
    if (this.mode !== "polling") this._setMode("polling");
    let r = null;
    try {
      r = await this.viewer._call("chat_since", { webinar_id: this.viewer.webinarId, after_seq: this.afterSeq }, "GET");
    } catch (e) { r = null; }
    if (this._stopped || this.mode === "live") return;
    if (r && r.status === 200) {
      this.failures = 0;
      this._cooldown = this.breakerCooldown;
      this._deliver((r.body && r.body.messages) || []);
      const after = (r.body && r.body.poll_after_seconds) || 5;
      this._later(after, () => this._poll());
      return;
    }
    if (r && r.status >= 400 && r.status < 500 && r.status !== 429 && r.status !== 408) {
      this._setMode("stopped");
      return; // not allowed: polling again would not help
    }
    this.failures += 1;
    if (this.failures >= this.breakerFailures) {
      // Circuit open: leave the database alone for a while, then try once (half-open).
      this._setMode("open");
      const wait = Math.max(this._cooldown, (r && r.retryAfter) || 0);
      this._cooldown = Math.min(this._cooldown * 2, 300);
      this.failures = this.breakerFailures - 1;
      this._later(wait, () => { this.mode = "polling"; this._poll(); });
      return;
    }
    const wait = Math.max((r && r.retryAfter) || 0, 2 ** this.failures);
    this._later(wait, () => this._poll());
  }
}
