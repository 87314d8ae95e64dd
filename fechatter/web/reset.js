// Password-reset links (issue 17): `fechatter admin reset-password` prints
// /reset-password/<token>; the app page served there shows a "new password" form above the
// sign-in form (POST /api/password-resets/<token>, docs/api.md "Admin command line").

import { $, el } from "./dom.js";

export function resetTokenInPath() {
  const m = /^\/reset-password\/([A-Za-z0-9_-]{1,128})\/?$/.exec(window.location.pathname);
  return m ? m[1] : null;
}

function say(card, text, error = false) {
  card.replaceChildren(text);
  card.classList.toggle("error", error);
  card.hidden = false;
}

// True when the page is a reset link: the caller shows the sign-in screen, not the app.
export async function prepareReset() {
  const token = resetTokenInPath();
  if (!token) return false;
  const url = `/api/password-resets/${encodeURIComponent(token)}`;
  window.history.replaceState(null, "", "/"); // the token leaves the address bar
  const card = $("#invite-card");
  const res = await fetch(url, { headers: { Accept: "application/json" } }).catch(() => null);
  if (!res || res.status !== 204) {
    say(card, "This password link is not valid any more (used or expired). Ask an administrator for a new one.", true);
    return true;
  }
  const input = el("input", {
    type: "password", name: "new-password", minlength: "8", maxlength: "128",
    required: true, autocomplete: "new-password",
  });
  const form = el("form", { class: "reset-form" },
    el("label", {}, "Choose a new password ", input),
    el("button", { type: "submit", text: "Set password" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const done = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ password: input.value }),
    }).catch(() => null);
    if (done && done.status === 204) say(card, "Password set: sign in with it below.");
    else {
      const problem = done ? await done.json().catch(() => ({})) : {};
      const fields = problem.errors?.map((e) => `${e.field}: ${e.message}`).join("; ");
      say(card, fields || problem.detail || "The password could not be set; try again.", true);
      if (done && done.status === 422) card.append(form);
    }
  });
  card.replaceChildren(form);
  card.classList.remove("error");
  card.hidden = false;
  return true;
}
