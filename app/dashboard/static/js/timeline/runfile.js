// The run file: what Export writes and Load reads, and the check a loaded file passes, field
// by field, before anything on the page changes. A file is data only: nothing in it is
// evaluated or parsed as HTML, and every string reaches the DOM as text.
//
// {"format": FORMAT, "version": VERSION, "start_ms", "end_ms", "topology", "snapshot",
//  "detail", "events": [[virtual ms, event], ...]}: the snapshot and the events as /ws sent them.

import { typeOf } from "../types.js";

export const FORMAT = "edgestate-timeline";
export const VERSION = 1;
export const MAX_FILE_BYTES = 64 * 1024 * 1024;

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
  if (s.groups_t !== undefined && s.groups_t !== null) num(s.groups_t, `${path}.groups_t`);
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
  checkServerFacts(s, path, ids);
  arr(s.in_flight || [], `${path}.in_flight`, 100000).forEach((m, i) => {
    obj(m, `${path}.in_flight[${i}]`);
    if (m.kind !== "sent") fail(`${path}.in_flight[${i}].kind`, 'must be "sent"');
    checkSent(m, `${path}.in_flight[${i}]`, ids);
  });
}

// What the server tells the page instead of the page keeping copies; files recorded before
// the snapshot carried them have none.
function checkServerFacts(s, path, ids) {
  if (s.bounds !== undefined) {
    obj(s.bounds, `${path}.bounds`);
    for (const [k, max] of [["recent_writes", 1000], ["in_flight", 100000]]) {
      const n = num(s.bounds[k], `${path}.bounds.${k}`);
      if (!Number.isInteger(n) || n < 0 || n > max) fail(`${path}.bounds.${k}`, `must be a whole number from 0 to ${max}`);
    }
  }
  if (s.strategies !== undefined) arr(s.strategies, `${path}.strategies`, 20).forEach((x, i) => plainText(x, `${path}.strategies[${i}]`));
  if (s.cuts !== undefined) {
    obj(s.cuts, `${path}.cuts`);
    for (const part of ["named", "regions"]) {
      const cuts = obj(s.cuts[part], `${path}.cuts.${part}`);
      for (const [name, groups] of Object.entries(cuts)) {
        plainText(name, `${path}.cuts.${part} key`);
        checkGroups(arr(groups, `${path}.cuts.${part}.${name}`), `${path}.cuts.${part}.${name}`, ids);
      }
    }
  }
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
