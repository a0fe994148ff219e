// The coordination panel: the selected POP's latest write (answered locally in microseconds,
// everywhere in milliseconds) next to what a global leader would charge for the same write, and,
// under a partition or a crash, which POPs could still write under each model.
//
// Figures come from GET /api/coordination (the server times the write and tracks its arrivals,
// so the page and a script read the same numbers). The stream only says when to ask again.
// Every string reaches the DOM as text (dom.js el / textContent).

import { $, el, setChildren, fmtMs } from "./dom.js";
import { call } from "./api.js";

const SPREAD_REFRESH_MS = 250; // while a write is spreading, ask at most this often
const RETRY_MS = 2000;

function fmtUs(us) {
  if (us === null || us === undefined || !isFinite(us)) return "–";
  return us < 10 ? us.toFixed(1) + " µs" : Math.round(us).toLocaleString("en-US") + " µs";
}

function fmtRatio(r) {
  if (r >= 100) return Math.round(r).toLocaleString("en-US");
  return r >= 10 ? r.toFixed(0) : r.toFixed(1);
}

// The model's badge, drawn by CSS from data-tag: it stays out of the line's text (and its tests).
function tag(label) {
  return el("span", { class: "coord-tag tag-" + label.toLowerCase(), "data-tag": label, "aria-hidden": "true" });
}

export class CoordinationPanel {
  constructor(S, root = $("coordination")) {
    this.S = S;
    this.root = root;
    this.leader = ""; // "": the server's default, the most central POP
    this.body = el("div", { class: "coord-body" });
    this.leaderSelect = el("select", { class: "coord-leader-select", "aria-label": "global leader", "data-testid": "coord-leader-select" });
    this.leaderSelect.addEventListener("change", () => { this.leader = this.leaderSelect.value; this.data = null; this.render(); this.refresh(); });
    if (root) {
      setChildren(root,
        el("div", { class: "coord-head" },
          el("h3", { class: "section-title", text: "The cost of coordination" }),
          el("label", { class: "coord-note" }, "leader ", this.leaderSelect)),
        this.body);
    }
    this.data = null;
    this.error = null;
    this.inflight = false;
    this.again = false;
    this.timer = null;
    this.render();
  }

  // -- hooks called by app.js ----------------------------------------------------------------

  onSnapshot() { this.refresh(); }

  onSelect() {
    this.render();
    this.refresh();
  }

  onEvent(ev) {
    switch (ev.kind) {
      case "partition": case "heal": case "crash": case "recover":
        this.refresh();
        break;
      case "applied":
        // a new write at the selected POP (its local cost), or an arrival of the one shown: only
        // those, so a busy audience does not make every page ask for every write
        if (ev.via === "local" ? ev.node === this.S.selected : this.carries(ev)) this.soon(SPREAD_REFRESH_MS);
        break;
      default:
        break;
    }
  }

  // -- fetching --------------------------------------------------------------------------------

  // The stream has seen arrivals of the shown write that the last answer did not count (they
  // landed while it was on its way): ask once more. Never polls: it stops once the server caught up.
  behind() {
    const p = this.pop();
    if (!p || !p.last_write || p.everywhere_ms !== null || !this.S.writes) return false;
    const w = this.S.writes.get(p.last_write.id);
    if (!w) return false;
    let n = 0;
    for (const r of w.arrivals.keys()) if (this.S.replicas[r] && this.S.replicas[r].status !== "down") n++;
    return n > p.last_write.reached;
  }

  carries(ev) {
    const p = this.pop();
    if (!p || !p.last_write || p.everywhere_ms !== null || !ev.dots) return false;
    const id = p.last_write.id;
    return ev.dots.some((d) => d[0] + ":" + d[1] === id);
  }

  pop() {
    const id = this.S.selected;
    return id && this.data && this.data.pops[id] ? this.data.pops[id] : null;
  }

  soon(ms) {
    if (this.timer !== null) return; // one refresh is already due: it will see this change too
    this.timer = setTimeout(() => { this.timer = null; this.refresh(); }, ms);
  }

  async refresh() {
    if (this.S.timeline && this.S.timeline.offline) return; // replaying a file: there is no server to ask
    if (this.inflight) { this.again = true; return; }
    this.inflight = true;
    const asked = this.leader;
    try {
      const data = await call("GET", "/api/coordination" + (asked ? "?leader=" + encodeURIComponent(asked) : ""));
      if (asked === this.leader) { // else the presenter picked another leader meanwhile: ask again
        this.data = data;
        this.error = null;
        this.fillLeaders(data);
      } else this.again = true;
    } catch (e) {
      this.error = e.message;
      this.soon(RETRY_MS);
    } finally {
      this.inflight = false;
    }
    this.render();
    // no polling: each later arrival comes as an "applied" event and asks again (onEvent)
    if (this.again) { this.again = false; this.refresh(); }
    else if (this.behind()) this.soon(SPREAD_REFRESH_MS);
  }

  // -- drawing -------------------------------------------------------------------------------------

  fillLeaders(d) {
    const sel = this.leaderSelect;
    if (sel.options.length !== Object.keys(d.pops).length + 1) {
      const city = (x) => (this.S.pops[x] ? this.S.pops[x].city : x);
      setChildren(sel, el("option", { value: "", text: `${city(d.default_leader)} (most central)` }),
        Object.keys(d.pops).map((x) => el("option", { value: x, text: `${city(x)} (${x})` })));
    }
    if (document.activeElement !== sel) sel.value = this.leader;
  }

  render() {
    if (!this.root) return;
    const d = this.data, id = this.S.selected;
    if (!d) {
      setChildren(this.body, el("div", { class: "empty", text: this.error ? `not available: ${this.error}` : "loading…" }));
      return;
    }
    const name = (x) => (this.S.pops[x] ? `${this.S.pops[x].city}, ${x}` : x);
    const leader = name(d.leader);
    const rows = [];
    const p = this.pop();
    if (!p) {
      rows.push(el("div", { class: "empty", text: `pick a POP to compare its writes with a global leader in ${leader}` }));
    } else {
      rows.push(this.crdtLine(id, p, d));
      rows.push(el("div", { class: "coord-line coord-leader", "data-testid": "coord-leader" },
        tag("leader"),
        `with a global leader (${leader}): `,
        el("strong", { text: fmtMs(p.consensus_commit_ms) }),
        el("span", { class: "coord-note", text: ` · ${d.quorum} of ${d.replicas} must acknowledge first` })));
      if (p.local_us && p.consensus_commit_ms) {
        const ratio = (p.consensus_commit_ms * 1000) / p.local_us;
        rows.push(el("div", { class: "coord-ratio", "data-testid": "coord-ratio",
          text: `${fmtRatio(ratio)}× slower to answer than the local write` }));
      }
      if (p.everywhere_ms !== null && p.consensus_commit_ms && p.everywhere_ms < p.consensus_commit_ms) {
        rows.push(el("div", { class: "coord-note", "data-testid": "coord-already",
          text: `by the time the leader answers, the CRDT write has been at every POP for ${fmtMs(p.consensus_commit_ms - p.everywhere_ms)}` }));
      }
    }
    rows.push(this.availability(d, name));
    setChildren(this.body, rows);
  }

  crdtLine(id, p, d) {
    const line = el("div", { class: "coord-line coord-crdt", "data-testid": "coord-crdt" },
      tag("CRDT"), `your write at ${id}: `);
    if (!p.last_write) {
      line.append("write here to measure it");
      return line;
    }
    if (d.local_writes_timed) line.append("local in ", el("strong", { text: fmtUs(p.local_us) }), ", ");
    else line.append("durable in its replica process, ");
    if (p.everywhere_ms !== null) line.append("everywhere in ", el("strong", { text: fmtMs(p.everywhere_ms) }));
    else {
      line.append(`everywhere: ${p.last_write.reached}/${p.last_write.of} so far`);
      if (d.partitioned) line.append(el("span", { class: "coord-note", text: " · the rest are across the partition: it reaches them when it heals" }));
    }
    return line;
  }

  availability(d, name) {
    const n = d.replicas, w = d.writers;
    const summary = el("div", { class: "coord-avail", "data-testid": "coord-avail" },
      `CRDT: ${w.crdt.length}/${n} can write · leader-based: ${w.consensus.length}/${n}`);
    const box = el("div", { class: "coord-avail-box" + (d.partitioned || d.down.length ? " faulted" : "") }, summary);
    if (!d.partitioned && !d.down.length) {
      box.append(el("div", { class: "coord-note", text: "no partition, no crash: every POP can write either way (the leader's only at its price)" }));
      return box;
    }
    const cannot = Object.keys(d.pops).filter((x) => !w.consensus.includes(x) && w.crdt.includes(x));
    if (w.consensus_blocked) {
      box.append(el("div", { class: "coord-note bad", "data-testid": "coord-blocked", text: `leader-based: no POP can write: ${w.consensus_blocked}` }));
    } else {
      box.append(el("div", { class: "coord-note" }, "leader-based writers (the leader's side): ",
        el("span", { class: "coord-ids", "data-testid": "coord-consensus-writers", text: w.consensus.join(" ") })));
    }
    if (cannot.length) {
      box.append(el("div", { class: "coord-note" }, "up, writing as CRDTs, refused by the leader: ",
        el("span", { class: "coord-ids bad", text: cannot.join(" ") })));
    }
    if (d.down.length) box.append(el("div", { class: "coord-note", text: `down (no writes either way): ${d.down.join(" ")}` }));
    const sel = this.S.selected;
    if (sel && d.pops[sel]) {
      const q = d.pops[sel];
      box.append(el("div", { class: "coord-note", "data-testid": "coord-selected-can",
        text: `${name(sel)}: CRDT ${q.can_write_crdt ? "can write" : "cannot write"} · leader-based ${q.can_write_consensus ? "can write" : "cannot write"}` }));
    }
    return box;
  }
}
