// A model of the stream, to make keyframes.
//
// Mirrors what the server's stream model keeps for a snapshot (app/dashboard/ws/model.py: replica states,
// convergence, clock, counters, partition groups, the recent writes and who has them, messages
// in flight), so that a snapshot for any recorded moment can be made without asking the server.
// Its bounds are the ones the snapshot states (`bounds`); the facts the page takes from the
// server (bounds, strategies, cuts) are carried into every keyframe as they came.

import { WriteTracker } from "../writes.js";

// What the server's snapshot kept before it said so: a file recorded then is read with these.
export const DEFAULT_BOUNDS = Object.freeze({ recent_writes: 12, in_flight: 4000 });

export class StreamModel {
  constructor(snap) {
    this.topology = snap.topology;
    this.ids = snap.topology.replicas.map((r) => r.id);
    this.replicas = new Map(snap.replicas.map((r) => [r.node, r]));
    this.convergence = snap.convergence;
    this.clock = snap.clock;
    this.counters = snap.counters;
    this.groups = snap.groups;
    this.groups_t = snap.groups_t ?? null;
    this.animated = snap.animated;
    this.frame_ms = snap.frame_ms;
    this.bounds = snap.bounds || DEFAULT_BOUNDS;
    this.strategies = snap.strategies;
    this.cuts = snap.cuts;
    this.inFlight = new Map((snap.in_flight || []).map((m) => [m.mid, m]));
    this.writes = new WriteTracker(this.bounds.recent_writes);
    this.writes.load(snap.writes);
    this.detail = snap.detail || null;
    this.scenario = snap.scenario || null;
  }

  apply(ev) {
    switch (ev.kind) {
      case "sent":
        if (ev.deliver_at !== null && ev.deliver_at !== undefined) {
          this.inFlight.set(ev.mid, ev);
          if (this.inFlight.size > this.bounds.in_flight) this.inFlight.delete(this.inFlight.keys().next().value);
        }
        break;
      case "dropped":
        this.inFlight.delete(ev.mid);
        break;
      case "applied":
        this.writes.applied(ev);
        break;
      case "state":
        this.replicas.set(ev.node, ev);
        break;
      case "convergence":
        this.convergence = ev;
        break;
      case "clock":
        this.clock = ev;
        break;
      case "counters":
        this.counters = ev;
        break;
      case "partition":
        this.groups = ev.groups;
        this.groups_t = ev.t;
        break;
      case "heal":
        this.groups = null;
        this.groups_t = null;
        break;
      case "detail":
        this.detail = ev;
        break;
      case "scenario":
        this.scenario = ev;
        break;
      default:
        break;
    }
  }

  keyframe(vt) {
    for (const [mid, m] of this.inFlight) if (m.deliver_at <= vt) this.inFlight.delete(mid);
    const snap = {
      kind: "snapshot",
      topology: this.topology,
      replicas: this.ids.map((id) => this.replicas.get(id)).filter(Boolean),
      convergence: this.convergence,
      clock: { ...this.clock, now_ms: vt },
      counters: this.counters,
      groups: this.groups,
      groups_t: this.groups_t,
      writes: this.writes.toJSON(),
      in_flight: [...this.inFlight.values()],
      animated: this.animated,
      frame_ms: this.frame_ms,
      bounds: this.bounds,
      detail: this.detail,
      scenario: this.scenario,
    };
    // as they came: a file recorded before the snapshot carried them has none
    if (this.strategies !== undefined) snap.strategies = this.strategies;
    if (this.cuts !== undefined) snap.cuts = this.cuts;
    return snap;
  }
}
