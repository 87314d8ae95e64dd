// `@` in a composer suggests the chat's members; picking one inserts the `<@USER_ID>` token
// the server understands (the composer shows the token; the sent message shows the name).
// ArrowUp/ArrowDown move, Enter or Tab pick, Esc closes. `@channel` inserts `<!channel>`.

import { el } from "./dom.js";
import { state } from "./state.js";

const QUERY = /(^|\s)@([\p{L}\p{N}_.'-]{0,32})$/u;
let counter = 0;

export function attachSuggest(input, chatIdOf) {
  const id = `suggest-${++counter}`;
  const list = el("ul", { id, class: "suggest", role: "listbox", "aria-label": "Mention someone", hidden: true });
  input.after(list);
  input.setAttribute("aria-autocomplete", "list");
  input.setAttribute("aria-controls", id); // (a textarea is a textbox: aria-expanded is not allowed on it)
  let options = [];
  let active = 0;
  let start = -1;

  const close = () => {
    list.hidden = true;
    options = [];
    input.removeAttribute("aria-activedescendant");
  };

  const show = () => {
    list.replaceChildren(
      ...options.map((o, i) =>
        el("li", {
          id: `${id}-${i}`,
          role: "option",
          class: i === active ? "active" : "",
          "aria-selected": String(i === active),
          text: o.label,
          onmousedown: (event) => { event.preventDefault(); pick(i); },
        }),
      ),
    );
    list.hidden = false;
    input.setAttribute("aria-activedescendant", `${id}-${active}`);
  };

  const pick = (i) => {
    const o = options[i];
    const caret = input.selectionStart;
    input.value = `${input.value.slice(0, start)}${o.token} ${input.value.slice(caret)}`;
    const at = start + o.token.length + 1;
    input.setSelectionRange(at, at);
    close();
    input.focus();
  };

  input.addEventListener("input", () => {
    const before = input.value.slice(0, input.selectionStart);
    const match = QUERY.exec(before);
    const chatId = chatIdOf();
    if (!match || !chatId) { close(); return; }
    const q = match[2].toLowerCase();
    start = before.length - q.length - 1;
    const members = (state.chatMembers.get(chatId) ?? []).filter((m) => m.user_id !== state.me.id);
    options = members
      .filter((m) => m.fullname.toLowerCase().split(/\s+/).some((w) => w.startsWith(q)) || m.fullname.toLowerCase().startsWith(q))
      .slice(0, 8)
      .map((m) => ({ label: m.fullname, token: `<@${m.user_id}>` }));
    if ("channel".startsWith(q) && state.chats.get(chatId)?.type !== "Single") options.push({ label: "@channel — everyone in this chat", token: "<!channel>" });
    active = 0;
    if (options.length) show();
    else close();
  });
  input.addEventListener("blur", close);

  return {
    // Returns true when the key was the suggestion list's (the composer must not act on it).
    onKey(event) {
      if (list.hidden || !options.length) return false;
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        active = (active + (event.key === "ArrowDown" ? 1 : options.length - 1)) % options.length;
        show();
      } else if (event.key === "Enter" || event.key === "Tab") {
        pick(active);
      } else if (event.key === "Escape") {
        close();
      } else {
        return false;
      }
      event.preventDefault();
      event.stopPropagation();
      return true;
    },
  };
}
