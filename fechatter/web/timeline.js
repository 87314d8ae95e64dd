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
    await Promise.all([loadPage(chatId), loadChatMembers(chatId)]);
  }
  renderMessages(true);
  renderTyping();
  if (!$("#members-panel").hidden) await renderMembers();
  markRead();
  $("#input").focus();
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
    want.push({ key: "empty", build: () => el("div", { class: "empty" }, el("h3", { text: "No messages yet" }), el("p", { text: "Say hello." })) });
  }
  let previous = null;
  for (const m of visible) {
    const day = dayOf(m.created_at);
    if (!previous || dayOf(previous.created_at) !== day) {
      want.push({ key: `day:${day}`, build: () => el("div", { class: "day", text: day }) });
      previous = null;
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
    el("div", { class: "bubble", text: p.content }),
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
    }
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
    chat.unread_count = 0;
    chat.mention_count = 0;
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
