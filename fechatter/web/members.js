// The chat's members panel: who is in it, their roles, add people, remove, leave.

import { $, el, problemText } from "./dom.js";
import { api, state } from "./state.js";
import { chatName, dropChat } from "./chatlist.js";
import { alertDialog, formDialog, peoplePicker } from "./dialogs.js";
import { nameButton, statusBadge } from "./status.js";

export async function renderMembers() {
  const panel = $("#members-panel");
  const chat = state.chats.get(state.current);
  if (!chat) { panel.hidden = true; return; }
  const members = await api.get(`/api/chats/${chat.id}/members`).catch(() => []);
  state.members = members;
  state.chatMembers.set(chat.id, members);
  const myRole = members.find((m) => m.user_id === state.me.id)?.role;
  const manages = myRole === "owner" || myRole === "admin";
  panel.replaceChildren(
    el("h3", { text: `Members (${members.length})` }),
    ...members.map((m) =>
      el(
        "div",
        { class: "member" },
        el("span", { class: "who" }, nameButton(m.user_id, m.user_id === state.me.id ? `${m.fullname} (you)` : m.fullname)),
        statusBadge(m.user_id),
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

function addPeopleDialog(chat) {
  const inChat = new Set(state.members.map((m) => m.user_id));
  const candidates = [...state.users.values()].filter((u) => !inChat.has(u.id));
  formDialog(`Add people to ${chatName(chat)}`, [peoplePicker(candidates)], "Add", async (form) => {
    const ids = form.getAll("member").map(Number);
    if (ids.length) await api.post(`/api/chats/${chat.id}/members`, { user_ids: ids });
    await renderMembers();
  });
}

export function wireMembers() {
  $("#members-toggle").addEventListener("click", () => {
    const panel = $("#members-panel");
    if (panel.hidden) { $("#thread-panel").hidden = true; state.thread = null; renderMembers(); }
    else panel.hidden = true;
  });
}
