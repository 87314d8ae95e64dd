// A small bundled emoji set with shortcodes (no network needed) and the picker dialog. The
// server also accepts any other single emoji and custom `:shortcode:`s (SPEC §6).

import { el, problemText } from "./dom.js";
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

// What Enter in the search box sends: `{value}` (an emoji or a lower-cased `:shortcode:`) or
// `{error}` (a sentence for the picker to show; nothing is sent). Order: an exact bundled name,
// a typed `:name:` (custom, lower-cased — the server accepts `[a-z0-9_+-]{1,32}`), the best
// bundled match, a bare name as a custom shortcode, a pasted emoji (the server validates it).
export function resolveTyped(typed) {
  const raw = typed.trim();
  if (!raw) return { error: "Type a shortcode such as :tada:, or pick an emoji below." };
  const lower = raw.toLowerCase();
  const name = lower.replace(/^:|:$/g, "");
  const exact = EMOJI.find(([, ...names]) => names.includes(name));
  if (exact) return { value: exact[0] };
  const custom = SHORTCODE.exec(lower);
  if (custom && /^:.*:$/.test(lower)) return { value: `:${custom[1]}:` };
  const first = searchEmoji(raw)[0];
  if (first) return { value: first[0] };
  if (custom) return { value: `:${custom[1]}:` };
  if (!/\s/.test(raw) && /[\p{Extended_Pictographic}\p{Regional_Indicator}]/u.test(raw)) return { value: raw };
  return { error: `“${raw}” is not an emoji or a :shortcode: (1–32 of a–z, 0–9, _ + -).` };
}

// Opens the picker; `onPick(emoji)` gets an emoji character or a custom `:shortcode:` and
// returns a promise: the picker closes when it resolves, and shows the problem (the server's
// 422 `detail` or field message) inline when it rejects. Nothing fails silently.
// The grid is one tab stop (roving tabindex): arrow keys move between emoji, Home/End jump.
export function pickEmoji(onPick) {
  const grid = el("div", { class: "emoji-grid", role: "group", "aria-label": "Emoji (arrow keys move)" });
  const error = el("p", { class: "error emoji-error", id: "emoji-error", role: "alert" });
  let busy = false;
  const pick = async (value) => {
    if (busy) return;
    busy = true;
    error.textContent = "";
    try {
      await onPick(value);
      closeDialog();
    } catch (err) {
      error.textContent = problemText(err);
    } finally {
      busy = false;
    }
  };
  const search = el("input", { type: "text", placeholder: "Search, or type :shortcode:", "aria-label": "Search emoji by shortcode", "aria-describedby": "emoji-error", autocomplete: "off" });
  const buttons = () => [...grid.querySelectorAll("button.emoji")];
  const focusAt = (i) => {
    const all = buttons();
    if (!all.length) return;
    const k = Math.max(0, Math.min(all.length - 1, i));
    for (const [j, b] of all.entries()) b.tabIndex = j === k ? 0 : -1;
    all[k].focus();
  };
  const fill = () => {
    grid.replaceChildren(
      ...searchEmoji(search.value).map(([emoji, name], i) =>
        el("button", { type: "button", class: "emoji", title: `:${name}:`, "aria-label": `:${name}:`, tabindex: i === 0 ? "0" : "-1", text: emoji, onclick: () => pick(emoji) }),
      ),
    );
  };
  grid.addEventListener("keydown", (event) => {
    const all = buttons();
    const at = all.indexOf(document.activeElement);
    if (at < 0) return;
    const columns = getComputedStyle(grid).gridTemplateColumns.split(" ").length || 1;
    const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns }[event.key];
    if (event.key === "ArrowUp" && at < columns) { event.preventDefault(); search.focus(); return; }
    if (step !== undefined) focusAt(at + step);
    else if (event.key === "Home") focusAt(0);
    else if (event.key === "End") focusAt(all.length - 1);
    else return;
    event.preventDefault();
  });
  search.addEventListener("input", () => { error.textContent = ""; fill(); });
  search.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown") { event.preventDefault(); focusAt(0); return; }
    if (event.key !== "Enter") return;
    event.preventDefault();
    const typed = resolveTyped(search.value);
    if (typed.error) error.textContent = typed.error;
    else pick(typed.value);
  });
  fill();
  openDialog(
    el("h2", { text: "Add a reaction" }),
    search,
    error,
    grid,
    el("div", { class: "dialog-actions" }, el("button", { type: "button", text: "Cancel", onclick: closeDialog })),
  );
  search.focus();
}
