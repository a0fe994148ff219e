// The convergence view: for recent writes, the fraction of replicas holding each over virtual
// time, beside the physical limit (one direct hop from the origin at fibre latency); message
// counters by kind; and the event log.

import { $, el, setChildren, fmtMs, fmtClock, fmtCount } from "./dom.js";
import { MSG_STYLE } from "./map.js";

const WRITE_COLOURS = ["#38bdf8", "#f472b6", "#a3e635", "#fbbf24"];
const SHOWN = 4;
const LOG_MAX = 120;
// The chart redraws at most every DRAW_MIN_MS, and never oftener than its own cost allows: a
// Plotly redraw that took c ms waits DRAW_COST_X * c before the next (the chart takes at most
// about a tenth of the main thread, whatever the write rate).
const DRAW_MIN_MS = 250;
const DRAW_COST_X = 10;

export class ConvergenceView {
  constructor(S) {
    this.S = S;
    this.dirty = false;
    this.ready = false;
    this.lastDraw = 0;
    this.gap = DRAW_MIN_MS;
  }

  init() {
    const px = document.body.classList.contains("presenter") ? 16 : 11; // presenter mode: large type
    const axis = { color: "#9fb0c8", gridcolor: "#1b2840", zerolinecolor: "#24344f", tickfont: { size: px } };
    this.layout = {
      margin: { l: px * 4, r: 10, t: 6, b: px * 3 },
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      font: { color: "#cbd5e1", size: px },
      showlegend: false,
      xaxis: { ...axis, title: { text: "virtual ms after the write", font: { size: px } }, rangemode: "tozero" },
      yaxis: { ...axis, range: [0, 1.04], tickformat: ".0%", fixedrange: true },
      hovermode: false,
    };
    Plotly.newPlot($("conv-chart"), [], this.layout, { displayModeBar: false, responsive: true, staticPlot: true });
    this.ready = true;
    setInterval(() => this.maybeDraw(), 250);
  }

  touch() {
    this.dirty = true;
  }

  // Presenter mode flipped: the chart's type and its size (its card changed height).
  setPresenter(on) {
    if (!this.ready) return;
    const px = on ? 16 : 11;
    const L = this.layout;
    L.font.size = px;
    L.margin = { l: px * 4, r: 10, t: 6, b: px * 3 };
    for (const ax of [L.xaxis, L.yaxis]) ax.tickfont = { size: px };
    L.xaxis.title.font = { size: px };
    const chart = $("conv-chart");
    Plotly.relayout(chart, {
      "font.size": px, margin: L.margin, "xaxis.tickfont.size": px, "yaxis.tickfont.size": px,
      "xaxis.title.font.size": px,
    }).then(() => Plotly.Plots.resize(chart)).catch(() => {});
  }

  maybeDraw() {
    if (!this.ready) return;
    const S = this.S;
    const recent = [...S.writes.values()].slice(-SHOWN);
    const incomplete = recent.some((w) => w.arrivals.size < w.n);
    if (!this.dirty && !incomplete) return;
    const started = performance.now();
    if (started - this.lastDraw < this.gap) return;
    this.dirty = false;
    const now = S.clock.now();
    const traces = [];
    const legend = [];
    recent.forEach((w, i) => {
      const colour = WRITE_COLOURS[(w.seq ?? i) % WRITE_COLOURS.length];
      const times = [...w.arrivals.values()].map((t) => Math.max(0, t - w.t)).sort((a, b) => a - b);
      const n = Math.max(w.n, times.length);
      const xs = [], ys = [];
      times.forEach((t, k) => { xs.push(t); ys.push((k + 1) / n); });
      const done = times.length >= n;
      if (!done && xs.length) { xs.push(Math.max(xs[xs.length - 1], now - w.t)); ys.push(ys[ys.length - 1]); }
      traces.push({ x: xs, y: ys, type: "scatter", mode: "lines", line: { color: colour, width: 2.5, shape: "hv" } });
      const lim = w.limits.slice(0, n);
      traces.push({
        x: lim, y: lim.map((_, k) => (k + 1) / n), type: "scatter", mode: "lines",
        line: { color: colour, width: 1.5, dash: "dot", shape: "hv" }, opacity: 0.75,
      });
      const allAt = done ? times[times.length - 1] : null;
      const limit = lim.length ? lim[lim.length - 1] : null;
      const stat = done
        ? `${times.length}/${n} in ${fmtMs(allAt)} · limit ${fmtMs(limit)}` + (limit > 0 ? ` · ×${(allAt / limit).toFixed(2)}` : "")
        : `${times.length}/${n} so far · limit ${fmtMs(limit)}`;
      legend.push(el("li", null,
        el("span", { class: "swatch", style: { background: colour } }),
        el("span", { class: "wl-key", text: w.label }),
        el("span", { class: "hint", text: `@${w.origin}` }),
        el("span", { class: "wl-stat", text: stat })));
    });
    Plotly.react($("conv-chart"), traces, this.layout);
    setChildren($("write-legend"), legend.length ? legend.reverse() : [el("li", { class: "empty", text: "write something: its spread is drawn here" })]);
    this.lastDraw = performance.now();
    this.gap = Math.max(DRAW_MIN_MS, DRAW_COST_X * (this.lastDraw - started));
  }
}

const KIND_ORDER = ["payload", "ihave", "graft", "ae_reply", "ae_digest", "graft_ack", "prune", "neighbour", "ping", "ack", "ping_req"];

export function renderCounters(S, c, rate) {
  const kinds = new Set([...Object.keys(c.sent || {}), ...Object.keys(c.dropped || {})]);
  const order = [...KIND_ORDER.filter((k) => kinds.has(k)), ...[...kinds].filter((k) => !KIND_ORDER.includes(k)).sort()];
  const head = el("tr", null, el("th", { text: "kind" }), el("th", { text: "sent" }), el("th", { text: "delivered" }), el("th", { text: "dropped" }));
  const rows = order.map((k) => {
    const st = MSG_STYLE[k];
    return el("tr", { class: st ? "animated" : "aggregated" },
      el("td", null, el("span", { class: "kind-dot", style: { background: st ? st.color : "#475569" } }), k),
      el("td", { text: fmtCount((c.sent || {})[k] || 0) }),
      el("td", { text: fmtCount((c.delivered || {})[k] || 0) }),
      el("td", { text: fmtCount((c.dropped || {})[k] || 0) }));
  });
  setChildren($("counters"), el("thead", null, head), el("tbody", null, rows));
  const reasons = Object.entries(c.dropped_by_reason || {}).map(([r, n]) => `${r} ${fmtCount(n)}`).join(", ");
  setChildren($("rates"),
    el("span", { text: `in flight ${fmtCount(c.in_flight)}` }),
    el("span", { text: `writes ${fmtCount(c.writes)}` }),
    el("span", { text: `membership changes ${fmtCount(c.membership)}` }),
    reasons ? el("span", { text: `drops: ${reasons}` }) : null,
    rate !== null ? el("span", { text: `cluster events ${Math.round(rate)}/s` }) : null,
    el("span", { text: `viewers ${c.clients}` }));
}

// The event log. `parts`: strings, or {node}, {key} objects shown as styled text.
export function logEvent(t, parts, tone = "") {
  const list = $("log");
  const msg = el("span", { class: "msg" }, parts.map((p) => {
    if (typeof p === "string") return p;
    if (p.node !== undefined) return el("span", { class: "node", text: p.node });
    if (p.key !== undefined) return el("span", { class: "key", text: p.key });
    return String(p);
  }));
  const item = el("li", { class: tone }, el("time", { text: fmtClock(t) }), msg);
  list.insertBefore(item, list.firstChild);
  while (list.childNodes.length > LOG_MAX) {
    list.removeChild(list.lastChild);
    logDropped++;
  }
  showLogMore(list);
}

// The log keeps the newest LOG_MAX events; below it, how many earlier ones it no longer shows.
let logDropped = 0;
function showLogMore(list) {
  let more = $("log-more");
  if (!more) {
    more = el("p", { id: "log-more", class: "hint log-more", "data-testid": "log-more" });
    list.after(more);
  }
  more.hidden = logDropped === 0;
  more.textContent = `+${fmtCount(logDropped)} earlier events not shown`;
}

export function clearLog() {
  setChildren($("log"), []);
  logDropped = 0;
  showLogMore($("log"));
}
