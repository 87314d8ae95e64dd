// One open chat: its header, the message log (history paging, pending sends), typing line and
// read marker.

import { $, dayOf, el, timeOf } from "./dom.js";
import { api, state } from "./state.js";
import { chatName, renderChatList } from "./chatlist.js";
import { deliver } from "./composer.js";
import { renderMembers } from "./members.js";

export async function openChat(chatId) {
  const chat = state.chats.get(chatId);
  if (!chat) return;
  state.current = chatId;
  localStorage.setItem(`fechatter.chat.${state.wsId}`, String(chatId));
  $("#app").classList.add("in-chat");
  $("#composer").hidden = false;
  $("#members-toggle").hidden = false;
  renderHeader();
  renderChatList();
  if (!state.messages.has(chatId)) {
    state.messages.set(chatId, { items: [], ids: new Set(), hasMore: true, loading: false });
    await loadPage(chatId);
  }
  renderMessages(true);
  renderTyping();
  if (!$("#members-panel").hidden) await renderMembers();
  markRead();
  $("#input").focus();
}

export function renderHeader() {
  const chat = state.chats.get(state.current);
  if (!chat) return;
  $("#chat-title").textContent = (chat.type === "PublicChannel" ? "# " : "") + chatName(chat);
  const kind = { Single: "Direct message", Group: "Group", PrivateChannel: "Private channel", PublicChannel: "Public channel" }[chat.type];
  const parts = [kind, `${chat.members_count} member${chat.members_count === 1 ? "" : "s"}`];
  if (chat.type === "Single") parts[1] = state.online.has(state.singlePeer.get(chat.id)) ? "online" : "offline";
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

export function renderMessages(stickToBottom) {
  const container = $("#messages");
  const box = state.messages.get(state.current);
  if (!box) return;
  const nearBottom = container.scrollHeight - container.scrollTop - container.clientHeight < 80;
  const nodes = [];
  if (box.hasMore) nodes.push(el("div", { class: "older", text: "Scroll up for older messages" }));
  else if (!box.items.length && !pendingFor(state.current).length) {
    nodes.push(el("div", { class: "empty" }, el("h3", { text: "No messages yet" }), el("p", { text: "Say hello." })));
  }
  let previous = null;
  for (const m of box.items) {
    if (!previous || dayOf(previous.created_at) !== dayOf(m.created_at)) {
      nodes.push(el("div", { class: "day", text: dayOf(m.created_at) }));
      previous = null;
    }
    const cont = previous && previous.sender_id === m.sender_id;
    nodes.push(messageNode(m, cont));
    previous = m;
  }
  for (const [clientId, p] of pendingFor(state.current)) nodes.push(pendingNode(clientId, p));
  container.replaceChildren(...nodes);
  if (stickToBottom || nearBottom) container.scrollTop = container.scrollHeight;
}

function messageNode(m, cont) {
  const mine = m.sender_id === state.me.id;
  const who = mine ? "You" : state.users.get(m.sender_id)?.fullname ?? `User ${m.sender_id}`;
  return el(
    "div",
    { class: `msg${mine ? " mine" : ""}${cont ? " cont" : ""}`, "data-id": m.id, "data-seq": m.seq },
    el("div", { class: "meta", text: `${who} · ${timeOf(m.created_at)}` }),
    el("div", { class: "bubble", text: m.content || "[attachment]" }),
  );
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
  const typing = state.typing.get(m.chat_id);
  if (typing) typing.delete(m.sender_id);
  if (added && m.sender_id !== state.me.id) {
    if (m.chat_id === state.current && document.visibilityState === "visible") markRead();
    else chat.unread_count += 1;
  }
  renderChatList();
  if (m.chat_id === state.current) {
    renderMessages(m.sender_id === state.me.id);
    renderTyping();
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
