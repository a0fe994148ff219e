"""A history of every write, and the invariants each replica must keep at every step.

The oracle records each local write's delta as the writer made it (which dots it minted,
which dots it superseded, what it wrote), and checks a replica against that history after
every event that changed it, not only at the end:

- kv and sets: a value visible at a replica is a real write of that key, with the value
  written; it is never visible once the replica has applied a write or remove that
  superseded it; and every write whose effects the replica claims (its applied context)
  is either visible or superseded by a write the replica also holds (nothing is lost);
- counters: one entry per actor, holding exactly that actor's running totals at that dot,
  and at least as recent as every increment of that actor the replica claims to hold. So a
  read lies between the acknowledged increments that must be visible there and all of them;
- a replica's applied context never shrinks while it keeps its state;
- its state round-trips through the wire form into an empty replica with the same digest.

`InvariantBroken` names the first broken rule, the replica and the dot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

from ..clocks import Dot
from ..delta import Delta
from ..replica import Replica


class InvariantBroken(AssertionError):
    pass


@dataclass(slots=True)
class _Write:
    ns: str
    key: str
    kind: str  # "kv", "kv_delete", "counter", "set_add", "set_remove"
    payload: object = None  # kv: (value bytes, ts); counter: (p, n); set add: element bytes


@dataclass
class History:
    """Every local write, indexed for the checks."""

    writes: dict[Dot, _Write] = field(default_factory=dict)
    # dot -> the deltas that superseded it, each as the tuple of dots that delta minted
    killers: dict[Dot, list[tuple[Dot, ...]]] = field(default_factory=dict)
    counter_dots: dict[tuple[str, str], list[Dot]] = field(default_factory=dict)  # (key, actor) -> dots

    def record(self, delta: Delta) -> None:
        """A local write's delta, exactly as its replica made it (before it is sent anywhere)."""
        [(ref, store)] = delta.entries.items()
        ns, key = ref
        minted = tuple(sorted(delta.applied.dots()))
        observed = [d for d in delta.ctx.dots() if d not in set(minted)]
        if ns == "kv":
            if store:
                for d, sib in store.items():
                    self.writes[d] = _Write(ns, key, "kv", sib)
            else:
                for d in minted:
                    self.writes[d] = _Write(ns, key, "kv_delete")
        elif ns == "counters":
            for d, totals in store.items():
                self.writes[d] = _Write(ns, key, "counter", totals)
                self.counter_dots.setdefault((key, d[0]), []).append(d)
            return  # a counter entry supersedes its actor's earlier ones by rule, not by context
        else:
            added = {d: e for e, ds in store.items() for d in ds}
            for d in minted:
                self.writes[d] = _Write(ns, key, "set_add", added[d]) if d in added else _Write(ns, key, "set_remove")
        for d in observed:
            self.killers.setdefault(d, []).append(minted)

    def superseded_at(self, dot: Dot, applied) -> bool:
        """Some write that superseded `dot` has its effects held by a replica with this applied context."""
        return any(any(applied.contains(m) for m in minted) for minted in self.killers.get(dot, ()))


def check_replica(rep: Replica, hist: History, where: str) -> None:
    """Every per-step rule of the module docstring, for one replica's current state."""
    store = rep.store
    applied = store.applied
    data = store.data
    for key, sibs in data["kv"].items():
        for d, sib in sibs.items():
            w = hist.writes.get(d)
            if w is None or w.kind != "kv" or w.key != key:
                raise InvariantBroken(f"{where}: kv {key!r} shows {d}, which no one wrote to that key")
            if w.payload != sib:
                raise InvariantBroken(f"{where}: kv {key!r} shows {d} with another value than was written")
            if hist.superseded_at(d, applied):
                raise InvariantBroken(f"{where}: kv {key!r} still shows {d}, superseded by a write it holds")
    for key, elems in data["sets"].items():
        for e, ds in elems.items():
            for d in ds:
                w = hist.writes.get(d)
                if w is None or w.kind != "set_add" or w.key != key or w.payload != e:
                    raise InvariantBroken(f"{where}: set {key!r} shows an element under {d}, which did not add it")
                if hist.superseded_at(d, applied):
                    raise InvariantBroken(f"{where}: set {key!r} still shows {e!r} by {d}, removed by a write it holds")
    for key, entries in data["counters"].items():
        actors = set()
        for d, totals in entries.items():
            if d[0] in actors:
                raise InvariantBroken(f"{where}: counter {key!r} holds two entries for actor {d[0]!r}")
            actors.add(d[0])
            w = hist.writes.get(d)
            if w is None or w.kind != "counter" or w.key != key or w.payload != totals:
                raise InvariantBroken(f"{where}: counter {key!r} entry {d} = {totals} is not what {d[0]} counted")
    # nothing held is lost: every write in the applied context is visible or superseded there
    for d in applied.dots():
        w = hist.writes.get(d)
        if w is None:
            continue  # written before the history began (not in campaigns)
        if w.kind == "counter":
            entry = next((e for e in store.get("counters", w.key) if e[0] == d[0]), None)
            if entry is None or entry[1] < d[1]:
                raise InvariantBroken(f"{where}: counter {w.key!r} claims {d} but shows "
                                      f"{'no entry' if entry is None else entry} for {d[0]!r}")
        elif w.kind == "kv":
            if d not in store.get("kv", w.key) and not hist.superseded_at(d, applied):
                raise InvariantBroken(f"{where}: kv {w.key!r} lost {d}: held, not visible, not superseded")
        elif w.kind == "set_add":
            if d not in store.get("sets", w.key).get(w.payload, ()) and not hist.superseded_at(d, applied):
                raise InvariantBroken(f"{where}: set {w.key!r} lost the add {d}: held, not visible, not removed")


def check_round_trip(rep: Replica, where: str) -> None:
    """The whole state through its wire form (as a peer or the disk would get it) into an
    empty replica: it must decode and hold the same state."""
    raw = msgpack.packb(rep.store.full_delta().to_wire(), use_bin_type=True)
    try:
        delta = Delta.from_wire(msgpack.unpackb(raw, raw=False, strict_map_key=True))
    except Exception as e:  # noqa: BLE001 - any failure here is the finding
        raise InvariantBroken(f"{where}: its state does not decode from its own wire form: {e}") from None
    fresh = Replica(rep.id, members=rep.members, actor=rep.actor)
    fresh.store.apply(delta)
    if fresh.digest() != rep.digest():
        raise InvariantBroken(f"{where}: its state read back from the wire form is not the same state")


def expected_counter(hist: History, key: str, applied) -> int:
    """What a counter must read once a replica holds `applied`: each actor's latest totals."""
    total = 0
    for (k, _actor), dots in hist.counter_dots.items():
        if k != key:
            continue
        held = [d for d in dots if applied.contains(d)]
        if held:
            p, n = hist.writes[max(held, key=lambda d: d[1])].payload
            total += p - n
    return total


__all__ = ["History", "InvariantBroken", "check_replica", "check_round_trip", "expected_counter"]
