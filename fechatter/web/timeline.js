// One open chat: its header, the message log (history paging, pending sends), typing line and
// read marker.

import { statusText } from "./status.js";
import { $, dayOf, el } from "./dom.js";
import { api, state } from "./state.js";
import { chatName, renderChatList } from "./chatlist.js";
import { cancelEdit, deliver } from "./composer.js";
import { messageNode, mentionsMe } from "./message.js";
import { closeThread, renderThread } from "./thread.js";
import { touchMessage } from "./store.js";
import { renderMembers } from "./members.js";
import { clearNotification, onIncoming } from "./notify.js";

export async function openChat(chatId) {
  const chat = state.chats.get(chatId);
  if (!chat) return;
  if (state.editing && state.editing.chatId !== chatId) cancelEdit();
  if (state.thread && state.thread.chatId !== chatId) closeThread();
  state.current = chatId;
  localStorage.setItem(`fechatter.chat.${state.wsId}`, String(chatId));
  $("#app").classList.add("in-chat");
  $("#composer").hidden = false;
  $("#members-toggle").hidden = false;
  renderHeader();
  renderChatList();
  if (!state.messages.has(chatId)) {
    state.messages.set(chatId, { items: [], ids: new Set(), hasMore: true, loading: false });
    try {
      await Promise.all([loadPage(chatId), loadChatMembers(chatId)]);
    } catch (err) {
      state.messages.delete(chatId); // not loaded: the next opening loads it again
      throw err;
    }
  }
  if (state.current !== chatId) return; // another chat was opened meanwhile
  placeDivider(chatId, chat.unread_count);
  renderMessages(true);
  showDivider();
  renderTyping();
  if (!$("#members-panel").hidden) await renderMembers();
  markRead();
  $("#input").focus();
}

// The "New messages" divider goes before the first unread message, found from the read marker
// as the server counts it: `unread_count` is the messages of others after my marker that are not
// tombstones (docs/api.md "Chats"), so walking back from the newest message at opening and
// counting those finds the first unread one. When that is older than the loaded pages the
// divider stands above the oldest loaded unread message (and moves up as older pages load on
// scrolling; nothing extra is fetched). A first unread that is a thread reply puts it before
// the next top-level message. `state.divider` is {chatId, unread, lastSeq} from opening, or
// {chatId, id} (placed live in a hidden tab); it lasts until another chat is opened.
function placeDivider(chatId, unread) {
  const box = state.messages.get(chatId);
  const last = box?.items[box.items.length - 1];
  state.divider = unread && last ? { chatId, unread, lastSeq: last.seq } : null;
}

// The message the divider stands before: {id, exact} (exact: it is the first unread), or null.
function dividerAnchor(box) {
  const d = state.divider;
  if (!d || d.chatId !== state.current) return null;
  if (d.id != null) return { id: d.id, exact: true };
  let seen = 0;
  let first = null;
  for (let i = box.items.length - 1; i >= 0 && seen < d.unread; i--) {
    const m = box.items[i];
    if (m.seq > d.lastSeq || m.sender_id === state.me.id || m.deleted) continue;
    first = m;
    seen += 1;
  }
  if (!first) return null;
  const anchor = box.items.find((m) => m.seq >= first.seq && m.thread_id == null);
  return anchor ? { id: anchor.id, exact: seen === d.unread || !box.hasMore } : null;
}

// After opening: when the divider marks the first unread message and is above the visible part
// of the log, scroll it to the top.
function showDivider() {
  const divider = document.getElementById("new-divider");
  const box = state.messages.get(state.current);
  if (!divider || !box || !dividerAnchor(box)?.exact) return;
  const log = $("#messages");
  const offset = divider.getBoundingClientRect().top - log.getBoundingClientRect().top;
  if (offset < 0) log.scrollTop += offset - 8;
}

// The chat's members: for `@` suggestions and for the caller's role (who may delete what).
export async function loadChatMembers(chatId) {
  const members = await api.get(`/api/chats/${chatId}/members`).catch(() => null);
  if (members) state.chatMembers.set(chatId, members);
  return members;
}

export function renderHeader() {
  const chat = state.chats.get(state.current);
  if (!chat) return;
  $("#chat-title").textContent = (chat.type === "PublicChannel" ? "# " : "") + chatName(chat);
  const kind = { Single: "Direct message", Group: "Group", PrivateChannel: "Private channel", PublicChannel: "Public channel" }[chat.type];
  const parts = [kind, `${chat.members_count} member${chat.members_count === 1 ? "" : "s"}`];
  if (chat.type === "Single") parts[1] = statusText(state.singlePeer.get(chat.id), { lower: true }); // a word
  const mute = $("#mute-toggle");
  mute.hidden = false;
  mute.setAttribute("aria-pressed", chat.muted ? "true" : "false");
  mute.textContent = chat.muted ? "🔕 Muted" : "🔔 Mute";
  mute.title = chat.muted ? "Unmute this chat" : "Mute this chat";
  if (chat.description) parts.push(chat.description);
  $("#chat-subtitle").textContent = parts.join(" · ");
}

export function addMessages(chatId, messages) {
  const box = state.messages.get(chatId);
  if (!box) return false;
  let added = false;
  for (const m of messages) {
    if (box.ids.has(m.id)) continue;
    box.ids.add(m.id);
    box.items.push(m);
    added = true;
  }
  box.items.sort((a, b) => a.seq - b.seq);
  return added;
}

async function loadPage(chatId, before) {
  const box = state.messages.get(chatId);
  if (box.loading) return;
  box.loading = true;
  try {
    const query = before ? `?limit=50&before=${before}` : "?limit=50";
    const page = await api.get(`/api/chats/${chatId}/messages${query}`);
    addMessages(chatId, page.items);
    box.hasMore = page.has_more;
  } finally {
    box.loading = false;
  }
}

// The log is reconciled, not rebuilt: every child carries a key (`m:<id>`, `p:<client_id>`,
// `day:<date>`, `older`, `empty`); nodes whose key and data are unchanged are left alone, a
// changed message is rebuilt inside its own node, and only missing nodes are inserted. So a new
// message is one addition to the aria-live log, and screen readers never re-read history.
export function renderMessages(stickToBottom, force = false) {
  const container = $("#messages");
  const box = state.messages.get(state.current);
  if (!box) return;
  if (force) for (const node of container.children) node._data = undefined;
  const nearBottom = container.scrollHeight - container.scrollTop - container.clientHeight < 80;
  const pending = pendingFor(state.current);
  const visible = box.items.filter((m) => m.thread_id == null); // replies live in the thread panel
  const want = [];
  if (box.hasMore) want.push({ key: "older", build: () => el("div", { class: "older", text: "Scroll up for older messages" }) });
  else if (!visible.length && !pending.length) {
    want.push({ key: "empty", build: () => el("div", { class: "empty" }, el("h2", { text: "No messages yet" }), el("p", { text: "Say hello." })) });
  }
  let previous = null;
  const divider = dividerAnchor(box)?.id ?? null;
  for (const m of visible) {
    const day = dayOf(m.created_at);
    if (!previous || dayOf(previous.created_at) !== day) {
      want.push({ key: `day:${day}`, build: () => el("div", { class: "day", text: day }) });
      previous = null;
    }
    if (m.id === divider) {
      want.push({ key: "new", build: () => el("div", { class: "divider", id: "new-divider", text: "New messages" }) });
      previous = null; // the first unread message shows its sender again
    }
    const cont = Boolean(previous && previous.sender_id === m.sender_id && !previous.deleted && !m.deleted);
    want.push({ key: `m:${m.id}`, data: m, cont, build: () => messageNode(m) });
    previous = m;
  }
  for (const [clientId, p] of pending) {
    want.push({ key: `p:${clientId}`, data: p.failed, build: () => pendingNode(clientId, p) });
  }
  reconcile(container, want);
  if (stickToBottom || nearBottom) container.scrollTop = container.scrollHeight;
}

export function reconcile(container, want) {
  const keys = new Set(want.map((w) => w.key));
  const have = new Map();
  for (const node of [...container.children]) {
    if (node._key !== undefined && keys.has(node._key) && !have.has(node._key)) have.set(node._key, node);
    else node.remove();
  }
  let cursor = container.firstElementChild;
  const placed = new Set();
  for (const w of want) {
    if (placed.has(w.key)) continue; // one node per key
    placed.add(w.key);
    let node = have.get(w.key);
    if (!node) {
      node = w.build();
      node._key = w.key;
      node._data = w.data;
    } else if (node._data !== w.data) {
      const fresh = w.build(); // same element, new insides: the node keeps its identity
      node.className = fresh.className;
      node.replaceChildren(...fresh.childNodes);
      for (const attr of fresh.attributes) if (node.getAttribute(attr.name) !== attr.value) node.setAttribute(attr.name, attr.value);
      node._data = w.data;
    }
    if (w.cont !== undefined) node.classList.toggle("cont", w.cont);
    if (node === cursor) cursor = cursor.nextElementSibling;
    else container.insertBefore(node, cursor);
  }
}

function pendingFor(chatId) {
  return [...state.pending.entries()].filter(([, p]) => p.chatId === chatId);
}

function pendingNode(clientId, p) {
  return el(
    "div",
    { class: `msg mine ${p.failed ? "failed" : "pending"}`, "data-client-id": clientId },
    p.content ? el("div", { class: "bubble", text: p.content }) : null,
    p.files?.length ? el("div", { class: "attachments hint", text: `${p.files.length} attachment${p.files.length === 1 ? "" : "s"}` }) : null,
    p.failed
      ? el("div", { class: "failure" }, "Not sent.", el("button", { type: "button", text: "Retry", onclick: () => deliver(clientId) }))
      : null,
  );
}

export async function onScroll() {
  const container = $("#messages");
  const box = state.messages.get(state.current);
  if (!box || !box.hasMore || box.loading || container.scrollTop > 60) return;
  const oldest = box.items[0];
  const height = container.scrollHeight;
  await loadPage(state.current, oldest?.id);
  renderMessages(false);
  container.scrollTop = container.scrollHeight - height + container.scrollTop;
}

// A message arrived (live, or as the answer to our own send).
export function onMessage(m) {
  const chat = state.chats.get(m.chat_id);
  if (!chat) return;
  if (!chat.last_message || chat.last_message.seq <= m.seq) chat.last_message = m;
  const added = state.messages.has(m.chat_id) ? addMessages(m.chat_id, [m]) : true;
  const thread = m.thread_id != null ? state.threads.get(m.thread_id) : null;
  if (thread && !thread.items.has(m.id)) thread.items.set(m.id, m);
  const typing = state.typing.get(m.chat_id);
  if (typing) typing.delete(m.sender_id);
  if (added && m.sender_id !== state.me.id) {
    if (m.chat_id === state.current && document.visibilityState === "visible") markRead();
    else {
      chat.unread_count += 1;
      if (mentionsMe(m)) chat.mention_count = (chat.mention_count ?? 0) + 1;
      // The open chat in a hidden tab: mark where the person left off, if nothing marks it yet.
      if (m.chat_id === state.current && m.thread_id == null && state.divider?.chatId !== m.chat_id) state.divider = { chatId: m.chat_id, id: m.id };
    }
    onIncoming(m, chat);
  }
  renderChatList();
  if (m.chat_id === state.current) {
    renderMessages(m.sender_id === state.me.id && m.thread_id == null);
    renderTyping();
  }
  if (thread && state.thread?.rootId === m.thread_id) renderThread();
  if (added && m.thread_id != null && mentionsMe(m) && state.thread?.rootId !== m.thread_id) {
    state.threadMentions.add(m.thread_id); // the root's "N replies" gets an "@" until opened
    touchMessage(m.chat_id, m.thread_id);
  }
}

let readTimer = null;
export function markRead() {
  clearTimeout(readTimer);
  readTimer = setTimeout(async () => {
    const chatId = state.current;
    const box = state.messages.get(chatId);
    const chat = state.chats.get(chatId);
    const last = box?.items[box.items.length - 1];
    if (!chat || !last) return;
    // The tab was hidden meanwhile: what arrived is unread (markRead runs again on return).
    if (document.visibilityState !== "visible") return;
    chat.unread_count = 0;
    chat.mention_count = 0;
    clearNotification(chatId);
    renderChatList();
    await api.post(`/api/chats/${chatId}/read`, { message_id: last.id }).catch(() => {});
  }, 250);
}

export function renderTyping() {
  const map = state.typing.get(state.current);
  const now = Date.now();
  const names = map
    ? [...map.entries()].filter(([uid, until]) => until > now && uid !== state.me.id).map(([uid]) => state.users.get(uid)?.fullname ?? "Someone")
    : [];
  $("#typing").textContent = !names.length ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
}
