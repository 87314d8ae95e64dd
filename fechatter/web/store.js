// The messages the client holds, per chat (`state.messages`: the timeline's pages) and per
// thread (`state.threads`: replies fetched for the thread panel), and the live changes to them:
// upsert (created/updated), tombstone (deleted), reactions. Every change re-renders only what
// shows that message.

import { state } from "./state.js";
import { renderChatList } from "./chatlist.js";
import { renderThread } from "./thread.js";
import { renderMessages } from "./timeline.js";

export function findMessage(chatId, id) {
  const box = state.messages.get(chatId);
  const inBox = box?.items.find((m) => m.id === id);
  if (inBox) return inBox;
  for (const thread of state.threads.values()) if (thread.chatId === chatId && thread.items.has(id)) return thread.items.get(id);
  if (state.threadRoots.has(id)) return state.threadRoots.get(id);
  return null;
}

function refresh(chatId, m) {
  if (chatId === state.current) renderMessages(false);
  if (state.thread && (state.thread.rootId === m.id || state.thread.rootId === m.thread_id)) renderThread();
}

// Put `m` (a full Message) wherever the client holds it; a reply joins its thread if open.
export function upsertMessage(m) {
  const box = state.messages.get(m.chat_id);
  if (box) {
    const at = box.items.findIndex((x) => x.id === m.id);
    if (at >= 0) box.items[at] = m;
  }
  if (state.threadRoots.has(m.id)) state.threadRoots.set(m.id, m);
  if (m.thread_id != null && state.threads.has(m.thread_id)) state.threads.get(m.thread_id).items.set(m.id, m);
  const chat = state.chats.get(m.chat_id);
  if (chat?.last_message?.id === m.id) { chat.last_message = m; renderChatList(); }
  refresh(m.chat_id, m);
}

export function tombstone(chatId, id) {
  const old = findMessage(chatId, id);
  if (!old || old.deleted) return;
  upsertMessage({ ...old, deleted: true, content: "", files: [], reactions: [], mentions: [], mentions_channel: false });
}

// reaction.added / reaction.removed: the server sends them only when something changed.
export function applyReaction(added, { chat_id: chatId, message_id: id, emoji, user_id: userId }) {
  const old = findMessage(chatId, id);
  if (!old || old.deleted) return;
  const reactions = (old.reactions ?? []).map((r) => ({ ...r, user_ids: [...r.user_ids] }));
  let r = reactions.find((x) => x.emoji === emoji);
  if (added) {
    if (!r) { r = { emoji, count: 0, user_ids: [] }; reactions.push(r); }
    r.count += 1;
    if (!r.user_ids.includes(userId) && r.user_ids.length < 20) r.user_ids.push(userId);
  } else if (r) {
    r.count -= 1;
    r.user_ids = r.user_ids.filter((u) => u !== userId);
  }
  upsertMessage({ ...old, reactions: reactions.filter((x) => x.count > 0) });
}

// Re-render what shows message `id` although its data did not change (e.g. its thread badge).
export function touchMessage(chatId, id) {
  const m = findMessage(chatId, id);
  if (m) upsertMessage({ ...m });
}
