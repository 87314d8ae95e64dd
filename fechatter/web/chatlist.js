// Workspaces and the chat list in the sidebar: names, glyphs, unread badges, previews.

import { $, el, icon } from "./dom.js";
import { avatar } from "./avatar.js";
import { plainText } from "./format.js";
import { api, state } from "./state.js";
import { learnStatuses, statusBadge } from "./status.js";
import { openChat } from "./timeline.js";
import { closeMembers } from "./members.js";
import { updateTitle } from "./notify.js";

export async function loadWorkspaces(selectId) {
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

export async function openWorkspace(wsId) {
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
  learnStatuses(online);
  state.chats = new Map(chats.map((c) => [c.id, c]));
  await Promise.all(chats.filter(needsPeers).map(learnPeer));
  renderChatList();
  const last = Number(localStorage.getItem(`fechatter.chat.${wsId}`));
  if (state.chats.has(last) && window.innerWidth > 760) await openChat(last);
  else showEmpty("Pick a chat on the left, or start a new one.", "Messages arrive live; if the connection drops, nothing is lost.");
}

// Single and unnamed Group chats are named after the people in them.
export async function learnPeer(chat) {
  if (state.singlePeer.has(chat.id) || state.groupNames.has(chat.id)) return;
  const members = await api.get(`/api/chats/${chat.id}/members`).catch(() => []);
  const others = members.filter((m) => m.user_id !== state.me.id);
  if (chat.type === "Single" && others.length) state.singlePeer.set(chat.id, others[0].user_id);
  else state.groupNames.set(chat.id, others.map((m) => m.fullname.split(" ")[0]));
}

export const needsPeers = (c) => c.type === "Single" || (c.type === "Group" && !c.name);

export function chatName(chat) {
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
  const peer = state.singlePeer.get(chat.id);
  if (peer === undefined) return avatar(0, "", { small: true });
  // Initials (or the uploaded picture) and the person's status as an icon and hidden words.
  return el("span", { class: "peer-glyph" }, avatar(peer, state.users.get(peer)?.fullname ?? "", { small: true }), statusBadge(peer, { short: true }));
}

function activity(chat) {
  return chat.last_message?.created_at ?? chat.created_at;
}

export function renderChatList() {
  updateTitle();
  const chats = [...state.chats.values()].sort((a, b) => (activity(a) < activity(b) ? 1 : -1));
  // Redrawn on every presence event and status change: keep a keyboard user's focus on the
  // same chat (the old button leaves the page).
  const focused = document.activeElement?.closest?.("#chat-list .chat-item")?.dataset.chat;
  $("#chat-list").replaceChildren(
    ...chats.map((chat) => {
      const preview = chat.last_message ? previewOf(chat.last_message) : "No messages yet";
      return el(
        "button",
        {
          // A muted chat keeps its count but loses the emphasis (no bold name, quiet badge).
          class: `chat-item${chat.unread_count && !chat.muted ? " unread" : ""}${chat.muted ? " muted" : ""}`,
          type: "button",
          "data-chat": chat.id,
          "aria-current": chat.id === state.current ? "true" : "false",
          onclick: () => openChat(chat.id),
        },
        el("span", { class: "glyph" }, glyph(chat)),
        el("span", { class: "name", text: chatName(chat) }),
        el(
          "span",
          { class: "counts" },
          chat.mention_count ? el("span", { class: "mention-badge", text: `@${chat.mention_count}`, title: "mentions of you", "aria-label": `${chat.mention_count} mention${chat.mention_count === 1 ? "" : "s"} of you` }) : null,
          chat.muted ? el("span", { class: "muted-icon", title: "muted", "aria-label": "muted", text: "🔕" }) : null,
          chat.unread_count ? el("span", { class: chat.muted ? "badge quiet" : "badge", text: String(chat.unread_count) }) : null,
        ),
        el("span", { class: "preview", text: preview }),
      );
    }),
  );
  if (focused) $(`#chat-list .chat-item[data-chat="${focused}"]`)?.focus();
}

function previewOf(message) {
  const who = message.sender_id === state.me.id ? "You" : state.users.get(message.sender_id)?.fullname ?? "Someone";
  const content = plainText(message.content, (id) => state.users.get(id)?.fullname ?? null);
  const text = message.deleted ? "This message was deleted" : content || (message.files?.length ? "[attachment]" : "");
  return `${who}: ${text}`;
}

export function showEmpty(title, text) {
  state.current = null;
  $("#app").classList.remove("in-chat");
  $("#chat-title").textContent = "Fechatter";
  $("#chat-subtitle").textContent = "";
  $("#composer").hidden = true;
  $("#members-toggle").hidden = true;
  $("#mute-toggle").hidden = true;
  closeMembers();
  $("#typing").textContent = "";
  $("#messages").replaceChildren(el("div", { class: "empty" }, el("h2", { text: title }), el("p", { text: text })));
}

export async function refreshOnline() {
  if (!state.wsId) return;
  const online = await api.get(`/api/online-users?workspace_id=${state.wsId}`).catch(() => null);
  if (online) { state.online = new Set(online.user_ids); learnStatuses(online); }
}

export function dropChat(chatId) {
  state.chats.delete(chatId);
  state.messages.delete(chatId);
  if (state.current === chatId) showEmpty("This chat is no longer available.", "It was deleted, or you left it.");
  renderChatList();
}
