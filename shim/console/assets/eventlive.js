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
// Events (CustomEvent, detail in e.detail): entered, ping, tracked, paused, resumed,
// backoff {status, delay}, superseded, stopped {reason, status}, mode {mode}
// (live | polling | open), messages {messages}.

const MAX_BACKOFF = 60;

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

  // -- internals ---------------------------------------------------------------------

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
    if (this._ws) this._ws.close();
  }

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
