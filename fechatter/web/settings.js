// Sidebar dialogs: new chat, browse channels, the workspace menu (invite, new workspace) and
// Settings (live transport, profile picture).

import { $, el } from "./dom.js";
import { api, session, state } from "./state.js";
import { learnPeer, loadWorkspaces, needsPeers, openWorkspace, refreshOnline } from "./chatlist.js";
import { closeDialog, formDialog, openDialog, peoplePicker } from "./dialogs.js";
import { inviteLinkDialog } from "./invites.js";
import { openChat } from "./timeline.js";
import { setAvatar } from "./files.js";

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
      ws && manages ? el("button", { type: "button", text: "Invite people", onclick: inviteLinkDialog }) : null,
      ws && manages ? el("button", { type: "button", text: "Add by email", onclick: inviteDialog }) : null,
      el("button", { type: "button", text: "New workspace", onclick: newWorkspaceDialog }),
    ),
    el("div", { class: "dialog-actions" }, el("button", { type: "button", text: "Close", onclick: closeDialog })),
  );
}

function inviteDialog() {
  formDialog(
    "Add by email",
    [
      el("label", {}, "Their email (they need an account)", el("input", { name: "email", type: "email", required: true })),
      el("label", {}, "Role", el("select", { name: "role" }, el("option", { value: "member", text: "Member" }), el("option", { value: "admin", text: "Admin" }))),
    ],
    "Add",
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
  const current = session.live?.transport ?? "sse";
  const option = (value, text) => el("label", {}, el("input", { type: "radio", name: "transport", value, checked: current === value }), ` ${text}`);
  const picture = el("label", {}, "Profile picture ", el("input", { type: "file", name: "avatar", accept: "image/png,image/jpeg,image/gif,image/webp" }));
  formDialog("Settings", [el("p", { text: "Live updates travel over:" }), option("sse", "Server-Sent Events (EventSource)"), option("ws", "WebSocket"), picture], "Save", async (form) => {
    const file = form.get("avatar");
    if (file instanceof File && file.size > 0) await setAvatar(file);
    session.live.setTransport(form.get("transport"));
  });
}

export function wireSettings() {
  $("#workspace-select").addEventListener("change", (e) => openWorkspace(Number(e.target.value)));
  $("#workspace-menu").addEventListener("click", workspaceMenu);
  $("#new-chat").addEventListener("click", () => (state.wsId ? newChatDialog() : workspaceMenu()));
  $("#browse-channels").addEventListener("click", () => state.wsId && browseChannels());
  $("#settings").addEventListener("click", settingsDialog);
}
