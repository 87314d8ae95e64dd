// Fechatter's browser client. Plain DOM and ES modules, no framework and no build step; user
// content is only ever put on the page as text nodes (format.js builds elements, never HTML).
//
// Modules by job: state.js (shared state, API client), dom.js (element helpers), session.js
// (sign in/up), chatlist.js (workspaces, sidebar), timeline.js (the open chat's messages),
// composer.js (writing), members.js (members panel), settings.js (sidebar dialogs),
// dialogs.js (the modal), events.js (live events), store.js (message changes), message.js
// (one message node and its actions), format.js (formatting), emoji.js (picker), thread.js
// (thread panel), mentions.js (`@` suggestions). docs/web.md describes them.

import { $ } from "./dom.js";
import { api, state } from "./state.js";
import { renderChatList } from "./chatlist.js";
import { wireComposer } from "./composer.js";
import { wireMembers } from "./members.js";
import { enterApp, showAuth, wireSession } from "./session.js";
import { wireSettings } from "./settings.js";
import { wireSearch } from "./search.js";
import { wireThread } from "./thread.js";
import { markRead, onScroll, renderTyping } from "./timeline.js";

function wire() {
  wireSession();
  wireSettings();
  wireMembers();
  wireComposer();
  wireThread();
  wireSearch();
  $("#back").addEventListener("click", () => { $("#app").classList.remove("in-chat"); state.current = null; renderChatList(); });
  $("#messages").addEventListener("scroll", onScroll);
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible" && state.current) markRead(); });
  setInterval(renderTyping, 2000);
}

wire();
if (api.session) enterApp().catch(() => showAuth());
else showAuth();
