// User status (online / away / busy / offline, with text and expiry), the user card and
// per-chat mute (docs/web.md "Status, user card and mute"). Status is always shown as an icon
// character plus a word, never by colour alone.
//
// Helpers other client code may call:
//   isDoNotDisturb()   -> true while my own status is "busy" (no desktop notifications)
//   isMuted(chatId)    -> true when I muted that chat (the server's `Chat.muted`)
//   statusOf(userId)   -> "online" | "away" | "busy" | "offline"

import { $, el, problemText } from "./dom.js";
import { api, state } from "./state.js";
import { closeDialog, formDialog, openDialog } from "./dialogs.js";

const LABELS = { online: "Online", away: "Away", busy: "Busy", offline: "Offline" };
const GLYPHS = { online: "●", away: "◐", busy: "⛔", offline: "○" };

// user id -> {status: "away"|"busy", text, expires_at} for those showing a chosen status.
state.statuses = state.statuses ?? new Map();
state.myStatus = state.myStatus ?? { status: null, text: null, expires_at: null };

const renderers = new Set(); // called after any status or mute change

export function onStatusChange(render) { renderers.add(render); }
function rerender() { for (const render of renderers) render(); renderMine(); }

export function isDoNotDisturb() {
  return shownMine() === "busy";
}

export function isMuted(chatId) {
  return state.chats.get(chatId)?.muted === true;
}

function lapsed(view) {
  return view?.expires_at ? Date.parse(view.expires_at) <= Date.now() : false;
}

function shownMine() {
  const mine = state.myStatus;
  return mine.status && !lapsed(mine) ? mine.status : "online";
}

export function statusOf(userId) {
  if (state.me && userId === state.me.id) return shownMine();
  if (!state.online.has(userId)) return "offline";
  const view = state.statuses.get(userId);
  return view && !lapsed(view) ? view.status : "online";
}

// "Busy: In a meeting", "Online"; `lower` for running text ("busy: In a meeting").
export function statusText(userId, { lower = false } = {}) {
  const status = statusOf(userId);
  const view = state.me && userId === state.me.id ? state.myStatus : state.statuses.get(userId);
  const text = status === "away" || status === "busy" ? view?.text : null;
  const word = lower ? status : LABELS[status];
  return text ? `${word}: ${text}` : word;
}

// An icon character and a word ("⛔ Busy"); the colour only repeats what they say.
export function statusBadge(userId, { short = false } = {}) {
  const status = statusOf(userId);
  return el(
    "span",
    { class: `status status-${status}`, "data-status": status, title: statusText(userId) },
    el("span", { class: "status-glyph", "aria-hidden": "true", text: GLYPHS[status] }),
    el("span", { class: short ? "visually-hidden" : "status-word", text: short ? statusText(userId) : LABELS[status] }),
  );
}

// The `statuses` of GET /api/online-users: who shows away or busy.
export function learnStatuses(online) {
  state.statuses = new Map(Object.entries(online?.statuses ?? {}).map(([id, view]) => [Number(id), view]));
}

// A `presence` event.
export function applyPresence(data) {
  if (data.status === "offline") state.online.delete(data.user_id);
  else state.online.add(data.user_id);
  const chosen = data.status === "away" || data.status === "busy";
  const view = { status: chosen ? data.status : null, text: data.text ?? null, expires_at: data.expires_at ?? null };
  if (chosen) state.statuses.set(data.user_id, view);
  else state.statuses.delete(data.user_id);
  if (state.me && data.user_id === state.me.id && data.status !== "offline") state.myStatus = view;
  rerender();
}

// A `chat.muted` event (my own mute, from this or another device).
export function applyMuted({ chat_id: chatId, muted }) {
  const chat = state.chats.get(chatId);
  if (chat) chat.muted = muted;
  rerender();
}

export async function loadMyStatus() {
  const me = await api.get(`/api/users/${state.me.id}`).catch(() => null);
  if (me?.presence && (me.presence.status === "away" || me.presence.status === "busy")) state.myStatus = me.presence;
  renderMine();
}

function renderMine() {
  const button = $("#my-status");
  if (!button || !state.me) return;
  button.replaceChildren(statusBadge(state.me.id));
  button.setAttribute("aria-label", `Your status: ${statusText(state.me.id)}. Change status`);
}

const CLEAR_AFTER = [
  ["", "Don't clear"],
  ["1800", "30 minutes"],
  ["3600", "1 hour"],
  ["14400", "4 hours"],
  ["today", "Today"],
];

function secondsLeftToday() {
  const end = new Date();
  end.setHours(23, 59, 59, 0);
  return Math.max(60, Math.round((end - Date.now()) / 1000));
}

export function openStatusPicker() {
  const current = state.myStatus.status ?? "online";
  const choice = (value) =>
    el("label", { class: "radio" }, el("input", { type: "radio", name: "status", value, checked: current === value }), el("span", { text: `${GLYPHS[value]} ${LABELS[value]}` }));
  formDialog(
    "Set your status",
    [
      el("fieldset", { class: "choices" }, el("legend", { text: "Status" }), choice("online"), choice("away"), choice("busy")),
      el("p", { class: "hint", text: "Busy means do not disturb: no desktop notifications." }),
      el("label", {}, "What are you up to? (optional)", el("input", { name: "text", maxlength: "100", value: state.myStatus.text ?? "" })),
      el("label", {}, "Clear after", el("select", { name: "clear" }, ...CLEAR_AFTER.map(([value, text]) => el("option", { value, text })))),
    ],
    "Save",
    async (form) => {
      const status = form.get("status");
      let body = { status: null };
      if (status === "away" || status === "busy") {
        body = { status, text: form.get("text") || null };
        const clear = form.get("clear");
        if (clear) body.expires_in = clear === "today" ? secondsLeftToday() : Number(clear);
      }
      state.myStatus = await api.put("/api/users/me/status", body);
      rerender();
    },
  );
}

export async function openUserCard(userId) {
  let user;
  try {
    user = await api.get(`/api/users/${userId}`);
  } catch (err) {
    openDialog(el("h3", { text: "Profile" }), el("p", { text: problemText(err) }), el("div", { class: "dialog-actions" }, el("button", { type: "button", text: "Close", onclick: closeDialog })));
    return;
  }
  const p = user.presence ?? { status: "offline" };
  const until = p.expires_at ? ` (until ${new Date(p.expires_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })})` : "";
  openDialog(
    el("h3", { text: user.fullname }),
    el(
      "dl",
      { class: "user-card" },
      el("dt", { text: "Email" }), el("dd", {}, el("a", { href: `mailto:${user.email}`, text: user.email })),
      el("dt", { text: "Status" }),
      el("dd", { class: `status status-${p.status}`, "data-status": p.status }, el("span", { "aria-hidden": "true", text: `${GLYPHS[p.status]} ` }), `${LABELS[p.status]}${p.text ? `: ${p.text}` : ""}${until}`),
    ),
    el("div", { class: "dialog-actions" }, el("button", { type: "button", text: "Close", onclick: closeDialog })),
  );
  $("#dialog button")?.focus();
}

// A clickable name that opens the user card.
export function nameButton(userId, text) {
  return el("button", { type: "button", class: "name-link", text, onclick: () => openUserCard(userId) });
}

export async function toggleMute(chatId) {
  const chat = state.chats.get(chatId);
  if (!chat) return;
  const fresh = await api.put(`/api/chats/${chatId}/notifications`, { muted: !chat.muted });
  chat.muted = fresh.muted;
  rerender();
}

export function wireStatus() {
  $("#my-status").addEventListener("click", openStatusPicker);
  $("#mute-toggle").addEventListener("click", () => state.current && toggleMute(state.current).catch(() => {}));
  // A chosen status with an expiry lapses on its own: redraw once a minute (the server also
  // sends a presence event when it lapses).
  setInterval(rerender, 60_000);
}
