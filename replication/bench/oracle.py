"""A history of every write, and the invariants each replica must keep at every step.

The oracle records each local write's delta as the writer made it (which dots it minted, the
content it gave each dot it made live, which dots it superseded), and checks a replica against
that history after every event that changed it, not only at the end. Every rule holds for every
registered CRDT type; the one question whose answer differs by type is the type's own `holds`:

- the state is well formed: each key's state is what its type decodes from its own wire form;
- every live dot is a real write of that key, with the content its writer gave it, and it is
  never visible once the replica holds a write that superseded it (named it in its context);
- nothing held is lost: every write whose effects the replica claims (its applied context)
  still holds there (its dot is live; a counter's newer entry of the same actor, or a map
  removal's floor, took it in), unless a write the replica holds superseded it. So a counter
  reads between the acknowledged increments that must be visible there and all of them;
- the model (`Model`): the state is exactly the join of the deltas the replica applied,
  recomputed from them in a canonical order, so the order they came in made no difference;
- a replica's applied context never shrinks while it keeps its state;
- its state round-trips through the wire form into an empty replica with the same digest,
  every seal verifying on the way.

`InvariantBroken` names the first broken rule, the replica and the dot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

from ..clocks import CausalContext, Dot
from ..crdts import BY_NAMESPACE
from ..delta import Delta, KeyRef
from ..errors import EdgeStateError
from ..replica import Replica
from ..store import Store


class InvariantBroken(AssertionError):
    pass


@dataclass(slots=True)
class _Write:
    ns: str
    key: str
    content: object = None  # what the dot was made to hold; None for an event that only superseded


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
        made = dict(BY_NAMESPACE[ns].contents(store))
        for d in minted:
            self.writes[d] = _Write(ns, key, made.get(d))
        if ns == "counters":
            for d in made:
                self.counter_dots.setdefault((key, d[0]), []).append(d)
        mine = set(minted)
        for d in delta.ctx.dots():
            if d not in mine:
                self.killers.setdefault(d, []).append(minted)

    def superseded_at(self, dot: Dot, applied) -> bool:
        """Some write that superseded `dot` has its effects held by a replica with this applied context."""
        return any(any(applied.contains(m) for m in minted) for minted in self.killers.get(dot, ()))


def check_replica(rep: Replica, hist: History, where: str) -> None:
    """Every per-step rule of the module docstring (but the model's), for one replica's state."""
    store = rep.store
    applied = store.applied
    for ns, keys in store.data.items():
        t = BY_NAMESPACE[ns]
        for key, state in keys.items():
            try:
                back = t.from_wire(msgpack.unpackb(msgpack.packb(t.to_wire(state), use_bin_type=True), raw=False))
            except EdgeStateError as e:
                raise InvariantBroken(f"{where}: {ns} {key!r} is not a well-formed state: {e.message}") from None
            if back != state:
                raise InvariantBroken(f"{where}: {ns} {key!r} does not read back from its own wire form")
            for d, content in t.contents(state):
                w = hist.writes.get(d)
                if w is None or w.ns != ns or w.key != key:
                    raise InvariantBroken(f"{where}: {ns} {key!r} shows {d}, which no one wrote to that key")
                if w.content != content:
                    raise InvariantBroken(f"{where}: {ns} {key!r} shows {d} with another content than was written")
                if hist.superseded_at(d, applied):
                    raise InvariantBroken(f"{where}: {ns} {key!r} still shows {d}, superseded by a write it holds")
    # nothing held is lost: every write in the applied context holds, or was superseded there
    for d in applied.dots():
        w = hist.writes.get(d)
        if w is None or w.content is None:
            continue  # written before the history began (not in campaigns), or an event that only removed
        if not BY_NAMESPACE[w.ns].holds(store.get(w.ns, w.key), d, w.content) and not hist.superseded_at(d, applied):
            raise InvariantBroken(f"{where}: {w.ns} {w.key!r} lost {d}: held, no longer there, not superseded")


def check_round_trip(rep: Replica, where: str) -> None:
    """The whole state through its wire form (as a peer or the disk would get it) into an
    empty replica: it must decode, every seal verifying, and hold the same state."""
    raw = msgpack.packb(rep.store.full_delta().to_wire(), use_bin_type=True)
    try:
        delta = Delta.from_wire(msgpack.unpackb(raw, raw=False, strict_map_key=True))
    except Exception as e:  # noqa: BLE001 - any failure here is the finding
        raise InvariantBroken(f"{where}: its state does not decode from its own wire form: {e}") from None
    fresh = Replica(rep.id, members=rep.members, actor=rep.actor)
    fresh.store.apply(delta)
    if fresh.digest() != rep.digest():
        raise InvariantBroken(f"{where}: its state read back from the wire form is not the same state")


def _canonical(delta: Delta) -> bytes:
    """A delta's identity for the model's canonical order: its wire bytes (kept on the delta,
    which many replicas may apply)."""
    raw = delta.__dict__.get("_oracle_bytes")
    if raw is None:
        raw = delta.__dict__["_oracle_bytes"] = msgpack.packb(delta.to_wire(), use_bin_type=True)
    return raw


class Model:
    """The deltas one store applied (local writes, disseminated deltas, anti-entropy replies,
    content repairs), from which its state is recomputed: per key, the join of every delta that
    carries the key (a full state carries them all), in the order of their wire bytes, from the
    type's empty state. This is the lattice the store claims to be; the store itself joined the
    deltas as they came, against its whole context. `watch` hooks a store's `apply` and
    `repair`, so a delta is recorded only once the store took it (one it refused is not)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.by_key: dict[KeyRef, dict[bytes, Delta]] = {}
        self.full: dict[bytes, Delta] = {}
        self.ctx = CausalContext()
        self.applied = CausalContext()
        self._dirty: set[KeyRef] = set()
        self._all_dirty = False

    @classmethod
    def watch(cls, store: Store) -> Model:
        model = cls(store)
        apply, repair = store.apply, store.repair

        def applying(delta: Delta):
            out = apply(delta)
            if not delta.repair:  # a repair came through `repair` below
                model.add(delta)
            return out

        def repairing(delta: Delta, *args, **kwargs):
            out = repair(delta, *args, **kwargs)
            model.add(delta)
            return out

        store.apply = applying  # type: ignore[method-assign]
        store.repair = repairing  # type: ignore[method-assign]
        return model

    def add(self, delta: Delta) -> None:
        raw = _canonical(delta)
        if delta.full:
            self.full[raw] = delta
            self._all_dirty = True
        for ref in delta.entries:
            self.by_key.setdefault(ref, {})[raw] = delta
            self._dirty.add(ref)
        self.ctx.merge(delta.ctx)
        if not delta.repair:
            self.applied.merge(delta.applied)

    def state_of(self, ref: KeyRef):
        t = BY_NAMESPACE[ref[0]]
        state, ctx = t.empty(), CausalContext()
        carrying = {**self.by_key.get(ref, {}), **self.full}
        for raw in sorted(carrying):
            d = carrying[raw]
            entry = d.entries.get(ref)
            state = t.join(state, ctx, entry if entry is not None else t.empty(), d.ctx)
            ctx.merge(d.ctx)
        return state

    def check(self, where: str) -> None:
        """The store's state against the join of what it applied (keys changed since the last check)."""
        store = self.store
        if self._all_dirty:
            refs = set(self.by_key) | set(store.keys())
        else:
            refs = self._dirty
        for ref in sorted(refs):
            t = BY_NAMESPACE[ref[0]]
            want = self.state_of(ref)
            got = store.data[ref[0]].get(ref[1]) or t.empty()
            if got != want:
                raise InvariantBroken(f"{where}: {ref[0]} {ref[1]!r} is not the join of the deltas it applied "
                                      f"(holds {sorted(t.dots(got))}, the join {sorted(t.dots(want))})")
        if store.ctx != self.ctx or store.applied != self.applied:
            raise InvariantBroken(f"{where}: its contexts are not the union of the deltas' it applied")
        self._dirty = set()
        self._all_dirty = False


def expected_counter(hist: History, key: str, applied) -> int:
    """What a counter must read once a replica holds `applied`: each actor's latest totals."""
    total = 0
    for (k, _actor), dots in hist.counter_dots.items():
        if k != key:
            continue
        held = [d for d in dots if applied.contains(d)]
        if held:
            p, n = hist.writes[max(held, key=lambda d: d[1])].content
            total += p - n
    return total


__all__ = ["History", "InvariantBroken", "Model", "check_replica", "check_round_trip", "expected_counter"]
