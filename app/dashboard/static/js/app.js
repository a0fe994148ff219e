// edgestate live dashboard: connects to /ws, keeps the page's model of the cluster, and wires
// the controls to the HTTP API. User-typed keys and values only ever reach the DOM as text.

import { $, el, setChildren, toast, fmtMs, fmtClock } from "./dom.js";
import { api } from "./api.js";
import { WorldMap, DigestColours, MSG_STYLE, GROUP_COLOURS } from "./map.js";
import { renderHeader, renderDetail, renderVV } from "./panel.js";
import { TYPES, labelOf, otherTypes } from "./types.js";
import { ConvergenceView, renderCounters, logEvent, clearLog } from "./convergence.js";
import { initScenarios, onScenarioEvent, startScenario, next as nextCaption } from "./scenarios.js";
import { initPresenter } from "./presenter.js";
import { Timeline } from "./timeline.js";
import { CoordinationPanel } from "./coordination.js";
import { WriteTracker } from "./writes.js";
import { DEFAULT_BOUNDS } from "./timeline/model.js";
import { Keys } from "./keys.js";
import { initAudience } from "./audience.js";
import { initSignIn } from "./signin.js";
import { installSpaceTime } from "./spacetime.js";

const SPEEDS = [0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 100];
// What the Concurrent writes button runs: replication/scenarios/builtin/parallel-universes.yaml
const CONCURRENT_SCENARIO = "parallel-universes";
// The keys for the server's named cuts (replication/scenarios/cuts.py); a cut the server adds
// later gets the first free letter of its name.
const CUT_KEYS = { atlantic: "a", pacific: "p", americas: "m" };
const RESERVED_KEYS = new Set(["h", "r", "d", "f"]); // heal, reset, the space-time diagram, presenter mode

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
  freeze() {
    this.base = this.now();
    this.at = performance.now();
    this.paused = true;
  }
  bump(t) {
    if (t > this.now()) {
      this.base = t;
      this.at = performance.now();
    }
  }
}

// The recent writes and their arrivals; the bound comes with each snapshot.
const tracker = new WriteTracker(0);

const S = {
  topo: null,
  ids: [],
  pops: {},
  rtt: {},
  cuts: null, // the groups each toolbar cut makes on this cluster, from the snapshot
  replicas: {},
  groups: null,
  converged: null,
  lost: false, // the stream closed: what the page shows is the last the server sent
  server: null, // the id of the server whose snapshot the page holds
  clock: new SimClock(),
  settings: null,
  selected: null,
  detail: null,
  writes: tracker.writes,
  writeSeq: 0,
  colours: new DigestColours(),
  lastCounters: null,
  ws: null,
  map: null,
  canAdmin: true, // what the session allows (applySession): the admin keys ask it on every press
};

const conv = new ConvergenceView(S);
const coord = new CoordinationPanel(S);
window.__edgestate = S; // for debugging in the console, and for tests
const spacetime = installSpaceTime(S); // key D: fed below what the handlers are fed, live and in replay
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

// What the page draws for a write: its label, the replicas up when it was made and the
// physical limit to each of them (one direct hop), nearest first.
function decorate(w) {
  const up = S.ids.filter(isUp);
  const k = w.keys[0] || ["kv", "?"];
  w.seq = S.writeSeq++;
  w.label = `${labelOf(k[0])} ${k[1]}`;
  w.n = up.length;
  w.limits = up.map((r) => oneWay(w.origin, r)).sort((a, b) => a - b);
  w.done = w.arrivals.size >= w.n;
  return k;
}

function trackApplied(ev) {
  if (!ev.dots || !ev.dots.length) return;
  const { started, arrived } = tracker.applied(ev);
  if (started) {
    const k = decorate(started);
    started.done = false;
    logEvent(ev.t, [{ node: ev.node }, ` wrote ${labelOf(k[0])} `, { key: k[1] }]);
  }
  for (const w of arrived) {
    if (!w.done && w.arrivals.size >= w.n) {
      w.done = true;
      const all = Math.max(...[...w.arrivals.values()].map((t) => t - w.t));
      const limit = w.limits[w.limits.length - 1] || 0;
      logEvent(ev.t, [{ key: w.keys[0] ? w.keys[0][1] : "?" }, ` reached all ${w.n} replicas in ${fmtMs(all)} (physical limit ${fmtMs(limit)})`], "good");
    }
  }
  conv.touch();
}

function loadWrites(snapshot) {
  tracker.keep = (snapshot.bounds || DEFAULT_BOUNDS).recent_writes;
  for (const w of tracker.load(snapshot.writes)) decorate(w);
  conv.touch();
}

// -- the stream ------------------------------------------------------------------------------

// A banner across the page: the stream is down (until it is back), or it came back (for a while).
let bannerTimer = null;
function banner(text, kind) {
  const el = $("stream-banner");
  clearTimeout(bannerTimer);
  el.textContent = text;
  el.className = "stream-banner" + (kind === "back" ? " banner-back" : "");
  el.dataset.kind = kind;
  el.hidden = false;
  if (kind === "back") bannerTimer = setTimeout(() => { el.hidden = true; }, BANNER_BACK_MS);
}

const BANNER_BACK_MS = 6000;
// The server sends a clock at least every second and counters every half second: this long
// without a byte means it, or the path to it, is hung (a closed socket is noticed at once).
const SILENCE_MS = 3000;

// The server stopped answering: say so plainly, and stop what would pretend it still runs (the
// clock, the badge, the timeline's live edge) until a snapshot arrives.
function serverLost(code) {
  if (!S.lost) {
    banner(code === 1013 ? "This page fell behind the live stream: reconnecting…"
      : code === "silent" ? "The server stopped answering: the map shows the last state it sent. Reconnecting…"
      : "Disconnected from the server: the map shows the last state it sent. Reconnecting…", "lost");
  }
  S.lost = true;
  S.timeline.lost = true;
  S.clock.freeze();
  const rec = S.timeline.rec;
  if (rec && rec.live && !rec.live.paused) {
    rec.live = { ...rec.live, base: rec.liveNow(), at: performance.now(), paused: true };
  }
  const badge = $("convergence");
  badge.textContent = "disconnected";
  badge.className = "badge badge-disconnected";
  badge.title = "the server is not answering: the map shows the last state it sent";
  S.converged = null;
  document.body.classList.add("server-lost");
  const conn = $("conn");
  conn.textContent = code === 1013 ? "too slow: reconnecting" : code === "silent" ? "server silent: reconnecting"
    : "server lost: reconnecting";
  conn.className = "conn conn-lost";
  S.timeline.render();
}

function serverBack(s) {
  const restarted = S.server !== null && s.server !== undefined && s.server !== S.server;
  if (s.server !== undefined) S.server = s.server;
  if (restarted) {
    clearLog(); // the old server's events: its clock is not this one's
    logEvent(s.clock.now_ms, [s.reset ? "the cluster was reset: the same POPs, no keys, no faults, start settings"
      : "connected to a restarted server: its clock and events start afresh"], "warn");
  }
  if (!S.lost) return;
  banner(restarted ? "Reconnected to a restarted server: a fresh run, its log starts afresh"
    : "Reconnected: the same server run, nothing was missed that the snapshot does not show", "back");
  S.lost = false;
  S.timeline.lost = false;
  $("convergence").title = "";
  document.body.classList.remove("server-lost");
  S.timeline.render();
}

async function onSnapshot(s) {
  serverBack(s);
  spacetime.onSnapshot(s);
  const first = !S.topo;
  S.topo = s.topology;
  S.ids = s.topology.replicas.map((r) => r.id);
  S.pops = Object.fromEntries(s.topology.replicas.map((r) => [r.id, r]));
  S.rtt = s.topology.rtt_ms;
  if (s.cuts) { S.cuts = s.cuts; bindCutKeys(); }
  if (s.strategies) fillStrategies(s.strategies);
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
  loadWrites(s);
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
  spacetime.onEvent(ev);
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
      // a local apply is a write made there (a phone's tap lights its POP); others are arrivals
      if (S.map) S.map.pulse(ev.node, ev.via === "local" ? "#ffd166" : ev.via === "ae" ? MSG_STYLE.ae_reply.color : "#e6edf7");
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
      // serve --attach: a replica elsewhere that cannot be reached says why (it was not crashed here)
      logEvent(ev.t, [{ node: ev.node }, ev.reason ? ` unreachable: ${ev.reason}` : ` crashed${ev.lose_state ? " and lost its state" : ""}`], "bad");
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
  // messages the server left out of the stream since the last counters: the map draws a sample
  if (S.map) S.map.sampled = !!S.lastCounters && (c.unshown || 0) > (S.lastCounters.unshown || 0);
  S.lastCounters = c;
  renderCounters(S, c, rate);
}

function applyClock(c, log) {
  const prev = S.settings;
  S.settings = { speed: c.speed, paused: c.paused, strategy: c.strategy, loss: c.loss };
  document.body.classList.toggle("processes", !!c.processes);
  $("mode").textContent = c.processes ? "real processes" : "simulated";
  // the simulator says how fast virtual time really runs: below what was asked, the CPU is the limit
  const eff = c.effective_speed;
  const behind = typeof eff === "number" && !c.paused && eff < c.speed * 0.8;
  const speedNow = $("speed-now");
  speedNow.textContent = behind ? `×${c.speed} asked, ×${+eff.toPrecision(2)} running: CPU-bound` : "×" + c.speed;
  speedNow.classList.toggle("speed-behind", behind);
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
  // "Pause simulation", not "Pause": the timeline's Freeze view stops only the view
  $("pause").textContent = c.paused ? "Resume simulation" : "Pause simulation";
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
    heard = performance.now();
    conn.textContent = "live";
    conn.className = "conn conn-live";
    retry = 500;
  });
  let chain = Promise.resolve();
  let heard = performance.now();
  let ticked = heard;
  const watchdog = setInterval(() => {
    if (S.ws !== ws) { clearInterval(watchdog); return; }
    const now = performance.now();
    // a late tick means this page was busy, not that the server was silent: messages may be queued
    if (now - ticked > 1500) heard = Math.max(heard, now - SILENCE_MS / 2);
    ticked = now;
    if (ws.readyState === WebSocket.OPEN && now - heard > SILENCE_MS) {
      // a hung server never closes the socket: give up on this one and dial again
      clearInterval(watchdog);
      S.ws = null;
      ws.close();
      serverLost("silent");
      setTimeout(connect, retry);
      retry = Math.min(5000, retry * 2);
    }
  }, 500);
  ws.addEventListener("message", (msg) => {
    heard = performance.now();
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
    clearInterval(watchdog);
    if (S.timeline.offline || S.ws !== ws) return; // a file is replayed, or the watchdog gave up on it
    serverLost(e.code);
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
  const regions = S.cuts ? Object.keys(S.cuts.regions) : [];
  setChildren($("isolate-region"), regions.map((r) => el("option", { value: r, text: r })));
  setChildren($("speed"), SPEEDS.map((s) => el("option", { value: String(s), text: "×" + s })));
}

// The strategy picker: the server's strategies, the default first.
function fillStrategies(names) {
  const st = $("strategy");
  if ([...st.options].map((o) => o.value).join() === names.join()) return;
  setChildren(st, names.map((n) => el("option", { value: n, text: n })));
}

// The toolbar's cuts: the groups the server computed (replication/scenarios/cuts.py), the same
// the scenarios' `partition: atlantic` makes.
async function partitionPreset(name) {
  const cuts = S.cuts || { named: {}, regions: {} };
  const chosen = name === "region" ? cuts.regions[$("isolate-region").value] : cuts.named[name];
  const groups = (chosen || []).filter((g) => g.length);
  if (groups.length < 2) {
    toast("that cut leaves every POP on one side: nothing to partition");
    return;
  }
  await run("partition", () => api.partition(groups));
}

// One click: the server runs the built-in scenario (cut the Atlantic, the same key written on
// both sides, heal: siblings everywhere, then a write with the read's context resolves them).
// scenarios.js follows it like any run; the panel watches from the POP its first write names.
async function concurrentWrites() {
  await startScenario(CONCURRENT_SCENARIO, { onAt: (id) => select(id) });
}

// -- the keyboard (keys.js) ----------------------------------------------------------------------

const keys = new Keys({ space: () => S.timeline.toggleView() });

const offeredCut = (name) => S.cuts && S.cuts.named[name] && S.cuts.named[name].filter((g) => g.length).length >= 2;
const cutTitle = (name) => name.charAt(0).toUpperCase() + name.slice(1);

// one key per cut the server offers on this cluster (a cut that leaves every POP on one side is
// not listed); the same call as the toolbar's buttons
function bindCutKeys() {
  const used = new Set(RESERVED_KEYS);
  for (const name of Object.keys(S.cuts.named)) {
    let k = CUT_KEYS[name];
    if (!k || used.has(k)) k = [...name.toLowerCase()].find((c) => /[a-z]/.test(c) && !used.has(c));
    if (!k) continue;
    used.add(k);
    keys.bind(k, `cut the ${cutTitle(name)}`, () => partitionPreset(name), () => S.canAdmin && offeredCut(name));
  }
}

function bindKeys() {
  keys.bind("d", "space-time diagram: show or hide", () => spacetime.toggle());
  keys.bind("h", "heal the partition", () => run("heal", api.heal), () => S.canAdmin);
  // R resets only on a server that has a reset (issue 15 adds POST /api/reset and api.reset)
  if (typeof api.reset === "function") keys.bind("r", "reset: a fresh cluster", () => run("reset", api.reset), () => S.canAdmin);
  // → : the scenario waiting at a `say: {wait: presenter}` goes on (admin); else the next caption now
  keys.bind("ArrowRight", "next caption (a scenario waiting for the presenter goes on)",
    () => nextCaption({ canAdvance: S.canAdmin }), () => true, "→");
  initPresenter({
    keys,
    onChange: (on) => {
      if (S.map) S.map.relabel();
      conv.setPresenter(on);
    },
  });
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
  $("reset").addEventListener("click", resetCluster);
  $("crash").addEventListener("click", () => S.selected && run("crash", () => api.crash(S.selected, $("lose-state").checked)));
  $("recover").addEventListener("click", () => S.selected && run("recover", () => api.recover(S.selected)));
  setInterval(() => { $("clock").textContent = fmtClock(S.clock.now()); }, 100);
}

// A fresh cluster on the server; the new snapshot it sends every page clears this one's log.
async function resetCluster() {
  if (!window.confirm("Reset the cluster? Every key, partition, crash and setting goes back to the start, "
    + "and a running scenario stops.")) return;
  await run("reset", api.reset);
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
  S.canAdmin = canAdmin;
  for (const n of document.querySelectorAll(".admin-only")) n.hidden = !canAdmin;
  for (const n of document.querySelectorAll(".writer-only")) n.hidden = !canWrite;
  initSignIn(session);
}

function main() {
  fillTypes();
  wire();
  bindKeys();
  onTypeChange();
  renderLegend();
  renderHeader(S);
  renderDetail(S, null, pickKey);
  applySession();
  initScenarios();
  initAudience();
  if (typeof Plotly === "undefined") {
    toast("plotly.js did not load: the map cannot be drawn");
    return;
  }
  connect();
}

main();
