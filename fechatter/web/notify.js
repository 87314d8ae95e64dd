// Keeping a person informed while they look elsewhere: the unread total in the tab title,
// desktop notifications (the browser's Notification API) and a polite screen-reader
// announcement of messages arriving in another chat. docs/web.md "Notifications" says how
// each decides.

import { $, el } from "./dom.js";
import { plainText } from "./format.js";
import { state } from "./state.js";
import { isDoNotDisturb, isMuted } from "./status.js";
import { chatName } from "./chatlist.js";
import { mentionsMe } from "./message.js";
import { openChat } from "./timeline.js";

const APP_TITLE = "Fechatter";



// The tab title: "(N) Fechatter" with N the unread messages over the workspace's chats (a muted
// chat counts only its mentions of me), plain "Fechatter" at zero.
export function unreadTotal() {
  let total = 0;
  for (const chat of state.chats.values()) total += (isMuted(chat.id) ? chat.mention_count : chat.unread_count) || 0;
  return total;
}

export function updateTitle() {
  const total = state.me ? unreadTotal() : 0;
  const title = total > 0 ? `(${total}) ${APP_TITLE}` : APP_TITLE;
  if (document.title !== title) document.title = title;
}

// --- desktop notifications ---------------------------------------------------------------

export function notificationsSupported() {
  return typeof window.Notification === "function";
}

// "granted" | "denied" | "default" | "unsupported"
export function notificationPermission() {
  return notificationsSupported() ? window.Notification.permission : "unsupported";
}

// Ask the browser for permission. Call only from a user action (a click in Settings): browsers
// ignore or penalise asking on load, and so do people.
export async function askNotificationPermission() {
  if (!notificationsSupported()) return "unsupported";
  return window.Notification.requestPermission();
}

// chat id -> the Notification showing for it (one per chat: a newer one replaces it via `tag`);
// at most one entry per chat of the workspace, dropped when the chat is read or the
// notification closes.
const shown = new Map();

// Whether message `m` (of `chat`, not yet seen) raises a desktop notification: a direct message
// (Single chat) or a mention of me (`<@me>` or `<!channel>`), sent by someone else, while the
// tab is hidden, the chat not muted, me not busy, and the permission granted.
export function shouldNotify(m, chat) {
  if (!chat || m.deleted || m.sender_id === state.me?.id) return false;
  if (document.visibilityState === "visible") return false;
  if (isMuted(chat.id) || isDoNotDisturb()) return false; // muted, or my status is busy
  if (notificationPermission() !== "granted") return false;
  return chat.type === "Single" || mentionsMe(m);
}

function senderName(m) {
  return state.users.get(m.sender_id)?.fullname ?? "Someone";
}

function whereLabel(chat) {
  return chat.type === "PublicChannel" ? `#${chatName(chat)}` : chatName(chat);
}

function raise(m, chat) {
  const title = chat.type === "Single" ? senderName(m) : `${senderName(m)} in ${whereLabel(chat)}`;
  const text = plainText(m.content, (id) => state.users.get(id)?.fullname ?? null) || (m.files?.length ? "[attachment]" : "");
  let n;
  try {
    n = new window.Notification(title, { body: text.slice(0, 200), tag: `fechatter-chat-${chat.id}`, icon: "/static/favicon.svg" });
  } catch {
    return; // e.g. a platform that only allows notifications from a service worker
  }
  shown.get(chat.id)?.close();
  shown.set(chat.id, n);
  n.onclick = () => {
    window.focus();
    n.close();
    if (state.chats.has(chat.id)) openChat(chat.id);
  };
  n.onclose = () => { if (shown.get(chat.id) === n) shown.delete(chat.id); };
}

// The chat was read (opened, or read on another device): its notification is stale.
export function clearNotification(chatId) {
  const n = shown.get(chatId);
  if (n) { shown.delete(chatId); n.close(); }
}

// --- screen-reader announcements -----------------------------------------------------------

// At most one announcement per ANNOUNCE_GAP_MS; what arrives in between is summed up in one
// announcement at the end of the gap ("3 new messages in 2 chats"), so a busy workspace does not
// talk over the person. `held` is bounded: a count and a set of chat ids.
const ANNOUNCE_GAP_MS = 10_000;
let lastAnnounced = -Infinity;
let held = null; // {count, chats: Set, text}
let heldTimer = null;

function say(text) {
  // A new node in the polite live region is announced once (even when the text repeats).
  $("#announcer").replaceChildren(el("p", { text }));
}

function flush() {
  heldTimer = null;
  if (!held) return;
  const { count, chats, text } = held;
  held = null;
  lastAnnounced = Date.now();
  say(count === 1 ? text : `${count} new messages in ${chats.size} chat${chats.size === 1 ? "" : "s"}`);
}

function announce(m, chat) {
  const text = `New message from ${senderName(m)} in ${whereLabel(chat)}`;
  const now = Date.now();
  if (!heldTimer && now - lastAnnounced >= ANNOUNCE_GAP_MS) {
    lastAnnounced = now;
    say(text);
    return;
  }
  held ??= { count: 0, chats: new Set(), text };
  held.count += 1;
  held.chats.add(chat.id);
  held.text = text;
  heldTimer ??= setTimeout(flush, Math.max(0, lastAnnounced + ANNOUNCE_GAP_MS - now));
}

// A new message of someone else's arrived live (timeline.js onMessage, counted as unread or read
// at once): notify and announce as the rules above say.
export function onIncoming(m, chat) {
  if (shouldNotify(m, chat)) raise(m, chat);
  if (m.chat_id !== state.current && !isMuted(chat?.id) && !m.deleted) announce(m, chat);
}

// Signing out: nothing announced or shown for the previous person.
export function resetNotify() {
  for (const n of shown.values()) n.close();
  shown.clear();
  clearTimeout(heldTimer);
  heldTimer = null;
  held = null;
  document.title = APP_TITLE;
}
