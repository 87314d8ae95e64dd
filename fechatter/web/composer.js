// The message composer: Enter sends, Shift+Enter is a new line, typing notices, and sends that
// show at once as pending and retry with the same client_id. It also edits: ↑ in an empty
// composer (or a message's Edit action) loads that message, Enter saves it, Esc cancels; saving
// it empty opens the delete confirmation.

import { $, problemText } from "./dom.js";
import { api, state } from "./state.js";
import { alertDialog } from "./dialogs.js";
import { attachSuggest } from "./mentions.js";
import { confirmDelete } from "./message.js";
import { findMessage, upsertMessage } from "./store.js";
import { takeUploads } from "./files.js";
import { onMessage, renderMessages } from "./timeline.js";

let suggest = null;

function onComposerKey(event) {
  if (suggest?.onKey(event)) return;
  const input = $("#input");
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("#composer").requestSubmit();
  } else if (event.key === "Escape" && state.editing) {
    event.preventDefault();
    cancelEdit();
  } else if (event.key === "ArrowUp" && !input.value && !state.editing) {
    const last = lastOwnMessage();
    if (last) {
      event.preventDefault();
      startEdit(last);
    }
  }
}

function lastOwnMessage() {
  const box = state.messages.get(state.current);
  const items = box?.items ?? [];
  for (let i = items.length - 1; i >= 0; i--) {
    const m = items[i];
    if (m.sender_id === state.me.id && !m.deleted && m.thread_id == null) return m;
  }
  return null;
}

export function startEdit(m) {
  const input = $("#input");
  state.editing = { chatId: m.chat_id, id: m.id, draft: state.editing ? state.editing.draft : input.value };
  input.value = m.content;
  $("#composer").classList.add("editing");
  $("#edit-banner").hidden = false;
  $("#send").textContent = "Save";
  for (const node of document.querySelectorAll("#messages .msg.being-edited")) node.classList.remove("being-edited");
  document.querySelector(`#messages .msg[data-id="${m.id}"]`)?.classList.add("being-edited");
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
  onInput();
}

export function cancelEdit() {
  if (!state.editing) return;
  const input = $("#input");
  input.value = state.editing.draft ?? "";
  state.editing = null;
  $("#composer").classList.remove("editing");
  $("#edit-banner").hidden = true;
  $("#send").textContent = "Send";
  for (const node of document.querySelectorAll("#messages .msg.being-edited")) node.classList.remove("being-edited");
  input.style.height = "auto";
}

let lastTyping = 0;
function onInput() {
  const input = $("#input");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
  if (state.current && !state.editing && input.value.trim() && Date.now() - lastTyping > 3000) {
    lastTyping = Date.now();
    api.post(`/api/chats/${state.current}/typing`).catch(() => {});
  }
}

async function saveEdit(content) {
  const { chatId, id } = state.editing;
  try {
    const message = await api.call("PATCH", `/api/chats/${chatId}/messages/${id}`, { content });
    cancelEdit();
    upsertMessage(message);
  } catch (err) {
    alertDialog("Could not save the edit", problemText(err));
  }
}

function onSend(event) {
  event.preventDefault();
  const input = $("#input");
  const content = input.value.trim();
  if (state.editing) {
    if (content) saveEdit(content);
    else {
      // Like Slack: saving an empty edit offers to delete the message instead.
      const m = findMessage(state.editing.chatId, state.editing.id);
      if (m) confirmDelete(m);
    }
    return;
  }
  if (!state.current) return;
  const files = takeUploads(); // the finished uploads' URLs; null while one is running
  if (files === null) {
    alertDialog("Uploads in progress", "Wait for the uploads to finish, or cancel them.");
    return;
  }
  if (!content && !files.length) return;
  input.value = "";
  input.style.height = "auto";
  lastTyping = 0;
  const clientId = crypto.randomUUID();
  state.pending.set(clientId, { chatId: state.current, content, files, failed: false });
  renderMessages(true);
  deliver(clientId);
}

export async function deliver(clientId) {
  const p = state.pending.get(clientId);
  if (!p) return;
  p.failed = false;
  if (p.chatId === state.current) renderMessages(true);
  try {
    const body = { content: p.content, client_id: clientId };
    if (p.files?.length) body.files = p.files;
    const message = await api.post(`/api/chats/${p.chatId}/messages`, body);
    settle(message);
  } catch {
    p.failed = true;
    if (p.chatId === state.current) renderMessages(true);
  }
}

// A message of ours came back (as the POST's answer or as the live event): drop its bubble.
export function settle(message) {
  const clientId = message.client_id;
  const mine = clientId && state.pending.has(clientId);
  if (mine) state.pending.delete(clientId);
  onMessage(message);
}

export function wireComposer() {
  const input = $("#input");
  suggest = attachSuggest(input, () => state.current);
  $("#composer").addEventListener("submit", onSend);
  $("#edit-cancel").addEventListener("click", () => { cancelEdit(); input.focus(); });
  input.addEventListener("keydown", onComposerKey);
  input.addEventListener("input", onInput);
}
