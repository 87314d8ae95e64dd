// Initials avatars: a person's initials on a colour chosen from their user id, so the same
// person has the same colour everywhere (messages, member list, direct messages in the chat
// list). Every colour carries white text at ≥ 4.5:1 (app.css `.av0`…`.av7`). The initials are
// decorative (aria-hidden): the name is always written next to them. A person with an uploaded
// avatar (files.js `avatarNode`) gets the picture over the initials, which stay underneath
// until it loads (and if it fails).

import { el } from "./dom.js";
import { avatarNode } from "./files.js";

const COLOURS = 8;

// "Ada Lovelace" → "AL", "cher" → "C", "" → "?". First letters of the first and last words,
// whole code points (an emoji or an accented letter is not split).
export function initials(fullname) {
  const words = String(fullname ?? "").trim().split(/\s+/).filter(Boolean);
  if (!words.length) return "?";
  const first = [...words[0]][0];
  const last = words.length > 1 ? [...words[words.length - 1]][0] : "";
  return (first + last).toLocaleUpperCase();
}

export function colourIndex(userId) {
  return ((Number(userId) % COLOURS) + COLOURS) % COLOURS;
}

// Presence is not drawn here: status.js `statusBadge` stands beside it (an icon and a word).
export function avatar(userId, fullname, { small = false } = {}) {
  return el(
    "span",
    { class: `avatar av${colourIndex(userId)}${small ? " small" : ""}`, "data-user": userId },
    el("span", { "aria-hidden": "true", text: initials(fullname) }),
    avatarNode(userId, small ? 22 : 28),
  );
}
