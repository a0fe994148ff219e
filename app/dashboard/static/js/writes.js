// A write and its arrivals, as the page follows them from the stream: the page's side of the
// server's replication/writes.py (WriteTracker), which the /ws snapshot's `writes` come from.
//
// The page follows writes itself, from the "applied" events, because it shows any recorded
// moment again without asking the server (timeline.js). The rule is the server's: a local apply
// starts a write, known by its first dot "actor:counter"; each replica's first apply of any of
// its dots is its arrival; the `keep` most recent writes are kept (the snapshot's
// bounds.recent_writes), an older one is forgotten with its dots.
//
// A write: {id, origin, t, keys, arrivals: Map replica -> virtual ms, dots: ["actor:n", ...]}.
// The dashboard adds its own fields to the objects (label, limits, ...); they are left alone.

const dotKey = (d) => d[0] + ":" + d[1];

export class WriteTracker {
  constructor(keep) {
    this.keep = keep;
    this.writes = new Map(); // id -> write, oldest first
    this.byDot = new Map(); // "actor:n" -> write
  }

  // The snapshot's writes ({id, origin, t, keys, arrivals: {replica: ms}}): only the first dot
  // of each is known, its id. Returns the writes, oldest first.
  load(list) {
    this.writes.clear();
    this.byDot.clear();
    for (const r of list || []) {
      const w = { id: r.id, origin: r.origin, t: r.t, keys: r.keys, arrivals: new Map(Object.entries(r.arrivals)), dots: [r.id] };
      this.writes.set(w.id, w);
      this.byDot.set(w.id, w);
    }
    return [...this.writes.values()];
  }

  // One "applied" event: {started: the write it started, or null; arrived: the writes that
  // reached ev.node with it}.
  applied(ev) {
    const dots = ev.dots;
    if (!dots || !dots.length) return { started: null, arrived: [] };
    const first = dotKey(dots[0]);
    if (ev.via === "local" && !this.byDot.has(first)) {
      const w = { id: first, origin: ev.node, t: ev.t, keys: ev.keys, arrivals: new Map([[ev.node, ev.t]]), dots: dots.map(dotKey) };
      this.writes.set(w.id, w);
      for (const k of w.dots) this.byDot.set(k, w);
      while (this.writes.size > this.keep) {
        const old = this.writes.values().next().value;
        this.writes.delete(old.id);
        for (const k of old.dots) if (this.byDot.get(k) === old) this.byDot.delete(k);
      }
      return { started: w, arrived: [] };
    }
    const arrived = [];
    for (const d of dots) {
      const w = this.byDot.get(dotKey(d));
      if (w && !w.arrivals.has(ev.node)) {
        w.arrivals.set(ev.node, ev.t);
        arrived.push(w);
      }
    }
    return { started: null, arrived };
  }

  // As the snapshot carries them.
  toJSON() {
    return [...this.writes.values()].map((w) => ({ id: w.id, origin: w.origin, t: w.t, keys: w.keys, arrivals: Object.fromEntries(w.arrivals) }));
  }
}
