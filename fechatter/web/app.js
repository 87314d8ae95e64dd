// Fechatter's browser client. Plain DOM and ES modules, no framework and no build step; user
// content is only ever put on the page as text nodes (format.js builds elements, never HTML).
//
// Modules by job: state.js (shared state, API client), dom.js (element helpers), session.js
// (sign in/up), chatlist.js (workspaces, sidebar), timeline.js (the open chat's messages),
// composer.js (writing), members.js (members panel), settings.js (sidebar dialogs),
// dialogs.js (the modal), events.js (live events), store.js (message changes), message.js
// (one message node and its actions), format.js (formatting), emoji.js (picker), thread.js
// (thread panel), mentions.js (`@` suggestions), files.js (uploads, attachments, avatars),
// notify.js (tab title, desktop notifications, announcements), avatar.js (initials avatars),
// theme.js (light/dark). docs/web.md describes them.

import { $ } from "./dom.js";
import { api, state } from "./state.js";
import { renderChatList } from "./chatlist.js";
import { wireComposer } from "./composer.js";
import { wireFiles } from "./files.js";
import { closeMembers, membersOpen, renderMembers, wireMembers } from "./members.js";
import { enterApp, showAuth, wireSession } from "./session.js";
import { joinPendingInvite, prepareInvite } from "./invites.js";
import { prepareReset } from "./reset.js";
import { wireSettings } from "./settings.js";
import { wireSearch } from "./search.js";
import { onStatusChange, wireStatus } from "./status.js";
import { wireThread } from "./thread.js";
import { markRead, onScroll, renderHeader, renderTyping } from "./timeline.js";
import { applyTheme } from "./theme.js";

function wire() {
  applyTheme();
  wireSession();
  wireSettings();
  wireMembers();
  wireComposer();
  wireFiles();
  wireThread();
  wireSearch();
  wireStatus();
  onStatusChange(renderChatList);
  onStatusChange(renderHeader);
  onStatusChange(() => { if (!$("#members-panel").hidden) renderMembers(); });
  $("#back").addEventListener("click", () => {
    if (membersOpen()) { closeMembers(); return; } // Back closes the overlay first
    $("#app").classList.remove("in-chat");
    state.current = null;
    renderChatList();
  });
  // The skip link moves focus itself (no fragment navigation, which would add a history entry).
  $("#skip-link").addEventListener("click", (event) => {
    event.preventDefault();
    if (!$("#composer").hidden) $("#input").focus();
    else $("#conversation").focus();
  });
  $("#messages").addEventListener("scroll", onScroll);
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible" && state.current) markRead(); });
  setInterval(renderTyping, 2000);
}

wire();
// An invite link (/invite/<token>): say who invites where first; signed in already → join.
await prepareInvite();
// A password-reset link (/reset-password/<token>): its form on the sign-in screen.
if (await prepareReset()) showAuth();
else if (api.session) enterApp(await joinPendingInvite()).catch(() => showAuth());
else showAuth();
