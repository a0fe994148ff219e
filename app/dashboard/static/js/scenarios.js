// Scripted scenarios on the page: the picker and Run button in the toolbar (Stop while one
// runs), and the caption line on the map that follows a run step by step and ends with
// "✓ <claim>" or "✗ <claim>".
// Progress arrives on /ws as "scenario" events (app.js hands them to onScenarioEvent); a slow
// poll of the run's URL covers events missed while the stream reconnected. The Concurrent
// writes button starts a built-in the same way (startScenario), and is off while a run runs.
// The picker starts on "Hello, world" and shows whichever run is going, wherever it was
// started (this page, curl, another page). Under `serve --processes` the page hides the whole
// group (`sim-only`): scenarios run on the simulator only.

import { $, el, setChildren, toast } from "./dom.js";
import { call, seg } from "./api.js";
import { logEvent } from "./convergence.js";

const POLL_MS = 1000;
const DEFAULT_SCENARIO = "hello-world";
const S = { titles: {}, run: null, done: new Set(), poll: null, watch: null };

function box() {
  return $("scenario-status");
}

function show(text, tone) {
  const b = box();
  b.hidden = false;
  b.textContent = text;
  b.classList.toggle("scenario-ok", tone === "ok");
  b.classList.toggle("scenario-bad", tone === "bad");
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
  show(caption, status === "passed" ? "ok" : "bad");
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
  S.run = run;
  pick(name);
  setBusy(true);
  clearInterval(S.poll);
  S.poll = setInterval(async () => {
    try {
      const r = await call("GET", `/api/scenarios/runs/${seg(run)}`);
      if (r.status !== "running") finish(run, r.status, r.caption || (r.status === "passed" ? "✓ " : "✗ ") + r.claim);
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
  if (ev.status === "running") {
    const where = ev.step ? `${ev.step}/${ev.of} ` : "";
    show(`${title} · ${where}${ev.caption}`);
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
    if (!S.done.has(r.run) && box().hidden) show(`${S.titles[name] || name} · starting…`);
    return true;
  } catch (e) {
    S.watch = null;
    setBusy(false);
    toast(`scenario: ${e.message}`);
    return false;
  }
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
    let name;
    try { name = (await call("GET", `/api/scenarios/runs/${seg(body.running)}`)).name; } catch (e) { name = undefined; }
    follow(body.running, name);
  }
}
