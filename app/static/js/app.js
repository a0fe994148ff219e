// edgestate live dashboard: connects to /ws, keeps the page's model of the cluster, and wires
// the controls to the HTTP API. User-typed keys and values only ever reach the DOM as text.

import { $, el, setChildren, toast, fmtMs, fmtClock } from "./dom.js";
import { api } from "./api.js";
import { WorldMap, DigestColours, MSG_STYLE, GROUP_COLOURS } from "./map.js";
import { renderHeader, renderDetail, renderVV } from "./panel.js";
import { TYPES, labelOf, otherTypes } from "./types.js";
import { ConvergenceView, renderCounters, logEvent } from "./convergence.js";
import { initScenarios, onScenarioEvent } from "./scenarios.js";
import { Timeline } from "./timeline.js";
import { CoordinationPanel } from "./coordination.js";

const SPEEDS = [0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 100];
const RECENT_WRITES = 12;
const FAST_FORWARD = 0.5;

// Virtual time on this page: the server's clock, extrapolated at the current speed.
class SimClock {
  constructor() {
    this.base = 0;
    this.at = performance.now();
    this.speed = 1;
    this.paused = false;
  }
  now() {
    return this.paused ? this.base : this.base + ((performance.now() - this.at) * this.speed);
  }
  set(c) {
    const cur = this.now();
    const running = !c.paused && !this.paused;
    // never step back a little (the message took a moment to get here); do follow a real jump
    if (!(running && c.now_ms < cur && cur - c.now_ms < 250 * c.speed)) {
      this.base = c.now_ms;
      this.at = performance.now();
    } else {
      this.base = cur;
      this.at = performance.now();
    }
    this.speed = c.speed;
    this.paused = c.paused;
  }
  bump(t) {
    if (t > this.now()) {
      this.base = t;
      this.at = performance.now();
    }
  }
}

const S = {
  topo: null,
  ids: [],
  pops: {},
  rtt: {},
  regions: [],
  replicas: {},
  groups: null,
  converged: null,
  clock: new SimClock(),
  settings: null,
  selected: null,
  detail: null,
  writes: new Map(),
  dotIndex: new Map(),
  writeSeq: 0,
  colours: new DigestColours(),
  lastCounters: null,
  ws: null,
  map: null,
};

const conv = new ConvergenceView(S);
const coord = new CoordinationPanel(S);
window.__edgestate = S; // for debugging in the console, and for tests
// the timeline records every stream message and decides what the view shows: live, or a replay
S.timeline = new Timeline({
  S,
  apply: (ev) => (ev.kind === "snapshot" ? onSnapshot(ev) : handle(ev)),
  connect: () => connect(),
  disconnect: () => S.ws && S.ws.close(),
});

// -- helpers -----------------------------------------------------------------------------

// Run `fn` once on the next animation frame however many times it is asked for before then:
// a batch carries up to one state per replica, and the page redraws once for all of them.
const pending = new Map();
function later(name, fn) {
  if (pending.has(name)) { pending.set(name, fn); return; }
  pending.set(name, fn);
  requestAnimationFrame(() => {
    const f = pending.get(name);
    pending.delete(name);
    f();
  });
}

const isUp = (id) => S.replicas[id] && S.replicas[id].status !== "down";
const oneWay = (a, b) => (a === b ? 0 : (S.rtt[a] && S.rtt[a][b] ? S.rtt[a][b] / 2 : 0));
const cityOf = (id) => (S.pops[id] ? S.pops[id].city : id);

function groupIndex() {
  const idx = {};
  if (S.groups) S.groups.forEach((g, i) => g.forEach((id) => { idx[id] = i; }));
  return idx;
}

function regionsOf(ids) {
  const seen = [];
  for (const id of ids) {
    const r = S.pops[id] && S.pops[id].region;
    if (r && !seen.includes(r)) seen.push(r);
  }
  return seen.join(" · ");
}

function refreshLook() {
  if (!S.map) return;
  const digests = S.ids.filter(isUp).map((id) => S.replicas[id].digest);
  S.colours.update(digests);
  const gi = groupIndex();
  S.map.setLook({
    colours: S.ids.map((id) => S.colours.of(S.replicas[id] && S.replicas[id].digest)),
    digests: S.ids.map((id) => (S.replicas[id] ? S.replicas[id].digest : "")),
    down: S.ids.map((id) => !isUp(id)),
    groups: S.ids.map((id) => (S.groups && gi[id] !== undefined ? gi[id] : null)),
    selected: S.selected,
  });
}

function renderPartition() {
  const banner = $("partition-banner");
  if (!S.groups || S.groups.length < 2) { banner.hidden = true; return; }
  banner.hidden = false;
  setChildren(banner, el("span", { class: "pb-title", text: "PARTITIONED" }),
    S.groups.map((g, i) => el("span", {
      class: "group-chip", style: { color: GROUP_COLOURS[i % GROUP_COLOURS.length] },
      text: `${regionsOf(g)} (${g.length})`,
    })));
}

function setConvergence(converged) {
  const badge = $("convergence");
  const prev = S.converged;
  S.converged = converged;
  badge.textContent = converged ? "converged" : "diverged";
  badge.className = "badge " + (converged ? "badge-converged" : "badge-diverged");
  if (prev !== null && prev !== converged) {
    logEvent(S.clock.now(), [converged ? "all replicas that are up hold the same state" : "replicas diverged"], converged ? "good" : "warn");
  }
}

// -- recent writes: who has them, against the physical limit -------------------------------

function trackApplied(ev) {
  if (!ev.dots || !ev.dots.length) return;
  if (ev.via === "local") {
    const d = ev.dots[0];
    const id = d[0] + ":" + d[1];
    const up = S.ids.filter(isUp);
    const k = ev.keys[0] || ["kv", "?"];
    const w = {
      id, origin: ev.node, t: ev.t, keys: ev.keys, seq: S.writeSeq++,
      label: `${labelOf(k[0])} ${k[1]}`,
      arrivals: new Map([[ev.node, ev.t]]),
      n: up.length,
      limits: up.map((r) => oneWay(ev.node, r)).sort((a, b) => a - b),
      done: false,
    };
    S.writes.set(id, w);
    for (const x of ev.dots) S.dotIndex.set(x[0] + ":" + x[1], w);
    while (S.writes.size > RECENT_WRITES) {
      const [oldId, old] = S.writes.entries().next().value;
      S.writes.delete(oldId);
      for (const [dk, dw] of S.dotIndex) if (dw === old) S.dotIndex.delete(dk);
    }
    logEvent(ev.t, [{ node: ev.node }, ` wrote ${labelOf(k[0])} `, { key: k[1] }]);
  } else {
    const seen = new Set();
    for (const x of ev.dots) {
      const w = S.dotIndex.get(x[0] + ":" + x[1]);
      if (!w || seen.has(w)) continue;
      seen.add(w);
      if (!w.arrivals.has(ev.node)) w.arrivals.set(ev.node, ev.t);
      if (!w.done && w.arrivals.size >= w.n) {
        w.done = true;
        const all = Math.max(...[...w.arrivals.values()].map((t) => t - w.t));
        const limit = w.limits[w.limits.length - 1] || 0;
        logEvent(ev.t, [{ key: w.keys[0] ? w.keys[0][1] : "?" }, ` reached all ${w.n} replicas in ${fmtMs(all)} (physical limit ${fmtMs(limit)})`], "good");
      }
    }
  }
  conv.touch();
}

function loadWrites(list) {
  S.writes.clear();
  S.dotIndex.clear();
  const up = S.ids.filter(isUp);
  for (const r of list) {
    const k = r.keys[0] || ["kv", "?"];
    const w = {
      id: r.id, origin: r.origin, t: r.t, keys: r.keys, seq: S.writeSeq++,
      label: `${labelOf(k[0])} ${k[1]}`,
      arrivals: new Map(Object.entries(r.arrivals)),
      n: up.length,
      limits: up.map((x) => oneWay(r.origin, x)).sort((a, b) => a - b),
    };
    w.done = w.arrivals.size >= w.n;
    S.writes.set(w.id, w);
    const [actor, n] = r.id.split(":");
    S.dotIndex.set(actor + ":" + n, w);
  }
  conv.touch();
}

// -- the stream ------------------------------------------------------------------------------

async function onSnapshot(s) {
  const first = !S.topo;
  S.topo = s.topology;
  S.ids = s.topology.replicas.map((r) => r.id);
  S.pops = Object.fromEntries(s.topology.replicas.map((r) => [r.id, r]));
  S.rtt = s.topology.rtt_ms;
  S.replicas = Object.fromEntries(s.replicas.map((r) => [r.node, r]));
  S.groups = s.groups;
  S.clock.set(s.clock);
  applyClock(s.clock, false);
  if (first) {
    fillSelectors();
    S.map = new WorldMap({ mapDiv: $("map"), canvas: $("overlay"), clock: S.clock, onSelect: select });
    try {
      await S.map.init(s.topology);
    } catch (e) {
      console.error("map failed", e);
      toast("the map could not be drawn: " + e.message);
    }
    conv.init();
  }
  S.map.flights.clear();
  for (const m of s.in_flight) S.map.addFlight(m);
  loadWrites(s.writes);
  setConvergence(s.convergence.converged);
  onCounters(s.counters);
  renderPartition();
  refreshLook();
  renderHeader(S);
  renderVV(S);
  if (S.selected) send({ select: S.selected });
  coord.onSnapshot();
}

function handle(ev) {
  coord.onEvent(ev);
  switch (ev.kind) {
    case "sent":
      S.clock.bump(ev.t);
      S.map && S.map.addFlight(ev);
      break;
    case "dropped":
      S.map && S.map.dropped(ev);
      break;
    case "applied":
      S.clock.bump(ev.t);
      trackApplied(ev);
      if (ev.via !== "local" && S.map) S.map.pulse(ev.node, ev.via === "ae" ? MSG_STYLE.ae_reply.color : "#e6edf7");
      break;
    case "state": {
      S.replicas[ev.node] = ev;
      later("look", refreshLook);
      if (ev.node === S.selected) later("header", () => renderHeader(S));
      if (S.selected) later("vv", () => renderVV(S));
      break;
    }
    case "convergence":
      setConvergence(ev.converged);
      break;
    case "clock":
      S.clock.set(ev);
      applyClock(ev, true);
      break;
    case "counters":
      onCounters(ev);
      break;
    case "partition":
      S.groups = ev.groups;
      renderPartition();
      refreshLook();
      logEvent(ev.t, [`network partitioned: ${ev.groups.map(regionsOf).join("  |  ")}`], "bad");
      break;
    case "heal":
      S.groups = null;
      renderPartition();
      refreshLook();
      logEvent(ev.t, ["partition healed: anti-entropy repairs what each side missed"], "good");
      break;
    case "crash":
      logEvent(ev.t, [{ node: ev.node }, ` crashed${ev.lose_state ? " and lost its state" : ""}`], "bad");
      break;
    case "recover":
      logEvent(ev.t, [{ node: ev.node }, ev.lost_state ? ` came back empty (incarnation ${ev.incarnation})` : " recovered with its state"], "good");
      break;
    case "scenario":
      onScenarioEvent(ev);
      break;
    case "detail":
      if (ev.node === S.selected) {
        S.detail = ev;
        renderDetail(S, ev, pickKey);
      }
      break;
    default:
      break;
  }
}

function onCounters(c) {
  let rate = null;
  if (S.lastCounters && c.w > S.lastCounters.w) rate = ((c.events - S.lastCounters.events) * 1000) / (c.w - S.lastCounters.w);
  S.lastCounters = c;
  renderCounters(S, c, rate);
}

function applyClock(c, log) {
  const prev = S.settings;
  S.settings = { speed: c.speed, paused: c.paused, strategy: c.strategy, loss: c.loss };
  document.body.classList.toggle("processes", !!c.processes);
  $("mode").textContent = c.processes ? "real processes" : "simulated";
  $("speed-now").textContent = "×" + c.speed;
  $("strategy-now").textContent = c.strategy;
  const sp = $("speed");
  if (![...sp.options].some((o) => Number(o.value) === c.speed)) {
    sp.appendChild(el("option", { value: String(c.speed), text: "×" + c.speed }));
  }
  if (document.activeElement !== sp) sp.value = String(c.speed);
  const st = $("strategy");
  if (document.activeElement !== st) st.value = c.strategy;
  const loss = $("loss");
  if (document.activeElement !== loss) {
    loss.value = String(c.loss);
    $("loss-out").textContent = Math.round(c.loss * 100) + "%";
  }
  $("pause").textContent = c.paused ? "Resume" : "Pause";
  $("pause").classList.toggle("active", c.paused);
  for (const b of document.querySelectorAll("[data-step]")) b.disabled = !c.paused;
  if (log && prev) {
    const t = c.now_ms;
    if (prev.strategy !== c.strategy) logEvent(t, [`strategy → ${c.strategy}`]);
    if (prev.speed !== c.speed) logEvent(t, [`speed → ×${c.speed}`]);
    if (prev.loss !== c.loss) logEvent(t, [`message loss → ${Math.round(c.loss * 100)}%`], c.loss ? "warn" : "");
    if (prev.paused !== c.paused) logEvent(t, [c.paused ? "paused" : "resumed"]);
  }
}

function send(obj) {
  if (S.ws && S.ws.readyState === WebSocket.OPEN) S.ws.send(JSON.stringify(obj));
}

let retry = 500;
function connect() {
  if (S.timeline.offline) return; // replaying a file: no stream
  const conn = $("conn");
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  S.ws = ws;
  const decoder = new TextDecoder("utf-8");
  ws.addEventListener("open", () => {
    conn.textContent = "live";
    conn.className = "conn conn-live";
    retry = 500;
  });
  let chain = Promise.resolve();
  ws.addEventListener("message", (msg) => {
    let batch;
    try {
      batch = JSON.parse(typeof msg.data === "string" ? msg.data : decoder.decode(msg.data));
    } catch (e) {
      console.error("bad message from /ws", e);
      return;
    }
    // the snapshot builds the map (async): later batches wait for it, in order
    chain = chain.then(() => S.timeline.receive(batch));
  });
  ws.addEventListener("close", (e) => {
    if (S.timeline.offline) return;
    conn.textContent = e.code === 1013 ? "too slow: reconnecting" : "reconnecting";
    conn.className = "conn conn-lost";
    setTimeout(connect, retry);
    retry = Math.min(5000, retry * 2);
  });
}

// -- selection and writing ----------------------------------------------------------------------

function select(id) {
  if (!S.pops[id]) return;
  S.selected = id;
  S.detail = null;
  $("pop-select").value = id;
  send({ select: id });
  renderHeader(S);
  renderDetail(S, null, pickKey);
  renderVV(S);
  refreshLook();
  coord.onSelect();
}

function pickKey(ns, key) {
  $("write-type").value = ns;
  $("write-key").value = key;
  onTypeChange();
  $("write-value").focus();
}

// The write form follows the chosen type (types.js): its operations, a field when they take one.
function fillTypes() {
  setChildren($("write-type"), Object.entries(TYPES).map(([ns, t]) => el("option", { value: ns, text: t.label })));
  const title = otherTypes("&");
  $("crdt-title").textContent = title.charAt(0).toUpperCase() + title.slice(1);
}

function currentOp() {
  const t = TYPES[$("write-type").value];
  return t.ops.find((o) => o.verb === $("write-op").value) || t.ops[0];
}

function onTypeChange() {
  const t = TYPES[$("write-type").value];
  const sel = $("write-op");
  setChildren(sel, t.ops.map((o) => el("option", { value: o.verb, text: o.name || o.verb })));
  sel.hidden = t.ops.length < 2;
  onOpChange();
}

function onOpChange() {
  const op = currentOp();
  $("write-field").hidden = !op.field;
  const v = $("write-value");
  v.hidden = !!op.noValue;
  v.placeholder = op.hint || "";
  v.inputMode = op.numeric ? "numeric" : "text";
}

async function onWrite(e) {
  e.preventDefault();
  const out = $("write-result");
  out.classList.remove("error");
  const id = S.selected;
  if (!id) {
    out.textContent = "click a POP on the map first";
    out.classList.add("error");
    return;
  }
  const ns = $("write-type").value;
  const key = $("write-key").value;
  if (!key) {
    out.textContent = "give a key";
    out.classList.add("error");
    return;
  }
  const t = TYPES[ns];
  const op = currentOp();
  try {
    const r = await t.write(id, key, op.verb, $("write-field").value, $("write-value").value);
    out.textContent = t.answered(id, r);
  } catch (err) {
    out.textContent = err.message;
    out.classList.add("error");
  }
}

// -- controls --------------------------------------------------------------------------------

async function run(label, fn) {
  try {
    return await fn();
  } catch (e) {
    toast(`${label}: ${e.message}`);
    return null;
  }
}

function fillSelectors() {
  const ps = $("pop-select");
  setChildren(ps, el("option", { value: "", text: "Choose a POP…" }),
    [...S.topo.replicas].sort((a, b) => a.city.localeCompare(b.city)).map((r) => el("option", { value: r.id, text: `${r.city} (${r.id})` })));
  S.regions = [...new Set(S.topo.replicas.map((r) => r.region))].sort();
  setChildren($("isolate-region"), S.regions.map((r) => el("option", { value: r, text: r })));
  setChildren($("speed"), SPEEDS.map((s) => el("option", { value: String(s), text: "×" + s })));
}

function split(pred) {
  const a = S.ids.filter((id) => pred(S.pops[id]));
  const b = S.ids.filter((id) => !pred(S.pops[id]));
  return [a, b];
}

async function partitionPreset(name) {
  let groups;
  if (name === "atlantic") {
    // Europe, Africa and the Middle East on one side; the Americas and Asia-Pacific (the Pacific intact) on the other
    groups = split((p) => p.lon >= -30 && p.lon < 65);
  } else if (name === "pacific") {
    // Asia-Pacific on one side; the Americas, Europe and Africa (the Atlantic intact) on the other
    groups = split((p) => !(p.lon >= 65 || p.lon < -170));
  } else {
    const region = $("isolate-region").value;
    groups = split((p) => p.region === region);
  }
  groups = groups.filter((g) => g.length);
  if (groups.length < 2) {
    toast("that cut leaves every POP on one side: nothing to partition");
    return;
  }
  await run("partition", () => api.partition(groups));
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(pred, minMs, maxMs) {
  const start = performance.now();
  while (performance.now() - start < maxMs) {
    if (performance.now() - start >= minMs && pred()) return true;
    await sleep(100);
  }
  return false;
}

let scenarioRunning = false;
async function concurrentWrites() {
  if (scenarioRunning) return;
  scenarioRunning = true;
  const btn = $("scenario-concurrent");
  btn.disabled = true;
  const box = $("scenario-status");
  const say = (text) => { box.hidden = false; box.textContent = text; };
  let restoreSpeed = null;
  try {
    const up = S.ids.filter(isUp);
    if (up.length < 2) throw new Error("needs at least two replicas that are up");
    let a = up[0], b = up[1], far = -1;
    for (const x of up) for (const y of up) if (x < y && oneWay(x, y) > far) { far = oneWay(x, y); a = x; b = y; }
    const A = S.ids.filter((r) => oneWay(r, a) <= oneWay(r, b));
    const B = S.ids.filter((r) => !A.includes(r));
    // the replica watching from the middle: far from both writers
    let mid = a, best = -1;
    for (const r of up) { const m = Math.min(oneWay(r, a), oneWay(r, b)); if (m > best) { best = m; mid = r; } }
    say(`1/3 Partition: ${cityOf(a)}'s side from ${cityOf(b)}'s side.`);
    await api.partition([A, B]);
    const key = "greeting";
    const before = { a: S.replicas[a].digest, b: S.replicas[b].digest };
    say(`2/3 Same key "${key}" written at ${cityOf(a)} and at ${cityOf(b)}: two parallel universes.`);
    await Promise.all([api.writeKv(a, key, `hello from ${cityOf(a)}`), api.writeKv(b, key, `hello from ${cityOf(b)}`)]);
    select(mid === a || mid === b ? a : mid);
    const sideDone = (side, origin, old) => {
      const d = S.replicas[origin].digest;
      return d !== old && side.filter(isUp).every((r) => S.replicas[r].digest === d);
    };
    await waitFor(() => sideDone(A, a, before.a) && sideDone(B, b, before.b), 2000, 10000);
    say("3/3 Heal: anti-entropy swaps what each side missed. Neither write is lost: both become siblings, everywhere.");
    await api.heal();
    // anti-entropy runs once a virtual second: at a slow stage speed, fast-forward through the wait
    if (S.settings && S.settings.speed < FAST_FORWARD) {
      restoreSpeed = S.settings.speed;
      await sleep(1500);
      say(`3/3 Healed. Anti-entropy runs once every virtual second: fast-forward to ×${FAST_FORWARD} until every POP agrees.`);
      await api.speed(FAST_FORWARD);
    }
    const ok = await waitFor(() => S.converged === true, 300, 20000);
    say(ok ? `Converged: every POP holds both values of "${key}" side by side. A write that reads them both can resolve them.`
      : "Still converging: is a replica crashed, or is message loss high?");
    setTimeout(() => { box.hidden = true; }, 8000);
  } catch (e) {
    say("Scenario stopped: " + e.message);
    setTimeout(() => { box.hidden = true; }, 6000);
  } finally {
    if (restoreSpeed !== null) await run("speed", () => api.speed(restoreSpeed));
    scenarioRunning = false;
    btn.disabled = false;
  }
}

function renderLegend() {
  const items = Object.entries(MSG_STYLE).map(([k, st]) =>
    el("span", { class: "legend-item" },
      el("span", { class: "legend-swatch" + (st.dash ? " dashed" : ""), style: { background: st.color, color: st.color } }),
      st.label));
  items.push(el("span", { class: "legend-item" }, el("span", { class: "legend-dot", style: { background: "#4b5563" } }), "crashed"));
  items.push(el("span", { class: "legend-item", text: "marker colour = state: one colour, converged" }));
  setChildren($("map-legend"), items);
}

function wire() {
  $("write-form").addEventListener("submit", onWrite);
  $("write-type").addEventListener("change", onTypeChange);
  $("write-op").addEventListener("change", onOpChange);
  $("pop-select").addEventListener("change", (e) => e.target.value && select(e.target.value));
  $("scenario-concurrent").addEventListener("click", concurrentWrites);
  $("cut-atlantic").addEventListener("click", () => partitionPreset("atlantic"));
  $("cut-pacific").addEventListener("click", () => partitionPreset("pacific"));
  $("isolate").addEventListener("click", () => partitionPreset("region"));
  $("heal").addEventListener("click", () => run("heal", api.heal));
  $("strategy").addEventListener("change", (e) => run("strategy", () => api.strategy(e.target.value)));
  $("speed").addEventListener("change", (e) => run("speed", () => api.speed(Number(e.target.value))));
  $("loss").addEventListener("input", (e) => { $("loss-out").textContent = Math.round(Number(e.target.value) * 100) + "%"; });
  $("loss").addEventListener("change", (e) => run("loss", () => api.loss(Number(e.target.value))));
  $("pause").addEventListener("click", () => run("pause", () => (S.settings && S.settings.paused ? api.resume() : api.pause())));
  for (const b of document.querySelectorAll("[data-step]")) {
    b.addEventListener("click", () => run("step", () => api.step(Number(b.dataset.step))));
  }
  $("crash").addEventListener("click", () => S.selected && run("crash", () => api.crash(S.selected, $("lose-state").checked)));
  $("recover").addEventListener("click", () => S.selected && run("recover", () => api.recover(S.selected)));
  setInterval(() => { $("clock").textContent = fmtClock(S.clock.now()); }, 100);
}

async function applySession() {
  let session = null;
  try {
    session = await api.session();
  } catch (e) {
    session = null; // no session endpoint: show everything
  }
  const canAdmin = !session || session.can_admin !== false;
  const canWrite = !session || session.can_write !== false;
  for (const n of document.querySelectorAll(".admin-only")) n.hidden = !canAdmin;
  for (const n of document.querySelectorAll(".writer-only")) n.hidden = !canWrite;
}

function main() {
  fillTypes();
  wire();
  onTypeChange();
  renderLegend();
  renderHeader(S);
  renderDetail(S, null, pickKey);
  applySession();
  initScenarios();
  if (typeof Plotly === "undefined") {
    toast("plotly.js did not load: the map cannot be drawn");
    return;
  }
  connect();
}

main();
