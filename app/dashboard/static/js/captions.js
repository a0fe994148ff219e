// A scenario's captions as lower-thirds on the map (#scenario-status), and its running total.
//
// - The story: a `say` line stays up until the next `say`, and each for at least MIN_HOLD_MS of
//   wall time: lines that arrive sooner queue (in coordination-tax the cut, the writers' count
//   and the leader's commit come within a hundredth of a second). The hold is on the page, in
//   wall time, because reading takes wall time whatever the simulation's speed.
// - Progress: the mechanical steps (wait, expect, write, ...) show at once, small, beside it.
// - The verdict: ✓ or ✗ and the claim, large, after the last line's hold; it replaces the rest.
// - A line the run waits on (`say: {wait: presenter}`) says "→ to go on" while it waits.
// - The total: the counter or set the scenario is about (the events' `tally`), big on the map.
//
// `skip()` (the → key when no run waits) shows the next queued line now.

import { $ } from "./dom.js";

export const MIN_HOLD_MS = 2000;
// timers and performance.now() are coarsened by the browser: a frame more, so "at least 2 s" holds
const HOLD_SLACK_MS = 20;

export class Captions {
  constructor() {
    this.queue = []; // {kind: "say"|"verdict", text, tone, waiting}
    this.shownAt = -Infinity;
    this.current = null;
    this.timer = null;
    this.waiting = false; // the run waits for the presenter's → on the line shown (or queued)
  }

  get box() { return $("scenario-status"); }

  part(name) { return this.box.querySelector(`.lt-${name}`); }

  set(name, text) {
    const n = this.part(name);
    n.textContent = text || "";
    n.hidden = !text;
  }

  // A new run: whatever the last one left goes.
  start(text) {
    clearTimeout(this.timer);
    this.queue = [];
    this.current = null;
    this.shownAt = -Infinity;
    this.waiting = false;
    const b = this.box;
    b.hidden = false;
    b.classList.remove("scenario-ok", "scenario-bad", "lt-waiting", "lt-done");
    this.set("say", "");
    this.set("verdict", "");
    this.set("progress", text);
    $("tally").hidden = true;
  }

  say(text, waiting = false) {
    this.queue.push({ kind: "say", text, waiting });
    this.pump();
  }

  progress(text) {
    if (this.current && this.current.kind === "verdict") return;
    this.box.hidden = false;
    this.set("progress", text);
  }

  verdict(text, tone) {
    if (this.queue.some((q) => q.kind === "verdict") || (this.current && this.current.kind === "verdict")) return;
    this.queue.push({ kind: "verdict", text, tone });
    this.pump();
  }

  // the run stopped waiting (→ pressed anywhere, or its max wait passed)
  released() {
    this.waiting = false;
    for (const q of this.queue) q.waiting = false;
    this.box.classList.remove("lt-waiting");
  }

  skip() {
    if (!this.queue.length) return false;
    this.shownAt = -Infinity;
    this.pump();
    return true;
  }

  pump() {
    clearTimeout(this.timer);
    if (!this.queue.length) return;
    const left = this.current && this.current.kind === "say" ? this.shownAt + MIN_HOLD_MS + HOLD_SLACK_MS - performance.now() : 0;
    if (left > 0) {
      this.timer = setTimeout(() => this.pump(), left);
      return;
    }
    this.show(this.queue.shift());
    if (this.queue.length) this.pump();
  }

  show(item) {
    const b = this.box;
    b.hidden = false;
    this.current = item;
    this.shownAt = performance.now();
    if (item.kind === "say") {
      this.set("say", item.text);
      if (item.waiting) this.waiting = true;
      b.classList.toggle("lt-waiting", !!item.waiting && this.waiting);
      return;
    }
    this.set("say", "");
    this.set("progress", "");
    this.set("verdict", item.text);
    b.classList.remove("lt-waiting");
    b.classList.add("lt-done");
    b.classList.toggle("scenario-ok", item.tone === "ok");
    b.classList.toggle("scenario-bad", item.tone === "bad");
  }

  // The running total: {type, key, min, max, agree, pops, members?, more?} (engine.tally)
  tally(t) {
    const box = $("tally");
    if (!t) return;
    box.hidden = false;
    const part = (n) => box.querySelector(`.tally-${n}`);
    part("label").textContent = t.type === "set" ? `set ${t.key}` : `counter ${t.key}`;
    part("value").textContent = String(t.max);
    let note;
    if (t.agree) note = t.type === "set" ? `${t.max} members at all ${t.pops} POPs` : `at all ${t.pops} POPs`;
    else note = `converging: ${t.min}–${t.max} across ${t.pops} POPs`;
    if (t.type === "set" && t.members && t.members.length) {
      note += " · " + t.members.map((m) => (typeof m === "string" ? m : JSON.stringify(m))).join(", ")
        + (t.more ? ` +${t.more}` : "");
    }
    part("note").textContent = note;
    box.classList.toggle("tally-agree", !!t.agree);
  }
}
