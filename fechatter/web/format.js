// Message formatting in Slack's style, rendered only as DOM nodes built with createElement and
// text nodes — message text is never parsed as HTML, so no markup in it can reach the page.
//
//   *bold*  _italic_  ~strike~  `code`  ```fenced code block```  > quote (at a line's start)
//   http(s) links (clickable, new tab, rel="noopener noreferrer"), line breaks as typed,
//   <@USER_ID> a mention (shown as @Full Name), <!channel> a mention of everyone.
//
// Markers only count at word edges (snake_case_name stays as it is) and within one line;
// nothing inside `code` or a fenced block is formatted. Only http: and https: become links.

const TAGS = { "*": "strong", _: "em", "~": "s" };
const WORD = /[\p{L}\p{N}]/u;
const LINK = /https?:\/\/[^\s<>`]+/iy;
// The server's own form: canonical decimal, no leading zeros (`<@02>` is not a mention).
const MENTION = /<@([1-9][0-9]{0,18})>/y;
const CHANNEL = /<!channel>/y;
const TRAILING = /[.,;:!?'")\]]+$/;

// ctx: {meId, name(id) -> string|null, mentions: Set of id strings the server accepted | null}
// Ids are compared as decimal strings (never Number("02") === 2); no `mentions` means none.
export function formatMessage(text, ctx) {
  const frag = document.createDocumentFragment();
  const parts = text.split("```");
  if (parts.length % 2 === 0) {
    const tail = parts.pop(); // an unpaired fence stays literal
    parts[parts.length - 1] += "```" + tail;
  }
  parts.forEach((part, k) => {
    if (k % 2) {
      const pre = document.createElement("pre");
      const code = document.createElement("code");
      code.textContent = part.replace(/^\n/, "").replace(/\n$/, "");
      pre.append(code);
      frag.append(pre);
      return;
    }
    let body = part;
    if (k > 0) body = body.replace(/^\n/, "");
    if (k < parts.length - 1) body = body.replace(/\n$/, "");
    lines(body, ctx, frag);
  });
  return frag;
}

function lines(text, ctx, parent) {
  if (!text) return;
  const all = text.split("\n");
  let needBreak = false;
  for (let i = 0; i < all.length; i++) {
    if (/^>/.test(all[i])) {
      const quote = document.createElement("blockquote");
      let first = true;
      for (; i < all.length && /^>/.test(all[i]); i++) {
        if (!first) quote.append("\n");
        inline(all[i].replace(/^> ?/, ""), ctx, quote);
        first = false;
      }
      i -= 1;
      parent.append(quote);
      needBreak = false;
      continue;
    }
    if (needBreak) parent.append("\n");
    inline(all[i], ctx, parent);
    needBreak = true;
  }
}

const wordAt = (text, i) => i >= 0 && i < text.length && WORD.test(text[i]);

function closing(text, i, mark) {
  if (i + 1 >= text.length || /\s/.test(text[i + 1])) return -1;
  for (let j = text.indexOf(mark, i + 2); j !== -1; j = text.indexOf(mark, j + 1)) {
    if (!/\s/.test(text[j - 1]) && !wordAt(text, j + 1)) return j;
  }
  return -1;
}

function inline(text, ctx, parent) {
  let buf = "";
  const flush = () => {
    if (buf) parent.append(buf); // a string appends as a text node
    buf = "";
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "`") {
      const j = text.indexOf("`", i + 1);
      if (j > i + 1) {
        flush();
        const code = document.createElement("code");
        code.textContent = text.slice(i + 1, j);
        parent.append(code);
        i = j + 1;
        continue;
      }
    }
    if (TAGS[c] && !wordAt(text, i - 1)) {
      const j = closing(text, i, c);
      if (j !== -1) {
        flush();
        const node = document.createElement(TAGS[c]);
        inline(text.slice(i + 1, j), ctx, node);
        parent.append(node);
        i = j + 1;
        continue;
      }
    }
    if (c === "<") {
      MENTION.lastIndex = i;
      const m = MENTION.exec(text);
      const id = m && ctx.mentions?.has(m[1]) ? m[1] : null;
      const name = id !== null ? ctx.name(Number(id)) : null;
      if (name) {
        flush();
        parent.append(mention(`@${name}`, id === String(ctx.meId), id));
        i += m[0].length;
        continue;
      }
      CHANNEL.lastIndex = i;
      if (CHANNEL.test(text)) {
        flush();
        parent.append(mention("@channel", true, null));
        i = CHANNEL.lastIndex;
        continue;
      }
    }
    if ((c === "h" || c === "H") && !wordAt(text, i - 1)) {
      LINK.lastIndex = i;
      const m = LINK.exec(text);
      const raw = m ? m[0].replace(TRAILING, "") : "";
      const href = raw ? safeHref(raw) : null;
      if (href) {
        flush();
        const a = document.createElement("a");
        a.href = href;
        a.textContent = raw;
        a.target = "_blank";
        a.rel = "noopener noreferrer";
        parent.append(a);
        i += raw.length;
        continue;
      }
    }
    buf += c;
    i += 1;
  }
  flush();
}

function safeHref(raw) {
  try {
    const url = new URL(raw);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

function mention(text, me, id) {
  const span = document.createElement("span");
  span.className = me ? "mention me" : "mention";
  if (id !== null) span.dataset.userId = String(id);
  span.textContent = text;
  return span;
}

// The text of a message for one-line previews: mention tokens as names, no markers parsed.
export function plainText(text, name) {
  return text
    .replace(/<@([1-9][0-9]{0,18})>/g, (all, id) => {
      const who = name(Number(id));
      return who ? `@${who}` : all;
    })
    .replace(/<!channel>/g, "@channel");
}
