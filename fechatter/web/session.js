// Signing in and up, entering the app, and the live stream's online/offline banner.

import { isDoNotDisturb, isMuted, loadMyStatus } from "./status.js";
import { $ } from "./dom.js";
import { Live } from "./live.js";
import { api, hooks, session, state } from "./state.js";
import { problemText } from "./dom.js";
import { loadWorkspaces } from "./chatlist.js";
import { onEvent } from "./events.js";
import { inviteSignupFields, joinPendingInvite, signedUpThroughInvite } from "./invites.js";
import { resetNotify } from "./notify.js";

export function showAuth(message = "") {
  session.live?.stop();
  $("#app").hidden = true;
  $("#auth").hidden = false;
  delete document.body.dataset.ready;
  $("#auth-error").textContent = message;
  resetNotify();
}
hooks.signedOut = () => showAuth();

function selectTab(signup) {
  $("#tab-signin").setAttribute("aria-selected", String(!signup));
  $("#tab-signup").setAttribute("aria-selected", String(signup));
  $("#tab-signin").tabIndex = signup ? -1 : 0; // one tab stop; ←/→ move between the tabs
  $("#tab-signup").tabIndex = signup ? 0 : -1;
  $("#signin-form").hidden = signup;
  $("#signup-form").hidden = !signup;
  $("#auth-error").textContent = "";
}

async function onSignIn(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  try {
    await api.signIn(form.get("email"), form.get("password"));
    await enterApp(await joinPendingInvite());
  } catch (err) {
    $("#auth-error").textContent = problemText(err);
  }
}

async function onSignUp(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const fields = { fullname: form.get("fullname"), email: form.get("email"), password: form.get("password") };
  if (form.get("workspace")) fields.workspace = form.get("workspace");
  Object.assign(fields, inviteSignupFields()); // joined with the account (SPEC §7)
  try {
    await api.signUp(fields);
    signedUpThroughInvite();
    await enterApp();
  } catch (err) {
    $("#auth-error").textContent = problemText(err);
  }
}

export async function enterApp(workspaceId) {
  state.me = api.user;
  $("#auth").hidden = true;
  $("#app").hidden = false;
  $("#me-name").textContent = state.me.fullname;
  session.config ??= await api.get("/api/client-config");
  session.live?.stop();
  session.live = new Live(api, session.config, onEvent, onLiveState);
  window.fechatter = { live: session.live, state, isDoNotDisturb, isMuted }; // debugging, tests
  session.live.start();
  await loadWorkspaces(workspaceId ?? undefined);
  await loadMyStatus();
  // Focus follows the person into the app: the composer when a chat opened, else the page's
  // heading (never left on the hidden sign-in form, i.e. nowhere).
  const focus = document.activeElement;
  if (!focus || focus === document.body || $("#auth").contains(focus)) {
    if (!$("#composer").hidden) $("#input").focus();
    else $("#chat-title").focus();
  }
  document.body.dataset.ready = "1"; // the workspace is loaded (tests wait on it)
}

function onLiveState(status) {
  $("#banner").hidden = status === "online";
  if (status === "online") document.body.dataset.live = "online";
  else delete document.body.dataset.live;
}

export function wireSession() {
  $("#tab-signin").addEventListener("click", () => selectTab(false));
  $("#tab-signup").addEventListener("click", () => selectTab(true));
  for (const tab of [$("#tab-signin"), $("#tab-signup")]) {
    tab.addEventListener("keydown", (event) => {
      if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
      const signup = tab.id === "tab-signin";
      selectTab(signup);
      $(signup ? "#tab-signup" : "#tab-signin").focus();
    });
  }
  $("#signin-form").addEventListener("submit", onSignIn);
  $("#signup-form").addEventListener("submit", onSignUp);
  $("#sign-out").addEventListener("click", () => api.signOut());
}
