// The recording: every message of the live stream (the snapshot and every batch) against
// virtual time, with keyframes (snapshots rebuilt from the stream by the model, model.js) so
// that any recorded moment can be shown again; bounded to the last WINDOW_MS of virtual time
// or MAX_EVENTS events, trimmed in whole keyframe intervals. A run exported as a file, and read
// back (after runfile.js has validated it), is a recording too.

import { StreamModel } from "./model.js";
import { FORMAT, VERSION } from "./runfile.js";

const WINDOW_MS = 15 * 60 * 1000; // virtual time kept
const MAX_EVENTS = 150_000; // events kept
const KEYFRAME_MS = 5000; // a keyframe at least every 5 virtual seconds...
const KEYFRAME_EVENTS = 2000; // ...or 2000 events, whichever comes first
export const MAX_MARKS = 400;

const UNTIMED = new Set(["state", "convergence", "counters", "detail"]);
const NODE_EVENTS = new Set(["applied", "crash", "recover"]);

// Events are [vt, event] in the order they are fed, vt never decreasing. A keyframe {vt, seq,
// snap} is the view after the events before sequence number `seq`. The oldest kept keyframe
// starts the recording; older events are trimmed in whole keyframe intervals.
export class Recording {
  constructor() {
    this.events = [];
    this.offset = 0; // sequence number of events[0]
    this.keyframes = [];
    this.model = null;
    this.lastVt = 0;
    this.sinceKf = 0;
    this.marks = []; // [vt, kind, label] for the bar: writes, partitions, crashes
    this.live = { base: 0, at: performance.now(), speed: 1, paused: true };
    this.strategy = "";
    this.server = undefined; // the id of the server recorded (from its snapshot)
  }

  get empty() { return this.keyframes.length === 0; }
  get start() { return this.keyframes.length ? this.keyframes[0].vt : 0; }
  get end() { return this.lastVt; }
  get seqEnd() { return this.offset + this.events.length; }
  get topology() { return this.model ? this.model.topology : null; }
  at(seq) { return this.events[seq - this.offset]; }

  // the live edge: virtual time now, extrapolated from the last clock message
  liveNow() {
    const c = this.live;
    const t = c.paused ? c.base : c.base + (performance.now() - c.at) * c.speed;
    return Math.max(this.lastVt, t);
  }

  setLiveClock(c) {
    this.live = { base: c.now_ms, at: performance.now(), speed: c.speed > 0 ? c.speed : 1, paused: !!c.paused };
    if (typeof c.strategy === "string") this.strategy = c.strategy;
  }

  // a snapshot: the start of the recording, or (after a reconnection) a reset within it
  snapshot(s, live) {
    const vt = Math.max(this.lastVt, s.clock.now_ms);
    if (this.model && !sameIds(this.model.topology, s.topology)) return "topology"; // caller starts anew
    if (this.model && s.server !== undefined && this.server !== undefined && s.server !== this.server) return "server";
    if (s.server !== undefined) this.server = s.server;
    if (live) this.setLiveClock(s.clock);
    if (!this.model) {
      this.lastVt = vt;
      this.model = new StreamModel(s);
      this.keyframes.push({ vt, seq: this.seqEnd, snap: this.model.keyframe(vt) });
      return "start";
    }
    this.lastVt = vt;
    this.events.push([vt, s]);
    this.model = new StreamModel(s);
    this.keyframes.push({ vt, seq: this.seqEnd, snap: this.model.keyframe(vt) });
    this.sinceKf = 0;
    return "reset";
  }

  // One batch from /ws. A replica's state (sent at the end of the frame) is placed right after
  // that replica's last event in the batch, so that a moment within a frame shows each replica
  // as it was then; convergence, counters and detail go at the end of the batch.
  ingest(batch, live = true) {
    const out = [];
    const after = new Map(); // index in out -> states that follow it
    const lastOf = new Map(); // node -> index in out
    const tail = [];
    for (const ev of batch) {
      if (!ev || typeof ev !== "object" || typeof ev.kind !== "string") continue;
      if (ev.kind === "snapshot") continue; // handled by snapshot()
      if (ev.kind === "state") {
        const i = lastOf.get(ev.node);
        if (i === undefined) tail.push(ev);
        else { if (!after.has(i)) after.set(i, []); after.get(i).push(ev); }
        continue;
      }
      if (UNTIMED.has(ev.kind)) { tail.push(ev); continue; }
      const t = ev.kind === "clock" ? ev.now_ms : ev.t;
      const vt = Number.isFinite(t) ? Math.max(this.lastVt, t) : this.lastVt;
      this.lastVt = vt;
      if (ev.kind === "clock" && live) this.setLiveClock(ev);
      out.push([vt, ev]);
      if (NODE_EVENTS.has(ev.kind) && typeof ev.node === "string") lastOf.set(ev.node, out.length - 1);
    }
    out.forEach((item, i) => {
      this.push(item[0], item[1]);
      for (const st of after.get(i) || []) this.push(item[0], st);
    });
    for (const ev of tail) this.push(this.lastVt, ev);
    if (live && this.live.paused === false && this.lastVt > this.live.base) {
      // events run ahead of the clock's last word: follow them
      const est = this.live.base + (performance.now() - this.live.at) * this.live.speed;
      if (this.lastVt > est) this.live = { ...this.live, base: this.lastVt, at: performance.now() };
    }
    this.maybeKeyframe();
    this.trim();
  }

  push(vt, ev) {
    this.events.push([vt, ev]);
    this.model.apply(ev);
    this.sinceKf += 1;
    this.mark(vt, ev);
  }

  mark(vt, ev) {
    let m = null;
    if (ev.kind === "applied" && ev.via === "local") {
      const k = ev.keys && ev.keys[0];
      m = [vt, "write", `${ev.node} wrote ${k ? k[1] : "?"}`];
    } else if (ev.kind === "partition") m = [vt, "partition", "partition"];
    else if (ev.kind === "heal") m = [vt, "heal", "heal"];
    else if (ev.kind === "crash") m = [vt, "crash", `${ev.node} crashed`];
    else if (ev.kind === "recover") m = [vt, "recover", `${ev.node} recovered`];
    if (!m) return;
    this.marks.push(m);
    if (this.marks.length > MAX_MARKS * 2) this.marks.splice(0, this.marks.length - MAX_MARKS);
  }

  maybeKeyframe() {
    const last = this.keyframes[this.keyframes.length - 1];
    if (!last) return;
    if (this.sinceKf >= KEYFRAME_EVENTS || (this.sinceKf > 0 && this.lastVt - last.vt >= KEYFRAME_MS)) {
      this.keyframes.push({ vt: this.lastVt, seq: this.seqEnd, snap: this.model.keyframe(this.lastVt) });
      this.sinceKf = 0;
    }
  }

  trim() {
    const tooMany = this.events.length > MAX_EVENTS * 1.1;
    const tooLong = this.lastVt - this.start > WINDOW_MS * 1.1;
    if (!tooMany && !tooLong || this.keyframes.length < 2) return;
    let k = 0;
    while (k < this.keyframes.length - 1) {
      const kf = this.keyframes[k];
      if (kf.vt >= this.lastVt - WINDOW_MS && this.seqEnd - kf.seq <= MAX_EVENTS) break;
      k += 1;
    }
    if (k === 0) return;
    const kf = this.keyframes[k];
    this.keyframes.splice(0, k);
    this.events.splice(0, kf.seq - this.offset);
    this.offset = kf.seq;
    const first = this.marks.findIndex((m) => m[0] >= kf.vt);
    this.marks.splice(0, first < 0 ? this.marks.length : first);
  }

  // the run, as a file
  toRun(source, end = this.lastVt) {
    const kf = this.keyframes[0];
    const { detail, ...snapshot } = kf.snap;
    return {
      format: FORMAT,
      version: VERSION,
      generator: "edgestate dashboard",
      exported_at: new Date().toISOString(),
      source: String(source || ""),
      start_ms: kf.vt,
      end_ms: Math.max(this.lastVt, end),
      topology: snapshot.topology,
      snapshot,
      detail: detail || null,
      events: this.events,
    };
  }

  // a validated run (see validateRun), replayed into a new recording
  static fromRun(run) {
    const rec = new Recording();
    rec.snapshot({ ...run.snapshot, detail: run.detail || undefined }, false);
    rec.keyframes[0].vt = run.start_ms;
    rec.lastVt = run.start_ms;
    for (const [vt, ev] of run.events) {
      if (ev.kind === "snapshot") {
        rec.lastVt = vt;
        rec.events.push([vt, ev]);
        rec.model = new StreamModel(ev);
        rec.keyframes.push({ vt, seq: rec.seqEnd, snap: rec.model.keyframe(vt) });
        rec.sinceKf = 0;
        continue;
      }
      rec.lastVt = vt;
      rec.push(vt, ev);
      rec.maybeKeyframe();
    }
    rec.lastVt = Math.max(rec.lastVt, run.end_ms);
    return rec;
  }
}

export function sameIds(a, b) {
  if (!a || !b) return false;
  const x = a.replicas.map((r) => r.id), y = b.replicas.map((r) => r.id);
  return x.length === y.length && x.every((id, i) => id === y[i]);
}
