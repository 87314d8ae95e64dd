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
  const form = el(
    "form",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          await onSubmit(new FormData(form));
          // Unless onSubmit closed it already, or put another dialog in its place.
          if ($("#dialog").contains(form)) closeDialog();
        } catch (err) {
          // onSubmit may fail after closing the dialog (a new chat that then fails to load):
          // the message still reaches the person.
          if ($("#dialog").open && $("#dialog").contains(form)) error.textContent = problemText(err);
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
