// Live updates from the realtime listener over EventSource (default) or WebSocket.
// Reconnects by itself with back-off, presenting the id of the last event it saw, so the
// server replays exactly what was missed (or says `resync`). A fresh access token is used for
// every connection, so an expired one never strands the client.

const EVENTS = [
  "ready", "message.created", "message.updated", "message.deleted", "chat.created",
  "chat.updated", "chat.deleted", "chat.member_added", "chat.member_removed", "typing",
  "read", "presence", "resync", "reaction.added", "reaction.removed", "chat.member_updated",
  // SPEC §7 (web/invites.js applies them)
  "workspace.updated", "workspace.deleted", "workspace.member_added", "workspace.member_removed",
  "workspace.member_updated",
  "chat.muted",
];

export class Live {
  constructor(api, config, onEvent, onState) {
    this.api = api;
    this.config = config;
    this.onEvent = onEvent;
    // Handlers run one after another, in stream order: a handler that awaits (a workspace
    // reload on `workspace.member_added` / `chat.created`) finishes before the next event is
    // applied, so an older reload can never overwrite what a newer event set. A failed handler
    // is reported (window error) and the next one still runs.
    this.applied = Promise.resolve();
    this.onState = onState; // "online" | "offline"
    this.transport = localStorage.getItem("fechatter.transport") || "sse";
    this.lastEventId = null;
    this.source = null;
    this.socket = null;
    this.backoff = 500;
    this.timer = null;
    this.stopped = true;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.close();
  }

  setTransport(name) {
    this.transport = name;
    localStorage.setItem("fechatter.transport", name);
    this.reconnect(0);
  }

  close() {
    if (this.source) { this.source.close(); this.source = null; }
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close();
      this.socket = null;
    }
  }

  // Drop the connection now and come back (used by settings and by the tests).
  reconnect(delay = this.backoff) {
    this.close();
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.onState("offline");
    this.timer = setTimeout(() => this.connect(), delay);
  }

  url(base, path) {
    const params = new URLSearchParams({ access_token: this.api.token || "" });
    if (this.lastEventId) params.set("last_event_id", this.lastEventId);
    return `${base}${path}?${params}`;
  }

  async connect() {
    if (this.stopped) return;
    if (this.api.session && this.api.session.expiresAt - Date.now() < 30_000) {
      await this.api.refresh().catch(() => {});
    }
    if (!this.api.token) return;
    if (this.transport === "ws") this.connectWs();
    else this.connectSse();
  }

  failed() {
    this.backoff = Math.min(this.backoff * 2, 10_000);
    this.reconnect();
  }

  handle(name, id, data) {
    if (id) this.lastEventId = id;
    if (name === "ready") {
      this.backoff = 500;
      this.onState("online");
    }
    this.applied = this.applied.then(() => this.onEvent(name, data)).catch((err) => reportError(err));
  }

  connectSse() {
    const source = new EventSource(this.url(this.config.realtime_url, "/api/notifications/events"));
    this.source = source;
    for (const name of EVENTS) {
      source.addEventListener(name, (e) => {
        if (this.source !== source) return;
        this.handle(name, e.lastEventId, JSON.parse(e.data));
      });
    }
    // EventSource would retry by itself, but with the token it started with: do it ourselves.
    source.onerror = () => { if (this.source === source) this.failed(); };
  }

  connectWs() {
    const socket = new WebSocket(this.url(this.config.realtime_ws_url, "/api/notifications/ws"));
    this.socket = socket;
    socket.onmessage = (e) => {
      if (this.socket !== socket) return;
      const frame = JSON.parse(e.data);
      if (EVENTS.includes(frame.event)) this.handle(frame.event, frame.id, frame.data);
    };
    socket.onclose = () => { if (this.socket === socket) this.failed(); };
  }
}
