// The thread side panel: the root message, its replies (a keyed log like the timeline) and a
// composer posting `{content, thread_id}`. When the root is a tombstone the thread is closed:
// the panel shows the tombstone and a note, and its composer is disabled.

import { $, el, problemText } from "./dom.js";
import { api, state } from "./state.js";
import { messageNode } from "./message.js";
import { attachSuggest } from "./mentions.js";
import { reconcile } from "./timeline.js";
import { closeMembers } from "./members.js";
import { findMessage, tombstone, touchMessage, upsertMessage } from "./store.js";

export async function openThread(chatId, rootId) {
  state.thread = { chatId, rootId };
  if (state.threadMentions.delete(rootId)) touchMessage(chatId, rootId); // seen: drop the "@"
  closeMembers();
  $("#thread-error").textContent = "";
  const panel = $("#thread-panel");
  panel.hidden = false;
  setClosed(false);
  if (!state.threads.has(rootId)) {
    state.threads.set(rootId, { chatId, items: new Map() });
    try {
      const known = findMessage(chatId, rootId);
      const [root, page] = await Promise.all([
        known ?? api.get(`/api/chats/${chatId}/messages/${rootId}`),
        api.get(`/api/chats/${chatId}/messages?thread_id=${rootId}&limit=200`),
      ]);
      state.threadRoots.set(rootId, root);
      const thread = state.threads.get(rootId);
      for (const m of page.items) if (m.id !== rootId && !thread.items.has(m.id)) thread.items.set(m.id, m);
    } catch (err) {
      state.threads.delete(rootId);
      $("#thread-error").textContent = problemText(err);
    }
  }
  renderThread();
  if (!$("#thread-input").disabled) $("#thread-input").focus();
}

// The open thread's root was deleted: no new replies (the server refuses them too).
function threadClosed() {
  return Boolean(state.thread && state.threadRoots.get(state.thread.rootId)?.deleted);
}

function setClosed(closed) {
  $("#thread-closed").hidden = !closed;
  $("#thread-input").disabled = closed;
  $("#thread-send").disabled = closed;
  $("#thread-input").placeholder = closed ? "Closed to new replies" : "Reply…";
}

export function closeThread() {
  state.thread = null;
  $("#thread-panel").hidden = true;
  $("#thread-log").replaceChildren();
}

export function renderThread() {
  if (!state.thread) return;
  const { rootId } = state.thread;
  const root = state.threadRoots.get(rootId);
  const thread = state.threads.get(rootId);
  if (!root || !thread) return;
  const replies = [...thread.items.values()].sort((a, b) => a.seq - b.seq);
  const want = [{ key: `m:${root.id}`, data: root, build: () => messageNode(root, true) }];
  const n = root.reply_count ?? replies.filter((r) => !r.deleted).length;
  want.push({ key: `count:${n}`, build: () => el("div", { class: "day", text: `${n} ${n === 1 ? "reply" : "replies"}` }) });
  for (const m of replies) want.push({ key: `m:${m.id}`, data: m, build: () => messageNode(m, true) });
  const log = $("#thread-log");
  reconcile(log, want);
  setClosed(Boolean(root.deleted));
  log.scrollTop = log.scrollHeight;
}

async function onThreadSend(event) {
  event.preventDefault();
  const input = $("#thread-input");
  const content = input.value.trim();
  if (!content || !state.thread) return;
  const { chatId, rootId } = state.thread;
  $("#thread-error").textContent = "";
  input.disabled = true;
  try {
    const reply = await api.post(`/api/chats/${chatId}/messages`, { content, thread_id: rootId, client_id: crypto.randomUUID() });
    input.value = "";
    upsertReply(reply);
  } catch (err) {
    // The root was deleted before its message.deleted reached us: close the thread.
    if (err?.problem?.errors?.some((e) => e.field === "thread_id")) tombstone(chatId, rootId);
    else $("#thread-error").textContent = problemText(err);
  } finally {
    input.disabled = threadClosed();
    if (!input.disabled) input.focus();
  }
}

// A reply arrived (live or as our POST's answer).
export function upsertReply(m) {
  const thread = state.threads.get(m.thread_id);
  if (thread && !thread.items.has(m.id)) thread.items.set(m.id, m);
  upsertMessage(m);
}

export function wireThread() {
  $("#thread-close").addEventListener("click", closeThread);
  $("#thread-composer").addEventListener("submit", onThreadSend);
  const input = $("#thread-input");
  const suggest = attachSuggest(input, () => state.thread?.chatId);
  input.addEventListener("keydown", (event) => {
    if (suggest.onKey(event)) return;
    if (event.key === "Escape") { closeThread(); $("#input").focus(); return; }
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("#thread-composer").requestSubmit();
    }
  });
}
