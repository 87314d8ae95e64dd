// The message composer: Enter sends, Shift+Enter is a new line, typing notices, and sends that
// show at once as pending and retry with the same client_id.

import { $ } from "./dom.js";
import { api, state } from "./state.js";
import { onMessage, renderMessages } from "./timeline.js";

function onComposerKey(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("#composer").requestSubmit();
  }
}

let lastTyping = 0;
function onInput() {
  const input = $("#input");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
  if (state.current && input.value.trim() && Date.now() - lastTyping > 3000) {
    lastTyping = Date.now();
    api.post(`/api/chats/${state.current}/typing`).catch(() => {});
  }
}

function onSend(event) {
  event.preventDefault();
  const input = $("#input");
  const content = input.value.trim();
  if (!content || !state.current) return;
  input.value = "";
  input.style.height = "auto";
  lastTyping = 0;
  const clientId = crypto.randomUUID();
  state.pending.set(clientId, { chatId: state.current, content, failed: false });
  renderMessages(true);
  deliver(clientId);
}

export async function deliver(clientId) {
  const p = state.pending.get(clientId);
  if (!p) return;
  p.failed = false;
  if (p.chatId === state.current) renderMessages(true);
  try {
    const message = await api.post(`/api/chats/${p.chatId}/messages`, { content: p.content, client_id: clientId });
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
  $("#composer").addEventListener("submit", onSend);
  $("#input").addEventListener("keydown", onComposerKey);
  $("#input").addEventListener("input", onInput);
}
