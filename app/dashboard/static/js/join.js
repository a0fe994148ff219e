// /join: a phone's page. Picks the POP nearest to the phone from its time zone, sends taps
// (+1, an emoji, a word) there, and shows each tap's journey from the light stream /ws/join:
// "answered by Frankfurt in 0.4 ms", then "everywhere in 118 ms". Every string from the server
// or another phone is set with textContent, never parsed as markup.

const $ = (id) => document.getElementById(id);
const MAX_JOURNEYS = 5;
const STORE = "edgestate.join.pop";

const S = { pop: null, cities: {}, ws: null, backoff: 500, journeys: new Map(), watchQueue: [] };

function status(text) { $("status").textContent = text || ""; }

async function call(method, path, body) {
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (!res.ok) {
    const err = (data && data.error) || {};
    const e = new Error(err.message || `HTTP ${res.status}`);
    e.status = res.status;
    e.retryAfter = res.headers.get("Retry-After");
    throw e;
  }
  return data;
}

async function pickPop() {
  let tz = "";
  try { tz = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { tz = ""; }
  const offset = -new Date().getTimezoneOffset(); // minutes east of UTC
  const q = new URLSearchParams({ offset: String(offset) });
  if (tz) q.set("tz", tz);
  const r = await call("GET", "/api/join/pops?" + q.toString());
  const sel = $("pop");
  sel.replaceChildren();
  const saved = localStorage.getItem(STORE);
  // a short list: the nearest few, plus the one chosen before if it is further away
  const short = r.pops.slice(0, 6);
  const savedPop = r.pops.find((p) => p.id === saved);
  if (savedPop && !short.includes(savedPop)) short.push(savedPop);
  for (const p of short) {
    S.cities[p.id] = p.city;
    const o = document.createElement("option");
    o.value = p.id;
    o.textContent = `${p.city} (${p.id})` + (p.id === r.nearest ? " · nearest" : "");
    sel.appendChild(o);
  }
  S.pop = savedPop ? saved : (r.nearest || (short[0] && short[0].id));
  sel.value = S.pop;
  sel.addEventListener("change", () => { S.pop = sel.value; localStorage.setItem(STORE, S.pop); });
}

function fmtMs(ms) {
  if (ms < 1) return ms.toFixed(2) + " ms";
  if (ms < 10) return ms.toFixed(1) + " ms";
  return Math.round(ms) + " ms";
}

function journeyLine(j) {
  let text = `${j.what}: answered by ${j.city} in ${fmtMs(j.answered)}`;
  if (j.everywhere != null) text += `; everywhere in ${fmtMs(j.everywhere)}`;
  else if (j.lost) text += "; no longer followed";
  else if (j.of) text += `; reached ${j.reached} of ${j.of} POPs…`;
  j.li.textContent = text;
  j.li.className = j.everywhere != null ? "done" : "";
}

function addJourney(what, r) {
  const li = document.createElement("li");
  const j = { what, city: r.city, answered: r.answered_ms, li, everywhere: null };
  $("journeys").prepend(li);
  if (r.id) {
    S.journeys.set(r.id, j);
    watch(r.id);
  }
  journeyLine(j);
  while ($("journeys").children.length > MAX_JOURNEYS) $("journeys").lastElementChild.remove();
  while (S.journeys.size > MAX_JOURNEYS) S.journeys.delete(S.journeys.keys().next().value);
}

function watch(id) {
  if (S.ws && S.ws.readyState === WebSocket.OPEN) S.ws.send(JSON.stringify({ watch: id }));
  else S.watchQueue.push(id);
}

function renderTotals(t) {
  if (!t || t.replica == null) return;
  $("votes").textContent = String(t.votes);
  $("emoji-set").textContent = (t.emoji || []).join(" ");
  const ul = $("words");
  ul.replaceChildren();
  for (const w of t.words || []) {
    const li = document.createElement("li");
    li.textContent = w; // text only: a word is never markup
    ul.appendChild(li);
  }
}

function onMessage(ev) {
  let m;
  try { m = JSON.parse(ev.data); } catch (e) { return; }
  if (m.totals) renderTotals(m.totals);
  for (const u of m.journeys || []) {
    const j = S.journeys.get(u.id);
    if (!j) continue;
    j.reached = u.reached; j.of = u.of;
    if (u.everywhere_ms != null) j.everywhere = u.everywhere_ms;
    if (u.lost || u.unknown) j.lost = true;
    journeyLine(j);
  }
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/ws/join`);
  S.ws = ws;
  ws.addEventListener("open", () => {
    S.backoff = 500;
    for (const id of S.watchQueue.splice(0)) ws.send(JSON.stringify({ watch: id }));
  });
  ws.addEventListener("message", onMessage);
  ws.addEventListener("close", () => {
    S.ws = null;
    setTimeout(connect, S.backoff);
    S.backoff = Math.min(S.backoff * 2, 10000);
  });
}

async function tap(what, body, button) {
  if (!S.pop) return;
  if (button) button.disabled = true;
  try {
    const r = await call("POST", `/api/join/${encodeURIComponent(S.pop)}`, body);
    status("");
    addJourney(what, r);
  } catch (e) {
    if (e.status === 429) status(`Slow down: try again in ${e.retryAfter || 1} s.`);
    else if (e.status === 503) status(`The network is busy: try again in ${e.retryAfter || 1} s.`);
    else status(e.message);
  } finally {
    if (button) button.disabled = false;
  }
}

function wire() {
  $("vote").addEventListener("click", (e) => tap("+1", { action: "vote" }, e.currentTarget));
  for (const b of document.querySelectorAll(".em")) {
    b.addEventListener("click", () => tap(b.dataset.emoji, { action: "emoji", value: b.dataset.emoji }, b));
  }
  $("word-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const word = $("word").value.trim();
    if (!word) return;
    tap(`“${word}”`, { action: "word", value: word }).then(() => { $("word").value = ""; });
  });
}

async function main() {
  wire();
  connect();
  try {
    await pickPop();
  } catch (e) {
    status("Could not load the POPs: " + e.message);
  }
}

main();
