// The world map: Plotly scattergeo for land and POP markers, a canvas on top for messages in
// flight. The canvas uses Plotly's own projection (fitted to where Plotly actually drew the
// markers), so arcs start and end exactly on the POPs; messages move along great circles,
// timed by the simulation clock (sent at t, delivered at deliver_at).
//
// Under load the work per frame is bounded whatever the write rate: the canvas is its own layer
// that nothing Plotly does clears (the projection is fitted again only when the map is resized
// or relaid out, never on a marker restyle); marker colours change on the SVG directly, at most
// a few times a second, and Plotly restyles only when a marker's shape changes (selection, crash,
// partition), because a Plotly restyle redraws the whole world; at most MAX_ARCS messages are
// drawn, the newest, and the map says how many more are in flight ("+N more").

export const MSG_STYLE = {
  payload: { color: "#ffd166", width: 2.4, head: 3.8, dash: null, trail: 0.35, label: "write payload" },
  ihave: { color: "#a78bfa", width: 1.1, head: 2.2, dash: [3, 4], trail: 0.25, label: "lazy IHAVE" },
  graft: { color: "#fb923c", width: 1.8, head: 3.0, dash: [7, 3], trail: 0.3, label: "GRAFT repair" },
  ae_reply: { color: "#4ade80", width: 2.2, head: 3.6, dash: null, trail: 0.35, label: "anti-entropy" },
};
export const GROUP_COLOURS = ["#f97316", "#22d3ee", "#e879f9", "#facc15", "#a3e635", "#f43f5e"];
const PALETTE = ["#38bdf8", "#f472b6", "#a3e635", "#fbbf24", "#c084fc", "#2dd4bf", "#fb7185", "#60a5fa", "#facc15", "#4ade80", "#f97316", "#e879f9"];
const DOWN_COLOUR = "#4b5563";
const DROP_COLOUR = "#f87171";
const ARC_SAMPLES = 48;
const NARROW = 600;
const MAX_ARCS = 240; // drawn per frame, the newest; the rest are counted on the map
const MAX_FIZZLES = 120;
const MAX_PULSES = 160;
const LOOK_MS = 300; // marker updates at most this often
const MORE_MS = 250; // the "+N more" count at most this often
// POP labels: in presenter mode (a body class, presenter.js) large enough for row 20
const LABEL_PX = 11;
export function labelPx() {
  if (!document.body.classList.contains("presenter")) return LABEL_PX;
  return window.innerWidth >= 1600 ? 20 : 16;
}

// Same digest, same colour: one colour on the map means converged. A digest that appears
// gets the next palette colour not in use, so a write is seen spreading as a new colour.
export class DigestColours {
  constructor() {
    this.byDigest = new Map();
    this.next = 0;
  }
  update(digests) {
    const live = new Set(digests);
    for (const d of [...this.byDigest.keys()]) if (!live.has(d)) this.byDigest.delete(d);
    const used = new Set(this.byDigest.values());
    for (const d of digests) {
      if (this.byDigest.has(d)) continue;
      let pick = null;
      for (let k = 0; k < PALETTE.length; k++) {
        const c = PALETTE[(this.next + k) % PALETTE.length];
        if (!used.has(c)) { pick = c; this.next = (this.next + k + 1) % PALETTE.length; break; }
      }
      if (pick === null) { pick = PALETTE[this.next]; this.next = (this.next + 1) % PALETTE.length; }
      this.byDigest.set(d, pick);
      used.add(pick);
    }
  }
  of(digest) {
    return this.byDigest.get(digest) || "#94a3b8";
  }
}

function toVec(lon, lat) {
  const a = (lon * Math.PI) / 180, b = (lat * Math.PI) / 180;
  return [Math.cos(b) * Math.cos(a), Math.cos(b) * Math.sin(a), Math.sin(b)];
}

function greatCircle(p, q, n) {
  const A = toVec(p.lon, p.lat), B = toVec(q.lon, q.lat);
  const dot = Math.min(1, Math.max(-1, A[0] * B[0] + A[1] * B[1] + A[2] * B[2]));
  const w = Math.acos(dot);
  const out = [];
  for (let i = 0; i <= n; i++) {
    const f = i / n;
    let v;
    if (w < 1e-9) v = A;
    else {
      const s = Math.sin(w), ka = Math.sin((1 - f) * w) / s, kb = Math.sin(f * w) / s;
      v = [ka * A[0] + kb * B[0], ka * A[1] + kb * B[1], ka * A[2] + kb * B[2]];
    }
    out.push([(Math.atan2(v[1], v[0]) * 180) / Math.PI, (Math.atan2(v[2], Math.hypot(v[0], v[1])) * 180) / Math.PI]);
  }
  return out;
}

function fit(xs, ys) {
  // least squares y = a x + b
  const n = xs.length;
  let sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (let i = 0; i < n; i++) { sx += xs[i]; sy += ys[i]; sxx += xs[i] * xs[i]; sxy += xs[i] * ys[i]; }
  const d = n * sxx - sx * sx;
  if (n < 2 || Math.abs(d) < 1e-9) return { a: 1, b: n ? (sy - sx) / n : 0 };
  const a = (n * sxy - sx * sy) / d;
  return { a, b: (sy - a * sx) / n };
}

export class WorldMap {
  constructor({ mapDiv, canvas, clock, onSelect }) {
    this.gd = mapDiv;
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.clock = clock;
    this.onSelect = onSelect;
    this.ids = [];
    this.pops = {};
    this.flights = new Map(); // mid -> sent event
    this.fizzles = [];
    this.pulses = [];
    this.arcs = new Map();
    this.xy = {};
    this.xf = null; // fitted projection -> pixel transform
    this.halos = null;
    this.ready = false;
    this.styleDirty = false;
    this.narrow = window.innerWidth < NARROW;
    this.look = null;
    this.k = 1;
    this.shown = null; // what the markers show now: {shape, colours}
    this.frames = 0;
    // what the last frame drew: for tests and `edgestate bench page` (arcs = trails drawn,
    // alive = on their way this frame, hidden = on their way but not drawn, over MAX_ARCS;
    // inFlight also counts messages streamed ahead of the map's clock, not yet departed)
    this.drawn = { arcs: 0, alive: 0, hidden: 0, inFlight: 0, frame: 0 };
    this.more = null;
    this.moreAt = 0;
    this.moreShown = -1;
    this.sampled = false; // the server streams a sample of a busier wire (its counters say so)
    this.calibratedAt = 0;
  }

  async init(topology) {
    this.ids = topology.replicas.map((r) => r.id);
    this.pops = Object.fromEntries(topology.replicas.map((r) => [r.id, r]));
    const lon = topology.replicas.map((r) => r.lon), lat = topology.replicas.map((r) => r.lat);
    const trace = {
      type: "scattergeo",
      mode: this.narrow ? "markers" : "markers+text",
      lon, lat,
      text: this.ids,
      textposition: "top center",
      textfont: { color: "#e2e8f0", size: labelPx(), family: "system-ui, sans-serif" },
      hovertext: topology.replicas.map((r) => `${r.city} (${r.id})<br>${r.region}`),
      hoverinfo: "text",
      marker: { size: 13, color: this.ids.map(() => "#94a3b8"), line: { color: "#0b1220", width: 1.5 }, symbol: "circle", opacity: 1 },
    };
    const layout = {
      margin: { l: 0, r: 0, t: 0, b: 0 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      showlegend: false,
      dragmode: false,
      font: { color: "#e6edf7" },
      hoverlabel: { bgcolor: "#0f1829", bordercolor: "#38bdf8", font: { color: "#e6edf7", size: 13 } },
      geo: {
        projection: { type: "natural earth" },
        showland: true, landcolor: "#1a2436",
        showocean: true, oceancolor: "#0a1120",
        showcountries: true, countrycolor: "#283750", countrywidth: 0.6,
        showcoastlines: true, coastlinecolor: "#3a4f73", coastlinewidth: 0.8,
        showlakes: false, showframe: false, showrivers: false,
        bgcolor: "rgba(0,0,0,0)",
        lataxis: { range: [-58, 88] },
        lonaxis: { range: [-180, 180] },
        resolution: 110,
      },
    };
    const config = {
      topojsonURL: "/static/topojson/",
      displayModeBar: false,
      responsive: true,
      scrollZoom: false,
      doubleClick: false,
      showTips: false,
    };
    await Plotly.newPlot(this.gd, [trace], layout, config);
    this.gd.on("plotly_click", (e) => {
      const p = e && e.points && e.points[0];
      if (p && this.ids[p.pointIndex] !== undefined) this.onSelect(this.ids[p.pointIndex]);
    });
    // pan or zoom moves the projection; a restyle does not (so afterplot, which every restyle
    // fires, is not listened to: re-fitting there cleared the arcs on every marker update)
    this.gd.on("plotly_relayout", () => this.calibrate());
    this.more = document.createElement("div");
    this.more.className = "map-more";
    this.more.dataset.testid = "arcs-more";
    this.more.hidden = true;
    this.gd.parentElement.appendChild(this.more);
    const ro = new ResizeObserver(() => this.resize());
    ro.observe(this.gd.parentElement);
    this.ready = true;
    this.resize();
    requestAnimationFrame((ts) => this.frame(ts));
  }

  resize() {
    if (!this.ready) return;
    const narrow = window.innerWidth < NARROW;
    const work = [];
    if (narrow !== this.narrow) {
      this.narrow = narrow;
      work.push(Plotly.restyle(this.gd, { mode: narrow ? "markers" : "markers+text" }, [0]));
    }
    const tr = this.gd.data && this.gd.data[0];
    if (tr && tr.textfont && tr.textfont.size !== labelPx()) {
      work.push(Plotly.restyle(this.gd, { "textfont.size": labelPx() }, [0]));
    }
    work.push(Plotly.Plots.resize(this.gd));
    Promise.all(work).then(() => {
      this.calibrate();
      this.shown = null; // Plotly drew the markers afresh from its data: paint the look again
      this.styleDirty = true;
    }).catch(() => {});
  }

  // Presenter mode flipped (or the window crossed a size step): the labels' size; the resize
  // that follows (the card changed size) fits the projection again.
  relabel() {
    if (!this.ready) return;
    const px = labelPx();
    const tr = this.gd.data && this.gd.data[0];
    if (tr && tr.textfont && tr.textfont.size === px) return;
    Plotly.restyle(this.gd, { "textfont.size": px }, [0]).then(() => {
      this.calibrate();
      this.shown = null;
      this.styleDirty = true;
    }).catch(() => {});
  }

  // Fit Plotly's projection to where the markers really are (pixels in the map div).
  calibrate() {
    const sub = this.gd._fullLayout && this.gd._fullLayout.geo && this.gd._fullLayout.geo._subplot;
    const proj = sub && sub.projection;
    const box = this.gd.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    this.calibratedAt = performance.now();
    const w = Math.max(1, Math.round(box.width * dpr)), h = Math.max(1, Math.round(box.height * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) { // sizing a canvas clears it: only when it changed
      this.canvas.width = w;
      this.canvas.height = h;
      this.canvas.style.width = box.width + "px";
      this.canvas.style.height = box.height + "px";
    }
    this.ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    this.width = box.width;
    this.height = box.height;
    this.k = Math.max(0.45, Math.min(1, box.width / 1100)); // halos and pulses scale with the map
    this.arcs.clear();
    if (!proj) { this.xf = null; return; }
    const points = this.gd.querySelectorAll(".scattergeo .point");
    const px = [], py = [], qx = [], qy = [];
    points.forEach((node, i) => {
      const id = this.ids[i];
      if (id === undefined) return;
      const r = node.getBoundingClientRect();
      if (!r.width) return;
      const q = proj([this.pops[id].lon, this.pops[id].lat]);
      if (!q) return;
      px.push(r.left + r.width / 2 - box.left);
      py.push(r.top + r.height / 2 - box.top);
      qx.push(q[0]);
      qy.push(q[1]);
    });
    if (px.length < 2) { this.xf = null; return; }
    this.proj = proj;
    this.xf = { x: fit(qx, px), y: fit(qy, py) };
    this.xy = {};
    for (const id of this.ids) this.xy[id] = this.project(this.pops[id].lon, this.pops[id].lat);
  }

  project(lon, lat) {
    const q = this.proj([lon, lat]);
    if (!q) return null;
    return [this.xf.x.a * q[0] + this.xf.x.b, this.xf.y.a * q[1] + this.xf.y.b];
  }

  arc(src, dst) {
    const key = src + ">" + dst;
    let a = this.arcs.get(key);
    if (a) return a;
    const p = this.pops[src], q = this.pops[dst];
    if (!p || !q || !this.xf) return null;
    const ll = greatCircle(p, q, ARC_SAMPLES);
    const pts = ll.map(([lon, lat]) => this.project(lon, lat) || [NaN, NaN]);
    const brk = new Uint8Array(pts.length);
    for (let i = 0; i + 1 < pts.length; i++) {
      if (Math.abs(pts[i + 1][0] - pts[i][0]) > this.width * 0.35 || !isFinite(pts[i + 1][0]) || !isFinite(pts[i][0])) brk[i] = 1;
    }
    // a slight bulge to the left of travel, so the two directions of a link do not overlap
    let len = 0;
    for (let i = 0; i + 1 < pts.length; i++) if (!brk[i]) len += Math.hypot(pts[i + 1][0] - pts[i][0], pts[i + 1][1] - pts[i][1]);
    const h = Math.min(18, 0.06 * len);
    const out = pts.map((pt, i) => {
      const j = i + 1 < pts.length && !brk[i] ? i : i - 1;
      if (j < 0 || brk[j] || !isFinite(pt[0])) return pt;
      const dx = pts[j + 1][0] - pts[j][0], dy = pts[j + 1][1] - pts[j][1];
      const n = Math.hypot(dx, dy) || 1;
      const s = h * Math.sin((Math.PI * i) / (pts.length - 1));
      return [pt[0] + (dy / n) * s, pt[1] - (dx / n) * s];
    });
    a = { pts: out, brk };
    this.arcs.set(key, a);
    return a;
  }

  // -- what the page tells the map --------------------------------------------------------

  setLook(look) {
    // look: {colours: [..], down: [bool], groups: [index|null], selected: id|null}
    this.look = look;
    this.styleDirty = true;
  }

  applyLook() {
    if (!this.ready || !this.look) return;
    this.styleDirty = false;
    const L = this.look;
    this.halos = L.groups.some((g) => g !== null) ? L.groups : null;
    const colour = this.ids.map((id, i) => (L.down[i] ? DOWN_COLOUR : L.colours[i]));
    const lineColour = this.ids.map((id, i) => (id === L.selected ? "#ffffff" : L.down[i] ? "#9ca3af" : L.groups[i] !== null ? GROUP_COLOURS[L.groups[i] % GROUP_COLOURS.length] : "#0b1220"));
    const lineWidth = this.ids.map((id, i) => (id === L.selected ? 3 : L.down[i] ? 1.5 : L.groups[i] !== null ? 3.5 : 1.5));
    const size = this.ids.map((id, i) => (id === L.selected ? 19 : L.down[i] ? 12 : 14));
    const symbol = this.ids.map((id, i) => (L.down[i] ? "x" : "circle"));
    const hover = this.ids.map((id, i) => {
      const r = this.pops[id];
      return `${r.city} (${id})<br>${r.region}<br>${L.down[i] ? "crashed" : "state " + (L.digests[i] || "").slice(0, 8)}`;
    });
    const shape = JSON.stringify([lineColour, lineWidth, size, symbol]);
    const colours = colour.join();
    if (this.shown && this.shown.shape === shape) {
      if (this.shown.colours !== colours || this.shown.hover !== hover.join()) this.paintMarkers(colour, hover);
      return;
    }
    this.shown = { shape, colours, hover: hover.join() };
    Plotly.restyle(this.gd, {
      "marker.color": [colour], "marker.line.color": [lineColour], "marker.line.width": [lineWidth],
      "marker.size": [size], "marker.symbol": [symbol], hovertext: [hover],
    }, [0]);
  }

  // Colours and hover text only: straight onto the SVG points and into Plotly's own copies of
  // the data (so its next full redraw, and the hover label, agree), without a restyle.
  paintMarkers(colour, hover) {
    const points = this.gd.querySelectorAll(".scattergeo .point");
    if (points.length !== this.ids.length) { // not drawn as expected: let Plotly do it
      this.shown = null;
      this.styleDirty = true;
      return;
    }
    points.forEach((node, i) => { node.style.fill = colour[i]; });
    const copies = [this.gd.data && this.gd.data[0], this.gd._fullData && this.gd._fullData[0]];
    for (const tr of copies) {
      if (!tr) continue;
      if (tr.marker && Array.isArray(tr.marker.color)) colour.forEach((c, i) => { tr.marker.color[i] = c; });
      if (Array.isArray(tr.hovertext)) hover.forEach((h, i) => { tr.hovertext[i] = h; });
    }
    const cd = this.gd.calcdata && this.gd.calcdata[0];
    if (cd) cd.forEach((pt, i) => { if (pt && i < colour.length) { pt.mc = colour[i]; pt.htx = hover[i]; } });
    this.shown.colours = colour.join();
    this.shown.hover = hover.join();
  }

  addFlight(ev) {
    if (!MSG_STYLE[ev.msg]) return;
    if (ev.deliver_at === null || ev.deliver_at === undefined) {
      this.fizzles.push({ ev, born: performance.now() });
      if (this.fizzles.length > MAX_FIZZLES) this.fizzles.shift();
      return;
    }
    this.flights.set(ev.mid, ev);
    if (this.flights.size > 1500) this.flights.delete(this.flights.keys().next().value);
  }

  dropped(ev) {
    const f = this.flights.get(ev.mid);
    if (f) f.dropped = ev.reason;
    else if (ev.reason !== "loss" && ev.reason !== "partition") this.pulse(ev.dst, DROP_COLOUR, true);
  }

  pulse(node, colour, cross = false) {
    this.pulses.push({ node, colour, cross, born: performance.now() });
    if (this.pulses.length > MAX_PULSES) this.pulses.shift();
  }

  // -- drawing ----------------------------------------------------------------------------

  frame() {
    try {
      const t = performance.now();
      if (this.styleDirty && t - (this.lookAt || 0) > LOOK_MS) {
        this.lookAt = t;
        this.applyLook();
      }
      if (!this.xf && t - this.calibratedAt > 1000) this.calibrate(); // the map was not ready: try again
      this.draw();
    } catch (e) {
      console.error(e);
    }
    requestAnimationFrame((ts) => this.frame(ts));
  }

  draw() {
    const ctx = this.ctx;
    ctx.clearRect(0, 0, this.width || 0, this.height || 0);
    if (!this.xf) return;
    const now = this.clock.now();
    const wall = performance.now();

    if (this.halos) {
      this.ids.forEach((id, i) => {
        const g = this.halos[i], p = this.xy[id];
        if (g === null || !p) return;
        ctx.beginPath();
        ctx.fillStyle = GROUP_COLOURS[g % GROUP_COLOURS.length];
        ctx.globalAlpha = 0.16;
        ctx.arc(p[0], p[1], 20 * this.k, 0, Math.PI * 2);
        ctx.fill();
      });
      ctx.globalAlpha = 1;
    }

    // messages in flight: the newest MAX_ARCS are drawn (the map is in sent order), the rest counted
    const alive = [];
    for (const [mid, m] of this.flights) {
      const span = m.deliver_at - m.t;
      const f = span > 0 ? (now - m.t) / span : 1;
      if (f >= 1) {
        this.flights.delete(mid);
        if (m.dropped) this.pulse(m.dst, DROP_COLOUR, true);
        else if (m.msg === "payload" || m.msg === "ae_reply") this.pulse(m.dst, MSG_STYLE[m.msg].color);
        continue;
      }
      if (f >= 0) alive.push(m, f);
    }
    const first = Math.max(0, alive.length / 2 - MAX_ARCS);
    let drawn = 0;
    for (let i = first * 2; i < alive.length; i += 2) {
      const m = alive[i], f = alive[i + 1];
      const arc = this.arc(m.src, m.dst);
      if (!arc) continue;
      const st = MSG_STYLE[m.msg];
      this.drawTrail(arc, st, Math.max(0, f - st.trail), f, m.dropped ? DROP_COLOUR : st.color, 0.95);
      drawn++;
    }
    this.drawn = { arcs: drawn, alive: alive.length / 2, hidden: first, inFlight: this.flights.size, frame: ++this.frames };
    this.showMore(first, wall);

    // lost or cut off when sent: a stub that fizzles out
    this.fizzles = this.fizzles.filter((z) => wall - z.born < 900);
    for (const z of this.fizzles) {
      const arc = this.arc(z.ev.src, z.ev.dst);
      if (!arc) continue;
      const age = (wall - z.born) / 900;
      const st = MSG_STYLE[z.ev.msg];
      this.drawTrail(arc, st, 0, 0.04 + 0.08 * age, DROP_COLOUR, 0.9 * (1 - age), true);
    }

    // arrivals
    this.pulses = this.pulses.filter((p) => wall - p.born < 700);
    for (const p of this.pulses) {
      const xy = this.xy[p.node];
      if (!xy) continue;
      const age = (wall - p.born) / 700;
      ctx.globalAlpha = Math.max(0, 1 - age);
      ctx.strokeStyle = p.colour;
      ctx.lineWidth = 2;
      ctx.setLineDash([]);
      if (p.cross) {
        const r = (6 + 4 * age) * this.k;
        ctx.beginPath();
        ctx.moveTo(xy[0] - r, xy[1] - r); ctx.lineTo(xy[0] + r, xy[1] + r);
        ctx.moveTo(xy[0] + r, xy[1] - r); ctx.lineTo(xy[0] - r, xy[1] + r);
        ctx.stroke();
      } else {
        ctx.beginPath();
        ctx.arc(xy[0], xy[1], (7 + 18 * age) * this.k, 0, Math.PI * 2);
        ctx.stroke();
      }
    }
    ctx.globalAlpha = 1;
  }

  showMore(hidden, wall) {
    const shown = hidden + (this.sampled ? ":s" : "");
    if (!this.more || shown === this.moreShown || wall - this.moreAt < MORE_MS) return;
    this.moreAt = wall;
    this.moreShown = shown;
    this.more.hidden = hidden === 0 && !this.sampled;
    this.more.textContent = this.sampled ? `a sample of the wire${hidden ? `, +${hidden} more in flight` : ""}` : `+${hidden} more in flight`;
    this.more.title = this.sampled
      ? "the wire is busier than the map can draw: the server streams a sample of its messages (the counters count them all)"
      : `the newest ${MAX_ARCS} messages in flight are drawn`;
  }

  drawTrail(arc, st, f0, f1, colour, alpha, cross = false) {
    const ctx = this.ctx;
    const pts = arc.pts, brk = arc.brk, N = pts.length - 1;
    const at = (x) => {
      const i = Math.min(N - 1, Math.floor(x)), t = x - i;
      if (i >= N) return pts[N];
      if (brk[i]) return t < 0.5 ? pts[i] : pts[i + 1];
      return [pts[i][0] + (pts[i + 1][0] - pts[i][0]) * t, pts[i][1] + (pts[i + 1][1] - pts[i][1]) * t];
    };
    const a = f0 * N, b = f1 * N;
    ctx.setLineDash(st.dash || []);
    ctx.strokeStyle = colour;
    ctx.lineCap = "round";
    // the trail fades towards its tail: three passes, brighter and shorter
    for (const [k, w] of [[1, 0.25], [0.6, 0.55], [0.3, 1]]) {
      const s = b - (b - a) * k;
      ctx.globalAlpha = alpha * w;
      ctx.lineWidth = st.width;
      ctx.beginPath();
      let p = at(s);
      ctx.moveTo(p[0], p[1]);
      for (let j = Math.floor(s) + 1; j < b; j++) {
        const q = pts[j];
        if (brk[j - 1]) ctx.moveTo(q[0], q[1]);
        else ctx.lineTo(q[0], q[1]);
      }
      const e = at(b);
      if (brk[Math.min(N - 1, Math.floor(b))] && Math.floor(b) > Math.floor(s)) ctx.moveTo(e[0], e[1]);
      else ctx.lineTo(e[0], e[1]);
      ctx.stroke();
    }
    ctx.setLineDash([]);
    const head = at(b);
    ctx.fillStyle = colour;
    ctx.globalAlpha = alpha * 0.3;
    ctx.beginPath();
    ctx.arc(head[0], head[1], st.head * 2.4, 0, Math.PI * 2);
    ctx.fill();
    ctx.globalAlpha = alpha;
    ctx.beginPath();
    if (cross) {
      const r = 4;
      ctx.lineWidth = 2;
      ctx.moveTo(head[0] - r, head[1] - r); ctx.lineTo(head[0] + r, head[1] + r);
      ctx.moveTo(head[0] + r, head[1] - r); ctx.lineTo(head[0] - r, head[1] + r);
      ctx.stroke();
    } else {
      ctx.arc(head[0], head[1], st.head, 0, Math.PI * 2);
      ctx.fill();
    }
    ctx.globalAlpha = 1;
  }
}
