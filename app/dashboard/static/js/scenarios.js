// Scripted scenarios on the page: the picker and Run button in the toolbar (Stop while one
// runs), and the captions on the map (captions.js: the story's `say` lines as lower-thirds,
// held, the steps as small progress, the verdict "✓ <claim>" or "✗ <claim>" large, the total).
// The → key (app.js binds it to next()) advances a run waiting at a `say: {wait: presenter}`
// (POST .../runs/{id}/next), or else shows the next queued caption now.
// Progress arrives on /ws as "scenario" events (app.js hands them to onScenarioEvent); a slow
// poll of the run's URL covers events missed while the stream reconnected. The Concurrent
// writes button starts a built-in the same way (startScenario), and is off while a run runs.
// The picker starts on "Hello, world" and shows whichever run is going, wherever it was
// started (this page, curl, another page). Under `serve --processes` the page hides the whole
// group (`sim-only`): scenarios run on the simulator only.

import { $, el, setChildren, toast } from "./dom.js";
import { call, seg } from "./api.js";
import { logEvent } from "./convergence.js";
import { Captions } from "./captions.js";

const POLL_MS = 1000;
const DEFAULT_SCENARIO = "hello-world";
const S = { titles: {}, run: null, done: new Set(), poll: null, watch: null, waiting: null };
export const captions = new Captions();
window.__edgestate_captions = captions; // for tests

function box() {
  return $("scenario-status");
}

function setBusy(busy) {
  const b = $("scenario-run");
  b.textContent = busy ? "Stop" : "Run";
  b.dataset.busy = busy ? "1" : "";
  $("scenario-concurrent").disabled = busy;
}

// A run started by startScenario with onAt: the first replica one of its steps acts at (the
// event may come before the POST's answer names the run: it is kept until then).
function watchAt(ev) {
  const w = S.watch;
  if (!w || w.fired || !ev.at) return;
  if (w.run === null) {
    if (!w.early.has(ev.run)) w.early.set(ev.run, ev.at);
    return;
  }
  if (w.run !== ev.run) return;
  w.fired = true;
  w.onAt(ev.at);
}

function finish(run, status, caption) {
  if (S.done.has(run)) return;
  S.done.add(run);
  if (S.waiting === run) S.waiting = null;
  captions.released();
  captions.verdict(caption, status === "passed" ? "ok" : "bad");
  setBusy(false);
  clearInterval(S.poll);
  S.poll = null;
}

// Show `name` in the picker (a run started elsewhere), if this server offers it.
function pick(name) {
  const select = $("scenario-select");
  if (name && [...select.options].some((o) => o.value === name)) select.value = name;
}

function follow(run, name) {
  if (S.run !== run) captions.start("");
  S.run = run;
  pick(name);
  setBusy(true);
  clearInterval(S.poll);
  S.poll = setInterval(async () => {
    try {
      const r = await call("GET", `/api/scenarios/runs/${seg(run)}`);
      if (r.status !== "running") finish(run, r.status, r.caption || (r.status === "passed" ? "✓ " : "✗ ") + r.claim);
      else syncWaiting(run, r);
    } catch (e) {
      if (e.status === 404) finish(run, "failed", "✗ the run is gone (was the server restarted?)");
    }
  }, POLL_MS);
}

export function onScenarioEvent(ev) {
  if (S.done.has(ev.run)) return;
  watchAt(ev);
  if (S.run !== ev.run) follow(ev.run, ev.name); // started from elsewhere (curl, another page): show it too
  const title = S.titles[ev.name] || ev.name;
  if (ev.tally) captions.tally(ev.tally);
  if (ev.tally_only) return; // the running total only (drivers.run_live, while the run waits)
  if (ev.status === "running") {
    const where = ev.step ? `${ev.step}/${ev.of} ` : "";
    if (ev.waiting === "presenter") S.waiting = ev.run;
    if (ev.waited) { S.waiting = null; captions.released(); }
    if (ev.say) captions.say(ev.caption, ev.waiting === "presenter");
    else captions.progress(`${title} · ${where}${ev.caption}`);
    if (ev.say) captions.progress(`${title} · ${where.trim()}`);
    if (ev.step && ev.op !== "expect") logEvent(ev.t, [`${title}: ${ev.caption}`]);
    if (ev.check) logEvent(ev.t, [`${title}: ${ev.caption}`], ev.check.passed ? "good" : "bad");
  } else {
    logEvent(ev.t, [`${title}: ${ev.caption}`], ev.status === "passed" ? "good" : "bad");
    finish(ev.run, ev.status, ev.caption);
  }
}

// Start a scenario on the server and follow it. onAt(id): called once with the first replica
// one of its steps acts at. False when the server refused it (said in a toast).
export async function startScenario(name, { onAt } = {}) {
  setBusy(true);
  S.watch = onAt ? { run: null, onAt, fired: false, early: new Map() } : null;
  try {
    const r = await call("POST", `/api/scenarios/${seg(name)}`);
    if (S.watch) {
      S.watch.run = r.run;
      const at = S.watch.early.get(r.run);
      S.watch.early.clear();
      if (at) watchAt({ run: r.run, at });
    }
    if (S.run !== r.run) follow(r.run, name);
    if (!S.done.has(r.run) && box().hidden) captions.start(`${S.titles[name] || name} · starting…`);
    return true;
  } catch (e) {
    S.watch = null;
    setBusy(false);
    toast(`scenario: ${e.message}`);
    return false;
  }
}

// What the server says of the wait, over the events' word: this page may have missed them (it
// was reloaded, or its stream reconnected, while the run waited).
function syncWaiting(run, r) {
  if (r.waiting === "presenter" && S.waiting !== run) {
    S.waiting = run;
    if (r.caption) captions.say(r.caption, true);
  } else if (!r.waiting && S.waiting === run) {
    S.waiting = null;
    captions.released();
  }
}

// The → key: the run waiting for the presenter goes on (canAdvance: this session may, it is an
// admin control); otherwise the next queued caption shows now.
export async function next({ canAdvance = true } = {}) {
  const run = S.waiting;
  if (run && canAdvance) {
    S.waiting = null;
    captions.released();
    try {
      await call("POST", `/api/scenarios/runs/${seg(run)}/next`);
    } catch (e) {
      if (e.status !== 409) toast(`next: ${e.message}`); // 409: it went on by itself meanwhile
    }
    return;
  }
  captions.skip();
}

async function start() {
  if ($("scenario-run").dataset.busy) {
    if (S.run) {
      try { await call("DELETE", `/api/scenarios/runs/${seg(S.run)}`); } catch (e) { toast(`stop: ${e.message}`); }
    }
    return;
  }
  const name = $("scenario-select").value;
  if (name) await startScenario(name);
}

export async function initScenarios() {
  const select = $("scenario-select");
  $("scenario-run").addEventListener("click", start);
  let body;
  try {
    body = await call("GET", "/api/scenarios");
  } catch (e) {
    select.disabled = true;
    $("scenario-run").disabled = true;
    return;
  }
  for (const s of body.scenarios) S.titles[s.name] = s.title;
  setChildren(select, body.scenarios.map((s) => el("option", { value: s.name, text: s.title, title: s.claim })));
  pick(DEFAULT_SCENARIO);
  if (body.running) {
    let r = null;
    try { r = await call("GET", `/api/scenarios/runs/${seg(body.running)}`); } catch (e) { r = null; }
    follow(body.running, r ? r.name : undefined);
    if (r) syncWaiting(body.running, r);
  }
}
