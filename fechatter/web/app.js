// Fechatter's browser client. Plain DOM, no framework: user content is only ever put on the
// page with textContent, never parsed as HTML.

import { Api, ApiError } from "./api.js";
import { Live } from "./live.js";

const $ = (sel) => document.querySelector(sel);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) if (child != null) node.append(child);
  return node;
}

const ICONS = {
  lock: "M7 10V7a5 5 0 0 1 10 0v3h1a1 1 0 0 1 1 1v9a1 1 0 0 1-1 1H6a1 1 0 0 1-1-1v-9a1 1 0 0 1 1-1h1Zm2 0h6V7a3 3 0 0 0-6 0v3Z",
  people: "M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8Zm7 0a3 3 0 1 0 0-6 3 3 0 0 0 0 6ZM2 20c0-3.3 3.1-6 7-6s7 2.7 7 6v1H2v-1Zm15.5 1v-1c0-1.9-.8-3.6-2.1-4.8 3.4.2 6.6 2.4 6.6 5.3V21h-4.5Z",
};

function icon(name, label) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "15");
  svg.setAttribute("height", "15");
  svg.setAttribute("fill", "currentColor");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

const state = {
  me: null,
  workspaces: [],
  wsId: null,
  users: new Map(), // user id -> {fullname, email, role}
  chats: new Map(), // chat id -> Chat
  current: null,
  messages: new Map(), // chat id -> {items: [], ids: Set, hasMore, loading}
  singlePeer: new Map(), // Single chat id -> the other user's id
  groupNames: new Map(), // unnamed Group chat id -> the other members' first names
  online: new Set(),
  typing: new Map(), // chat id -> Map(user id -> expiry ms)
  pending: new Map(), // client_id -> {chatId, content, failed}
  members: [],
};

const api = new Api(() => showAuth());
let live = null;
let config = null;

// ---------------------------------------------------------------- auth screen
function showAuth(message = "") {
  live?.stop();
  $("#app").hidden = true;
  $("#auth").hidden = false;
  $("#auth-error").textContent = message;
}

function selectTab(signup) {
  $("#tab-signin").setAttribute("aria-selected", String(!signup));
  $("#tab-signup").setAttribute("aria-selected", String(signup));
  $("#signin-form").hidden = signup;
  $("#signup-form").hidden = !signup;
  $("#auth-error").textContent = "";
}

function problemText(err) {
  if (!(err instanceof ApiError)) return String(err);
  const fields = err.problem.errors?.map((e) => `${e.field}: ${e.message}`).join("; ");
  return fields || err.problem.detail || err.message;
}

async function onSignIn(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  try {
    await api.signIn(form.get("email"), form.get("password"));
    await enterApp();
  } catch (err) {
    $("#auth-error").textContent = problemText(err);
  }
}

async function onSignUp(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const fields = { fullname: form.get("fullname"), email: form.get("email"), password: form.get("password") };
  if (form.get("workspace")) fields.workspace = form.get("workspace");
  try {
    await api.signUp(fields);
    await enterApp();
  } catch (err) {
    $("#auth-error").textContent = problemText(err);
  }
}

// ---------------------------------------------------------------- app shell
async function enterApp() {
  state.me = api.user;
  $("#auth").hidden = true;
  $("#app").hidden = false;
  $("#me-name").textContent = state.me.fullname;
  config ??= await api.get("/api/client-config");
  live?.stop();
  live = new Live(api, config, onEvent, onLiveState);
  window.fechatter = { live, state }; // for debugging and the browser tests
  live.start();
  await loadWorkspaces();
}

function onLiveState(status) {
  $("#banner").hidden = status === "online";
  if (status === "online") document.body.dataset.live = "online";
  else delete document.body.dataset.live;
}

async function loadWorkspaces(selectId) {
  state.workspaces = await api.get("/api/workspaces");
  const select = $("#workspace-select");
  select.replaceChildren(...state.workspaces.map((w) => el("option", { value: w.id, text: w.name })));
  if (!state.workspaces.length) {
    state.wsId = null;
    renderChatList();
    showEmpty("You are not in a workspace yet.", "Create one from the ⋯ menu, or ask a colleague to invite your email.");
    return;
  }
  const stored = Number(localStorage.getItem("fechatter.workspace"));
  const wanted = selectId ?? (state.workspaces.some((w) => w.id === stored) ? stored : state.workspaces[0].id);
  select.value = String(wanted);
  await openWorkspace(wanted);
}

async function openWorkspace(wsId) {
  state.wsId = wsId;
  localStorage.setItem("fechatter.workspace", String(wsId));
  state.current = null;
  const [members, chats, online] = await Promise.all([
    api.get(`/api/workspaces/${wsId}/members`),
    api.get(`/api/chats?workspace_id=${wsId}`),
    api.get(`/api/online-users?workspace_id=${wsId}`),
  ]);
  state.users = new Map(members.map((m) => [m.user.id, { ...m.user, role: m.role }]));
  state.online = new Set(online.user_ids);
  state.chats = new Map(chats.map((c) => [c.id, c]));
  await Promise.all(chats.filter(needsPeers).map(learnPeer));
  renderChatList();
  const last = Number(localStorage.getItem(`fechatter.chat.${wsId}`));
  if (state.chats.has(last) && window.innerWidth > 760) await openChat(last);
  else showEmpty("Pick a chat on the left, or start a new one.", "Messages arrive live; if the connection drops, nothing is lost.");
}

// Single and unnamed Group chats are named after the people in them.
async function learnPeer(chat) {
  if (state.singlePeer.has(chat.id) || state.groupNames.has(chat.id)) return;
  const members = await api.get(`/api/chats/${chat.id}/members`).catch(() => []);
  const others = members.filter((m) => m.user_id !== state.me.id);
  if (chat.type === "Single" && others.length) state.singlePeer.set(chat.id, others[0].user_id);
  else state.groupNames.set(chat.id, others.map((m) => m.fullname.split(" ")[0]));
}

const needsPeers = (c) => c.type === "Single" || (c.type === "Group" && !c.name);

function chatName(chat) {
  if (chat.type === "Single") {
    const peer = state.users.get(state.singlePeer.get(chat.id));
    return peer ? peer.fullname : "Direct message";
  }
  if (chat.name) return chat.name;
  const names = state.groupNames.get(chat.id);
  return names?.length ? names.join(", ") : "Group";
}

function glyph(chat) {
  if (chat.type === "PublicChannel") return "#";
  if (chat.type === "PrivateChannel") return icon("lock", "private channel");
  if (chat.type === "Group") return icon("people", "group");
  const online = state.online.has(state.singlePeer.get(chat.id));
  return el("span", { class: `dot${online ? " online" : ""}`, title: online ? "online" : "offline" });
}

function activity(chat) {
  return chat.last_message?.created_at ?? chat.created_at;
}

function renderChatList() {
  const chats = [...state.chats.values()].sort((a, b) => (activity(a) < activity(b) ? 1 : -1));
  $("#chat-list").replaceChildren(
    ...chats.map((chat) => {
      const preview = chat.last_message ? previewOf(chat.last_message) : "No messages yet";
      return el(
        "button",
        {
          class: `chat-item${chat.unread_count ? " unread" : ""}`,
          type: "button",
          "data-chat": chat.id,
          "aria-current": chat.id === state.current ? "true" : "false",
          onclick: () => openChat(chat.id),
        },
        el("span", { class: "glyph" }, glyph(chat)),
        el("span", { class: "name", text: chatName(chat) }),
        chat.unread_count ? el("span", { class: "badge", text: String(chat.unread_count) }) : el("span"),
        el("span", { class: "preview", text: preview }),
      );
    }),
  );
}

function previewOf(message) {
  const who = message.sender_id === state.me.id ? "You" : state.users.get(message.sender_id)?.fullname ?? "Someone";
  const text = message.content || (message.files?.length ? "[attachment]" : "");
  return `${who}: ${text}`;
}

function showEmpty(title, text) {
  state.current = null;
  $("#app").classList.remove("in-chat");
  $("#chat-title").textContent = "Fechatter";
  $("#chat-subtitle").textContent = "";
  $("#composer").hidden = true;
  $("#members-toggle").hidden = true;
  $("#members-panel").hidden = true;
  $("#typing").textContent = "";
  $("#messages").replaceChildren(el("div", { class: "empty" }, el("h3", { text: title }), el("p", { text: text })));
}

// ---------------------------------------------------------------- a chat
async function openChat(chatId) {
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

function renderHeader() {
  const chat = state.chats.get(state.current);
  if (!chat) return;
  $("#chat-title").textContent = (chat.type === "PublicChannel" ? "# " : "") + chatName(chat);
  const kind = { Single: "Direct message", Group: "Group", PrivateChannel: "Private channel", PublicChannel: "Public channel" }[chat.type];
  const parts = [kind, `${chat.members_count} member${chat.members_count === 1 ? "" : "s"}`];
  if (chat.type === "Single") parts[1] = state.online.has(state.singlePeer.get(chat.id)) ? "online" : "offline";
  if (chat.description) parts.push(chat.description);
  $("#chat-subtitle").textContent = parts.join(" · ");
}

function addMessages(chatId, messages) {
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

function dayOf(iso) {
  return new Date(iso).toLocaleDateString(undefined, { weekday: "long", month: "short", day: "numeric" });
}

function timeOf(iso) {
  return new Date(iso).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

function renderMessages(stickToBottom) {
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

async function onScroll() {
  const container = $("#messages");
  const box = state.messages.get(state.current);
  if (!box || !box.hasMore || box.loading || container.scrollTop > 60) return;
  const oldest = box.items[0];
  const height = container.scrollHeight;
  await loadPage(state.current, oldest?.id);
  renderMessages(false);
  container.scrollTop = container.scrollHeight - height + container.scrollTop;
}

// ---------------------------------------------------------------- sending
function onComposerKey(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("#composer").requestSubmit();
  }
}

let lastTyping = 0;
function onInput() {
  const input = $("#input");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
  if (state.current && input.value.trim() && Date.now() - lastTyping > 3000) {
    lastTyping = Date.now();
    api.post(`/api/chats/${state.current}/typing`).catch(() => {});
  }
}

function onSend(event) {
  event.preventDefault();
  const input = $("#input");
  const content = input.value.trim();
  if (!content || !state.current) return;
  input.value = "";
  input.style.height = "auto";
  lastTyping = 0;
  const clientId = crypto.randomUUID();
  state.pending.set(clientId, { chatId: state.current, content, failed: false });
  renderMessages(true);
  deliver(clientId);
}

async function deliver(clientId) {
  const p = state.pending.get(clientId);
  if (!p) return;
  p.failed = false;
  if (p.chatId === state.current) renderMessages(true);
  try {
    const message = await api.post(`/api/chats/${p.chatId}/messages`, { content: p.content, client_id: clientId });
    settle(message);
  } catch {
    p.failed = true;
    if (p.chatId === state.current) renderMessages(true);
  }
}

// A message of ours came back (as the POST's answer or as the live event): drop its bubble.
function settle(message) {
  const clientId = message.client_id;
  const mine = clientId && state.pending.has(clientId);
  if (mine) state.pending.delete(clientId);
  onMessage(message);
}

// ---------------------------------------------------------------- live events
function onMessage(m) {
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
function markRead() {
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

async function onEvent(name, data) {
  switch (name) {
    case "message.created":
      if (data.client_id && state.pending.has(data.client_id) && data.sender_id === state.me.id) settle(data);
      else onMessage(data);
      break;
    case "chat.created":
    case "chat.updated":
      if (!state.workspaces.some((w) => w.id === data.workspace_id)) {
        // Someone added us to a workspace and a chat in it: show it (switch if we had none).
        await loadWorkspaces(state.wsId ?? data.workspace_id);
      } else if (data.workspace_id === state.wsId) {
        const known = state.chats.get(data.id);
        // The event carries the author's view of counts; keep ours.
        state.chats.set(data.id, known ? { ...data, unread_count: known.unread_count } : { ...data, unread_count: 0 });
        if (needsPeers(data)) await learnPeer(data);
        if (name === "chat.created") await refreshOnline(); // presence of new chat partners
        renderChatList();
        if (data.id === state.current) renderHeader();
      }
      break;
    case "chat.deleted":
      dropChat(data.id);
      break;
    case "chat.member_added":
      if (data.user_ids.includes(state.me.id)) {
        const chat = await api.get(`/api/chats/${data.chat_id}`).catch(() => null);
        if (chat && chat.workspace_id === state.wsId) {
          state.chats.set(chat.id, chat);
          if (needsPeers(chat)) await learnPeer(chat);
          renderChatList();
        }
      } else if (state.chats.has(data.chat_id)) {
        state.chats.get(data.chat_id).members_count += data.user_ids.length;
        if (data.chat_id === state.current) { renderHeader(); if (!$("#members-panel").hidden) renderMembers(); }
      }
      break;
    case "chat.member_removed":
      if (data.user_id === state.me.id) dropChat(data.chat_id);
      else if (state.chats.has(data.chat_id)) {
        state.chats.get(data.chat_id).members_count -= 1;
        if (data.chat_id === state.current) { renderHeader(); if (!$("#members-panel").hidden) renderMembers(); }
      }
      break;
    case "typing": {
      const map = state.typing.get(data.chat_id) ?? new Map();
      map.set(data.user_id, Date.now() + 10_000);
      state.typing.set(data.chat_id, map);
      renderTyping();
      setTimeout(renderTyping, 10_100);
      break;
    }
    case "read":
      if (data.user_id === state.me.id && state.chats.has(data.chat_id)) {
        const fresh = await api.get(`/api/chats/${data.chat_id}`).catch(() => null);
        if (fresh) { state.chats.get(data.chat_id).unread_count = fresh.unread_count; renderChatList(); }
      }
      break;
    case "presence":
      if (data.status === "online") state.online.add(data.user_id);
      else state.online.delete(data.user_id);
      renderChatList();
      renderHeader();
      break;
    case "resync":
      await resync();
      break;
    default:
      break;
  }
}

async function refreshOnline() {
  if (!state.wsId) return;
  const online = await api.get(`/api/online-users?workspace_id=${state.wsId}`).catch(() => null);
  if (online) state.online = new Set(online.user_ids);
}

function dropChat(chatId) {
  state.chats.delete(chatId);
  state.messages.delete(chatId);
  if (state.current === chatId) showEmpty("This chat is no longer available.", "It was deleted, or you left it.");
  renderChatList();
}

// The server could not replay what we missed: refetch quietly, merging what we have.
async function resync() {
  if (!state.wsId) return;
  const [chats, online] = await Promise.all([
    api.get(`/api/chats?workspace_id=${state.wsId}`),
    api.get(`/api/online-users?workspace_id=${state.wsId}`),
  ]);
  state.chats = new Map(chats.map((c) => [c.id, c]));
  state.online = new Set(online.user_ids);
  await Promise.all(chats.filter(needsPeers).map(learnPeer));
  for (const chatId of [...state.messages.keys()]) {
    if (!state.chats.has(chatId)) { state.messages.delete(chatId); continue; }
    const box = state.messages.get(chatId);
    let after = box.items[box.items.length - 1]?.id;
    for (;;) {
      const page = after
        ? await api.get(`/api/chats/${chatId}/messages?limit=200&after=${after}`)
        : await api.get(`/api/chats/${chatId}/messages?limit=50`);
      addMessages(chatId, page.items);
      for (const m of page.items) if (m.client_id) state.pending.delete(m.client_id);
      if (!after || !page.has_more) break;
      after = page.items[page.items.length - 1].id;
    }
  }
  renderChatList();
  if (state.current && state.chats.has(state.current)) { renderHeader(); renderMessages(false); }
  else if (state.current) showEmpty("This chat is no longer available.", "It was deleted, or you left it.");
}

function renderTyping() {
  const map = state.typing.get(state.current);
  const now = Date.now();
  const names = map
    ? [...map.entries()].filter(([uid, until]) => until > now && uid !== state.me.id).map(([uid]) => state.users.get(uid)?.fullname ?? "Someone")
    : [];
  $("#typing").textContent = !names.length ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
}

// ---------------------------------------------------------------- members panel
async function renderMembers() {
  const panel = $("#members-panel");
  const chat = state.chats.get(state.current);
  if (!chat) { panel.hidden = true; return; }
  const members = await api.get(`/api/chats/${chat.id}/members`).catch(() => []);
  state.members = members;
  const myRole = members.find((m) => m.user_id === state.me.id)?.role;
  const manages = myRole === "owner" || myRole === "admin";
  panel.replaceChildren(
    el("h3", { text: `Members (${members.length})` }),
    ...members.map((m) =>
      el(
        "div",
        { class: "member" },
        el("span", { class: `dot${state.online.has(m.user_id) ? " online" : ""}` }),
        el("span", { class: "who", text: m.user_id === state.me.id ? `${m.fullname} (you)` : m.fullname }),
        el("span", { class: "role", text: m.role }),
        manages && m.user_id !== state.me.id && m.role !== "owner" && chat.type !== "Single"
          ? el("button", { type: "button", class: "danger", text: "Remove", onclick: () => removeMember(chat.id, m.user_id) })
          : null,
      ),
    ),
    el(
      "div",
      { class: "panel-actions" },
      chat.type !== "Single" && (manages || chat.type === "Group")
        ? el("button", { type: "button", text: "Add people", onclick: () => addPeopleDialog(chat) })
        : null,
      chat.type !== "Single"
        ? el("button", { type: "button", class: "danger", text: "Leave chat", onclick: () => removeMember(chat.id, state.me.id) })
        : null,
    ),
  );
  panel.hidden = false;
}

async function removeMember(chatId, userId) {
  try {
    await api.del(`/api/chats/${chatId}/members/${userId}`);
    if (userId === state.me.id) dropChat(chatId);
    else await renderMembers();
  } catch (err) {
    alertDialog("Could not remove", problemText(err));
  }
}

// ---------------------------------------------------------------- dialogs
function openDialog(...content) {
  const dialog = $("#dialog");
  dialog.replaceChildren(...content);
  dialog.showModal();
  return dialog;
}

function closeDialog() { $("#dialog").close(); }

function alertDialog(title, text) {
  openDialog(el("h3", { text: title }), el("p", { text }), el("div", { class: "dialog-actions" }, el("button", { type: "button", text: "OK", onclick: closeDialog })));
}

function formDialog(title, fields, submitText, onSubmit) {
  const error = el("p", { class: "error", role: "alert" });
  const form = el(
    "form",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          await onSubmit(new FormData(form));
          closeDialog();
        } catch (err) {
          error.textContent = problemText(err);
        }
      },
    },
    el("h3", { text: title }),
    ...fields,
    error,
    el("div", { class: "dialog-actions" }, el("button", { type: "button", text: "Cancel", onclick: closeDialog }), el("button", { type: "submit", class: "primary", text: submitText })),
  );
  openDialog(form);
  form.querySelector("input, select")?.focus();
}

function peoplePicker(users) {
  if (!users.length) return el("p", { class: "hint", text: "Nobody else in this workspace yet — invite people from the ⋯ menu." });
  return el("div", { class: "picker" }, ...users.map((u) => el("label", {}, el("input", { type: "checkbox", name: "member", value: u.id }), u.fullname, el("span", { class: "hint", text: u.email }))));
}

function newChatDialog() {
  const others = [...state.users.values()].filter((u) => u.id !== state.me.id);
  const type = el("select", { name: "type" }, ...["Single", "Group", "PrivateChannel", "PublicChannel"].map((t) => el("option", { value: t, text: { Single: "Direct message", Group: "Group", PrivateChannel: "Private channel", PublicChannel: "Public channel" }[t] })));
  const nameLabel = el("label", {}, "Channel name", el("input", { name: "name", maxlength: "128" }));
  const sync = () => { nameLabel.hidden = !type.value.endsWith("Channel"); };
  type.addEventListener("change", sync);
  sync();
  formDialog("New chat", [el("label", {}, "Kind", type), nameLabel, el("label", {}, "People"), peoplePicker(others)], "Create", async (form) => {
    const body = { workspace_id: state.wsId, type: form.get("type"), members: form.getAll("member").map(Number) };
    if (body.type.endsWith("Channel")) body.name = form.get("name");
    const chat = await api.post("/api/chats", body);
    state.chats.set(chat.id, { ...chat, unread_count: state.chats.get(chat.id)?.unread_count ?? 0 });
    if (needsPeers(chat)) await learnPeer(chat);
    await refreshOnline();
    await openChat(chat.id);
  });
}

function addPeopleDialog(chat) {
  const inChat = new Set(state.members.map((m) => m.user_id));
  const candidates = [...state.users.values()].filter((u) => !inChat.has(u.id));
  formDialog(`Add people to ${chatName(chat)}`, [peoplePicker(candidates)], "Add", async (form) => {
    const ids = form.getAll("member").map(Number);
    if (ids.length) await api.post(`/api/chats/${chat.id}/members`, { user_ids: ids });
    await renderMembers();
  });
}

async function browseChannels() {
  const channels = await api.get(`/api/workspaces/${state.wsId}/chats?type=PublicChannel`);
  const rows = channels.map((c) =>
    el(
      "div",
      { class: "channel-row" },
      el("span", { text: `# ${c.name}` }),
      el("span", { class: "hint", text: `${c.members_count} members` }),
      state.chats.has(c.id)
        ? el("button", { type: "button", text: "Open", onclick: () => { closeDialog(); openChat(c.id); } })
        : el("button", {
            type: "button",
            class: "primary",
            text: "Join",
            onclick: async () => {
              await api.post(`/api/chats/${c.id}/join`);
              state.chats.set(c.id, await api.get(`/api/chats/${c.id}`));
              closeDialog();
              await openChat(c.id);
            },
          }),
    ),
  );
  openDialog(el("h3", { text: "Public channels" }), ...(rows.length ? rows : [el("p", { class: "hint", text: "No public channels yet." })]), el("div", { class: "dialog-actions" }, el("button", { type: "button", text: "Close", onclick: closeDialog })));
}

function workspaceMenu() {
  const ws = state.workspaces.find((w) => w.id === state.wsId);
  const me = state.users.get(state.me.id);
  const manages = me && (me.role === "owner" || me.role === "admin");
  openDialog(
    el("h3", { text: ws ? ws.name : "Workspaces" }),
    el(
      "div",
      { class: "panel-actions" },
      ws && manages ? el("button", { type: "button", text: "Invite people", onclick: inviteDialog }) : null,
      el("button", { type: "button", text: "New workspace", onclick: newWorkspaceDialog }),
    ),
    el("div", { class: "dialog-actions" }, el("button", { type: "button", text: "Close", onclick: closeDialog })),
  );
}

function inviteDialog() {
  formDialog(
    "Invite people",
    [
      el("label", {}, "Their email (they need an account)", el("input", { name: "email", type: "email", required: true })),
      el("label", {}, "Role", el("select", { name: "role" }, el("option", { value: "member", text: "Member" }), el("option", { value: "admin", text: "Admin" }))),
    ],
    "Invite",
    async (form) => {
      const member = await api.post(`/api/workspaces/${state.wsId}/members`, { email: form.get("email"), role: form.get("role") });
      state.users.set(member.user.id, { ...member.user, role: member.role });
    },
  );
}

function newWorkspaceDialog() {
  formDialog("New workspace", [el("label", {}, "Name", el("input", { name: "name", maxlength: "128", required: true }))], "Create", async (form) => {
    const ws = await api.post("/api/workspaces", { name: form.get("name") });
    await loadWorkspaces(ws.id);
  });
}

function settingsDialog() {
  const current = live?.transport ?? "sse";
  const option = (value, text) => el("label", {}, el("input", { type: "radio", name: "transport", value, checked: current === value }), ` ${text}`);
  formDialog("Settings", [el("p", { text: "Live updates travel over:" }), option("sse", "Server-Sent Events (EventSource)"), option("ws", "WebSocket")], "Save", async (form) => {
    live.setTransport(form.get("transport"));
  });
}

// ---------------------------------------------------------------- start
function wire() {
  $("#tab-signin").addEventListener("click", () => selectTab(false));
  $("#tab-signup").addEventListener("click", () => selectTab(true));
  $("#signin-form").addEventListener("submit", onSignIn);
  $("#signup-form").addEventListener("submit", onSignUp);
  $("#workspace-select").addEventListener("change", (e) => openWorkspace(Number(e.target.value)));
  $("#workspace-menu").addEventListener("click", workspaceMenu);
  $("#new-chat").addEventListener("click", () => (state.wsId ? newChatDialog() : workspaceMenu()));
  $("#browse-channels").addEventListener("click", () => state.wsId && browseChannels());
  $("#settings").addEventListener("click", settingsDialog);
  $("#sign-out").addEventListener("click", () => api.signOut());
  $("#members-toggle").addEventListener("click", () => {
    const panel = $("#members-panel");
    if (panel.hidden) renderMembers();
    else panel.hidden = true;
  });
  $("#back").addEventListener("click", () => { $("#app").classList.remove("in-chat"); state.current = null; renderChatList(); });
  $("#composer").addEventListener("submit", onSend);
  $("#input").addEventListener("keydown", onComposerKey);
  $("#input").addEventListener("input", onInput);
  $("#messages").addEventListener("scroll", onScroll);
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible" && state.current) markRead(); });
  setInterval(renderTyping, 2000);
}

wire();
if (api.session) enterApp().catch(() => showAuth());
else showAuth();
