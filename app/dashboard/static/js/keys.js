// The page's keyboard: one handler for the whole document, so that a key means one thing
// wherever the focus is. Space freezes (or plays) the VIEW and never re-fires a focused button:
// after clicking Heal or Write the focus stays on that button, and the browser's own space
// activation would heal or write again, in front of an audience. `?` lists the keys; Esc closes.
//
// Keys are ignored while typing (text inputs, textareas, selects, anything contenteditable) and
// with Ctrl, Meta or Alt held (the browser's and the system's shortcuts stay theirs). Shift is
// allowed: `?` needs it on most layouts, and A or a mean the same.
//
// A binding is a character (letters in lower case) or a named key as KeyboardEvent.key names it
// ("ArrowRight": the presenter's → next caption); arrows stay the control's own on a focused
// input (a range slider moves with them).
//
// app.js binds the actions (keys.bind); a binding may carry `available()`, asked on every press
// and when the overlay opens: a key whose action is not there (no admin rights, a cut this
// cluster does not offer, an endpoint the server lacks) does nothing and is not listed.

import { el, setChildren } from "./dom.js";

// inputs where a space or a letter is text being typed; other inputs (range, checkbox, file,
// button) are controls
const TEXT_INPUTS = new Set(["", "text", "search", "email", "url", "password", "tel", "number", "date",
  "datetime-local", "month", "time", "week"]);

export function isTyping(t) {
  if (!t || t.nodeType !== 1) return false;
  if (t.isContentEditable) return true;
  const tag = t.tagName;
  if (tag === "TEXTAREA" || tag === "SELECT") return true;
  return tag === "INPUT" && TEXT_INPUTS.has((t.getAttribute("type") || "").toLowerCase());
}

// Space on these keeps its native meaning: it toggles a choice and sends nothing.
function isToggle(t) {
  return t && t.tagName === "INPUT" && ["checkbox", "radio"].includes((t.getAttribute("type") || "").toLowerCase());
}

const isSpace = (e) => e.key === " " || e.code === "Space";
const modified = (e) => e.ctrlKey || e.metaKey || e.altKey;

export class Keys {
  // space(): what the space bar does (the view's pause/play)
  constructor({ space, root = document }) {
    this.space = space;
    this.bindings = []; // {key, label, fn, available}
    this.overlay = this.buildOverlay();
    root.addEventListener("keydown", (e) => this.onKeyDown(e));
    // Firefox activates a button on keyup of space: that one is the page's too
    root.addEventListener("keyup", (e) => {
      if (isSpace(e) && !modified(e) && !isTyping(e.target) && !isToggle(e.target)) e.preventDefault();
    });
  }

  // key: one character as KeyboardEvent.key gives it (letters in lower case), or a named key
  // ("ArrowRight"); shown: how the `?` list writes it (default: the key in upper case)
  bind(key, label, fn, available = () => true, shown = null) {
    this.bindings = this.bindings.filter((b) => b.key !== key);
    this.bindings.push({ key, label, fn, available, shown: shown || key.toUpperCase() });
  }

  onKeyDown(e) {
    if (modified(e) || e.isComposing) return;
    if (e.key === "Escape" && !this.overlay.hidden) { // from anywhere, a field too
      e.preventDefault();
      this.closeHelp();
      return;
    }
    if (isTyping(e.target)) return;
    if (isSpace(e)) {
      if (isToggle(e.target)) return;
      e.preventDefault(); // never the focused button's click, never a page scroll
      if (!e.repeat) this.space();
      return;
    }
    if (e.key === "?") {
      e.preventDefault();
      if (this.overlay.hidden) this.openHelp(); else this.closeHelp();
      return;
    }
    if (e.repeat) return; // held keys would cut and heal over and over
    const named = e.key.length !== 1;
    if (named && e.key.startsWith("Arrow") && e.target && e.target.tagName === "INPUT") return;
    const name = named ? e.key : e.key.toLowerCase();
    const b = this.bindings.find((x) => x.key === name);
    if (!b || !b.available()) return;
    e.preventDefault();
    b.fn();
  }

  // -- the `?` overlay -------------------------------------------------------------------------

  buildOverlay() {
    const list = el("dl", { class: "keys-list", "data-testid": "keys-list" });
    const close = el("button", { type: "button", class: "btn btn-small keys-close", title: "close (Esc)", text: "Close" });
    const box = el("div", { class: "keys-box" },
      el("h2", { class: "keys-title", text: "Keyboard" }), list,
      el("p", { class: "keys-note", text: "Keys do nothing while you type in a field, or with Ctrl, Alt or ⌘ held." }), close);
    const overlay = el("div", { id: "keys-overlay", class: "keys-overlay", role: "dialog", "aria-label": "keyboard shortcuts", "data-testid": "keys-overlay" }, box);
    overlay.hidden = true;
    close.addEventListener("click", () => this.closeHelp());
    overlay.addEventListener("click", (e) => { if (e.target === overlay) this.closeHelp(); });
    document.body.appendChild(overlay);
    this.list = list;
    return overlay;
  }

  rows() {
    const rows = [["Space", "freeze the view / play it (the cluster runs on)"]];
    for (const b of this.bindings) if (b.available()) rows.push([b.shown, b.label]);
    rows.push(["?", "show or hide this list"], ["Esc", "close it"]);
    return rows;
  }

  openHelp() {
    setChildren(this.list, this.rows().map(([k, what]) => [
      el("dt", {}, el("kbd", { text: k })), el("dd", { text: what })]));
    this.overlay.hidden = false;
  }

  closeHelp() {
    this.overlay.hidden = true;
  }
}
