// nats-chat browser client: plain JavaScript, no dependencies. Speaks the gateway's WebSocket protocol
// (README "WebSocket protocol") including the extensions: resume with `since`, idempotent sends with
// `client_msg_id`, `history` paging with `before`, several rooms per connection, `typing`.
//
// Everything that comes from the network (names, room names, message content, error texts) is put into
// the page with textContent / createTextNode, never as HTML.
"use strict";

(() => {
  // --- settings -------------------------------------------------------------------------------------------
  const HISTORY_PAGE = 50;             // messages per history request
  const ROOM_LIST_REFRESH_MS = 30000;  // room_created frames keep the list current; this is a fallback
  const SEND_TIMEOUT_MS = 10000;       // no ack within this while connected: the send is marked failed
  const TYPING_SEND_EVERY_MS = 2200;   // the gateway drops typing notices less than 2 s (TYPING_INTERVAL_MS) apart
  const TYPING_SHOW_MS = 4000;         // how long "X is typing…" stays after the last notice
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 8000;
  const MAX_FRAME_BYTES = 15000;       // the gateway closes the socket on frames over MAX_FRAME_BYTES (16 KiB)
  const JOIN_RETRY_MS = 6000;          // a join with no answer (e.g. `unavailable`) is sent again, backing off
  const MUTE_SECONDS = 600;            // the member list's "Mute" lasts 10 minutes
  const NEAR_BOTTOM_PX = 80;
  const NEAR_TOP_PX = 120;
  const STORE_KEY = "nats-chat.session";     // sessionStorage: this tab's name, rooms, active room
  const LAST_NAME_KEY = "nats-chat.username"; // localStorage: prefills the name field

  const $ = (id) => document.getElementById(id);
  const ui = {
    loginView: $("login-view"), loginForm: $("login-form"), loginName: $("login-name"), loginError: $("login-error"),
    loginToken: $("login-token"),
    chatView: $("chat-view"), sidebar: $("sidebar"), toggleRooms: $("toggle-rooms"), totalUnread: $("total-unread"),
    conn: $("conn"), connText: $("conn-text"), connDetail: $("conn-detail"), reconnectNow: $("reconnect-now"),
    me: $("me"), meName: $("me-name"), signOut: $("sign-out"),
    joinedRooms: $("joined-rooms"), noJoined: $("no-joined"), allRooms: $("all-rooms"),
    refreshRooms: $("refresh-rooms"), createForm: $("create-room-form"), createName: $("create-room-name"), createError: $("create-room-error"),
    createVisibilityRow: $("create-room-visibility-row"), createVisibility: $("create-room-visibility"),
    roomKind: $("room-kind"), roomRole: $("room-role"),
    renameRoom: $("rename-room"), archiveRoom: $("archive-room"), deleteRoom: $("delete-room"),
    renameForm: $("rename-form"), renameInput: $("rename-input"), renameCancel: $("rename-cancel"),
    inviteForm: $("invite-form"), inviteName: $("invite-name"), inviteResults: $("invite-results"), inviteError: $("invite-error"),
    roomTitle: $("room-title"), roomMeta: $("room-meta"), toggleMembers: $("toggle-members"), memberCount: $("member-count"),
    leaveRoom: $("leave-room"), scroller: $("scroller"), logs: $("logs"), historyState: $("history-state"),
    emptyState: $("empty-state"), jumpNew: $("jump-new"), typing: $("typing"),
    composer: $("composer"), input: $("composer-input"), send: $("send"),
    membersPane: $("members-pane"), members: $("members"), toasts: $("toasts"),
  };
  const narrow = window.matchMedia("(max-width: 760px)");

  // --- state ------------------------------------------------------------------------------------------------
  const state = {
    username: null,
    // Token mode (gateways with AUTH_JWT_SECRET): from the sign-in form, the saved session or ?token=.
    token: new URLSearchParams(location.search).get("token"),
    ws: null,
    socketSeq: 0,           // identifies the current socket; events of older sockets are ignored
    connected: false,       // true after the `connected` frame of the current socket
    userId: null,
    gatewayId: null,
    attempt: 0,             // reconnect attempts since the last successful `connected`
    retryTimer: null,
    retryAt: 0,
    countdownTimer: null,
    everConnected: false,
    rooms: new Map(),       // id → room info {id, name, member_count, created_at} (all rooms)
    joined: new Map(),      // id → RoomView (rooms this tab is in), in join order
    active: null,           // id of the room shown
    membersVisible: !narrow.matches,
  };

  let clientCounter = 0;
  const clientPrefix = "w" + randomToken(10);
  function randomToken(n) {
    const bytes = new Uint8Array(n);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => "abcdefghijklmnopqrstuvwxyz0123456789"[b % 36]).join("");
  }
  const newClientMsgId = () => `${clientPrefix}-${Date.now().toString(36)}-${(++clientCounter).toString(36)}`;

  // --- small DOM helpers (text only) -------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [key, value] of Object.entries(attrs)) {
        if (value === undefined || value === null || value === false) continue;
        if (key === "class") node.className = value;
        else if (key === "text") node.textContent = value;
        else if (key === "onclick") node.addEventListener("click", value);
        else if (key === "dataset") Object.assign(node.dataset, value);
        else node.setAttribute(key, value === true ? "" : String(value));
      }
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function formatTime(timestamp) {
    const date = new Date(timestamp);
    if (Number.isNaN(date.getTime())) return "";
    const now = new Date();
    const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    if (date.toDateString() === now.toDateString()) return time;
    return `${date.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
  }

  const utf8Length = (text) => new TextEncoder().encode(text).length;

  // --- toasts (errors and notices) -----------------------------------------------------------------------
  function toast(text, { code = null, kind = "error", timeout = 8000 } = {}) {
    // Same text again: refresh the existing toast instead of stacking copies.
    for (const node of ui.toasts.children) {
      if (node.dataset.text === text) { node.remove(); break; }
    }
    const close = el("button", { type: "button", "aria-label": "Dismiss", text: "×" });
    const node = el("div", { class: `toast ${kind}`, dataset: { text, code: code || "" } },
      el("div", { class: "text" }, text, code ? el("div", { class: "code", text: code }) : null),
      close);
    close.addEventListener("click", () => node.remove());
    ui.toasts.append(node);
    while (ui.toasts.children.length > 4) ui.toasts.firstElementChild.remove();
    if (timeout) setTimeout(() => node.remove(), timeout);
  }

  function describeError(frame) {
    const text = typeof frame.error === "string" && frame.error ? frame.error : "request failed";
    switch (frame.code) {
      case "rate_limited": {
        const seconds = Math.max(0.1, (Number(frame.retry_after_ms) || 0) / 1000);
        return `Rate limited: you are sending too fast. Retry in ${seconds.toFixed(1)} s.`;
      }
      case "content_too_long": return `Message too long: ${text}`;
      case "room_not_found": return `Room not found: ${text}`;
      case "unavailable": return `The chat service is unavailable right now: ${text}`;
      case "too_many_rooms": return `Too many rooms: ${text}`;
      case "muted": return `You are muted in this room${untilText(frame.until)}.`;
      case "banned": return `You are banned from this room${untilText(frame.until)}.`;
      case "room_archived": return "This room is archived: it is read-only.";
      case "forbidden": return `Not allowed: ${text}`;
      default: return text.charAt(0).toUpperCase() + text.slice(1);
    }
  }

  function untilText(until) {
    if (!until) return "";
    const date = new Date(typeof until === "number" ? until * (until < 1e12 ? 1000 : 1) : until);
    return Number.isNaN(date.getTime()) ? ` until ${until}` : ` until ${date.toLocaleString()}`;
  }

  // --- persistence (per tab; survives reloads) -------------------------------------------------------------
  function save() {
    const data = {
      username: state.username,
      token: state.token || undefined,
      // Unsent messages survive a reload too: they go out again with the same client_msg_id.
      rooms: Array.from(state.joined.values(), (room) => ({
        id: room.id, name: room.name,
        outgoing: room.pendingOrder.map((id) => room.byClientId.get(id)).filter((out) => out && out.state !== "sent")
          .map((out) => ({ id: out.id, content: out.content, failed: out.state === "failed" })),
      })),
      active: state.active,
    };
    try { sessionStorage.setItem(STORE_KEY, JSON.stringify(data)); } catch { /* private mode */ }
  }

  function load() {
    try { return JSON.parse(sessionStorage.getItem(STORE_KEY) || "null"); } catch { return null; }
  }

  // --- rooms ------------------------------------------------------------------------------------------------
  class RoomView {
    constructor(id, name) {
      this.id = id;
      this.name = name || "…";
      this.status = "joining";       // joining | joined
      this.bySeq = new Map();        // seq → {message, node}
      this.seqs = [];                // sorted seqs shown
      this.byClientId = new Map();   // client_msg_id → outgoing {id, content, state, seq, node, timer}
      this.pendingOrder = [];        // client ids not yet confirmed by a message frame, in send order
      this.hasMore = true;           // older history exists (before the oldest shown)
      this.historyRequests = [];     // kinds of outstanding history requests, in order: "latest" | "older"
      this.loadingOlderSince = 0;
      this.unread = 0;
      this.members = new Map();      // user_id → {username, role, online}
      this.muted = new Map();        // user_id → until (ms): mutes set from this tab (the server keeps no list to read)
      this.typing = new Map();       // username → until (ms)
      this.lastTypingSent = 0;
      this.joinTimer = null;
      this.joinAttempts = 0;
      this.atBottom = true;
      this.savedScrollTop = null;
      this.list = el("ol", { class: "log", "aria-label": "Messages", dataset: { roomId: id } });
      this.pendingList = el("ol", { class: "log pending-log", "aria-label": "Messages being sent", dataset: { roomId: id } });
      this.container = el("div", { class: "room-log", dataset: { roomId: id }, hidden: true }, this.list, this.pendingList);
      ui.logs.append(this.container);
    }

    get lastSeq() { return this.seqs.length ? this.seqs[this.seqs.length - 1] : 0; }
    get firstSeq() { return this.seqs.length ? this.seqs[0] : 0; }
  }

  function roomName(id) {
    const joined = state.joined.get(id);
    if (joined && joined.name !== "…") return joined.name;
    const info = state.rooms.get(id);
    return info ? info.name : "…";
  }

  function rememberRoom(room) {
    if (!room || typeof room.id !== "string") return;
    const previous = state.rooms.get(room.id) || {};
    state.rooms.set(room.id, { ...previous, ...room });
    const view = state.joined.get(room.id);
    if (view && typeof room.name === "string") view.name = room.name;
  }

  function joinRoom(id, { activate = true } = {}) {
    if (!id) return;
    let view = state.joined.get(id);
    if (!view) {
      view = new RoomView(id, roomName(id));
      state.joined.set(id, view);
      sendJoin(view);
    }
    if (activate) activateRoom(id);
    save();
    renderRooms();
  }

  function sendJoin(view) {
    clearTimeout(view.joinTimer);
    if (!state.connected) return;
    view.status = "joining";
    view.historyRequests = [];
    // No `joined` in time (the chat-service was unavailable, say): try again, less and less often.
    const retryIn = Math.min(60000, JOIN_RETRY_MS * 2 ** view.joinAttempts++);
    view.joinTimer = setTimeout(() => {
      if (state.connected && view.status === "joining" && state.joined.get(view.id) === view) sendJoin(view);
    }, retryIn);
    if (view.seqs.length) {
      // Resume: the gateway sends every message after our newest, in order, before live ones.
      sendFrame({ type: "join", room_id: view.id, since: view.lastSeq });
    } else {
      sendFrame({ type: "join", room_id: view.id });
      requestHistory(view, "latest");
    }
  }

  function requestHistory(view, kind) {
    const frame = { type: "history", room_id: view.id, limit: HISTORY_PAGE };
    if (kind === "older") {
      if (!view.seqs.length) return;
      frame.before = view.firstSeq;
      view.loadingOlderSince = Date.now();
    }
    if (sendFrame(frame)) {
      view.historyRequests.push(kind);
      renderHistoryState(view);
    }
  }

  function dropRoom(id) {
    const view = state.joined.get(id);
    if (!view) return;
    for (const out of view.byClientId.values()) clearTimeout(out.timer);
    clearTimeout(view.joinTimer);
    view.container.remove();
    state.joined.delete(id);
    if (state.active === id) {
      const next = Array.from(state.joined.keys()).pop() || null;
      state.active = null;
      if (next) activateRoom(next); else renderActive();
    }
    save();
    renderRooms();
  }

  function activateRoom(id) {
    const view = state.joined.get(id);
    if (!view) return;
    const previous = state.joined.get(state.active);
    if (previous && previous !== view) {
      previous.savedScrollTop = previous.atBottom ? null : ui.scroller.scrollTop;
      previous.container.hidden = true;
    }
    state.active = id;
    view.container.hidden = false;
    view.unread = 0;
    if (location.hash !== `#room=${id}`) history.replaceState(null, "", `#room=${id}`);
    renderActive();
    if (view.savedScrollTop === null) scrollToBottom(); else ui.scroller.scrollTop = view.savedScrollTop;
    updateAtBottom();
    save();
    renderRooms();
    closeSidebar();
  }

  // --- messages -----------------------------------------------------------------------------------------------
  // Token mode: names need not be unique, the user id is.
  function isOwn(message) {
    if (state.token && state.userId && message.user_id) return message.user_id === state.userId;
    return message.username === state.username;
  }

  function messageNode(message, out) {
    const own = isOwn(message);
    const time = el("time", { datetime: message.timestamp, title: new Date(message.timestamp).toLocaleString(), text: formatTime(message.timestamp) });
    const meta = el("div", { class: "meta" }, el("span", { class: "author", text: message.username }), time);
    const node = el("li", {
      class: own ? "msg own" : "msg",
      dataset: { seq: String(message.seq), messageId: message.message_id || "" },
    }, meta, el("p", { class: "body", text: message.content }));
    if (own) {
      meta.append(el("span", { class: "status", text: "sent", title: `stored as #${message.seq}` }));
      if (out) node.dataset.clientMsgId = out.id;
    }
    return node;
  }

  // Inserts a stored message (from a live frame, a resume or a history page) at its seq; false if known.
  function addMessage(view, message, { live }) {
    const seq = Number(message.seq);
    if (!Number.isSafeInteger(seq) || seq < 1 || view.bySeq.has(seq)) {
      if (message.client_msg_id) confirmOutgoing(view, message.client_msg_id, seq);
      return false;
    }
    let out = null;
    if (message.client_msg_id && view.byClientId.has(message.client_msg_id)) out = view.byClientId.get(message.client_msg_id);
    else if (isOwn(message)) {
      for (const candidate of view.byClientId.values()) if (candidate.seq === seq) { out = candidate; break; }
    }
    const node = messageNode(message, out);
    // Binary search for the position; nearly always the end.
    let lo = 0, hi = view.seqs.length;
    if (hi === 0 || view.seqs[hi - 1] < seq) lo = hi;
    else {
      while (lo < hi) { const mid = (lo + hi) >> 1; if (view.seqs[mid] < seq) lo = mid + 1; else hi = mid; }
    }
    const before = lo < view.seqs.length ? view.bySeq.get(view.seqs[lo]).node : null;
    view.list.insertBefore(node, before);
    view.seqs.splice(lo, 0, seq);
    view.bySeq.set(seq, { message, node });
    if (out) confirmOutgoing(view, out.id, seq);
    if (live && !isOwn(message)) {
      view.typing.delete(message.username);
      if (view.id !== state.active || document.hidden) view.unread += 1;
    }
    return true;
  }

  // The message with this client id is stored (ack) or shown (message frame): the outgoing entry goes.
  function confirmOutgoing(view, clientId, seq) {
    const out = view.byClientId.get(clientId);
    if (!out) return;
    clearTimeout(out.timer);
    out.seq = seq;
    out.state = "sent";
    const shown = view.bySeq.get(seq);
    if (shown) {
      // The stored message is on screen: drop the placeholder, mark the real one as ours.
      out.node.remove();
      view.byClientId.delete(clientId);
      view.pendingOrder = view.pendingOrder.filter((id) => id !== clientId);
      shown.node.dataset.clientMsgId = clientId;
      save();
    } else {
      renderOutgoing(view, out);
    }
  }

  function renderOutgoing(view, out) {
    const labels = { queued: "waiting for connection…", pending: "sending…", sent: "sent", failed: "not sent" };
    out.node.className = `msg own ${out.state === "sent" ? "" : out.state === "failed" ? "failed" : "pending"}`.trim();
    out.node.dataset.state = out.state;
    const status = out.node.querySelector(".status");
    status.textContent = out.state === "failed" && out.reason ? `not sent: ${out.reason}` : labels[out.state];
    const actions = out.node.querySelector(".actions");
    actions.replaceChildren();
    if (out.state === "failed") {
      if (out.retryable) actions.append(el("button", { type: "button", class: "retry", text: "Retry", onclick: () => retryOutgoing(view, out) }));
      else actions.append(el("button", { type: "button", class: "edit", text: "Edit", onclick: () => editOutgoing(view, out) }));
      actions.append(el("button", { type: "button", class: "discard", text: "Discard", onclick: () => discardOutgoing(view, out) }));
    }
  }

  function sendMessage(view, content, restored = null) {
    const out = { id: restored ? restored.id : newClientMsgId(), content, state: "queued", seq: null, timer: null, reason: null, retryable: true };
    out.node = el("li", { class: "msg own pending", dataset: { clientMsgId: out.id, state: "queued" } },
      el("div", { class: "meta" },
        el("span", { class: "author", text: state.username }),
        el("span", { class: "status", role: "status" })),
      el("p", { class: "body", text: content }),
      el("div", { class: "actions" }));
    view.byClientId.set(out.id, out);
    view.pendingOrder.push(out.id);
    view.pendingList.append(out.node);
    if (restored && restored.failed) fail(view, out, "not sent before the page was reloaded", true);
    else transmit(view, out);
    save();
    if (view.id === state.active) scrollToBottom();
  }

  function transmit(view, out) {
    clearTimeout(out.timer);
    const frame = { type: "message", room_id: view.id, content: out.content, client_msg_id: out.id };
    if (utf8Length(JSON.stringify(frame)) > MAX_FRAME_BYTES) {
      return fail(view, out, "too long for one message (the gateway accepts frames up to 16 KiB)", false);
    }
    if (state.connected && view.status === "joined" && sendFrame(frame)) {
      out.state = "pending";
      out.timer = setTimeout(() => fail(view, out, "no answer from the server", true), SEND_TIMEOUT_MS);
    } else {
      out.state = "queued"; // sent after the next (re)join of the room
    }
    renderOutgoing(view, out);
  }

  function fail(view, out, reason, retryable) {
    clearTimeout(out.timer);
    if (out.state === "sent") return;
    out.state = "failed";
    out.reason = reason;
    out.retryable = retryable;
    renderOutgoing(view, out);
    save();
  }

  function retryOutgoing(view, out) {
    out.reason = null;
    transmit(view, out); // same client_msg_id: never stored twice
    const retry = out.node.querySelector(".retry, .edit");
    (retry || ui.input).focus();
  }

  function editOutgoing(view, out) {
    discardOutgoing(view, out);
    ui.input.value = out.content;
    autosize();
    ui.input.focus();
  }

  function discardOutgoing(view, out) {
    clearTimeout(out.timer);
    out.node.remove();
    view.byClientId.delete(out.id);
    view.pendingOrder = view.pendingOrder.filter((id) => id !== out.id);
    save();
    ui.input.focus();
  }

  // After a (re)join: everything still waiting goes out again, in order, with its original id.
  function flushOutgoing(view) {
    for (const id of view.pendingOrder) {
      const out = view.byClientId.get(id);
      if (out && (out.state === "queued" || out.state === "pending")) transmit(view, out);
    }
  }

  // --- the socket ------------------------------------------------------------------------------------------------
  function sendFrame(frame) {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  function connect() {
    clearTimeout(state.retryTimer);
    clearInterval(state.countdownTimer);
    state.retryTimer = null;
    if (!state.username) return;
    if (state.ws) { const old = state.ws; state.ws = null; try { old.close(1000); } catch { /* ignore */ } }
    const seq = ++state.socketSeq;
    // encodeURIComponent, not URLSearchParams: the gateway reads "+" in a query as a plus, not a space.
    // In token mode the gateway takes the name from the token and ignores `username`.
    let query = `username=${encodeURIComponent(state.username)}`;
    if (state.token) query += `&token=${encodeURIComponent(state.token)}`;
    const url = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws?${query}`;
    setConn("connecting", state.attempt ? `Reconnecting (attempt ${state.attempt + 1})…` : "Connecting…");
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (error) {
      setConn("offline", "Cannot open a WebSocket");
      toast(`Cannot connect: ${error.message}`);
      return;
    }
    state.ws = ws;
    ws.addEventListener("message", (event) => { if (seq === state.socketSeq) onFrame(event.data); });
    ws.addEventListener("close", (event) => { if (seq === state.socketSeq) onClose(event); });
  }

  function onClose(event) {
    const wasConnected = state.connected;
    state.ws = null;
    state.connected = false;
    for (const view of state.joined.values()) {
      view.status = "joining";
      clearTimeout(view.joinTimer);
      view.joinAttempts = 0;
      view.historyRequests = [];
      for (const out of view.byClientId.values()) {
        if (out.state === "pending") { clearTimeout(out.timer); out.state = "queued"; renderOutgoing(view, out); }
      }
      renderHistoryState(view);
    }
    renderComposer();
    if (!state.username) { setConn("idle", "Not connected"); return; }
    if (event.code === 1008) toast("The server disconnected this tab because it could not keep up (1008); reconnecting.", { kind: "info" });
    if (event.code === 1009) toast("A message was too large for the server (1009); reconnecting.");
    if (event.code === 4001 && state.token) { signOut("Your token has expired: sign in again."); return; }
    if (!wasConnected && !state.everConnected && !state.token && state.attempt === 1) probeTokenMode();
    if (!wasConnected && !state.everConnected && state.attempt >= 2) {
      toast("Cannot reach the chat server (is the gateway running? is the name valid?). Still trying.", { code: `close ${event.code}` });
    }
    scheduleReconnect(event.code === 1001 ? 0 : null);
  }

  function scheduleReconnect(fixedDelay) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.attempt);
    const delay = fixedDelay ?? Math.round(base / 2 + Math.random() * base / 2); // jitter: 50–100 %
    state.attempt += 1;
    state.retryAt = Date.now() + delay;
    const tick = () => {
      const left = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
      setConn("waiting", navigator.onLine === false ? "Offline — waiting for the network" : `Disconnected — reconnecting in ${left} s`);
    };
    tick();
    clearInterval(state.countdownTimer);
    state.countdownTimer = setInterval(tick, 500);
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(connect, delay);
  }

  function setConn(kind, text, detail = "") {
    ui.conn.dataset.state = kind;
    ui.connText.textContent = text;
    ui.connDetail.textContent = detail;
    ui.reconnectNow.hidden = kind !== "waiting";
  }

  // --- inbound frames ---------------------------------------------------------------------------------------------
  function onFrame(data) {
    let frame;
    try { frame = JSON.parse(data); } catch { console.warn("non-JSON frame", data); return; }
    if (!frame || typeof frame.type !== "string") return;
    const view = typeof frame.room_id === "string" ? state.joined.get(frame.room_id) : undefined;
    switch (frame.type) {
      case "connected": onConnected(frame); break;
      case "joined": onJoined(frame); break;
      case "left": if (view) dropRoom(view.id); break;
      case "message": if (view) onMessage(view, frame); break;
      case "ack": if (view) onAck(view, frame); break;
      case "history": if (view) onHistory(view, frame); break;
      case "members": if (view) { onMembers(view, frame); renderMembers(); } break;
      case "user_joined": if (view) { onPresence(view, frame, true); renderMembers(); } break;
      case "user_left":
        if (view) { onPresence(view, frame, false); view.typing.delete(frame.username); renderMembers(); renderTyping(); }
        break;
      case "typing": if (view && frame.username !== state.username) { view.typing.set(frame.username, Date.now() + TYPING_SHOW_MS); renderTyping(); } break;
      case "room_list":
        for (const room of frame.rooms || []) rememberRoom(room);
        renderRooms();
        // A long list comes in pages: ask for the next one until the last.
        if (frame.has_more && frame.next) sendFrame({ type: "room_list", after: frame.next });
        break;
      case "room_created": rememberRoom(frame.room); renderRooms(); break;
      case "added": onAdded(frame); break;
      case "removed": onRemoved(frame); break;
      case "member_added": if (view) { setMember(view, frame); renderMembers(); } break;
      case "member_removed": if (view) { view.members.delete(frame.user_id); renderMembers(); } break;
      case "role_changed": if (view) onRoleChanged(view, frame); break;
      case "room_updated": onRoomUpdated(frame); break;
      case "room_deleted": onRoomDeleted(frame); break;
      case "error": onError(frame); break;
      default: console.info("unhandled frame", frame.type);
    }
  }

  function onConnected(frame) {
    state.connected = true;
    state.everConnected = true;
    state.attempt = 0;
    state.userId = frame.user_id;
    if (state.token && typeof frame.username === "string" && frame.username !== state.username) {
      state.username = frame.username;
      ui.meName.textContent = frame.username;
      save();
    }
    state.gatewayId = frame.gateway_id;
    clearInterval(state.countdownTimer);
    setConn("open", "Connected", frame.gateway_id ? `via ${frame.gateway_id}` : "");
    sendFrame({ type: "room_list" });
    for (const view of state.joined.values()) sendJoin(view);
    renderComposer();
  }

  function onJoined(frame) {
    const view = state.joined.get(frame.room_id);
    if (!view) return;
    rememberRoom(frame.room);
    view.status = "joined";
    clearTimeout(view.joinTimer);
    view.joinAttempts = 0;
    sendFrame({ type: "members", room_id: view.id });
    if (state.token) refreshRoomInfo(view.id);
    flushOutgoing(view);
    save();
    renderRooms();
    if (view.id === state.active) renderActive();
  }

  function onMessage(view, frame) {
    const stick = view.id === state.active && view.atBottom;
    if (addMessage(view, frame, { live: true })) {
      if (stick || (isOwn(frame) && view.id === state.active)) scrollToBottom();
      else if (view.id === state.active) ui.jumpNew.hidden = false;
      renderRooms();
      renderTyping();
      renderHistoryState(view);
    }
  }

  function onAck(view, frame) {
    confirmOutgoing(view, frame.client_msg_id, Number(frame.seq));
  }

  function onHistory(view, frame) {
    const kind = view.historyRequests.shift() || "latest";
    const active = view.id === state.active;
    const oldHeight = ui.scroller.scrollHeight;
    const oldTop = ui.scroller.scrollTop;
    const stick = active && view.atBottom;
    const oldFirst = view.firstSeq;
    for (const message of frame.messages || []) addMessage(view, message, { live: false });
    // has_more tells whether anything exists before this page; only meaningful for the oldest page.
    if (kind === "older" || !oldFirst || (frame.messages && frame.messages.length && Number(frame.messages[0].seq) <= oldFirst)) {
      view.hasMore = Boolean(frame.has_more);
    }
    view.loadingOlderSince = 0;
    if (active) {
      if (kind === "older" && !stick) {
        // Keep what the reader looks at in place while older messages are added above it.
        ui.scroller.scrollTop = oldTop + (ui.scroller.scrollHeight - oldHeight);
      } else if (stick || kind === "latest") {
        scrollToBottom();
      }
      maybeLoadOlder();
    }
    renderHistoryState(view);
  }

  function onError(frame) {
    const message = describeError(frame);
    if (frame.client_msg_id) {
      for (const view of state.joined.values()) {
        const out = view.byClientId.get(frame.client_msg_id);
        if (!out) continue;
        const retryable = !["content_too_long", "content_invalid"].includes(frame.code);
        fail(view, out, message, retryable);
      }
      toast(message, { code: frame.code });
      return;
    }
    toast(message, { code: frame.code });
    // A room that is gone (or never existed): forget it instead of re-joining it forever.
    if (frame.code === "room_not_found") {
      for (const view of Array.from(state.joined.values())) {
        if (view.status === "joining" && typeof frame.error === "string" && frame.error.includes(view.id)) dropRoom(view.id);
      }
    }
    // A join refused for good (banned, not on the roster): no retries.
    if (["banned", "not_member", "forbidden", "room_not_found"].includes(frame.code) && typeof frame.room_id === "string") {
      const view = state.joined.get(frame.room_id);
      if (view && view.status === "joining") dropRoom(view.id);
    }
    for (const view of state.joined.values()) if (view.loadingOlderSince) { view.loadingOlderSince = 0; renderHistoryState(view); }
  }

  // --- token mode: sign-in, REST calls ---------------------------------------------------------------------------
  /** The token's claims (read only to show a name before `connected`; the server verifies the token). */
  function tokenClaims(token) {
    const parts = token.split(".");
    if (parts.length !== 3) return null;
    try {
      const json = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(parts[1].length / 4) * 4, "="));
      const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0))));
      return claims && typeof claims === "object" ? claims : null;
    } catch {
      return null;
    }
  }

  /** A REST call with the token (when there is one): {status, body} (body null when not JSON). */
  async function api(method, path, body) {
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (state.token) headers.authorization = `Bearer ${state.token}`;
    try {
      const response = await fetch(`api/v1/${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      return { status: response.status, body: await response.json().catch(() => null) };
    } catch (error) {
      return { status: 0, body: { error: `could not reach the server: ${error.message}`, code: "network" } };
    }
  }

  /** Runs a REST action; its error (if any) becomes a toast. Returns the body on success, else null. Success
   *  shows in the lists (member_added, member_removed, room_updated…), not as a toast over the header. */
  async function act(method, path, body) {
    const reply = await api(method, path, body);
    if (reply.status >= 200 && reply.status < 300) return reply.body || {};
    toast(reply.body && reply.body.error ? describeError(reply.body) : `Request failed (HTTP ${reply.status}).`,
      { code: reply.body?.code || `http ${reply.status}` });
    return null;
  }

  // A socket refused before the upgrade looks like any failed connect; a REST write without a token
  // tells whether this server wants one (401) — then the sign-in form asks for it.
  async function probeTokenMode() {
    const reply = await api("POST", "rooms", {});
    if (reply.status === 401 && !state.token && !state.everConnected && state.username) {
      signOut("This server requires signing in with a token.");
      ui.loginToken.focus();
    }
  }

  // --- token mode: rooms people own ------------------------------------------------------------------------------
  const ROLE_RANK = { owner: 3, admin: 2, member: 1 };
  const myRole = (id) => state.rooms.get(id)?.my_role || null;
  const isModerator = (role) => role === "owner" || role === "admin";
  const canAct = (mine, target) => isModerator(mine) && (ROLE_RANK[mine] || 0) > (ROLE_RANK[target || "member"] || 1);

  function kindMark(room) {
    if (!room || !room.visibility || room.visibility === "public") return null;
    const direct = room.visibility === "direct";
    return el("span", { class: `kind-mark ${room.visibility}`, title: direct ? "Direct message" : "Private room",
      text: direct ? "DM" : "private" });
  }

  function onPresence(view, frame, online) {
    const known = view.members.get(frame.user_id);
    if (known && known.role) { known.online = online; return; } // a roster entry stays; only its presence changes
    if (online) view.members.set(frame.user_id, { username: frame.username, role: null, online: null });
    else view.members.delete(frame.user_id);
  }

  function onAdded(frame) {
    const room = frame.room && typeof frame.room === "object" ? { ...frame.room } : { id: frame.room_id, name: "…" };
    if (frame.role) room.my_role = frame.role;
    rememberRoom(room);
    renderRooms();
    if (room.visibility !== "direct") toast(`You were added to “${room.name}”.`, { kind: "info", code: "added", timeout: 5000 });
  }

  // Gone for me (removed, banned, deleted): the room leaves my lists; a public room stays in "All rooms".
  function forgetRoom(id) {
    const info = state.rooms.get(id);
    if (state.joined.has(id)) dropRoom(id);
    if (info && info.visibility !== "public") state.rooms.delete(id);
    else if (info) delete info.my_role;
    renderRooms();
  }

  function onRemoved(frame) {
    const name = roomName(frame.room_id);
    const reasons = { removed: "You were removed from", banned: "You were banned from", left: "You left" };
    forgetRoom(frame.room_id);
    const text = `${reasons[frame.reason] || "You are no longer in"} “${name}”.`;
    toast(text, { kind: "info", code: frame.reason || "removed", timeout: 0 });
  }

  function onRoleChanged(view, frame) {
    setMember(view, frame);
    if (frame.user_id === state.userId) rememberRoom({ id: view.id, my_role: frame.role });
    renderMembers();
    if (view.id === state.active) renderRoomAccess(view);
  }

  function onRoomUpdated(frame) {
    if (!frame.room || typeof frame.room !== "object") return;
    const { my_role: _ignored, ...room } = frame.room; // the event is everyone's: my role stays mine
    rememberRoom(room);
    // Archived shows in the header and the composer (no toast: it would cover the header's buttons).
    renderRooms();
    if (frame.room_id === state.active) renderActive();
  }

  function onRoomDeleted(frame) {
    const name = roomName(frame.room_id);
    const info = state.rooms.get(frame.room_id);
    if (info) info.visibility = "deleted"; // forgetRoom drops it from every list
    forgetRoom(frame.room_id);
    toast(`The room “${name}” was deleted.`, { kind: "info", code: "room_deleted", timeout: 0 });
  }

  // The room as the server shows it to me (my_role, visibility, archived), e.g. after a join.
  async function refreshRoomInfo(id) {
    const reply = await api("GET", `rooms/${encodeURIComponent(id)}`);
    if (reply.status !== 200 || !reply.body || reply.body.id !== id) return;
    rememberRoom({ my_role: null, ...reply.body });
    renderRooms();
    if (id === state.active) renderActive();
  }

  async function openDirect(userId) {
    const room = await act("POST", "dms", { user_id: userId });
    if (!room || !room.id) return;
    rememberRoom(room);
    joinRoom(room.id);
    ui.input.focus();
  }

  function memberActions(view, info, m) {
    const box = el("span", { class: "member-actions" });
    box.append(el("button", { type: "button", class: "dm", text: "Message", "aria-label": `Message ${m.username}`,
      onclick: () => openDirect(m.id) }));
    const target = m.role || (info && info.owner_id === m.id ? "owner" : "member");
    const mine = myRole(view.id);
    if (info && info.visibility !== "direct" && canAct(mine, target)) {
      const path = (what) => `rooms/${encodeURIComponent(view.id)}/${what}`;
      if (info.visibility === "private") {
        box.append(el("button", { type: "button", class: "remove", text: "Remove", "aria-label": `Remove ${m.username}`,
          onclick: () => act("DELETE", `${path("members")}/${encodeURIComponent(m.id)}`) }));
      }
      const muted = view.muted.get(m.id);
      if (muted) {
        box.append(el("span", { class: "muted-mark", text: "muted", title: `until ${new Date(muted).toLocaleString()}` }),
          el("button", { type: "button", class: "unmute", text: "Unmute", "aria-label": `Unmute ${m.username}`,
            onclick: async () => {
              if (await act("DELETE", `${path("mutes")}/${encodeURIComponent(m.id)}`)) { view.muted.delete(m.id); renderMembers(); }
            } }));
      } else {
        box.append(el("button", { type: "button", class: "mute", text: "Mute", "aria-label": `Mute ${m.username} for 10 minutes`,
          onclick: async () => {
            if (await act("POST", path("mutes"), { user_id: m.id, seconds: MUTE_SECONDS })) {
              view.muted.set(m.id, Date.now() + MUTE_SECONDS * 1000);
              renderMembers();
            }
          } }));
      }
      box.append(el("button", { type: "button", class: "ban", text: "Ban", "aria-label": `Ban ${m.username}`,
        onclick: () => act("POST", path("bans"), { user_id: m.id }) }));
    }
    return box;
  }

  // --- token mode: invitations -----------------------------------------------------------------------------------
  function renderInvite(view, info) {
    const show = Boolean(state.token && view && info && info.visibility === "private" && isModerator(myRole(view.id)));
    if (ui.inviteForm.hidden === show) {
      ui.inviteForm.hidden = !show;
      ui.inviteName.value = "";
      ui.inviteResults.replaceChildren();
      ui.inviteError.textContent = "";
    }
  }

  let inviteTimer = null, inviteQuery = 0;
  ui.inviteName.addEventListener("input", () => {
    clearTimeout(inviteTimer);
    inviteTimer = setTimeout(searchInvitees, 200);
  });
  ui.inviteForm.addEventListener("submit", (event) => { event.preventDefault(); ui.inviteResults.querySelector("button")?.click(); });

  async function searchInvitees() {
    const prefix = ui.inviteName.value.trim();
    const view = state.joined.get(state.active);
    const query = ++inviteQuery;
    ui.inviteError.textContent = "";
    if (!prefix || !view) { ui.inviteResults.replaceChildren(); return; }
    const reply = await api("GET", `users?prefix=${encodeURIComponent(prefix)}&limit=8`);
    if (query !== inviteQuery) return; // a newer search was started
    if (reply.status !== 200 || !reply.body) {
      ui.inviteError.textContent = reply.body?.error ? describeError(reply.body) : `Search failed (HTTP ${reply.status}).`;
      return;
    }
    const users = (reply.body.users || []).filter((u) => !view.members.has(u.user_id));
    if (!users.length) ui.inviteError.textContent = "Nobody else by that name.";
    ui.inviteResults.replaceChildren(...users.map((u) => el("li", { dataset: { userId: u.user_id, username: u.username } },
      el("button", { type: "button", text: `Invite ${u.username}`, onclick: () => invite(view, u) }))));
  }

  async function invite(view, user) {
    const done = await act("POST", `rooms/${encodeURIComponent(view.id)}/members`, { user_id: user.user_id });
    if (!done) return;
    if (done.user_id) setMember(view, { ...done, username: done.username || user.username });
    ui.inviteName.value = "";
    ui.inviteResults.replaceChildren();
    renderMembers();
    ui.inviteName.focus();
  }

  // --- token mode: the room header (kind, my role, rename, archive, delete) --------------------------------------
  let deleteArmed = null; // the room whose Delete was clicked once (the second click deletes)

  function renderRoomAccess(view) {
    const info = view ? state.rooms.get(view.id) : null;
    const role = view ? myRole(view.id) : null;
    const visibility = info?.visibility || "public";
    const kind = visibility === "direct" ? "Direct message" : visibility === "private" ? "Private" : "";
    const label = [kind, info && info.archived ? "Archived" : ""].filter(Boolean).join(" · ");
    ui.roomKind.hidden = !label;
    ui.roomKind.textContent = label;
    ui.roomKind.dataset.visibility = info?.visibility || "public";
    ui.roomRole.hidden = !(state.token && role);
    ui.roomRole.textContent = role || "";
    ui.roomRole.className = `role-badge role-${role || "none"}`;
    const manage = Boolean(state.token && info && info.visibility !== "direct" && isModerator(role));
    ui.renameRoom.hidden = !manage;
    ui.archiveRoom.hidden = !manage;
    ui.archiveRoom.textContent = info && info.archived ? "Unarchive" : "Archive";
    ui.deleteRoom.hidden = !(state.token && info && info.visibility !== "direct" && role === "owner");
    ui.roomTitle.parentElement.classList.toggle("managed", manage);
    if (deleteArmed !== (view && view.id)) deleteArmed = null;
    ui.deleteRoom.textContent = deleteArmed ? "Confirm delete" : "Delete";
    if (!manage) ui.renameForm.hidden = true;
  }

  ui.renameRoom.addEventListener("click", () => {
    const view = state.joined.get(state.active);
    if (!view) return;
    ui.renameForm.hidden = false;
    ui.renameInput.value = view.name;
    ui.renameInput.select();
    ui.renameInput.focus();
  });
  ui.renameCancel.addEventListener("click", () => { ui.renameForm.hidden = true; ui.input.focus(); });
  ui.renameForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const view = state.joined.get(state.active);
    const name = ui.renameInput.value.trim();
    if (!view || !name) return;
    const room = await act("PATCH", `rooms/${encodeURIComponent(view.id)}`, { name });
    if (!room) return;
    if (room.id) rememberRoom(room);
    ui.renameForm.hidden = true;
    renderRooms();
    renderActive();
  });
  ui.archiveRoom.addEventListener("click", async () => {
    const view = state.joined.get(state.active);
    if (!view) return;
    const room = await act("PATCH", `rooms/${encodeURIComponent(view.id)}`, { archived: !state.rooms.get(view.id)?.archived });
    if (room && room.id) { rememberRoom(room); renderRooms(); renderActive(); }
  });
  ui.deleteRoom.addEventListener("click", async () => {
    const view = state.joined.get(state.active);
    if (!view) return;
    if (deleteArmed !== view.id) { deleteArmed = view.id; renderRoomAccess(view); return; }
    deleteArmed = null;
    await act("DELETE", `rooms/${encodeURIComponent(view.id)}`);
    // The room_deleted frame takes it out of the lists.
  });

  // --- rendering ----------------------------------------------------------------------------------------------------
  function renderRooms() {
    // Joined rooms with unread counts.
    const joinedItems = [];
    let total = 0;
    for (const view of state.joined.values()) {
      total += view.unread;
      const label = `${view.name}${view.unread ? `, ${view.unread} unread` : ""}`;
      const badge = view.unread ? el("span", { class: "badge unread-count", text: String(view.unread), "aria-hidden": "true" }) : null;
      const open = el("button", { type: "button", "aria-label": label, "aria-current": view.id === state.active ? "true" : null },
        kindMark(state.rooms.get(view.id)), el("span", { class: "name", text: view.name }), badge);
      open.addEventListener("click", () => { activateRoom(view.id); ui.input.focus(); });
      joinedItems.push(el("li", {
        class: `room-item${view.id === state.active ? " active" : ""}${view.unread ? " unread" : ""}`,
        dataset: { roomId: view.id, unread: String(view.unread) },
      }, open));
    }
    replaceKeepingFocus(ui.joinedRooms, joinedItems);
    ui.noJoined.hidden = state.joined.size > 0;
    ui.totalUnread.hidden = total === 0;
    ui.totalUnread.textContent = String(total);
    document.title = total ? `(${total}) nats-chat` : "nats-chat";

    // Every room, sorted by name, with a join button for those this tab is not in.
    const all = Array.from(state.rooms.values()).sort((a, b) => a.name.localeCompare(b.name));
    const allItems = all.map((room) => {
      const inRoom = state.joined.has(room.id);
      const button = el("button", { type: "button", "aria-label": inRoom ? `Open ${room.name}` : `Join ${room.name}` },
        kindMark(room), el("span", { class: "name", text: room.name }),
        room.archived ? el("span", { class: "archived-mark", text: "archived" }) : null,
        typeof room.member_count === "number" ? el("span", { class: "count", text: `${room.member_count} online`, "aria-hidden": "true" }) : null);
      button.addEventListener("click", () => { joinRoom(room.id); ui.input.focus(); });
      return el("li", {
        class: `room-item${inRoom ? " joined" : ""}${room.archived ? " archived" : ""}`,
        dataset: { roomId: room.id, visibility: room.visibility || "public", archived: room.archived ? "true" : "false" },
      }, button);
    });
    replaceKeepingFocus(ui.allRooms, allItems);
  }

  // Re-renders a list without losing keyboard focus on the item that had it.
  function replaceKeepingFocus(list, items) {
    const focused = list.contains(document.activeElement) ? document.activeElement.closest("li")?.dataset.roomId : null;
    list.replaceChildren(...items);
    if (focused) list.querySelector(`li[data-room-id="${CSS.escape(focused)}"] button`)?.focus();
  }

  function renderActive() {
    const view = state.joined.get(state.active);
    ui.emptyState.hidden = Boolean(view);
    ui.roomTitle.textContent = view ? view.name : "No room selected";
    ui.leaveRoom.disabled = !view;
    ui.toggleMembers.disabled = !view;
    renderRoomAccess(view);
    ui.jumpNew.hidden = true;
    renderMembers();
    renderTyping();
    renderComposer();
    if (view) renderHistoryState(view); else ui.historyState.textContent = "";
  }

  function renderComposer() {
    const view = state.joined.get(state.active);
    const archived = Boolean(view && state.rooms.get(view.id)?.archived);
    ui.input.disabled = !view || archived;
    ui.send.disabled = !view || archived;
    ui.input.placeholder = !view ? "Join a room to write" : archived ? "This room is archived (read-only)"
      : state.connected ? `Message ${view.name}` : "Offline — messages are sent when the connection is back";
  }

  function renderHistoryState(view) {
    if (view.id !== state.active) return;
    let text = "";
    if (view.historyRequests.includes("latest") && !view.seqs.length) text = "Loading messages…";
    else if (view.historyRequests.includes("older")) text = "Loading older messages…";
    else if (view.seqs.length && !view.hasMore) text = "Beginning of the room";
    else if (!view.seqs.length && view.status === "joined") text = "No messages yet — say hello.";
    else if (view.hasMore && view.seqs.length) text = "Scroll up for older messages";
    ui.historyState.textContent = text;
  }

  /** A members page: the first replaces the list, the ones it asks for next (has_more) add to it. */
  function onMembers(view, frame) {
    const page = (frame.members || []).map((m) => [m.user_id, memberEntry(m)]);
    if (view.membersContinuing) for (const [id, name] of page) view.members.set(id, name);
    else view.members = new Map(page);
    view.membersContinuing = Boolean(frame.has_more && frame.next);
    if (view.membersContinuing) sendFrame({ type: "members", room_id: frame.room_id, after: frame.next });
  }

  // A member: {username, role?, online?} (roles and `online` only for private and direct rooms).
  function memberEntry(m) {
    return { username: m.username, role: typeof m.role === "string" ? m.role : null, online: m.online ?? null };
  }
  function setMember(view, m) {
    const previous = view.members.get(m.user_id) || {};
    view.members.set(m.user_id, { ...previous, ...memberEntry({ ...previous, ...m }) });
  }

  function renderMembers() {
    const view = state.joined.get(state.active);
    // One line per name (a user with two tabs is connected twice), the first user id kept for actions.
    const byName = new Map();
    if (view) for (const [id, m] of view.members) if (!byName.has(m.username)) byName.set(m.username, { id, ...m });
    const names = Array.from(byName.keys()).sort((a, b) => a.localeCompare(b));
    const info = view ? state.rooms.get(view.id) : null;
    ui.members.replaceChildren(...names.map((name) => {
      const m = byName.get(name);
      const me = state.token ? m.id === state.userId : name === state.username;
      const li = el("li", { dataset: { username: name, userId: m.id, role: m.role || "" } }, name,
        me ? el("span", { class: "you", text: " (you)" }) : null);
      if (m.role && m.role !== "member") li.append(" ", el("span", { class: `role-badge role-${m.role}`, text: m.role }));
      if (m.online === false) li.classList.add("offline");
      if (state.token && !me) li.append(memberActions(view, info, m));
      return li;
    }));
    const online = view ? names.filter((name) => byName.get(name).online !== false).length : 0;
    ui.memberCount.textContent = view ? `(${names.length})` : "";
    ui.roomMeta.textContent = view ? `${online} online${info && info.topic ? ` · ${info.topic}` : ""}` : "";
    renderInvite(view, info);
  }

  function renderTyping() {
    const view = state.joined.get(state.active);
    if (!view) { ui.typing.textContent = ""; return; }
    const now = Date.now();
    for (const [name, until] of view.typing) if (until <= now) view.typing.delete(name);
    const names = Array.from(view.typing.keys());
    ui.typing.textContent = names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…`
      : names.length === 2 ? `${names[0]} and ${names[1]} are typing…` : "Several people are typing…";
  }
  setInterval(renderTyping, 1000);

  function applyMembersVisibility() {
    const layout = ui.chatView;
    layout.classList.toggle("members-hidden", !narrow.matches && !state.membersVisible);
    layout.classList.toggle("members-open", narrow.matches && state.membersVisible);
    ui.toggleMembers.setAttribute("aria-expanded", String(state.membersVisible));
  }

  // --- scrolling --------------------------------------------------------------------------------------------------
  function scrollToBottom() {
    ui.scroller.scrollTop = ui.scroller.scrollHeight;
    const view = state.joined.get(state.active);
    if (view) view.atBottom = true;
    ui.jumpNew.hidden = true;
  }

  function updateAtBottom() {
    const view = state.joined.get(state.active);
    if (!view) return;
    const s = ui.scroller;
    view.atBottom = s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
    if (view.atBottom) ui.jumpNew.hidden = true;
  }

  function maybeLoadOlder() {
    const view = state.joined.get(state.active);
    if (!view || !view.hasMore || !view.seqs.length || !state.connected) return;
    if (view.historyRequests.length) return;
    // Near the top, or the page is not even full: fetch the previous page.
    if (ui.scroller.scrollTop < NEAR_TOP_PX || ui.scroller.scrollHeight <= ui.scroller.clientHeight) requestHistory(view, "older");
  }

  ui.scroller.addEventListener("scroll", () => { updateAtBottom(); maybeLoadOlder(); }, { passive: true });
  ui.jumpNew.addEventListener("click", () => { scrollToBottom(); ui.input.focus(); });

  // --- sign in / out -------------------------------------------------------------------------------------------------
  function validUsername(name) {
    // The gateway's rule: 1–32 characters after trimming, no control characters.
    // eslint-disable-next-line no-control-regex
    return name.length >= 1 && Array.from(name).length <= 32 && !/[\u0000-\u001f\u007f-\u009f]/.test(name);
  }

  function signIn(name, rooms = [], active = null, token = null) {
    state.username = name;
    if (token) state.token = token;
    if (!state.token) { try { localStorage.setItem(LAST_NAME_KEY, name); } catch { /* ignore */ } }
    ui.meName.textContent = name;
    ui.signOut.textContent = state.token ? "Sign out" : "Change name";
    ui.createVisibilityRow.hidden = !state.token;
    ui.me.hidden = false;
    ui.toggleRooms.hidden = false;
    ui.loginView.hidden = true;
    ui.chatView.hidden = false;
    for (const room of rooms) {
      if (!room || typeof room.id !== "string" || state.joined.has(room.id)) continue;
      const view = new RoomView(room.id, room.name);
      state.joined.set(room.id, view);
      for (const out of Array.isArray(room.outgoing) ? room.outgoing : []) {
        if (out && typeof out.id === "string" && typeof out.content === "string") sendMessage(view, out.content, out);
      }
    }
    const target = active && state.joined.has(active) ? active : Array.from(state.joined.keys()).pop();
    if (target) activateRoom(target); else renderActive();
    save();
    renderRooms();
    applyMembersVisibility();
    connect();
    if (!ui.input.disabled) ui.input.focus();
    else {
      if (narrow.matches) openSidebar(); // no room yet: the room list is where to go
      ui.createName.focus();
    }
  }

  function signOut(reason = null) {
    state.username = null;
    state.token = null;
    state.userId = null;
    ui.loginToken.value = "";
    ui.loginError.textContent = typeof reason === "string" ? reason : "";
    state.socketSeq++;
    if (state.ws) { try { state.ws.close(1000); } catch { /* ignore */ } }
    state.ws = null;
    state.connected = false;
    clearTimeout(state.retryTimer);
    clearInterval(state.countdownTimer);
    for (const id of Array.from(state.joined.keys())) dropRoom(id);
    state.rooms.clear();
    try { sessionStorage.removeItem(STORE_KEY); } catch { /* ignore */ }
    history.replaceState(null, "", location.pathname + location.search);
    setConn("idle", "Not connected");
    ui.me.hidden = true;
    ui.toggleRooms.hidden = true;
    ui.chatView.hidden = true;
    ui.loginView.hidden = false;
    ui.loginName.focus();
  }

  ui.loginForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = ui.loginToken.value.trim();
    if (token) {
      const claims = tokenClaims(token);
      if (!claims) {
        ui.loginError.textContent = "That does not look like a token (three dot-separated parts).";
        ui.loginToken.setAttribute("aria-invalid", "true");
        ui.loginToken.focus();
        return;
      }
      ui.loginError.textContent = "";
      ui.loginToken.removeAttribute("aria-invalid");
      const fromHash = hashRoom();
      const shown = typeof claims.username === "string" && claims.username ? claims.username : String(claims.sub || "…");
      signIn(shown, fromHash ? [{ id: fromHash }] : [], fromHash, token);
      return;
    }
    const name = ui.loginName.value.trim();
    if (!validUsername(name)) {
      ui.loginError.textContent = "Enter a name of 1–32 characters (no control characters).";
      ui.loginName.setAttribute("aria-invalid", "true");
      ui.loginName.focus();
      return;
    }
    ui.loginError.textContent = "";
    ui.loginName.removeAttribute("aria-invalid");
    const fromHash = hashRoom();
    signIn(name, fromHash ? [{ id: fromHash }] : [], fromHash);
  });
  ui.signOut.addEventListener("click", () => signOut());
  ui.reconnectNow.addEventListener("click", () => { state.attempt = Math.max(0, state.attempt - 1); connect(); });

  function hashRoom() {
    const match = /^#room=([0-9A-Fa-f-]{36})$/.exec(location.hash);
    return match ? match[1].toLowerCase() : null;
  }

  window.addEventListener("hashchange", () => {
    const id = hashRoom();
    if (id && state.username && id !== state.active) joinRoom(id);
  });

  // --- rooms: create, leave -------------------------------------------------------------------------------------------
  ui.createForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = ui.createName.value.trim();
    ui.createError.textContent = "";
    if (!name) { ui.createError.textContent = "Enter a room name."; ui.createName.focus(); return; }
    let response, body = null;
    const request = { name };
    if (state.token && ui.createVisibility.value === "private") request.visibility = "private";
    try {
      response = await fetch("api/v1/rooms", {
        method: "POST", body: JSON.stringify(request),
        // In token mode REST writes need the token too.
        headers: { "content-type": "application/json", ...(state.token ? { authorization: `Bearer ${state.token}` } : {}) },
      });
      body = await response.json().catch(() => null);
    } catch (error) {
      ui.createError.textContent = `Could not reach the server: ${error.message}`;
      return;
    }
    if (response.status === 201 && body && body.id) {
      rememberRoom(body);
      ui.createName.value = "";
      joinRoom(body.id);
      ui.input.focus();
    } else if (response.status === 409 && body && body.room) {
      rememberRoom(body.room);
      ui.createName.value = "";
      toast(`A room named “${body.room.name}” already exists; you joined it.`, { kind: "info", code: "room_exists" });
      joinRoom(body.room.id);
      ui.input.focus();
    } else {
      ui.createError.textContent = (body && body.error) ? describeError(body) : `Could not create the room (HTTP ${response.status}).`;
      ui.createName.focus();
    }
  });

  function refreshRoomList() {
    if (state.connected) sendFrame({ type: "room_list" });
  }
  ui.refreshRooms.addEventListener("click", refreshRoomList);
  setInterval(refreshRoomList, ROOM_LIST_REFRESH_MS);
  window.addEventListener("focus", refreshRoomList);

  ui.leaveRoom.addEventListener("click", () => {
    const view = state.joined.get(state.active);
    if (!view) return;
    if (!state.connected || !sendFrame({ type: "leave", room_id: view.id })) dropRoom(view.id);
    // Otherwise the room goes when the `left` frame arrives.
  });

  ui.toggleMembers.addEventListener("click", () => {
    state.membersVisible = !state.membersVisible;
    applyMembersVisibility();
  });
  narrow.addEventListener("change", () => { state.membersVisible = !narrow.matches; applyMembersVisibility(); closeSidebar(); });

  // --- sidebar on narrow screens ------------------------------------------------------------------------------------------
  function closeSidebar() {
    if (!ui.sidebar.classList.contains("open")) return;
    ui.sidebar.classList.remove("open");
    ui.toggleRooms.setAttribute("aria-expanded", "false");
  }
  function openSidebar() {
    ui.sidebar.classList.add("open");
    ui.toggleRooms.setAttribute("aria-expanded", "true");
  }
  ui.toggleRooms.addEventListener("click", () => {
    if (ui.sidebar.classList.contains("open")) { closeSidebar(); return; }
    openSidebar();
    refreshRoomList();
    ui.sidebar.querySelector("button, input")?.focus();
  });

  // --- composer -----------------------------------------------------------------------------------------------------------
  function autosize() {
    ui.input.style.height = "auto";
    ui.input.style.height = `${Math.min(ui.input.scrollHeight + 2, 128)}px`;
  }

  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const view = state.joined.get(state.active);
    const content = ui.input.value;
    if (!view || !content.trim()) return;
    ui.input.value = "";
    autosize();
    sendMessage(view, content);
    ui.input.focus();
  });

  ui.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    }
  });

  // Typing notices: at most one per TYPING_SEND_EVERY_MS; keystrokes inside that window schedule one
  // at its end, so a long stretch of typing keeps the others' indicator alive.
  let typingTimer = null;
  function sendTyping() {
    typingTimer = null;
    const view = state.joined.get(state.active);
    if (!view || !ui.input.value.trim() || view.status !== "joined") return;
    const wait = view.lastTypingSent + TYPING_SEND_EVERY_MS - Date.now();
    if (wait > 0) { typingTimer = setTimeout(sendTyping, wait); return; }
    view.lastTypingSent = Date.now();
    sendFrame({ type: "typing", room_id: view.id });
  }
  ui.input.addEventListener("input", () => {
    autosize();
    if (!typingTimer) sendTyping();
  });

  // --- global keys ----------------------------------------------------------------------------------------------------------
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      if (ui.sidebar.classList.contains("open")) { closeSidebar(); ui.toggleRooms.focus(); }
      else if (narrow.matches && state.membersVisible) { state.membersVisible = false; applyMembersVisibility(); ui.toggleMembers.focus(); }
      return;
    }
    if (event.altKey && (event.key === "ArrowUp" || event.key === "ArrowDown") && state.joined.size > 1) {
      event.preventDefault();
      const ids = Array.from(state.joined.keys());
      const index = ids.indexOf(state.active);
      const next = ids[(index + (event.key === "ArrowUp" ? -1 : 1) + ids.length) % ids.length];
      activateRoom(next);
      ui.input.focus();
    }
  });

  document.addEventListener("visibilitychange", () => {
    const view = state.joined.get(state.active);
    if (!document.hidden && view && view.atBottom) { view.unread = 0; renderRooms(); }
    if (!document.hidden && !state.ws && state.username) connect();
  });
  window.addEventListener("online", () => { if (!state.ws && state.username) connect(); });

  // --- start ------------------------------------------------------------------------------------------------------------------
  const saved = load();
  if (saved && typeof saved.username === "string" && validUsername(saved.username)) {
    const rooms = Array.isArray(saved.rooms) ? saved.rooms : [];
    const fromHash = hashRoom();
    if (fromHash && !rooms.some((room) => room && room.id === fromHash)) rooms.push({ id: fromHash });
    signIn(saved.username, rooms, fromHash || saved.active, typeof saved.token === "string" ? saved.token : null);
  } else {
    try { ui.loginName.value = localStorage.getItem(LAST_NAME_KEY) || ""; } catch { /* ignore */ }
    ui.loginView.hidden = false;
    ui.loginName.focus();
  }
})();
