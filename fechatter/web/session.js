// Signing in and up, entering the app, and the live stream's online/offline banner.

import { isDoNotDisturb, isMuted, loadMyStatus } from "./status.js";
import { $ } from "./dom.js";
import { Live } from "./live.js";
import { api, hooks, session, state } from "./state.js";
import { problemText } from "./dom.js";
import { loadWorkspaces } from "./chatlist.js";
import { onEvent } from "./events.js";

export function showAuth(message = "") {
  session.live?.stop();
  $("#app").hidden = true;
  $("#auth").hidden = false;
  $("#auth-error").textContent = message;
}
hooks.signedOut = () => showAuth();

function selectTab(signup) {
  $("#tab-signin").setAttribute("aria-selected", String(!signup));
  $("#tab-signup").setAttribute("aria-selected", String(signup));
  $("#signin-form").hidden = signup;
  $("#signup-form").hidden = !signup;
  $("#auth-error").textContent = "";
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

export async function enterApp() {
  state.me = api.user;
  $("#auth").hidden = true;
  $("#app").hidden = false;
  $("#me-name").textContent = state.me.fullname;
  session.config ??= await api.get("/api/client-config");
  session.live?.stop();
  session.live = new Live(api, session.config, onEvent, onLiveState);
  window.fechatter = { live: session.live, state, isDoNotDisturb, isMuted }; // debugging, tests
  session.live.start();
  await loadWorkspaces();
  await loadMyStatus();
}

function onLiveState(status) {
  $("#banner").hidden = status === "online";
  if (status === "online") document.body.dataset.live = "online";
  else delete document.body.dataset.live;
}

export function wireSession() {
  $("#tab-signin").addEventListener("click", () => selectTab(false));
  $("#tab-signup").addEventListener("click", () => selectTab(true));
  $("#signin-form").addEventListener("submit", onSignIn);
  $("#signup-form").addEventListener("submit", onSignUp);
  $("#sign-out").addEventListener("click", () => api.signOut());
}
