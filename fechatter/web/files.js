// Files (SPEC §8): uploads from the composer — the attach button, drag-and-drop onto the
// timeline, paste from the clipboard — with progress and cancel; attachments in messages
// (images as thumbnails that open full size, other files as a card with name, size and a
// download link); avatars. The access token never goes in a URL: <img> and download links
// use short-lived signed URLs (POST /api/files/sign, bound to this user), and a file's name,
// size and type come from a HEAD request carrying the token in its Authorization header.

import { $, el } from "./dom.js";
import { api, state } from "./state.js";

const SAFE_IMAGES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);
const SIGN_BATCH = 100; // the route signs at most 100 URLs per request
const RENEW_MS = 60_000; // a signed URL is renewed when it has less than this left

// -- signed URLs -------------------------------------------------------------------------
const signed = new Map(); // url -> {href, expires (ms)}
let queue = null; // URLs asked for in this tick: one request signs them all

export function signedUrl(url) {
  const hit = signed.get(url);
  if (hit && hit.expires - Date.now() > RENEW_MS) return Promise.resolve(hit.href);
  if (!queue) {
    const batch = { urls: new Set() };
    batch.done = Promise.resolve().then(async () => {
      queue = null;
      const urls = [...batch.urls];
      for (let i = 0; i < urls.length; i += SIGN_BATCH) {
        const data = await api.post("/api/files/sign", { urls: urls.slice(i, i + SIGN_BATCH) });
        for (const [u, href] of Object.entries(data.urls)) {
          const expires = Number(new URL(href, location.href).searchParams.get("exp")) * 1000;
          signed.set(u, { href, expires });
        }
      }
    });
    queue = batch;
  }
  queue.urls.add(url);
  return queue.done.then(() => signed.get(url).href);
}

// -- metadata (HEAD with the token) ------------------------------------------------------
const metas = new Map(); // url -> Promise<{name, size, type}>

async function head(url) {
  const send = () => fetch(url, { method: "HEAD", headers: { Authorization: `Bearer ${api.token}` } });
  let response = await send();
  if (response.status === 401 && api.session) {
    await api.refresh();
    response = await send();
  }
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response;
}

function nameFrom(disposition) {
  const star = /filename\*=UTF-8''([^;]+)/i.exec(disposition ?? "");
  if (star) {
    try { return decodeURIComponent(star[1]); } catch { /* fall through */ }
  }
  return /filename="([^"]*)"/i.exec(disposition ?? "")?.[1] ?? "file";
}

export function fileMeta(url) {
  if (!metas.has(url)) {
    const meta = head(url).then((r) => ({
      name: nameFrom(r.headers.get("Content-Disposition")),
      size: Number(r.headers.get("Content-Length") ?? 0),
      type: r.headers.get("Content-Type") ?? "application/octet-stream",
    }));
    meta.catch(() => metas.delete(url)); // try again next time it is shown
    metas.set(url, meta);
  }
  return metas.get(url);
}

export function humanSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB"];
  let n = bytes / 1024;
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n < 10 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

// -- attachments in messages -------------------------------------------------------------
export function attachmentsNode(m) {
  if (m.deleted || !m.files?.length) return null;
  return el("div", { class: "attachments" }, ...m.files.map(attachmentNode));
}

function attachmentNode(url) {
  const node = el("div", { class: "attachment loading", "data-url": url }, el("span", { class: "hint", text: "Loading attachment…" }));
  fileMeta(url)
    .then(async (meta) => {
      if (SAFE_IMAGES.has(meta.type)) {
        const [full, thumb] = await Promise.all([signedUrl(url), signedUrl(`${url}/thumbnail`)]);
        node.className = "attachment image";
        node.replaceChildren(
          el("a", { href: full, target: "_blank", rel: "noopener noreferrer", title: `${meta.name} (open full size)` },
            el("img", { src: thumb, alt: meta.name, class: "thumb" })),
        );
      } else {
        const href = await signedUrl(url);
        node.className = "attachment card";
        node.replaceChildren(
          el("span", { class: "file-icon", "aria-hidden": "true", text: "📄" }),
          el("span", { class: "file-info" }, el("span", { class: "file-name", text: meta.name }), el("span", { class: "file-size", text: humanSize(meta.size) })),
          el("a", { href, download: meta.name, class: "download", text: "Download", "aria-label": `Download ${meta.name}` }),
        );
      }
    })
    .catch(() => {
      node.className = "attachment missing";
      node.replaceChildren(el("span", { class: "hint", text: "Attachment unavailable" }));
    });
  return node;
}

// -- avatars -----------------------------------------------------------------------------
export function avatarNode(userId, size = 24) {
  const user = userId === state.me?.id ? state.me : state.users.get(userId);
  if (!user?.avatar) return null;
  const img = el("img", { class: "avatar", alt: "", width: String(size), height: String(size) });
  signedUrl(`${user.avatar}/thumbnail`).then((href) => { img.src = href; }).catch(() => img.remove());
  return img;
}

// -- uploads -----------------------------------------------------------------------------
const uploads = []; // {file, xhr, loaded, total, result, error, node}

function postFile(file, onProgress) {
  const xhr = new XMLHttpRequest();
  const done = new Promise((resolve, reject) => {
    xhr.open("POST", "/api/files");
    xhr.setRequestHeader("Authorization", `Bearer ${api.token}`);
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.total);
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status === 201) resolve(body);
      else reject(Object.assign(new Error(body?.detail ?? `HTTP ${xhr.status}`), { status: xhr.status, problem: body }));
    };
    xhr.onerror = () => reject(Object.assign(new Error("network error"), { status: 0 }));
    xhr.onabort = () => reject(Object.assign(new Error("cancelled"), { status: -1 }));
    const form = new FormData();
    form.append("file", file, file.name || "pasted-file");
    xhr.send(form);
  });
  return { xhr, done };
}

export async function uploadFile(file, onProgress = () => {}, track = () => {}) {
  let attempt = postFile(file, onProgress);
  track(attempt.xhr);
  try {
    return await attempt.done;
  } catch (err) {
    if (err.status !== 401 || !api.session) throw err;
    await api.refresh();
    attempt = postFile(file, onProgress);
    track(attempt.xhr);
    return attempt.done;
  }
}

function renderUpload(u) {
  const pct = u.total ? Math.round((100 * u.loaded) / u.total) : 0;
  const status = u.error ? u.error : u.result ? "ready" : `${pct}%`;
  u.node.className = `upload${u.error ? " failed" : u.result ? " done" : ""}`;
  u.node.replaceChildren(
    el("span", { class: "file-name", text: u.file.name || "pasted file" }),
    u.result || u.error ? null : el("progress", { max: "100", value: String(pct), "aria-label": `Uploading ${u.file.name}` }),
    el("span", { class: "upload-status", text: status }),
    el("button", { type: "button", class: "icon", "aria-label": u.result ? `Remove ${u.file.name}` : `Cancel upload of ${u.file.name}`, title: u.result ? "Remove" : "Cancel", text: "×", onclick: () => dropUpload(u) }),
  );
}

function dropUpload(u) {
  u.xhr?.abort();
  const i = uploads.indexOf(u);
  if (i >= 0) uploads.splice(i, 1);
  u.node.remove();
  $("#uploads").hidden = uploads.length === 0;
}

export function addFiles(fileList) {
  if (!state.current) return;
  for (const file of fileList) {
    const u = { file, xhr: null, loaded: 0, total: file.size, result: null, error: null, node: el("div", { class: "upload" }) };
    uploads.push(u);
    $("#uploads").append(u.node);
    renderUpload(u);
    uploadFile(
      file,
      (loaded, total) => { u.loaded = loaded; u.total = total; renderUpload(u); },
      (xhr) => { u.xhr = xhr; },
    )
      .then((result) => { u.result = result; renderUpload(u); })
      .catch((err) => {
        if (err.status === -1) return; // cancelled: already gone
        const p = err.problem;
        u.error = p?.errors?.length ? p.errors.map((e) => e.message).join("; ") : p?.detail ?? err.message;
        renderUpload(u);
      });
  }
  $("#uploads").hidden = uploads.length === 0;
}

// The finished uploads' URLs for a send (and the tray cleared), or null while one is running.
export function takeUploads() {
  if (uploads.some((u) => !u.result && !u.error)) return null;
  const urls = uploads.filter((u) => u.result).map((u) => u.result.url);
  for (const u of [...uploads]) dropUpload(u);
  return urls;
}

export function hasUploads() {
  return uploads.some((u) => u.result);
}

export function wireFiles() {
  const composer = $("#composer");
  const input = el("input", { type: "file", id: "file-input", multiple: true, hidden: true, "aria-hidden": "true", tabindex: "-1" });
  input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
  const attach = el("button", { type: "button", id: "attach", class: "icon", title: "Attach files", "aria-label": "Attach files", text: "📎", onclick: () => input.click() });
  composer.insertBefore(attach, $("#input"));
  composer.append(input);
  composer.parentNode.insertBefore(el("div", { id: "uploads", hidden: true, "aria-live": "polite", "aria-label": "Uploads" }), composer);

  const log = $("#messages");
  const hasFiles = (e) => [...(e.dataTransfer?.types ?? [])].includes("Files");
  log.addEventListener("dragover", (e) => {
    if (!hasFiles(e) || !state.current) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
    log.classList.add("dropping");
  });
  log.addEventListener("dragleave", () => log.classList.remove("dropping"));
  log.addEventListener("drop", (e) => {
    log.classList.remove("dropping");
    if (!hasFiles(e)) return;
    e.preventDefault();
    addFiles(e.dataTransfer.files);
  });
  $("#input").addEventListener("paste", (e) => {
    const files = [...(e.clipboardData?.files ?? [])];
    if (!files.length) return;
    e.preventDefault();
    addFiles(files);
  });
}

// Settings: pick a picture, upload it, make it the avatar.
export async function setAvatar(file) {
  const uploaded = await uploadFile(file);
  const user = await api.call("PATCH", "/api/users/me", { avatar: uploaded.url });
  state.me = { ...state.me, ...user };
  return user;
}
