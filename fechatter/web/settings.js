// Sidebar dialogs: new chat, browse channels, the workspace menu (invite, new workspace) and
// Settings (theme, notifications, live transport, profile picture, name, password).

import { $, el, problemText } from "./dom.js";
import { applyTheme, themeChoice } from "./theme.js";
import { askNotificationPermission, notificationPermission } from "./notify.js";
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
    // Closed before the chat opens: the modal dialog makes the page inert while it is open,
    // and opening waits on the chat's first page and members, so a person (or a test) typing
    // into the composer the chat shows at once would type into nothing.
    closeDialog();
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
  openDialog(el("h2", { text: "Public channels" }), ...(rows.length ? rows : [el("p", { class: "hint", text: "No public channels yet." })]), el("div", { class: "dialog-actions" }, el("button", { type: "button", text: "Close", onclick: closeDialog })));
}

function workspaceMenu() {
  const ws = state.workspaces.find((w) => w.id === state.wsId);
  const me = state.users.get(state.me.id);
  const manages = me && (me.role === "owner" || me.role === "admin");
  openDialog(
    el("h2", { text: ws ? ws.name : "Workspaces" }),
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
    closeDialog(); // before loading it, as for a new chat: the page is inert while it is open
    await loadWorkspaces(ws.id);
  });
}

// Settings: preferences (theme, desktop notifications, live transport; saved with the first
// form's Save), then the profile (name) and the password, each its own form with errors inline
// next to the field the server names (RFC 9457 `errors[].field`).
function settingsDialog() {
  const current = session.live?.transport ?? "sse";
  const theme = themeChoice();
  const choice = (name, value, text, checked) => el("label", { class: "choice" }, el("input", { type: "radio", name, value, checked }), text);
  const themes = el(
    "fieldset",
    {},
    el("legend", { text: "Theme" }),
    choice("theme", "system", "System (follows your device)", theme === "system"),
    choice("theme", "light", "Light", theme === "light"),
    choice("theme", "dark", "Dark", theme === "dark"),
  );
  themes.addEventListener("change", (e) => { if (e.target.name === "theme") applyTheme(e.target.value); }); // preview at once
  const pictureError = el("p", { class: "error", role: "alert" });
  const prefs = el(
    "form",
    {
      id: "prefs-form",
      onsubmit: async (event) => {
        event.preventDefault();
        const form = new FormData(prefs);
        applyTheme(form.get("theme"));
        if (session.live && form.get("transport") !== session.live.transport) session.live.setTransport(form.get("transport"));
        const file = form.get("avatar");
        if (file instanceof File && file.size > 0) {
          pictureError.textContent = "";
          try {
            await setAvatar(file);
          } catch (err) {
            pictureError.textContent = problemText(err);
            return; // the dialog stays open with the reason
          }
        }
        closeDialog();
      },
    },
    themes,
    el(
      "fieldset",
      {},
      el("legend", { text: "Profile picture" }),
      el("label", { class: "choice" }, "Upload an image ", el("input", { type: "file", name: "avatar", accept: "image/png,image/jpeg,image/gif,image/webp" })),
      pictureError,
    ),
    notificationsFieldset(),
    el(
      "fieldset",
      {},
      el("legend", { text: "Live updates travel over" }),
      choice("transport", "sse", "Server-Sent Events (EventSource)", current === "sse"),
      choice("transport", "ws", "WebSocket", current === "ws"),
    ),
    el("div", { class: "settings-actions" }, el("button", { type: "submit", class: "primary", text: "Save" })),
  );
  openDialog(
    el("h2", { text: "Settings" }),
    prefs,
    profileForm(),
    passwordForm(),
    el("div", { class: "dialog-actions" }, el("button", { type: "button", text: "Close", onclick: closeDialog })),
  );
  prefs.querySelector("input:checked")?.focus();
}

function notificationsFieldset() {
  const status = el("p", { class: "hint", id: "notify-status", role: "status" });
  const button = el("button", { type: "button", id: "notify-enable", text: "Turn on desktop notifications" });
  const show = () => {
    const permission = notificationPermission();
    status.textContent = {
      granted: "On: direct messages and mentions of you, while this tab is in the background (not for muted chats, nor while you are busy).",
      denied: "Blocked in this browser's site settings; allow notifications for this site there to turn them on.",
      default: "Off. Turn them on to hear about direct messages and mentions while this tab is in the background.",
      unsupported: "This browser cannot show desktop notifications.",
    }[permission];
    button.hidden = permission !== "default";
  };
  // Asked only here, on this click: never on load.
  button.addEventListener("click", async () => {
    await askNotificationPermission().catch(() => {});
    show();
  });
  show();
  return el("fieldset", {}, el("legend", { text: "Desktop notifications" }), status, button);
}

// A field with its own error line: the input is described by the error (read with it) and
// marked invalid while it shows one.
function field(labelText, input) {
  const error = el("span", { class: "field-error", id: `${input.id}-error` });
  input.setAttribute("aria-describedby", error.id);
  return { node: el("div", {}, el("label", {}, labelText, input), error), input, error };
}

// Show a refusal next to the fields it names; anything unnamed goes to `general`.
function showProblem(err, fields, general) {
  const named = err?.problem?.errors ?? [];
  let placed = false;
  for (const e of named) {
    const f = fields[e.field];
    if (!f) continue;
    f.error.textContent = `${f.label} ${e.message}`;
    f.input.setAttribute("aria-invalid", "true");
    if (!placed) f.input.focus();
    placed = true;
  }
  if (!placed) general.textContent = problemText(err);
}

function clearProblems(fields, general, saved) {
  for (const f of Object.values(fields)) { f.error.textContent = ""; f.input.removeAttribute("aria-invalid"); }
  general.textContent = "";
  saved.textContent = "";
}

function profileForm() {
  const name = field("Your name", el("input", { id: "profile-fullname", name: "fullname", maxlength: "64", autocomplete: "name", required: true, value: state.me?.fullname ?? "" }));
  const fields = { fullname: { ...name, label: "Name" } };
  const general = el("p", { class: "error", role: "alert" });
  const saved = el("p", { class: "saved", role: "status" });
  const form = el(
    "form",
    {
      id: "profile-form",
      onsubmit: async (event) => {
        event.preventDefault();
        clearProblems(fields, general, saved);
        try {
          const user = await api.call("PATCH", "/api/users/me", { fullname: name.input.value });
          adoptProfile(user);
          saved.textContent = "Name saved.";
        } catch (err) {
          showProblem(err, fields, general);
        }
      },
    },
    el("fieldset", {}, el("legend", { text: "Profile" }), name.node, general, saved, el("div", { class: "settings-actions" }, el("button", { type: "submit", text: "Save name" }))),
  );
  return form;
}

function passwordForm() {
  const current = field("Current password", el("input", { id: "password-current", name: "current_password", type: "password", autocomplete: "current-password", required: true }));
  const fresh = field("New password (at least 8 characters)", el("input", { id: "password-new", name: "password", type: "password", autocomplete: "new-password", minlength: "8", maxlength: "128", required: true }));
  const fields = { current_password: { ...current, label: "Current password" }, password: { ...fresh, label: "New password" } };
  const general = el("p", { class: "error", role: "alert" });
  const saved = el("p", { class: "saved", role: "status" });
  const form = el(
    "form",
    {
      id: "password-form",
      onsubmit: async (event) => {
        event.preventDefault();
        clearProblems(fields, general, saved);
        try {
          const user = await api.call("PATCH", "/api/users/me", { password: fresh.input.value, current_password: current.input.value });
          // The change voids every access token issued before it, ours too: take a fresh one
          // now (the live stream reconnects with it), as the API describes.
          await api.refresh();
          adoptProfile(user);
          form.reset();
          saved.textContent = "Password changed. Your other sessions were signed out.";
        } catch (err) {
          showProblem(err, fields, general);
        }
      },
    },
    el("fieldset", {}, el("legend", { text: "Password" }), current.node, fresh.node, general, saved, el("div", { class: "settings-actions" }, el("button", { type: "submit", text: "Change password" }))),
  );
  return form;
}

// The server answered our User: show the new name everywhere we show ours.
function adoptProfile(user) {
  state.me = { ...state.me, ...user };
  if (api.session) {
    api.session.user = { ...api.session.user, ...user };
    localStorage.setItem("fechatter.session", JSON.stringify(api.session));
  }
  const known = state.users.get(user.id);
  if (known) state.users.set(user.id, { ...known, fullname: user.fullname });
  $("#me-name").textContent = user.fullname;
}

export function wireSettings() {
  $("#workspace-select").addEventListener("change", (e) => openWorkspace(Number(e.target.value)));
  $("#workspace-menu").addEventListener("click", workspaceMenu);
  $("#new-chat").addEventListener("click", () => (state.wsId ? newChatDialog() : workspaceMenu()));
  $("#browse-channels").addEventListener("click", () => state.wsId && browseChannels());
  $("#settings").addEventListener("click", settingsDialog);
}
