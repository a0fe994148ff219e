"""The sans-IO replica: local reads and writes, deltas in and out, nothing else.

It never reads a clock, sleeps, or opens a socket: callers pass `now` (milliseconds) in
and carry the returned deltas wherever they go. The simulator and the real network drive
this same object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from .clocks import CausalContext, Dot, HybridLogicalClock, Timestamp, VersionVector
from .crdts import mvregister, orset, pncounter
from .delta import Delta
from .errors import InvalidOperation
from .store import Applied, Snapshot, Store
from .tokens import ContextTokens
from .values import check_key, check_namespace, decode_value, encode_value

DEV_SECRET = b"edgestate-local-development-secret"


@dataclass(frozen=True)
class Sibling:
    value: Any
    replica: str
    counter: int
    wall_ms: int
    logical: int


@dataclass(frozen=True)
class KvView:
    key: str
    siblings: tuple[Sibling, ...]
    context: str | None

    @property
    def values(self) -> list[Any]:
        return [s.value for s in self.siblings]


def check_replica_name(replica_id: object) -> str:
    if not isinstance(replica_id, str) or not 0 < len(replica_id) <= 64:
        raise ValueError("a replica id must be a non-empty string of at most 64 characters")
    return replica_id


class Replica:
    def __init__(
        self, replica_id: str, *, secret: bytes = DEV_SECRET, members: Iterable[str] = (), actor: str | None = None
    ) -> None:
        self.id = check_replica_name(replica_id)
        # The name its dots carry. A replica that lost its state comes back under a new actor:
        # reusing the old one would mint dots that peers already hold, and lose those writes.
        self.actor = check_replica_name(actor or replica_id)
        self.store = Store()
        self.hlc = HybridLogicalClock()
        self.tokens = ContextTokens(secret)
        self.members = set(members) | {self.id}
        self.peer_applied: dict[str, VersionVector] = {}

    # -- reads: this replica's view, which may lag others ---------------------------

    def read_kv(self, key: str) -> KvView:
        store = self.store.get("kv", check_key(key))
        sibs = mvregister.siblings(store)
        return KvView(
            key=key,
            siblings=tuple(Sibling(decode_value(v), d[0], d[1], ts[0], ts[1]) for d, (v, ts) in sibs),
            context=self.tokens.issue("kv", key, store) if store else None,
        )

    def read_counter(self, key: str) -> int:
        return pncounter.value(self.store.get("counters", check_key(key)))

    def read_set(self, key: str) -> list[Any]:
        return [decode_value(e) for e in orset.members(self.store.get("sets", check_key(key)))]

    def read(self, ns: str, key: str):
        return {"kv": self.read_kv, "counters": self.read_counter, "sets": self.read_set}[check_namespace(ns)](key)

    # -- local writes: answered here, no round trip --------------------------------

    def _dots(self, n: int) -> list[Dot]:
        first = self.store.ctx.next_dot(self.actor)
        return [Dot(self.actor, first.counter + i) for i in range(n)]

    def _commit(self, ns: str, key: str, out, new_dots: list[Dot]) -> Delta | None:
        if out is None:
            return None
        delta = self.store.local_delta(ns, key, out[0], out[1], new_dots)
        self.store.apply(delta)
        return delta

    def _observed(self, key: str, context: str | None) -> list[Dot] | None:
        return None if context is None else self.tokens.open(context, "kv", key)

    def write_kv(self, key: str, value: Any, context: str | None = None, *, now: float) -> tuple[KvView, Delta]:
        check_key(key)
        raw = encode_value(value)
        observed = self._observed(key, context)
        [dot] = self._dots(1)
        out = mvregister.write_delta(self.store.get("kv", key), dot, raw, self.hlc.now(now), observed)
        delta = self._commit("kv", key, out, [dot])
        return self.read_kv(key), delta

    def delete_kv(self, key: str, context: str | None = None, *, now: float) -> tuple[KvView, Delta | None]:
        check_key(key)
        observed = self._observed(key, context)
        [event] = self._dots(1)
        out = mvregister.clear_delta(self.store.get("kv", key), event, observed)
        if out is not None:
            self.hlc.now(now)
        delta = self._commit("kv", key, out, [event])
        return self.read_kv(key), delta

    def add_counter(self, key: str, amount: int, *, now: float) -> tuple[int, Delta | None]:
        check_key(key)
        [dot] = self._dots(1)
        out = pncounter.add_delta(self.store.get("counters", key), self.actor, dot, amount)
        if out is not None:
            self.hlc.now(now)
        delta = self._commit("counters", key, out, [dot])
        return self.read_counter(key), delta

    def _elements(self, elements: object) -> list[bytes]:
        if not isinstance(elements, list):
            raise InvalidOperation("set elements must be given as a list")
        return list(dict.fromkeys(encode_value(e) for e in elements))

    def add_to_set(self, key: str, elements: list, *, now: float) -> tuple[list, Delta | None]:
        check_key(key)
        encoded = self._elements(elements)
        new = self._dots(len(encoded))
        out = orset.add_delta(self.store.get("sets", key), encoded, new) if encoded else None
        if out is not None:
            self.hlc.now(now)
        delta = self._commit("sets", key, out, new)
        return self.read_set(key), delta

    def remove_from_set(self, key: str, elements: list, *, now: float) -> tuple[list, Delta | None]:
        check_key(key)
        encoded = self._elements(elements)
        [event] = self._dots(1)
        out = orset.remove_delta(self.store.get("sets", key), encoded, event)
        if out is not None:
            self.hlc.now(now)
        delta = self._commit("sets", key, out, [event])
        return self.read_set(key), delta

    def write(self, ns: str, key: str, op: object, *, now: float):
        """One write by namespace, the shape the HTTP API speaks. Returns (view, delta or None)."""
        check_namespace(ns)
        if not isinstance(op, dict):
            raise InvalidOperation("an operation must be an object")
        ops = {
            ("kv", "value"): lambda: self.write_kv(key, op["value"], op.get("context"), now=now),
            ("kv", "delete"): lambda: self.delete_kv(key, op.get("context"), now=now),
            ("counters", "add"): lambda: self.add_counter(key, op["add"], now=now),
            ("sets", "add"): lambda: self.add_to_set(key, op["add"], now=now),
            ("sets", "remove"): lambda: self.remove_from_set(key, op["remove"], now=now),
        }
        if "delete" in op and op["delete"] is not True:
            raise InvalidOperation("delete must be true when given")
        verbs = [v for (n, v) in ops if n == ns and v in op]
        allowed = {"kv": {"value", "delete", "context"}, "counters": {"add"}, "sets": {"add", "remove"}}[ns]
        extra = set(op) - allowed
        if len(verbs) != 1 or extra:
            names = sorted(v for (n, v) in ops if n == ns)
            raise InvalidOperation(f"a {ns} operation needs exactly one of {', '.join(names)}")
        return ops[(ns, verbs[0])]()

    # -- replication ------------------------------------------------------------------

    def apply(self, delta: Delta, *, now: float | None = None) -> Applied:
        """Join a remote delta: idempotent and order-free. Raises before changing anything."""
        changed = self.store.apply(delta)
        if now is not None:
            latest = max(
                (ts for (ns, _), s in delta.entries.items() if ns == "kv" for _v, ts in s.values()),
                default=None,
            )
            if latest is not None:
                self.hlc.observe(Timestamp(*latest), now)
        return changed

    def apply_wire(self, obj: object, *, now: float | None = None) -> Applied:
        return self.apply(Delta.from_wire(obj), now=now)

    def deltas_since(self, remote: VersionVector | CausalContext, hold=None) -> Delta | None:
        return self.store.deltas_since(remote, hold)

    def observe_peer(self, peer: str, applied: VersionVector | CausalContext, *, forget: bool = True) -> None:
        """Record what a peer holds. With `forget`, dot->key entries every member holds go at once;
        a node hearing many peers per second passes False and calls `forget_stable` now and then."""
        vv = applied.vv if isinstance(applied, CausalContext) else applied
        self.peer_applied[peer] = vv.copy()
        if forget:
            self.forget_stable()

    def forget_stable(self) -> int:
        """Drop dot->key entries for dots every member is known to hold."""
        others = self.members - {self.id}
        if not others <= self.peer_applied.keys():
            return 0
        stable = self.store.applied.vv
        for m in sorted(others):
            stable = stable.meet(self.peer_applied[m])
        return self.store.forget_stable(stable)

    # -- identity ---------------------------------------------------------------------

    @property
    def version_vector(self) -> VersionVector:
        return self.store.applied.vv.copy()

    @property
    def applied_context(self) -> CausalContext:
        return self.store.applied.copy()

    def digest(self) -> str:
        return self.store.digest()

    def holds(self, delta: Delta) -> bool:
        """Joining `delta` would change nothing here (see `Store.holds`)."""
        return self.store.holds(delta)

    # -- what a durable driver does: restore, replay, a new actor, a reload ------------------

    def restore(self, snap: Snapshot, hlc: Timestamp) -> None:
        """Start from a checkpoint: its state in the (empty) store, the clock at least at `hlc`."""
        self.store.restore(snap)
        self.hlc.advance_to(hlc)

    def replay(self, delta: Delta) -> Applied:
        """Join a delta from this replica's own log again, at restore. The clock moves past its
        timestamps (made or seen here before) even when the store refuses it again."""
        ts = latest_timestamp(delta)
        try:
            return self.store.apply(delta)
        finally:
            if ts is not None:
                self.hlc.advance_to(ts)

    def take_actor(self, actor: str) -> None:
        """Mint this replica's next dots as `actor`: a new lineage, after state that was lost or
        repaired. It must be an actor of this replica's id (`id`, `id~...`) that no dot known here
        carries, or the next dot could be one that peers already hold."""
        check_replica_name(actor)
        if actor == self.actor:
            return
        if actor != self.id and not actor.startswith(self.id + "~"):
            raise ValueError(f"actor {actor!r} is not one of replica {self.id!r}")
        if self.store.ctx.next_dot(actor).counter != 1:
            raise ValueError(f"actor {actor!r} has dots here already: its next dot could be minted twice")
        self.actor = actor

    def carry_over(self, old: Replica) -> None:
        """Go on from `old`, an earlier copy of this replica whose state was dropped (a reload
        after a failed flush): the clock never goes back, and what peers were heard to hold
        still stands."""
        if old.id != self.id:
            raise ValueError(f"replica {self.id!r} cannot carry over from {old.id!r}")
        self.hlc.advance_to(old.hlc.last)
        self.peer_applied = old.peer_applied


def latest_timestamp(delta: Delta) -> Timestamp | None:
    """The newest hybrid logical timestamp a delta's values carry (registers carry them)."""
    latest = None
    for (ns, _key), store in delta.entries.items():
        if ns == "kv":
            for _value, ts in store.values():
                if latest is None or ts > latest:
                    latest = ts
    return None if latest is None else Timestamp(*latest)
