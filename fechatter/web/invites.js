// Invitations and workspace events (SPEC §7): the "Invite people" dialog (a link to copy), the
// landing page at /invite/<token> (who invites you where; sign up or sign in and join), and the
// live workspace.* events that keep the workspace list, members and chats current.

import { $, el, problemText } from "./dom.js";
import { closeDialog, formDialog, openDialog } from "./dialogs.js";
import { loadWorkspaces, renderChatList, showEmpty } from "./chatlist.js";
import { renderMembers } from "./members.js";
import { api, state } from "./state.js";

// The landing page is the app itself, served at /invite/<token> (fechatter/http/web.py).
const pending = { token: null, preview: null };

export function inviteTokenInPath() {
  const m = /^\/invite\/([A-Za-z0-9_-]{1,128})\/?$/.exec(window.location.pathname);
  return m ? m[1] : null;
}

// Before the auth screen shows: read the public preview and tell the visitor what the link is.
export async function prepareInvite() {
  const token = inviteTokenInPath();
  if (!token) return;
  const card = $("#invite-card");
  try {
    const res = await fetch(`/api/invites/${encodeURIComponent(token)}`, { headers: { Accept: "application/json" } });
    if (!res.ok) throw new Error("gone");
    pending.token = token;
    pending.preview = await res.json();
    card.replaceChildren(
      el("strong", { text: pending.preview.inviter.fullname }),
      " invited you to ",
      el("strong", { text: pending.preview.workspace.name }),
      el("span", { class: "hint", text: " — create an account or sign in to join." }),
    );
    card.classList.remove("error");
    // A newcomer most likely has no account yet: open on "Create account", without the
    // "New workspace" field (they join this one).
    $("#tab-signup").click();
    const ws = $("#signup-form input[name=workspace]")?.closest("label");
    if (ws) ws.hidden = true;
  } catch {
    pending.token = null;
    card.replaceChildren("This invite link is not valid any more (used up, expired or revoked). Ask for a new one.");
    card.classList.add("error");
    forgetPath();
  }
  card.hidden = false;
}

// Sign-up through the link: the account joins the workspace in the same request.
export function inviteSignupFields() {
  return pending.token ? { invite_token: pending.token } : {};
}

// After signing in (or on entering the app with a session), join the pending invite's workspace.
export async function joinPendingInvite() {
  if (!pending.token) return null;
  const token = pending.token;
  pending.token = null;
  forgetPath();
  $("#invite-card").hidden = true;
  try {
    const joined = await api.post(`/api/invites/${encodeURIComponent(token)}/accept`);
    return joined.workspace.id;
  } catch (err) {
    openDialog(el("h3", { text: "Could not join" }), el("p", { text: problemText(err) }), el("div", { class: "dialog-actions" }, el("button", { type: "button", text: "OK", onclick: closeDialog })));
    return null;
  }
}

export function signedUpThroughInvite() {
  const used = Boolean(pending.token);
  if (used) {
    pending.token = null;
    forgetPath();
    $("#invite-card").hidden = true;
  }
  return used;
}

function forgetPath() {
  if (inviteTokenInPath()) window.history.replaceState(null, "", "/"); // a reload does not reuse it
}

// The workspace menu's "Invite people": a link to copy (role, how many people, how long).
export function inviteLinkDialog() {
  const me = state.users.get(state.me.id);
  const roles = [el("option", { value: "member", text: "Member" })];
  if (me?.role === "owner") roles.push(el("option", { value: "admin", text: "Admin" }));
  const uses = el(
    "select",
    { name: "max_uses" },
    el("option", { value: "1", text: "1 person" }),
    el("option", { value: "10", text: "10 people" }),
    el("option", { value: "100", text: "100 people" }),
  );
  const days = el(
    "select",
    { name: "days" },
    el("option", { value: "1", text: "1 day" }),
    el("option", { value: "7", text: "7 days", selected: true }),
    el("option", { value: "30", text: "30 days" }),
  );
  formDialog(
    "Invite people",
    [
      el("p", { class: "hint", text: "Anyone with the link can join this workspace until it expires or is used up." }),
      el("label", {}, "Role", el("select", { name: "role" }, ...roles)),
      el("label", {}, "Can be used by", uses),
      el("label", {}, "Expires after", days),
      el("label", {}, "Only for this email ", el("span", { class: "hint", text: "(optional)" }), el("input", { name: "email", type: "email" })),
    ],
    "Create link",
    async (form) => {
      const body = { role: form.get("role"), max_uses: Number(form.get("max_uses")), expires_in: Number(form.get("days")) * 86400 };
      if (form.get("email")) body.email = form.get("email");
      const created = await api.post(`/api/workspaces/${state.wsId}/invites`, body);
      // formDialog closes its dialog after this returns: show the link in a new one after that.
      setTimeout(() => showLink(created), 0);
    },
  );
}

function showLink(created) {
  const field = el("input", { id: "invite-url", type: "text", readonly: true, value: created.url, "aria-label": "Invite link" });
  const status = el("p", { class: "hint", role: "status" });
  const copy = el("button", {
    type: "button",
    class: "primary",
    text: "Copy",
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(created.url);
        status.textContent = "Copied.";
      } catch {
        field.select(); // no clipboard permission: the link is selected for Ctrl+C
        status.textContent = "Press Ctrl+C to copy.";
      }
    },
  });
  openDialog(
    el("h3", { text: "Invite link" }),
    el("p", { text: `Expires ${new Date(created.expires_at).toLocaleString()}.` }),
    field,
    status,
    el("div", { class: "dialog-actions" }, el("button", { type: "button", text: "Done", onclick: closeDialog }), copy),
  );
  field.select();
  copy.focus();
}

// Live workspace events: the workspace list, its members and chats follow without a reload.
export async function onWorkspaceEvent(name, data) {
  const wsId = data.workspace_id ?? data.id;
  const known = state.workspaces.some((w) => w.id === wsId);
  switch (name) {
    case "workspace.member_added":
      if (data.user.id === state.me.id) {
        // We were added (an invite accepted, or someone added us): show it, switching to it if
        // we had no workspace ("You are not in a workspace yet" becomes the workspace).
        await loadWorkspaces(state.wsId ?? wsId);
      } else if (wsId === state.wsId) {
        state.users.set(data.user.id, { ...data.user, role: data.role });
        refreshPanels();
      }
      break;
    case "workspace.member_updated":
      if (wsId === state.wsId && state.users.has(data.user_id)) {
        state.users.get(data.user_id).role = data.role;
        refreshPanels();
      }
      break;
    case "workspace.member_removed":
      if (data.user_id === state.me.id) {
        if (known) await leftWorkspace(wsId);
      } else if (wsId === state.wsId) {
        state.users.delete(data.user_id);
        refreshPanels();
      }
      break;
    case "workspace.updated":
      if (known) {
        state.workspaces = state.workspaces.map((w) => (w.id === data.id ? data : w));
        const option = $(`#workspace-select option[value="${data.id}"]`);
        if (option) option.textContent = data.name;
      }
      break;
    case "workspace.deleted":
      if (known) await leftWorkspace(wsId);
      break;
    default:
      break;
  }
}

async function leftWorkspace(wsId) {
  const wasCurrent = wsId === state.wsId;
  await loadWorkspaces(wasCurrent ? undefined : state.wsId);
  if (wasCurrent && state.workspaces.length) showEmpty("That workspace is gone for you.", "It was deleted, or you were removed from it.");
}

function refreshPanels() {
  if (!$("#members-panel").hidden) renderMembers();
  renderChatList();
}
