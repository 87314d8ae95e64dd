// The chat's members panel: who is in it, their roles, add people, remove, leave.

import { $, el, problemText } from "./dom.js";
import { api, state } from "./state.js";
import { chatName, dropChat } from "./chatlist.js";
import { alertDialog, formDialog, peoplePicker } from "./dialogs.js";
import { avatar } from "./avatar.js";
import { nameButton, statusBadge } from "./status.js";

export async function renderMembers() {
  const panel = $("#members-panel");
  const chat = state.chats.get(state.current);
  if (!chat) { closeMembers(); return; }
  const members = await api.get(`/api/chats/${chat.id}/members`).catch(() => []);
  state.members = members;
  state.chatMembers.set(chat.id, members);
  const myRole = members.find((m) => m.user_id === state.me.id)?.role;
  const manages = myRole === "owner" || myRole === "admin";
  const keep = focusedControl(panel);
  panel.replaceChildren(
    el(
      "div",
      { class: "members-head" },
      el("h2", { id: "members-title", text: `Members (${members.length})` }),
      el("button", { type: "button", id: "members-close", class: "icon", "aria-label": "Close members", title: "Close (Esc)", text: "×", onclick: () => closeMembers() }),
    ),
    el(
      "ul",
      { class: "member-list", "aria-labelledby": "members-title" },
      ...members.map((m) =>
        el(
          "li",
          { class: "member", "data-user": m.user_id },
          avatar(m.user_id, m.fullname, { small: true }),
          el("span", { class: "who" }, nameButton(m.user_id, m.user_id === state.me.id ? `${m.fullname} (you)` : m.fullname)),
          statusBadge(m.user_id),
          el("span", { class: "role", text: m.role }),
          manages && m.user_id !== state.me.id && m.role !== "owner" && chat.type !== "Single"
            ? el("button", { type: "button", class: "danger", text: "Remove", "aria-label": `Remove ${m.fullname} from the chat`, onclick: () => removeMember(chat.id, m.user_id) })
            : null,
        ),
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
  $("#members-toggle").setAttribute("aria-expanded", "true");
  if (keep) keep()?.focus();
}

// The panel is redrawn on every presence event, status change and membership change: a
// keyboard user's focus stays on the same control (a member's name or Remove button, found
// again by the member; × by its id; Add people / Leave chat by their place), not on <body>.
function focusedControl(panel) {
  const active = document.activeElement;
  if (!(active instanceof HTMLElement) || !panel.contains(active)) return null;
  const row = active.closest("li.member");
  if (row) {
    const index = [...row.querySelectorAll("button")].indexOf(active);
    const user = row.dataset.user;
    return () => panel.querySelectorAll(`li.member[data-user="${user}"] button`)[index];
  }
  if (active.id) return () => document.getElementById(active.id);
  const index = [...panel.querySelectorAll(".panel-actions button")].indexOf(active);
  return index < 0 ? null : () => panel.querySelectorAll(".panel-actions button")[index];
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

function addPeopleDialog(chat) {
  const inChat = new Set(state.members.map((m) => m.user_id));
  const candidates = [...state.users.values()].filter((u) => !inChat.has(u.id));
  formDialog(`Add people to ${chatName(chat)}`, [peoplePicker(candidates)], "Add", async (form) => {
    const ids = form.getAll("member").map(Number);
    if (ids.length) await api.post(`/api/chats/${chat.id}/members`, { user_ids: ids });
    await renderMembers();
  });
}

// Phone widths (and 200 % zoom): the panel overlays the conversation below its header, so it
// is closed by its own toggle, its × button, Escape, a tap outside it, or Back (the browser's,
// through a history entry pushed on opening, and the header's ← button).
const narrow = () => window.matchMedia("(max-width: 760px)").matches;
let historyPushed = false;

export function membersOpen() {
  return !$("#members-panel").hidden;
}

export async function openMembers() {
  $("#thread-panel").hidden = true;
  state.thread = null;
  const header = $("#chat-header").getBoundingClientRect();
  $("#members-panel").style.setProperty("--panel-top", `${Math.max(0, header.bottom)}px`);
  if (narrow() && !historyPushed) {
    history.pushState({ fechatterPanel: "members" }, "");
    historyPushed = true;
  }
  await renderMembers();
  if (membersOpen()) $("#members-close")?.focus();
}

// fromHistory: called for the Back that already popped our history entry.
export function closeMembers({ fromHistory = false } = {}) {
  const panel = $("#members-panel");
  const wasOpen = !panel.hidden;
  const hadFocus = panel.contains(document.activeElement);
  panel.hidden = true;
  $("#members-toggle").setAttribute("aria-expanded", "false");
  if (historyPushed) {
    historyPushed = false;
    if (!fromHistory) history.back();
  }
  if (wasOpen && hadFocus && !$("#members-toggle").hidden) $("#members-toggle").focus();
}

export function wireMembers() {
  $("#members-toggle").addEventListener("click", () => (membersOpen() ? closeMembers() : openMembers()));
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || event.defaultPrevented || !membersOpen() || $("#dialog").open) return;
    event.preventDefault();
    closeMembers();
  });
  // A tap outside the overlay closes it (not a tap in a dialog it opened, nor on its toggle).
  document.addEventListener("click", (event) => {
    if (!membersOpen() || !narrow() || $("#dialog").open) return;
    const t = event.target;
    if (!(t instanceof Node) || !t.isConnected) return;
    if ($("#members-panel").contains(t) || $("#members-toggle").contains(t) || $("#dialog").contains(t)) return;
    closeMembers();
  });
  window.addEventListener("popstate", () => {
    if (historyPushed) closeMembers({ fromHistory: true });
  });
}
