// Message search (SPEC §9): Ctrl/Cmd+K or `/` opens it in the modal dialog. Results come from
// GET /api/search/messages in the current workspace, grouped by chat; the matches are marked
// with <mark> elements around text nodes, built from the server's code-point ranges (the server
// never sends markup). A result opens its chat at that message (?around=) and highlights it.

import { $, el, problemText, timeOf } from "./dom.js";
import { api, state } from "./state.js";
import { chatName } from "./chatlist.js";
import { closeDialog, openDialog } from "./dialogs.js";
import { addMessages, openChat, renderMessages } from "./timeline.js";

let generation = 0; // answers to an older query are dropped

// `content` with `ranges` ([start, end) code-point offsets) as <mark>s: text nodes only.
export function highlighted(content, ranges) {
  const points = Array.from(content); // code points, as the server counts
  const parts = [];
  let at = 0;
  for (const [start, end] of ranges) {
    if (start > at) parts.push(document.createTextNode(points.slice(at, start).join("")));
    parts.push(el("mark", { text: points.slice(start, end).join("") }));
    at = end;
  }
  if (at < points.length) parts.push(document.createTextNode(points.slice(at).join("")));
  return parts;
}

function option(value, text) { return el("option", { value: String(value), text }); }

export function openSearch() {
  if (!state.wsId) return;
  const input = el("input", { type: "search", id: "search-q", "aria-label": "Search messages", placeholder: "Search messages…  \"exact phrase\"", maxlength: "256", autocomplete: "off" });
  const person = el("select", { id: "search-from", "aria-label": "From person" }, option("", "Anyone"),
    [...state.users.values()].map((u) => option(u.id, u.fullname)));
  const chat = el("select", { id: "search-chat", "aria-label": "In chat" }, option("", "All chats"),
    [...state.chats.values()].map((c) => option(c.id, chatName(c))));
  const status = el("p", { id: "search-status", role: "status" });
  const results = el("div", { id: "search-results", role: "list", "aria-label": "Search results" });
  const run = () => search(input.value, person.value, chat.value, status, results, null);
  let timer = null;
  const soon = () => { clearTimeout(timer); timer = setTimeout(run, 250); };
  input.addEventListener("input", soon);
  person.addEventListener("change", run);
  chat.addEventListener("change", run);
  const form = el("form", { class: "search-form", onsubmit: (e) => { e.preventDefault(); clearTimeout(timer); run(); } },
    input, el("div", { class: "search-filters" }, person, chat));
  openDialog(el("h3", { text: "Search" }), form, status, results);
  $("#dialog").classList.add("search-dialog");
  $("#dialog").addEventListener("close", () => $("#dialog").classList.remove("search-dialog"), { once: true });
  input.focus();
}

async function search(q, from, chatId, status, results, cursor) {
  const mine = cursor ? generation : ++generation;
  if (!q.trim()) { results.replaceChildren(); status.textContent = ""; return; }
  const params = new URLSearchParams({ q, workspace_id: String(state.wsId), limit: "20" });
  if (from) params.set("from", from);
  if (chatId) params.set("chat_id", chatId);
  if (cursor) params.set("cursor", cursor);
  let page;
  try {
    page = await api.get(`/api/search/messages?${params}`);
  } catch (err) {
    if (mine === generation) status.textContent = problemText(err);
    return;
  }
  if (mine !== generation) return;
  if (!cursor) results.replaceChildren();
  results.querySelector(".search-more")?.remove();
  for (const hit of page.items) groupFor(results, hit.chat_id).append(resultNode(hit));
  const shown = results.querySelectorAll(".search-hit-item").length;
  status.textContent = shown ? `${shown}${page.next_cursor ? "+" : ""} result${shown === 1 ? "" : "s"}` : "No messages found";
  if (page.next_cursor) {
    results.append(el("button", { type: "button", class: "search-more link", text: "More results",
      onclick: () => search(q, from, chatId, status, results, page.next_cursor) }));
  }
}

function groupFor(results, chatId) {
  let group = [...results.children].find((g) => g.dataset.chat === String(chatId));
  if (!group) {
    const chat = state.chats.get(chatId);
    group = el("section", { class: "search-group", "data-chat": String(chatId), role: "listitem" },
      el("h4", { text: chat ? (chat.type === "PublicChannel" ? "# " : "") + chatName(chat) : `Chat ${chatId}` }));
    results.append(group);
  }
  return group;
}

function resultNode(hit) {
  const m = hit.message;
  const who = m.sender_id === state.me.id ? "You" : state.users.get(m.sender_id)?.fullname ?? "Someone";
  return el("button", { type: "button", class: "search-hit-item", "data-id": String(m.id), onclick: () => jumpTo(hit.chat_id, m.id) },
    el("span", { class: "search-meta", text: `${who} · ${timeOf(m.created_at)}` }),
    el("span", { class: "search-text" }, highlighted(m.content, hit.highlights)));
}

// Open the chat with the page around the message, then newer pages up to now (bounded), so the
// log has no gap, and highlight the message.
export async function jumpTo(chatId, messageId) {
  closeDialog();
  const around = await api.get(`/api/chats/${chatId}/messages?around=${messageId}&limit=50`);
  const box = { items: [], ids: new Set(), hasMore: around.has_more_before, loading: false };
  state.messages.set(chatId, box);
  addMessages(chatId, around.items);
  let more = around.has_more_after;
  for (let pages = 0; more && pages < 10; pages++) {
    const last = box.items[box.items.length - 1];
    const page = await api.get(`/api/chats/${chatId}/messages?after=${last.id}&limit=200`);
    addMessages(chatId, page.items);
    more = page.has_more;
  }
  await openChat(chatId);
  renderMessages(false, true);
  const node = [...$("#messages").children].find((n) => n._key === `m:${messageId}`);
  for (const old of document.querySelectorAll(".jump-target")) old.classList.remove("jump-target");
  if (node) {
    node.classList.add("jump-target");
    node.scrollIntoView({ block: "center" });
  }
}

export function wireSearch() {
  $("#search-open").addEventListener("click", openSearch);
  document.addEventListener("keydown", (event) => {
    const typing = event.target instanceof HTMLElement && event.target.closest("input, textarea, select, [contenteditable]");
    const shortcut = (event.key === "k" || event.key === "K") && (event.ctrlKey || event.metaKey);
    if (shortcut || (event.key === "/" && !typing && !event.ctrlKey && !event.metaKey && !event.altKey)) {
      if ($("#app").hidden || $("#dialog").open) return;
      event.preventDefault();
      openSearch();
    }
  });
}
