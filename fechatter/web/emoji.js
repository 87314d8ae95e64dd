// A small bundled emoji set with shortcodes (no network needed) and the picker dialog. The
// server also accepts any other single emoji and custom `:shortcode:`s (SPEC §6).

import { el } from "./dom.js";
import { closeDialog, openDialog } from "./dialogs.js";

export const EMOJI = [
  ["👍", "+1", "thumbsup"], ["👎", "-1", "thumbsdown"], ["😄", "smile"], ["😂", "joy"], ["❤️", "heart"],
  ["🎉", "tada"], ["🙏", "pray"], ["👀", "eyes"], ["🔥", "fire"], ["✅", "white_check_mark"],
  ["🚀", "rocket"], ["💯", "100"], ["🤔", "thinking_face", "thinking"], ["😮", "open_mouth"], ["😢", "cry"],
  ["😡", "rage"], ["👏", "clap"], ["🙌", "raised_hands"], ["👋", "wave"], ["😊", "blush"],
  ["😉", "wink"], ["😎", "sunglasses"], ["🤝", "handshake"], ["💡", "bulb"], ["⭐", "star"],
  ["❓", "question"], ["❗", "exclamation"], ["⚠️", "warning"], ["☕", "coffee"], ["🍕", "pizza"],
  ["🐛", "bug"], ["🔧", "wrench"], ["📌", "pushpin"], ["✨", "sparkles"], ["🥳", "partying_face"],
  ["😅", "sweat_smile"], ["🙈", "see_no_evil"], ["💪", "muscle"], ["👌", "ok_hand"], ["➕", "heavy_plus_sign"],
];

const SHORTCODE = /^:?([a-z0-9_+-]{1,32}):?$/;

// Matches for a typed filter (shortcode prefix or contained), best first.
export function searchEmoji(query) {
  const q = query.trim().toLowerCase().replace(/^:|:$/g, "");
  if (!q) return EMOJI;
  const starts = EMOJI.filter(([, ...names]) => names.some((n) => n.startsWith(q)));
  const contains = EMOJI.filter((e) => !starts.includes(e) && e.slice(1).some((n) => n.includes(q)));
  return [...starts, ...contains];
}

// Opens the picker; `onPick(emoji)` gets an emoji character or a custom `:shortcode:`.
export function pickEmoji(onPick) {
  const grid = el("div", { class: "emoji-grid", role: "group", "aria-label": "Emoji" });
  const pick = (value) => { closeDialog(); onPick(value); };
  const search = el("input", { type: "text", placeholder: "Search, or type :shortcode:", "aria-label": "Search emoji by shortcode", autocomplete: "off" });
  const fill = () => {
    grid.replaceChildren(
      ...searchEmoji(search.value).map(([emoji, name]) =>
        el("button", { type: "button", class: "emoji", title: `:${name}:`, "aria-label": `:${name}:`, text: emoji, onclick: () => pick(emoji) }),
      ),
    );
  };
  search.addEventListener("input", fill);
  search.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault();
    const first = searchEmoji(search.value)[0];
    const custom = SHORTCODE.exec(search.value.trim());
    if (search.value.trim() && first) pick(first[0]);
    else if (custom) pick(`:${custom[1]}:`);
  });
  fill();
  openDialog(
    el("h3", { text: "Add a reaction" }),
    search,
    grid,
    el("div", { class: "dialog-actions" }, el("button", { type: "button", text: "Cancel", onclick: closeDialog })),
  );
  search.focus();
}
