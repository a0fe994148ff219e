// The timeline: the page records every message of the live stream (the snapshot and every
// batch) against virtual time, and can show any recorded moment again. Pause, scrub back,
// replay at any speed (as in RaftScope), return to live; export a run as a JSON file and load
// it back to replay it offline, with no server and no network (a talk on a plane).
//
// How a moment is shown again: the page's own handlers (app.js: onSnapshot and handle) are fed
// a keyframe (a snapshot the recorder keeps every few seconds of virtual time, built from the
// stream itself) and then the recorded events up to that moment, without animating the past.
// Replay then feeds the following events as the replay clock passes them, so messages fly again.
//
// Nothing from a loaded file is evaluated or parsed as HTML: it is validated field by field,
// and every string reaches the DOM as text.

import { $, el, setChildren, fmtClock } from "./dom.js";
import { typeOf } from "./types.js";

export const FORMAT = "edgestate-timeline";
export const VERSION = 1;
export const REPLAY_SPEEDS = [0.1, 0.25, 0.5, 1, 2, 4, 8];
const WINDOW_MS = 15 * 60 * 1000; // virtual time kept
const MAX_EVENTS = 150_000; // events kept
const KEYFRAME_MS = 5000; // a keyframe at least every 5 virtual seconds...
const KEYFRAME_EVENTS = 2000; // ...or 2000 events, whichever comes first
const MAX_FILE_BYTES = 64 * 1024 * 1024;
const MAX_MARKS = 400;
const RECENT_WRITES = 12; // as the server's hub
const MAX_IN_FLIGHT = 4000;

const UNTIMED = new Set(["state", "convergence", "counters", "detail"]);
const NODE_EVENTS = new Set(["applied", "crash", "recover"]);

// -- a model of the stream, to make keyframes -----------------------------------------------
//
// Mirrors what the server's hub keeps for a snapshot (replica states, convergence, clock,
// counters, partition groups, the recent writes and who has them, messages in flight), so that
// a snapshot for any recorded moment can be made without asking the server.

class Model {
  constructor(snap) {
    this.topology = snap.topology;
    this.ids = snap.topology.replicas.map((r) => r.id);
    this.replicas = new Map(snap.replicas.map((r) => [r.node, r]));
    this.convergence = snap.convergence;
    this.clock = snap.clock;
    this.counters = snap.counters;
    this.groups = snap.groups;
    this.animated = snap.animated;
    this.frame_ms = snap.frame_ms;
    this.inFlight = new Map((snap.in_flight || []).map((m) => [m.mid, m]));
    this.writes = new Map();
    this.writeOfDot = new Map();
    for (const w of snap.writes || []) {
      this.writes.set(w.id, { ...w, arrivals: { ...w.arrivals } });
      this.writeOfDot.set(w.id, w.id);
    }
    this.detail = snap.detail || null;
    this.scenario = snap.scenario || null;
  }

  apply(ev) {
    switch (ev.kind) {
      case "sent":
        if (ev.deliver_at !== null && ev.deliver_at !== undefined) {
          this.inFlight.set(ev.mid, ev);
          if (this.inFlight.size > MAX_IN_FLIGHT) this.inFlight.delete(this.inFlight.keys().next().value);
        }
        break;
      case "dropped":
        this.inFlight.delete(ev.mid);
        break;
      case "applied":
        this.applied(ev);
        break;
      case "state":
        this.replicas.set(ev.node, ev);
        break;
      case "convergence":
        this.convergence = ev;
        break;
      case "clock":
        this.clock = ev;
        break;
      case "counters":
        this.counters = ev;
        break;
      case "partition":
        this.groups = ev.groups;
        break;
      case "heal":
        this.groups = null;
        break;
      case "detail":
        this.detail = ev;
        break;
      case "scenario":
        this.scenario = ev;
        break;
      default:
        break;
    }
  }

  applied(ev) {
    const dots = ev.dots;
    if (!dots || !dots.length) return;
    if (ev.via === "local") {
      const id = dots[0][0] + ":" + dots[0][1];
      this.writes.set(id, { id, origin: ev.node, t: ev.t, keys: ev.keys, arrivals: { [ev.node]: ev.t } });
      for (const d of dots) this.writeOfDot.set(d[0] + ":" + d[1], id);
      while (this.writes.size > RECENT_WRITES) {
        const old = this.writes.keys().next().value;
        this.writes.delete(old);
        for (const [dk, w] of this.writeOfDot) if (w === old) this.writeOfDot.delete(dk);
      }
      return;
    }
    for (const d of dots) {
      const w = this.writes.get(this.writeOfDot.get(d[0] + ":" + d[1]));
      if (w && !Object.prototype.hasOwnProperty.call(w.arrivals, ev.node)) w.arrivals[ev.node] = ev.t;
    }
  }

  keyframe(vt) {
    for (const [mid, m] of this.inFlight) if (m.deliver_at <= vt) this.inFlight.delete(mid);
    return {
      kind: "snapshot",
      topology: this.topology,
      replicas: this.ids.map((id) => this.replicas.get(id)).filter(Boolean),
      convergence: this.convergence,
      clock: { ...this.clock, now_ms: vt },
      counters: this.counters,
      groups: this.groups,
      writes: [...this.writes.values()].map((w) => ({ ...w, arrivals: { ...w.arrivals } })),
      in_flight: [...this.inFlight.values()],
      animated: this.animated,
      frame_ms: this.frame_ms,
      detail: this.detail,
      scenario: this.scenario,
    };
  }
}

// -- the recording ------------------------------------------------------------------------------

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
    if (live) this.setLiveClock(s.clock);
    if (!this.model) {
      this.lastVt = vt;
      this.model = new Model(s);
      this.keyframes.push({ vt, seq: this.seqEnd, snap: this.model.keyframe(vt) });
      return "start";
    }
    this.lastVt = vt;
    this.events.push([vt, s]);
    this.model = new Model(s);
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
        rec.model = new Model(ev);
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

function sameIds(a, b) {
  if (!a || !b) return false;
  const x = a.replicas.map((r) => r.id), y = b.replicas.map((r) => r.id);
  return x.length === y.length && x.every((id, i) => id === y[i]);
}

// -- validating a file --------------------------------------------------------------------------

export class RunFileError extends Error {}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.~:-]{0,63}$/;
const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

function fail(path, msg) {
  throw new RunFileError(`${path}: ${msg}`);
}
function num(v, path) {
  if (typeof v !== "number" || !Number.isFinite(v)) fail(path, "must be a number");
  return v;
}
function str(v, path, max = 4096) {
  if (typeof v !== "string") fail(path, "must be a string");
  if (v.length > max) fail(path, `is longer than ${max} characters`);
  return v;
}
function bool(v, path) {
  if (typeof v !== "boolean") fail(path, "must be true or false");
  return v;
}
function arr(v, path, max = 1_000_000) {
  if (!Array.isArray(v)) fail(path, "must be a list");
  if (v.length > max) fail(path, `has more than ${max} entries`);
  return v;
}
function obj(v, path) {
  if (!isObj(v)) fail(path, "must be an object");
  return v;
}
function actor(v, path) {
  str(v, path, 64);
  if (!ID_RE.test(v)) fail(path, "is not a replica or actor id");
  return v;
}
function plainText(v, path) {
  str(v, path, 200);
  if (/[<>]/.test(v)) fail(path, "must not contain < or >");
  return v;
}
function numMap(v, path) {
  obj(v, path);
  for (const [k, n] of Object.entries(v)) { actor(k, `${path} key`); num(n, `${path}.${k}`); }
  return v;
}

function checkTopology(t, path) {
  obj(t, path);
  const reps = arr(t.replicas, `${path}.replicas`, 5000);
  if (!reps.length) fail(`${path}.replicas`, "is empty");
  const ids = new Set();
  reps.forEach((r, i) => {
    const p = `${path}.replicas[${i}]`;
    obj(r, p);
    actor(r.id, `${p}.id`);
    if (ids.has(r.id)) fail(`${p}.id`, `${r.id} is listed twice`);
    ids.add(r.id);
    plainText(r.city, `${p}.city`);
    plainText(r.region, `${p}.region`);
    if (num(r.lat, `${p}.lat`) < -90 || r.lat > 90) fail(`${p}.lat`, "must be a latitude");
    if (num(r.lon, `${p}.lon`) < -180 || r.lon > 180) fail(`${p}.lon`, "must be a longitude");
  });
  obj(t.rtt_ms, `${path}.rtt_ms`);
  for (const [a, row] of Object.entries(t.rtt_ms)) {
    if (!ids.has(a)) fail(`${path}.rtt_ms`, `names ${JSON.stringify(a).slice(0, 80)}, not in the topology`);
    obj(row, `${path}.rtt_ms.${a}`);
    for (const [b, ms] of Object.entries(row)) {
      if (!ids.has(b)) fail(`${path}.rtt_ms.${a}`, `names ${JSON.stringify(b).slice(0, 80)}, not in the topology`);
      num(ms, `${path}.rtt_ms.${a}.${b}`);
    }
  }
  return ids;
}

function checkNode(v, path, ids) {
  str(v, path, 64);
  if (!ids.has(v)) fail(path, `${JSON.stringify(v).slice(0, 80)} is not a POP of the file's topology`);
}

function checkClock(c, path) {
  obj(c, path);
  num(c.now_ms, `${path}.now_ms`);
  if (num(c.speed, `${path}.speed`) <= 0) fail(`${path}.speed`, "must be above 0");
  bool(c.paused, `${path}.paused`);
  if (c.strategy !== undefined) str(c.strategy, `${path}.strategy`, 40);
  if (c.loss !== undefined) num(c.loss, `${path}.loss`);
}

function checkState(s, path, ids) {
  obj(s, path);
  checkNode(s.node, `${path}.node`, ids);
  str(s.status, `${path}.status`, 20);
  str(s.digest, `${path}.digest`, 200);
  numMap(s.version_vector, `${path}.version_vector`);
  if (s.keys !== undefined) num(s.keys, `${path}.keys`);
  if (s.incarnation !== undefined && s.incarnation !== null) num(s.incarnation, `${path}.incarnation`);
}

function checkCounters(c, path) {
  obj(c, path);
  for (const k of ["sent", "delivered", "dropped", "dropped_by_reason"]) if (c[k] !== undefined) numMapLoose(c[k], `${path}.${k}`);
  for (const k of ["in_flight", "writes", "membership", "events", "clients"]) if (c[k] !== undefined) num(c[k], `${path}.${k}`);
}
function numMapLoose(v, path) {
  obj(v, path);
  for (const [k, n] of Object.entries(v)) { str(k, `${path} key`, 64); num(n, `${path}.${k}`); }
}

function checkDots(v, path) {
  arr(v, path, 100000).forEach((d, i) => {
    arr(d, `${path}[${i}]`, 2);
    if (d.length !== 2) fail(`${path}[${i}]`, "must be [actor, counter]");
    actor(d[0], `${path}[${i}][0]`);
    num(d[1], `${path}[${i}][1]`);
  });
}
function checkKeys(v, path) {
  arr(v, path, 100000).forEach((k, i) => {
    arr(k, `${path}[${i}]`, 2);
    if (k.length !== 2) fail(`${path}[${i}]`, "must be [namespace, key]");
    str(k[0], `${path}[${i}][0]`, 20);
    str(k[1], `${path}[${i}][1]`, 1024);
  });
}

function checkSent(e, path, ids) {
  checkNode(e.src, `${path}.src`, ids);
  checkNode(e.dst, `${path}.dst`, ids);
  str(e.msg, `${path}.msg`, 40);
  if (typeof e.mid !== "number" && typeof e.mid !== "string") fail(`${path}.mid`, "must be a message id");
  num(e.t, `${path}.t`);
  if (e.deliver_at !== null) num(e.deliver_at, `${path}.deliver_at`);
}

function checkGroups(g, path, ids) {
  if (g === null || g === undefined) return;
  arr(g, path, 5000).forEach((grp, i) => arr(grp, `${path}[${i}]`, 5000).forEach((id, j) => checkNode(id, `${path}[${i}][${j}]`, ids)));
}

// A detail lists keys by namespace (panel.js draws every list): each entry an object with a
// string key, and the rest of its summary checked by its type's entry in types.js. A type's list
// may be absent (a file recorded before the type existed); what is not a list is not drawn.
const CHECKS = { obj, str, num, arr, actor };
function checkDetail(d, path, ids) {
  obj(d, path);
  checkNode(d.node, `${path}.node`, ids);
  for (const [ns, list] of Object.entries(d)) {
    const t = typeOf(ns);
    if (!t && !Array.isArray(list)) continue;
    const p = `${path}.${ns.slice(0, 40)}`;
    arr(list, p, 10000).forEach((e, i) => {
      obj(e, `${p}[${i}]`);
      str(e.key, `${p}[${i}].key`, 1024);
      if (t) t.check(e, `${p}[${i}]`, CHECKS);
    });
  }
  if (d.truncated !== undefined) num(d.truncated, `${path}.truncated`);
}

function checkSnapshot(s, path, ids) {
  obj(s, path);
  if (s.kind !== "snapshot") fail(`${path}.kind`, 'must be "snapshot"');
  const own = checkTopology(s.topology, `${path}.topology`);
  if (own.size !== ids.size || [...own].some((id) => !ids.has(id))) fail(`${path}.topology`, "differs from the file's topology");
  arr(s.replicas, `${path}.replicas`, 5000).forEach((r, i) => checkState(r, `${path}.replicas[${i}]`, ids));
  obj(s.convergence, `${path}.convergence`);
  bool(s.convergence.converged, `${path}.convergence.converged`);
  checkClock(s.clock, `${path}.clock`);
  checkCounters(s.counters, `${path}.counters`);
  checkGroups(s.groups, `${path}.groups`, ids);
  arr(s.writes, `${path}.writes`, 1000).forEach((w, i) => {
    const p = `${path}.writes[${i}]`;
    obj(w, p);
    str(w.id, `${p}.id`, 100);
    if (!/^[A-Za-z0-9][A-Za-z0-9_.~-]{0,63}:\d+$/.test(w.id)) fail(`${p}.id`, "is not a dot");
    checkNode(w.origin, `${p}.origin`, ids);
    num(w.t, `${p}.t`);
    checkKeys(w.keys, `${p}.keys`);
    obj(w.arrivals, `${p}.arrivals`);
    for (const [n, t] of Object.entries(w.arrivals)) { checkNode(n, `${p}.arrivals key`, ids); num(t, `${p}.arrivals.${n}`); }
  });
  if (s.scenario !== undefined && s.scenario !== null) checkScenario(s.scenario, `${path}.scenario`);
  arr(s.in_flight || [], `${path}.in_flight`, 100000).forEach((m, i) => {
    obj(m, `${path}.in_flight[${i}]`);
    if (m.kind !== "sent") fail(`${path}.in_flight[${i}].kind`, 'must be "sent"');
    checkSent(m, `${path}.in_flight[${i}]`, ids);
  });
}

function checkScenario(e, path) {
  obj(e, path);
  num(e.t, `${path}.t`);
  str(e.name, `${path}.name`, 200);
  if (typeof e.run !== "string" && typeof e.run !== "number") fail(`${path}.run`, "must be a run id");
  str(e.status, `${path}.status`, 20);
  str(e.caption ?? "", `${path}.caption`, 2000);
  for (const k of ["step", "of"]) if (e[k] !== undefined && e[k] !== null) num(e[k], `${path}.${k}`);
  if (e.op !== undefined && e.op !== null) str(e.op, `${path}.op`, 40);
  if (e.check !== undefined && e.check !== null) { obj(e.check, `${path}.check`); bool(e.check.passed, `${path}.check.passed`); }
}

function checkEvent(e, path, ids) {
  obj(e, path);
  const kind = str(e.kind, `${path}.kind`, 40);
  switch (kind) {
    case "sent": checkSent(e, path, ids); break;
    case "dropped":
      checkNode(e.src, `${path}.src`, ids); checkNode(e.dst, `${path}.dst`, ids);
      str(e.msg, `${path}.msg`, 40); str(e.reason, `${path}.reason`, 40); num(e.t, `${path}.t`);
      break;
    case "applied":
      num(e.t, `${path}.t`); checkNode(e.node, `${path}.node`, ids); checkDots(e.dots, `${path}.dots`);
      checkKeys(e.keys, `${path}.keys`); str(e.via, `${path}.via`, 20);
      break;
    case "state": checkState(e, path, ids); break;
    case "convergence": bool(e.converged, `${path}.converged`); break;
    case "clock": checkClock(e, path); break;
    case "counters": checkCounters(e, path); break;
    case "partition": num(e.t, `${path}.t`); checkGroups(arr(e.groups, `${path}.groups`), `${path}.groups`, ids); break;
    case "heal": num(e.t, `${path}.t`); break;
    case "crash": case "recover": num(e.t, `${path}.t`); checkNode(e.node, `${path}.node`, ids); break;
    case "detail": checkDetail(e, path, ids); break;
    case "snapshot": checkSnapshot(e, path, ids); break;
    case "scenario": checkScenario(e, path); break;
    default: fail(`${path}.kind`, `unknown event kind ${JSON.stringify(kind).slice(0, 60)}`);
  }
}

// Check a parsed file completely before anything on the page changes. Throws RunFileError.
export function validateRun(run) {
  if (!isObj(run)) fail("file", "is not a JSON object");
  if (run.format !== FORMAT) fail("format", `is ${JSON.stringify(run.format ?? null).slice(0, 60)}, expected "${FORMAT}": not an edgestate run`);
  if (run.version !== VERSION) fail("version", `is ${JSON.stringify(run.version ?? null).slice(0, 20)}; this page reads version ${VERSION}`);
  const ids = checkTopology(run.topology, "topology");
  checkSnapshot(run.snapshot, "snapshot", ids);
  if (run.detail !== null && run.detail !== undefined) checkDetail(run.detail, "detail", ids);
  num(run.start_ms, "start_ms");
  num(run.end_ms, "end_ms");
  if (run.end_ms < run.start_ms) fail("end_ms", "is before start_ms");
  const events = arr(run.events, "events", 2_000_000);
  let prev = run.start_ms;
  events.forEach((item, i) => {
    const p = `events[${i}]`;
    arr(item, p, 2);
    if (item.length !== 2) fail(p, "must be [virtual ms, event]");
    const vt = num(item[0], `${p}[0]`);
    if (vt < prev) fail(`${p}[0]`, "goes back in time");
    if (vt > run.end_ms) fail(`${p}[0]`, "is after end_ms");
    prev = vt;
    checkEvent(item[1], `${p}[1]`, ids);
  });
  return run;
}

// -- saving files -----------------------------------------------------------------------------

function download(href, name) {
  const a = document.createElement("a");
  a.href = href;
  a.download = name;
  a.hidden = true;
  document.body.appendChild(a);
  a.click();
  a.remove();
}

function slug(s) {
  return String(s).toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 48) || "run";
}

// Plotly reads trace names and titles as a little HTML: user keys go in as entities.
function plotlyText(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

// The convergence chart as a PNG a presenter can put on a slide: dark background, a title that
// says what it shows (scenario or keys, virtual time, strategy) and a legend naming each write.
export async function saveConvergencePng(S, gd) {
  const shown = [...S.writes.values()].slice(-Math.max(1, Math.floor((gd.data || []).length / 2)));
  const names = shown.map((w) => `${w.label} @${w.origin}`);
  const data = (gd.data || []).map((tr, i) => ({
    ...tr,
    name: i % 2 === 0 ? plotlyText(names[i / 2] || "write") : "physical limit",
    showlegend: i % 2 === 0 || i === 1,
  }));
  if (data[1]) data[1] = { ...data[1], line: { ...data[1].line, color: "#9fb0c8" } , name: "physical limit (one direct hop)" };
  const scenario = S.scenario && (S.scenario.name || S.scenario) || document.body.dataset.scenario || "";
  const keys = [...new Set(shown.map((w) => (w.keys[0] ? w.keys[0][1] : "?")).reverse())];
  let what = scenario ? String(scenario) : keys.length ? keys.slice(0, 3).join(", ") + (keys.length > 3 ? ` +${keys.length - 3} more` : "") : "no writes";
  if (what.length > 90) what = what.slice(0, 89) + "…";
  const t = S.clock.now();
  const strategy = S.settings ? S.settings.strategy : "";
  const replay = S.timeline && S.timeline.mode === "replay" ? " · replay" : "";
  const layout = {
    ...gd.layout,
    width: 1200, height: 600,
    paper_bgcolor: "#0f1829", plot_bgcolor: "#0f1829",
    margin: { l: 70, r: 30, t: 70, b: 60 },
    showlegend: true,
    legend: { orientation: "h", x: 0, y: -0.18, font: { size: 12 } },
    title: {
      text: plotlyText(`edgestate · convergence: ${what}`) +
        `<br><span style="font-size:12px">share of ${S.ids.length} replicas holding each write over virtual time · t = ${fmtClock(t)}${strategy ? " · " + plotlyText(strategy) : ""}${replay}</span>`,
      x: 0.01, xanchor: "left", font: { size: 18, color: "#e6edf7" },
    },
  };
  delete layout.autosize;
  const url = await Plotly.toImage({ data, layout }, { format: "png", width: 1200, height: 600, scale: 2 });
  const name = `edgestate-convergence-${slug(what)}-t${(t / 1000).toFixed(1)}s.png`;
  download(url, name);
  return name;
}

// -- the controller -----------------------------------------------------------------------------

export class Timeline {
  // apply(ev): the page's own handler for one stream message (a promise for a snapshot);
  // connect(): open the live stream; disconnect(): close it.
  constructor({ S, apply, connect, disconnect }) {
    this.S = S;
    this.applyFn = apply;
    this.connectFn = connect;
    this.disconnectFn = disconnect;
    this.rec = new Recording();
    this.mode = "live"; // or "replay"
    this.source = "live"; // or "file"
    this.offline = false;
    this.fileName = "";
    this.playing = false;
    this.dragging = false;
    this.factor = 1;
    this.cursor = 0; // next sequence number to feed in replay
    this.rclock = { base: 0, at: performance.now() };
    this.recSpeed = 1;
    this.clockTaken = false;
    this.queue = Promise.resolve();
    this.pendingSeek = null;
    this.raf = null;
    this.marksDrawn = -1;
    this.ui = this.build();
    setInterval(() => this.render(), 200);
  }

  // -- the stream ----------------------------------------------------------------------------

  serial(fn) {
    const p = this.queue.then(fn);
    this.queue = p.catch((e) => console.error("timeline:", e));
    return p;
  }

  // a message from /ws: record it; show it if the page is live
  receive(batch) {
    return this.serial(async () => {
      if (this.offline) return;
      for (const ev of batch) {
        if (ev && ev.kind === "snapshot") {
          if (this.rec.snapshot(ev, true) === "topology") {
            // the server now runs other POPs: a new recording, and the page goes live
            this.rec = new Recording();
            this.rec.snapshot(ev, true);
            if (this.mode === "replay") this.toLiveMode();
          }
        }
      }
      this.rec.ingest(batch, true);
      if (this.mode !== "live") return;
      for (const ev of batch) await this.feedOne(ev);
    }).catch(() => {}); // logged by serial(); the stream goes on
  }

  async feedOne(ev) {
    try {
      if (ev.kind === "snapshot" && this.S.topo && !sameIds(this.S.topo, ev.topology)) this.retireMap();
      // the map marks the flights it drops: it gets copies, the recording stays as received
      if (ev.kind === "scenario") this.S.scenario = { name: ev.name, status: ev.status };
      const r = this.applyFn(ev.kind === "sent" ? { ...ev } : ev.kind === "snapshot" ? structuredClone(ev) : ev);
      if (r && typeof r.then === "function") await r;
    } catch (e) {
      console.error("could not handle", ev && ev.kind, e);
    }
  }

  // the map was drawn for other POPs: stop it, so that the next snapshot draws a new one
  retireMap() {
    const S = this.S;
    if (S.map) {
      S.map.ready = false;
      S.map.frame = () => {};
      S.map.flights.clear();
    }
    S.topo = null;
    if (S.selected) S.selected = null;
  }

  // -- the replay clock ------------------------------------------------------------------------

  edge() {
    return this.source === "file" ? this.rec.end : this.rec.liveNow();
  }

  replayNow() {
    const c = this.rclock;
    if (!this.playing || this.dragging || this.mode !== "replay") return c.base;
    return Math.min(this.edge(), c.base + (performance.now() - c.at) * this.factor * this.recSpeed);
  }

  rebase(t) {
    this.rclock = { base: t === undefined ? this.replayNow() : t, at: performance.now() };
  }

  // While replaying, the page's SimClock tells the replay's time: the map flies messages and
  // the chart draws on it. Clock messages fed from the recording give the recorded speed.
  takeClock(t) {
    const c = this.S.clock;
    this.rebase(t);
    if (this.clockTaken) return;
    this.clockTaken = true;
    c.now = () => this.replayNow();
    c.set = (ev) => {
      this.rebase();
      if (ev && ev.speed > 0) this.recSpeed = ev.speed;
    };
    c.bump = () => {};
  }

  releaseClock() {
    const c = this.S.clock;
    if (this.clockTaken) {
      delete c.now;
      delete c.set;
      delete c.bump;
      this.clockTaken = false;
    }
    const L = this.rec.live;
    c.base = this.rec.liveNow();
    c.at = performance.now();
    c.speed = L.speed;
    c.paused = L.paused;
  }

  // -- moving in time ----------------------------------------------------------------------------

  // Show the recorded moment T: the keyframe before it, then the events up to T, quietly.
  async seekTo(T) {
    const rec = this.rec;
    if (rec.empty) return;
    T = Math.max(rec.start, Math.min(this.edge(), T));
    let k = rec.keyframes.length - 1;
    while (k > 0 && rec.keyframes[k].vt > T) k -= 1;
    const kf = rec.keyframes[k];
    this.takeClock(T);
    const log = $("log");
    if (log) setChildren(log);
    const { detail, scenario, ...snap } = kf.snap;
    this.S.scenario = scenario ? { name: scenario.name, status: scenario.status } : null;
    this.recSpeed = snap.clock.speed > 0 ? snap.clock.speed : 1;
    await this.feedOne(snap);
    if (detail) await this.feedOne(detail);
    this.cursor = kf.seq;
    await this.feedUntil(T);
    this.rebase(T);
    const map = this.S.map;
    if (map) {
      // the past does not animate: what landed by T has landed
      for (const [mid, f] of map.flights) if (f.deliver_at <= T) map.flights.delete(mid);
      map.pulses.length = 0;
      map.fizzles.length = 0;
    }
  }

  async feedUntil(T) {
    const rec = this.rec;
    if (this.cursor < rec.offset) { // trimmed away under the replay: start again from what is kept
      await this.seekTo(rec.start);
      return;
    }
    while (this.cursor < rec.seqEnd) {
      const item = rec.at(this.cursor);
      if (item[0] > T) break;
      this.cursor += 1;
      await this.feedOne(item[1]);
    }
  }

  enterReplay() {
    if (this.mode === "replay") return;
    this.mode = "replay";
    // the view holds everything recorded so far: freeze it at the live edge
    this.cursor = this.rec.seqEnd;
    this.takeClock(this.rec.liveNow());
  }

  toLiveMode() {
    this.mode = "live";
    this.playing = false;
    this.releaseClock();
    this.render();
  }

  goLive() {
    return this.serial(async () => {
      if (this.source === "file") { this.backOnline(); return; }
      if (this.mode === "live") return;
      if (this.cursor < this.rec.seqEnd) await this.seekTo(this.rec.liveNow());
      this.toLiveMode();
    });
  }

  play() {
    if (this.mode === "live") return;
    if (this.replayNow() >= this.edge() && this.source === "file") {
      this.playing = true;
      this.serial(() => this.seekTo(this.rec.start));
    }
    this.rebase();
    this.playing = true;
    this.loop();
    this.render();
  }

  pause() {
    if (this.rec.empty) return; // nothing to show yet
    if (this.mode === "live") {
      this.serial(async () => { this.enterReplay(); this.playing = false; this.render(); });
      return;
    }
    this.rebase();
    this.playing = false;
    this.render();
  }

  // scrubbing: leave live (recording goes on), show the moment, then play on from there
  scrub(T) {
    if (this.rec.empty) return;
    const wasLive = this.mode === "live";
    this.pendingSeek = T;
    this.serial(async () => {
      if (this.pendingSeek === null) return;
      const target = this.pendingSeek;
      this.pendingSeek = null;
      if (wasLive || this.mode === "live") {
        this.enterReplay();
        this.playing = true;
      }
      await this.seekTo(target);
      this.loop();
      this.render();
    });
  }

  setFactor(f) {
    if (!(f > 0)) return;
    this.rebase();
    this.factor = f;
    this.render();
  }

  loop() {
    if (this.raf !== null || this.mode !== "replay" || !this.playing) return;
    this.raf = requestAnimationFrame(() => {
      this.raf = null;
      if (this.mode !== "replay" || !this.playing) return;
      if (!this.stepping) {
        this.stepping = true;
        this.serial(async () => {
          try {
            if (this.mode !== "replay" || !this.playing) return;
            const T = this.replayNow();
            await this.feedUntil(T);
            if (T >= this.edge()) {
              if (this.source === "live") {
                await this.feedUntil(Infinity);
                this.toLiveMode(); // caught up: the page is live again
              } else {
                this.rebase(this.edge());
                this.playing = false;
                this.render();
              }
            }
          } finally {
            this.stepping = false;
          }
        });
      }
      this.loop();
    });
  }

  // -- files -------------------------------------------------------------------------------------

  exportRun() {
    this.showError(null);
    if (this.rec.empty) {
      this.showError("nothing recorded yet: wait for the live stream");
      return null;
    }
    const run = this.rec.toRun(this.source === "file" ? this.fileName : location.host, this.edge());
    const blob = new Blob([JSON.stringify(run)], { type: "application/json" });
    const url = URL.createObjectURL(blob);
    const name = `edgestate-run-${slug(run.source)}-${(run.start_ms / 1000).toFixed(1)}s-${(run.end_ms / 1000).toFixed(1)}s.json`;
    download(url, name);
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    return name;
  }

  async importFile(file) {
    this.showError(null);
    let rec;
    try {
      if (file.size > MAX_FILE_BYTES) throw new RunFileError(`the file is ${(file.size / 1048576).toFixed(1)} MB; at most ${MAX_FILE_BYTES / 1048576} MB`);
      const text = await file.text();
      let run;
      try {
        run = JSON.parse(text);
      } catch (e) {
        throw new RunFileError("not JSON: " + e.message);
      }
      validateRun(run);
      rec = Recording.fromRun(run);
    } catch (e) {
      this.showError(`Could not load ${file.name}: ${e instanceof RunFileError ? e.message : "unexpected error: " + e.message}. Nothing was changed.`);
      if (!(e instanceof RunFileError)) console.warn(e);
      return false;
    }
    await this.serial(async () => {
      this.offline = true;
      this.source = "file";
      this.fileName = file.name;
      this.disconnectFn();
      this.rec = rec;
      this.mode = "replay";
      this.playing = false;
      document.body.classList.add("timeline-offline");
      const conn = $("conn");
      if (conn) { conn.textContent = "offline: " + file.name; conn.className = "conn conn-offline"; }
      await this.seekTo(rec.start);
      this.render();
    });
    return true;
  }

  // leave a loaded file: back to the live stream
  backOnline() {
    this.offline = false;
    this.source = "live";
    this.fileName = "";
    this.rec = new Recording();
    document.body.classList.remove("timeline-offline");
    this.toLiveMode();
    const conn = $("conn");
    if (conn) { conn.textContent = "connecting"; conn.className = "conn conn-connecting"; }
    this.connectFn();
  }

  showError(msg) {
    const box = this.ui.error;
    box.textContent = msg || "";
    box.hidden = !msg;
  }

  // -- the bar -------------------------------------------------------------------------------------

  build() {
    const root = $("timeline");
    const play = el("button", { type: "button", class: "btn tl-play", "data-testid": "timeline-play", title: "pause / play the view (space)" });
    const mode = el("span", { class: "tl-mode", "data-testid": "timeline-mode", role: "status", text: "Live" });
    const scrub = el("input", { type: "range", class: "tl-scrub", "data-testid": "timeline-scrub", "aria-label": "virtual time", value: "0" });
    scrub.min = "0"; scrub.max = "0"; scrub.step = "any";
    const marks = el("div", { class: "tl-marks", "aria-hidden": "true" });
    const track = el("div", { class: "tl-track" }, marks, scrub);
    const time = el("span", { class: "tl-time", "data-testid": "timeline-time", text: "–" });
    const speed = el("select", { class: "tl-speed", "data-testid": "timeline-speed", "aria-label": "replay speed", title: "replay speed: 1× is the pace it was recorded at" },
      REPLAY_SPEEDS.map((s) => el("option", { value: String(s), text: s + "×" })));
    speed.value = "1";
    const live = el("button", { type: "button", class: "btn tl-live", "data-testid": "timeline-live", text: "Live", title: "back to the live cluster" });
    const exp = el("button", { type: "button", class: "btn", "data-testid": "timeline-export", text: "Export", title: "save the recorded run as a file" });
    const file = el("input", { type: "file", class: "tl-file", "data-testid": "timeline-import", "aria-label": "load a recorded run" });
    file.accept = "application/json,.json";
    const load = el("label", { class: "btn tl-load", title: "replay a saved run, offline" }, "Load…", file);
    const error = el("div", { class: "tl-error", "data-testid": "timeline-error", role: "alert" });
    error.hidden = true;
    if (root) setChildren(root, el("div", { class: "tl-row" }, play, mode, track, time, speed, live, exp, load), error);

    play.addEventListener("click", () => (this.mode === "live" || this.playing ? this.pause() : this.play()));
    scrub.addEventListener("pointerdown", () => { this.dragging = true; });
    const release = () => {
      if (!this.dragging) return;
      this.dragging = false;
      this.rebase();
      this.loop();
    };
    scrub.addEventListener("pointerup", release);
    scrub.addEventListener("pointercancel", release);
    scrub.addEventListener("input", () => this.scrub(Number(scrub.value)));
    scrub.addEventListener("change", () => { release(); this.scrub(Number(scrub.value)); });
    speed.addEventListener("change", () => this.setFactor(Number(speed.value)));
    live.addEventListener("click", () => this.goLive());
    exp.addEventListener("click", () => this.exportRun());
    file.addEventListener("change", async () => {
      const f = file.files && file.files[0];
      if (f) await this.importFile(f);
      file.value = "";
    });
    const png = $("convergence-png");
    if (png) png.addEventListener("click", () => {
      saveConvergencePng(this.S, $("conv-chart")).catch((e) => {
        console.warn(e);
        this.showError("could not save the chart: " + e.message);
      });
    });
    document.addEventListener("keydown", (e) => {
      const t = e.target;
      if (e.key !== " " || e.ctrlKey || e.metaKey || e.altKey) return;
      if (t && (t.isContentEditable || /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(t.tagName)) && t !== scrub) return;
      e.preventDefault();
      if (this.mode === "live" || this.playing) this.pause();
      else this.play();
    });
    return { root, play, mode, scrub, marks, time, speed, live, exp, file, error };
  }

  render() {
    const u = this.ui;
    const rec = this.rec;
    const replay = this.mode === "replay";
    u.mode.textContent = replay ? "Replay" : "Live";
    u.mode.className = "tl-mode " + (replay ? "tl-mode-replay" : "tl-mode-live");
    if (u.root) u.root.classList.toggle("tl-replaying", replay);
    const mapCard = u.root && u.root.closest(".map-card");
    if (mapCard) {
      mapCard.classList.toggle("replaying", replay);
      const h = u.root.offsetHeight + "px";
      if (mapCard.style.getPropertyValue("--timeline-h") !== h) mapCard.style.setProperty("--timeline-h", h);
    }
    u.play.textContent = replay && !this.playing ? "▶ Play" : "❚❚ Pause";
    u.live.disabled = !replay && this.source === "live";
    u.live.classList.toggle("btn-good", replay);
    u.exp.disabled = rec.empty;
    if (rec.empty) {
      u.time.textContent = "waiting for the stream";
      u.scrub.disabled = true;
      return;
    }
    u.scrub.disabled = false;
    const start = rec.start, end = this.edge();
    const now = replay ? this.replayNow() : end;
    u.scrub.min = String(start);
    u.scrub.max = String(Math.max(end, start + 1));
    if (!this.dragging && this.pendingSeek === null) u.scrub.value = String(now);
    const src = this.source === "file" ? " · from file" : replay ? ` · ${fmtClock(end - now)} behind live` : "";
    u.time.textContent = `${fmtClock(now)} of ${fmtClock(start)}–${fmtClock(end)}${src}`;
    this.renderMarks(start, end);
  }

  renderMarks(start, end) {
    const marks = this.rec.marks;
    const key = marks.length + ":" + Math.round(start / 250) + ":" + Math.round(end / 1000);
    if (key === this.marksDrawn) return;
    this.marksDrawn = key;
    const span = Math.max(1, end - start);
    const shown = marks.filter((m) => m[0] >= start).slice(-MAX_MARKS);
    setChildren(this.ui.marks, shown.map((m) => el("span", {
      class: "tl-mark tl-mark-" + m[1], title: `${fmtClock(m[0])} ${m[2]}`,
      style: { left: `${(100 * (m[0] - start)) / span}%` },
    })));
  }
}
