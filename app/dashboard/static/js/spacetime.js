// The space-time diagram (key D): the literal picture of parallel universes, as Lamport drew
// it. One lane per POP, virtual time flowing down; a write is a dot on its POP's lane, each
// replica's first apply of it a line from the write to that lane; a partition is a band across
// the lanes while it lasts. A register that holds two values somewhere forks: the arrival that
// made it 2 is drawn with a fork glyph and its count; a write that brings it back to 1 (a write
// with the read's context) is drawn as a merge.
//
// It is fed what the page's own handlers are fed (app.js: onSnapshot and handle), so it follows
// the live stream and the timeline's replay alike: a replayed keyframe drops what lies after it
// and seeds the writes the snapshot carries (their siblings unknown until events say so).
//
// Bounded: at most MAX_DOTS writes, MAX_LINES arrivals and MAX_BANDS partitions are kept, the
// oldest dropped first. Drawn on a canvas, on requestAnimationFrame, only while the panel is
// open and something changed (or at most 10 times a second while virtual time runs).
//
// window.__spacetime.model() lists what the diagram holds, for tests.

import { el } from "./dom.js";

export const MAX_DOTS = 200;
export const MAX_LINES = 1200;
export const MAX_BANDS = 20;
export const MAX_LANES = 8;
const TICK_MS = 100; // redraw for the passing of time at most this often
const MIN_SPAN_MS = 1500;
const MAX_SPAN_MS = 60_000;

const dotKey = (d) => d[0] + ":" + d[1];

export class SpaceTimeModel {
  constructor() { this.clear(); }

  clear() {
    this.writes = new Map(); // id -> {id, node, t, key, sib, merge}
    this.byDot = new Map(); // "actor:n" -> write id
    this.lines = []; // {id, from, to, t0, t1, sib, fork}
    this.arrived = new Set(); // "id@node"
    this.bands = []; // {t0, t1 (null: in force), groups}
    this.sibAt = new Map(); // "node|key" -> siblings there now
    // what a replay stepped back over: a keyframe carries writes and arrivals but not their
    // siblings, so these give them back when the replay passes them again (bounded too)
    this.seen = new Map(); // write id -> {sib, merge}
    this.seenLines = new Map(); // "id@node" -> {sib, fork}
    this.server = null;
  }

  // A snapshot: a new server run clears everything; a keyframe of this run (the timeline's
  // replay) drops what lies after its moment, then adds the writes it carries.
  snapshot(s) {
    const now = s.clock ? s.clock.now_ms : 0;
    if (s.server !== undefined && s.server !== this.server) {
      this.clear();
      this.server = s.server;
    }
    for (const l of this.lines) remember(this.seenLines, l.id + "@" + l.to, { sib: l.sib, fork: l.fork }, 2 * MAX_LINES);
    for (const [id, w] of this.writes) {
      remember(this.seen, id, { sib: w.sib, merge: w.merge }, 2 * MAX_DOTS);
      if (w.t > now) this.forget(id);
    }
    this.lines = this.lines.filter((l) => l.t1 <= now && this.writes.has(l.id));
    this.arrived = new Set(this.lines.map((l) => l.id + "@" + l.to));
    this.bands = this.bands.filter((b) => b.t0 <= now).map((b) => (b.t1 !== null && b.t1 > now ? { ...b, t1: null } : b));
    const open = this.bands.find((b) => b.t1 === null);
    if (open && !s.groups) open.t1 = now;
    // a cut already in force when this page joined (or at a replay's keyframe): from when it began
    const since = typeof s.groups_t === "number" ? s.groups_t : now;
    if (!open && s.groups) this.bands.push({ t0: since, t1: null, groups: s.groups });
    for (const r of s.writes || []) {
      if (this.writes.has(r.id)) continue;
      const key = r.keys && r.keys[0] ? r.keys[0][1] : "";
      const was = this.seen.get(r.id) || { sib: null, merge: false };
      this.addWrite({ id: r.id, node: r.origin, t: r.t, key, sib: was.sib, merge: was.merge }, [r.id]);
      for (const [node, t] of Object.entries(r.arrivals || {})) {
        if (node === r.origin || t > now) continue;
        const line = this.addLine(r.id, node, t, null);
        const seen = line && this.seenLines.get(r.id + "@" + node);
        if (seen) Object.assign(line, seen);
      }
    }
    // the sibling counts as they were at this moment: from what is kept, in time order
    this.sibAt.clear();
    const known = [...this.writes.values()].map((w) => [w.t, w.node, w.key, w.sib])
      .concat(this.lines.map((l) => [l.t1, l.to, this.writes.get(l.id).key, l.sib]))
      .filter((x) => x[3] !== null).sort((a, b) => a[0] - b[0]);
    for (const [, node, key, sib] of known) this.sibAt.set(node + "|" + key, sib);
  }

  addWrite(w, dots) {
    this.writes.set(w.id, w);
    for (const d of dots) this.byDot.set(d, w.id);
    while (this.writes.size > MAX_DOTS) this.forget(this.writes.keys().next().value);
  }

  forget(id) {
    this.writes.delete(id);
    for (const [d, wid] of this.byDot) if (wid === id) this.byDot.delete(d);
  }

  addLine(id, to, t1, sib) {
    const w = this.writes.get(id);
    if (!w || this.arrived.has(id + "@" + to)) return null;
    this.arrived.add(id + "@" + to);
    const line = { id, from: w.node, to, t0: w.t, t1, sib, fork: false };
    this.lines.push(line);
    if (this.lines.length > MAX_LINES) {
      const drop = this.lines.splice(0, this.lines.length - MAX_LINES);
      for (const l of drop) this.arrived.delete(l.id + "@" + l.to);
    }
    return line;
  }

  // One stream event; true when the picture changed.
  event(ev) {
    switch (ev.kind) {
      case "applied": return this.applied(ev);
      case "partition":
        for (const b of this.bands) if (b.t1 === null) b.t1 = ev.t;
        this.bands.push({ t0: ev.t, t1: null, groups: ev.groups });
        if (this.bands.length > MAX_BANDS) this.bands.shift();
        return true;
      case "heal":
        for (const b of this.bands) if (b.t1 === null) b.t1 = ev.t;
        return true;
      default: return false;
    }
  }

  applied(ev) {
    if (!ev.dots || !ev.dots.length) return false;
    const sibs = new Map(ev.sib || []);
    const sibOf = (key) => (sibs.has(key) ? sibs.get(key) : null);
    const first = dotKey(ev.dots[0]);
    if (ev.via === "local" && !this.byDot.has(first)) {
      const key = ev.keys && ev.keys[0] ? ev.keys[0][1] : "";
      const sib = sibOf(key);
      const before = this.sibAt.get(ev.node + "|" + key);
      // a write that leaves one value where there were several read them: the universes merge
      const merge = sib === 1 && before !== undefined && before > 1;
      this.addWrite({ id: first, node: ev.node, t: ev.t, key, sib, merge }, ev.dots.map(dotKey));
      if (sib !== null) this.sibAt.set(ev.node + "|" + key, sib);
      return true;
    }
    let changed = false;
    for (const d of ev.dots) {
      const id = this.byDot.get(dotKey(d));
      if (id === undefined) continue;
      const w = this.writes.get(id);
      const sib = sibOf(w.key);
      const line = this.addLine(id, ev.node, ev.t, sib);
      if (!line) continue;
      changed = true;
      if (sib !== null) {
        const k = ev.node + "|" + w.key;
        const before = this.sibAt.get(k);
        line.fork = sib > 1 && (before === undefined || before < sib);
        this.sibAt.set(k, sib);
      }
    }
    return changed;
  }

  // The POPs worth a lane: where recent writes were made, then where they forked, newest
  // first, at most MAX_LANES, in the topology's order.
  autoLanes(ids) {
    const want = [];
    const add = (n) => { if (!want.includes(n) && want.length < MAX_LANES) want.push(n); };
    const writes = [...this.writes.values()].reverse();
    for (const w of writes) add(w.node);
    for (const l of [...this.lines].reverse()) if (l.fork) add(l.to);
    return ids.filter((id) => want.includes(id));
  }

  toJSON() {
    return {
      dots: [...this.writes.values()].map((w) => ({ ...w })),
      lines: this.lines.map((l) => ({ ...l })),
      bands: this.bands.map((b) => ({ ...b })),
    };
  }
}

export class SpaceTime {
  // S: the page's state (ids, clock); the panel starts closed.
  constructor(S) {
    this.S = S;
    this.model = new SpaceTimeModel();
    this.pinned = null; // lanes chosen by hand, or null: automatic
    this.dirty = true;
    this.raf = null;
    this.lastDraw = 0;
    this.build();
    this.drawn = { lanes: [], dots: 0, lines: 0, frames: 0 };
  }

  build() {
    this.canvas = el("canvas", { class: "spacetime-canvas", "data-testid": "spacetime-canvas", "aria-hidden": "true" });
    this.lanesInput = el("input", { type: "text", class: "spacetime-lanes", "data-testid": "spacetime-lanes",
      "aria-label": "lanes: POP ids separated by commas (empty: the POPs of recent writes)", title: "lanes: lhr,iad,syd (empty: automatic)" });
    this.lanesInput.placeholder = "lanes: automatic";
    this.lanesInput.addEventListener("change", () => this.setLanes(this.lanesInput.value));
    const close = el("button", { type: "button", class: "btn btn-small", text: "Close", title: "key: D" });
    close.addEventListener("click", () => this.toggle(false));
    this.note = el("p", { class: "spacetime-note", "data-testid": "spacetime-note" });
    this.panel = el("section", { id: "spacetime", class: "spacetime-panel", "data-testid": "spacetime", "aria-label": "space-time diagram" },
      el("div", { class: "spacetime-head" },
        el("h2", { class: "card-title", text: "Space-time" }), this.lanesInput, close),
      this.canvas, this.note,
      el("p", { class: "spacetime-legend", text: "time flows down · ● write · fork: siblings (count) · ⊕ merged by a write with the read's context · band: partition" }));
    this.panel.hidden = true;
    document.body.appendChild(this.panel);
    window.addEventListener("resize", () => this.invalidate());
  }

  get visible() { return !this.panel.hidden; }

  toggle(show = !this.visible) {
    this.panel.hidden = !show;
    this.invalidate();
  }

  setLanes(text) {
    const ids = this.S.ids || [];
    const asked = String(text).split(/[\s,]+/).filter(Boolean);
    const lanes = ids.filter((id) => asked.includes(id)).slice(0, MAX_LANES);
    this.pinned = lanes.length ? lanes : null;
    this.lanesInput.value = this.pinned ? this.pinned.join(",") : "";
    this.invalidate();
  }

  lanes() { return this.pinned || this.model.autoLanes(this.S.ids || []); }

  onSnapshot(s) { this.model.snapshot(s); this.invalidate(); }

  onEvent(ev) { if (this.model.event(ev)) this.invalidate(); }

  invalidate() {
    this.dirty = true;
    this.schedule();
  }

  schedule() {
    if (this.raf !== null || !this.visible) return;
    this.raf = requestAnimationFrame((now) => {
      this.raf = null;
      if (!this.visible) return;
      if (this.dirty || now - this.lastDraw >= TICK_MS) {
        this.dirty = false;
        this.lastDraw = now;
        this.draw();
      }
      // time passes: draw again later, but only while the view's clock runs
      if (!(this.S.clock && this.S.clock.paused)) this.schedule();
    });
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (!w || !h) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const m = this.model;
    const lanes = this.lanes();
    const now = this.S.clock ? this.S.clock.now() : 0;
    let oldest = now;
    for (const x of m.writes.values()) oldest = Math.min(oldest, x.t);
    const span = Math.min(MAX_SPAN_MS, Math.max(MIN_SPAN_MS, (now - oldest) * 1.05));
    const top = 34, bottom = h - 8, t0 = now - span;
    const y = (t) => top + ((t - t0) / span) * (bottom - top);
    const laneX = new Map(lanes.map((id, i) => [id, ((i + 0.5) / Math.max(1, lanes.length)) * w]));
    g.font = "600 14px system-ui, sans-serif";
    g.textAlign = "center";

    for (const b of m.bands) { // partitions: a band while the cut lasts
      const ya = Math.max(top, y(b.t0)), yb = Math.min(bottom, y(b.t1 === null ? now : b.t1));
      if (yb <= ya) continue;
      g.fillStyle = "rgba(248, 113, 113, 0.12)";
      g.fillRect(0, ya, w, yb - ya);
      g.fillStyle = "#f87171";
      g.fillText("partition", w - 40, ya + 14);
    }
    g.strokeStyle = "#1d2a42";
    g.lineWidth = 2;
    g.fillStyle = "#e6edf7";
    for (const [id, x] of laneX) {
      g.beginPath(); g.moveTo(x, top); g.lineTo(x, bottom); g.stroke();
      g.fillText(id, x, 20);
    }
    let lines = 0;
    for (const l of m.lines) {
      const xa = laneX.get(l.from), xb = laneX.get(l.to);
      if (xa === undefined || xb === undefined || l.t1 < t0) continue;
      lines++;
      g.strokeStyle = l.fork ? "#fbbf24" : "rgba(56, 189, 248, 0.55)";
      g.lineWidth = l.fork ? 2.5 : 1.2;
      g.beginPath(); g.moveTo(xa, y(l.t0)); g.lineTo(xb, y(l.t1)); g.stroke();
      if (l.fork) fork(g, xb, y(l.t1), l.sib);
    }
    let dots = 0;
    for (const d of m.writes.values()) {
      const x = laneX.get(d.node);
      if (x === undefined || d.t < t0) continue;
      dots++;
      g.fillStyle = d.merge ? "#34d399" : "#ffd166";
      g.beginPath(); g.arc(x, y(d.t), d.merge ? 8 : 6, 0, Math.PI * 2); g.fill();
      if (d.merge) glyph(g, x, y(d.t), "⊕", "#34d399");
      else if (d.sib > 1) fork(g, x, y(d.t), d.sib);
    }
    this.note.textContent = lanes.length ? `${dots} writes, ${lines} arrivals over the last ${(span / 1000).toFixed(1)} s of virtual time`
      : "no writes yet: write somewhere, or run Concurrent writes";
    this.drawn = { lanes, dots, lines, frames: this.drawn.frames + 1 };
  }
}

function remember(map, k, v, max) {
  map.delete(k);
  map.set(k, v);
  if (map.size > max) map.delete(map.keys().next().value);
}

// a fork drawn, not a font's glyph (projector laptops lack the symbol fonts), and the count
function fork(g, x, y, n) {
  g.strokeStyle = "#fbbf24";
  g.lineWidth = 2;
  g.beginPath();
  g.moveTo(x + 8, y + 7); g.lineTo(x + 13, y);
  g.lineTo(x + 8, y - 7); g.moveTo(x + 13, y); g.lineTo(x + 19, y);
  g.stroke();
  glyph(g, x + 12, y, String(n), "#fbbf24");
}

function glyph(g, x, y, text, colour) {
  g.fillStyle = colour;
  g.textAlign = "left";
  g.fillText(text, x + 10, y + 5);
  g.textAlign = "center";
}

export function installSpaceTime(S) {
  const st = new SpaceTime(S);
  window.__spacetime = {
    model: () => st.model.toJSON(),
    lanes: () => st.lanes(),
    visible: () => st.visible,
    drawn: () => st.drawn,
    toggle: (show) => st.toggle(show),
  };
  return st;
}
