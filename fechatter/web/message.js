// One message as a DOM node: who and when, the formatted text (or a tombstone), "(edited)",
// reactions with counts, the thread summary, and the hover actions (react, reply in thread,
// edit own, delete own or as chat owner/admin — after a confirmation).

import { el, problemText, timeOf } from "./dom.js";
import { api, state } from "./state.js";
import { alertDialog, formDialog } from "./dialogs.js";
import { pickEmoji } from "./emoji.js";
import { formatMessage } from "./format.js";
import { cancelEdit, startEdit } from "./composer.js";
import { tombstone } from "./store.js";
import { openThread } from "./thread.js";
import { avatar } from "./avatar.js";
import { attachmentsNode } from "./files.js";

export function formatContext(m) {
  return {
    meId: state.me.id,
    name: (id) => state.users.get(id)?.fullname ?? null,
    mentions: Array.isArray(m?.mentions) ? new Set(m.mentions.map(String)) : null,
  };
}

export function mentionsMe(m) {
  return !m.deleted && m.sender_id !== state.me.id && (m.mentions_channel || (m.mentions ?? []).includes(state.me.id));
}

export function myRole(chatId) {
  return state.chatMembers.get(chatId)?.find((x) => x.user_id === state.me.id)?.role ?? null;
}

// inThread: the node is in the thread panel (no "N replies" link, no "reply in thread").
export function messageNode(m, inThread = false) {
  const mine = m.sender_id === state.me.id;
  const who = mine ? "You" : state.users.get(m.sender_id)?.fullname ?? `User ${m.sender_id}`;
  const classes = ["msg", mine && "mine", m.deleted && "deleted", mentionsMe(m) && "mentions-me"].filter(Boolean).join(" ");
  const meta = el("div", { class: "meta" }, avatar(m.sender_id, mine ? state.me.fullname : who), `${who} · ${timeOf(m.created_at)}`);
  // After the bubble, not in the meta line: a grouped message (`cont`) hides its meta line.
  const edited = m.edited_at && !m.deleted ? el("span", { class: "edited", title: `Edited ${timeOf(m.edited_at)}`, text: "(edited)" }) : null;
  const bubble = m.deleted
    ? el("div", { class: "bubble tombstone", text: "This message was deleted" })
    : m.content ? el("div", { class: "bubble" }, formatMessage(m.content, formatContext(m))) : null;
  return el(
    "div",
    { class: classes, "data-id": m.id, "data-seq": m.seq },
    meta,
    el("div", { class: "body" }, bubble, edited, m.deleted ? null : actions(m, mine, inThread)),
    attachmentsNode(m),
    m.deleted ? null : reactionsRow(m),
    !inThread && m.reply_count > 0 ? threadSummary(m) : null,
  );
}

function actions(m, mine, inThread) {
  const role = myRole(m.chat_id);
  const canDelete = mine || role === "owner" || role === "admin";
  return el(
    "div",
    { class: "actions", role: "toolbar", "aria-label": "Message actions" },
    el("button", { type: "button", class: "act", title: "Add reaction", "aria-label": "Add reaction", text: "☺ React", onclick: () => react(m) }),
    inThread ? null : el("button", { type: "button", class: "act", title: "Reply in thread", "aria-label": "Reply in thread", text: "↪ Thread", onclick: () => openThread(m.chat_id, m.id) }),
    mine ? el("button", { type: "button", class: "act", title: "Edit", "aria-label": "Edit message", text: "✎ Edit", onclick: () => startEdit(m) }) : null,
    canDelete ? el("button", { type: "button", class: "act danger", title: "Delete", "aria-label": "Delete message", text: "Delete", onclick: () => confirmDelete(m) }) : null,
  );
}

function reactionsRow(m) {
  if (!m.reactions?.length) return null;
  return el(
    "div",
    { class: "reactions" },
    ...m.reactions.map((r) => {
      const own = r.user_ids.includes(state.me.id);
      const names = r.user_ids.map((u) => (u === state.me.id ? "you" : state.users.get(u)?.fullname ?? "someone")).join(", ");
      return el(
        "button",
        {
          type: "button",
          class: `reaction${own ? " own" : ""}`,
          "aria-pressed": String(own),
          "aria-label": `${r.emoji} ${r.count}${own ? ", including you" : ""}`,
          title: names,
          "data-emoji": r.emoji,
          onclick: () => toggleReaction(m, r.emoji, own),
        },
        el("span", { class: "e", text: r.emoji }),
        el("span", { class: "n", text: String(r.count) }),
      );
    }),
    el("button", { type: "button", class: "reaction add", title: "Add another reaction", "aria-label": "Add another reaction", text: "+", onclick: () => react(m) }),
  );
}

function threadSummary(m) {
  const n = m.reply_count;
  const count = `${n} ${n === 1 ? "reply" : "replies"}`;
  const mentioned = state.threadMentions.has(m.id); // a reply mentions me, not opened since
  return el("button", {
    type: "button",
    class: `thread-link link${mentioned ? " mentions-me" : ""}`,
    text: mentioned ? `@ ${count}` : count,
    "aria-label": `${count}${mentioned ? ", one mentions you" : ""}, open thread`,
    onclick: () => openThread(m.chat_id, m.id),
  });
}

const reactionPath = (m, emoji) => `/api/chats/${m.chat_id}/messages/${m.id}/reactions/${encodeURIComponent(emoji)}`;

function react(m) {
  pickEmoji((emoji) => api.put(reactionPath(m, emoji))); // a refusal shows inside the picker
}

async function toggleReaction(m, emoji, own) {
  try {
    if (own) await api.del(reactionPath(m, emoji));
    else await api.put(reactionPath(m, emoji));
  } catch (err) {
    alertDialog("Could not react", problemText(err));
  }
}

// Also opened by saving an empty edit (composer.js); Cancel or Esc leaves the edit open.
export function confirmDelete(m) {
  formDialog(
    "Delete message?",
    [el("p", { text: "It will show as “This message was deleted” for everyone. This cannot be undone." })],
    "Delete",
    async () => {
      await api.del(`/api/chats/${m.chat_id}/messages/${m.id}`);
      if (state.editing?.id === m.id) cancelEdit();
      tombstone(m.chat_id, m.id);
    },
    "primary danger-fill",
  );
}
