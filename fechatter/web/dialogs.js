// The one modal <dialog> (showModal: focus is trapped inside and Esc closes it) and the
// form/alert/people-picker shapes built on it.

import { $, el, problemText } from "./dom.js";

export function openDialog(...content) {
  const dialog = $("#dialog");
  dialog.replaceChildren(...content);
  // The dialog is named by its heading (axe: aria-dialog-name).
  const heading = dialog.querySelector("h2, h3");
  if (heading) {
    heading.id ||= "dialog-title";
    dialog.setAttribute("aria-labelledby", heading.id);
  } else dialog.removeAttribute("aria-labelledby");
  if (!dialog.open) dialog.showModal();
  return dialog;
}

export function closeDialog() { $("#dialog").close(); }

export function alertDialog(title, text) {
  openDialog(el("h2", { text: title }), el("p", { text }), el("div", { class: "dialog-actions" }, el("button", { type: "button", text: "OK", onclick: closeDialog })));
}

export function formDialog(title, fields, submitText, onSubmit, submitClass = "primary") {
  const error = el("p", { class: "error", role: "alert" });
  // onSubmit may close the dialog itself (a new chat closes it before loading) or put another
  // in its place; then its outcome is not this form's to show.
  const showing = () => $("#dialog").open && $("#dialog").contains(form);
  const form = el(
    "form",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          await onSubmit(new FormData(form));
          if (showing()) closeDialog();
        } catch (err) {
          // A failure after the dialog closed (the new chat then failed to load) is an alert.
          if (showing()) error.textContent = problemText(err);
          else alertDialog(title, problemText(err));
        }
      },
    },
    el("h2", { text: title }),
    ...fields,
    error,
    el("div", { class: "dialog-actions" }, el("button", { type: "button", text: "Cancel", onclick: closeDialog }), el("button", { type: "submit", class: submitClass, text: submitText })),
  );
  openDialog(form);
  (form.querySelector("input, select") ?? form.querySelector("button"))?.focus();
}

export function peoplePicker(users) {
  if (!users.length) return el("p", { class: "hint", text: "Nobody else in this workspace yet — invite people from the ⋯ menu." });
  return el("div", { class: "picker" }, ...users.map((u) => el("label", {}, el("input", { type: "checkbox", name: "member", value: u.id }), u.fullname, el("span", { class: "hint", text: u.email }))));
}
