"""The sans-IO replica: local reads and writes, deltas in and out, nothing else.

It never reads a clock, sleeps, or opens a socket: callers pass `now` (milliseconds) in
and carry the returned deltas wherever they go. The simulator and the real network drive
this same object.
"""

from __future__ import annotations

from typing import Any, Iterable

from . import listing
from .clocks import CausalContext, Dot, HybridLogicalClock, Timestamp, VersionVector
from .crdts import BY_NAMESPACE
from .crdts.mvregister import KvSibling as Sibling  # noqa: F401 (replication.Sibling)
from .crdts.mvregister import KvView
from .delta import Delta
from .errors import InvalidOperation
from .store import Applied, Snapshot, Store
from .tokens import ContextTokens
from .values import check_key, check_namespace, check_new_key

DEV_SECRET = b"edgestate-local-development-secret"


class _Mint:
    """What a type's delta-mutator asks of this replica for one write (`crdts.base.Mint`).
    Dots are handed out from the next free one of this replica's actor; the clock ticks at
    most once, when asked for the write's time."""

    __slots__ = ("actor", "minted", "_replica", "_ns", "_key", "_now", "_first", "_ts")

    def __init__(self, replica: Replica, ns: str, key: str, now: float) -> None:
        self.actor = replica.actor
        self.minted: list[Dot] = []
        self._replica, self._ns, self._key, self._now = replica, ns, key, now
        self._first: int | None = None
        self._ts: Timestamp | None = None

    def dot(self) -> Dot:
        if self._first is None:
            self._first = self._replica.store.ctx.next_dot(self.actor).counter
        d = Dot(self.actor, self._first + len(self.minted))
        self.minted.append(d)
        return d

    def now(self) -> Timestamp:
        if self._ts is None:
            self._ts = self._replica.hlc.now(self._now)
        return self._ts

    def observed(self, token: object) -> list[Dot]:
        return self._replica.tokens.open(token, self._ns, self._key)


class _Reader:
    __slots__ = ("key", "_tokens", "_ns")

    def __init__(self, tokens: ContextTokens, ns: str, key: str) -> None:
        self.key, self._tokens, self._ns = key, tokens, ns

    def token(self, dots: Iterable[Dot]) -> str:
        return self._tokens.issue(self._ns, self.key, dots)


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
        # a frozenset that names us already is shared as it is: a large simulated cluster hands every
        # replica the same one rather than a copy each (10,000 x 10,000 names)
        self.members = members if isinstance(members, frozenset) and self.id in members else set(members) | {self.id}
        self.peer_applied: dict[str, VersionVector] = {}

    # -- reads: this replica's view, which may lag others ---------------------------

    def read(self, ns: str, key: str) -> Any:
        """The key's value here, as its type shows it (`kv`: a `KvView`; `counters`: an int;
        `sets`: a list; `maps`: a `MapView`)."""
        t = BY_NAMESPACE[check_namespace(ns)]
        return t.value(self.store.get(ns, check_key(key)), _Reader(self.tokens, ns, key))

    def list_keys(self, ns: str, prefix: str = "", cursor: str | None = None, limit: int = listing.DEFAULT_PAGE
                  ) -> listing.Page:
        """A page of the keys of type `ns` held here (see `listing`)."""
        return listing.page(self.store.data[check_namespace(ns)].keys(), prefix, cursor, limit)

    # Typed shorthands for the three original types (tests and tools call them); each is one
    # call of `read` or `write`, which find every type, these included, in the registry.

    def read_kv(self, key: str) -> KvView:
        return self.read("kv", key)

    def read_counter(self, key: str) -> int:
        return self.read("counters", key)

    def read_set(self, key: str) -> list[Any]:
        return self.read("sets", key)

    # -- local writes: answered here, no round trip --------------------------------

    def write(self, ns: object, key: object, op: object, *, now: float) -> tuple[Any, Delta | None]:
        """One write by namespace: `op` is the operation as data, the JSON the HTTP API takes.
        Returns (the key's value after it, its delta or None when nothing changed). A bad
        operation raises a typed error and changes nothing, not even the clock. `ns`, `key`
        and `op` are whatever a caller sent (typed `object`: compiled, a narrower annotation
        would refuse a bad one with a TypeError, or turn True into 1, before the checks)."""
        ns = check_namespace(ns)
        t = BY_NAMESPACE[ns]
        if not isinstance(op, dict):
            raise InvalidOperation("an operation must be an object")
        key = check_new_key(key)
        checked = t.check(op)
        mint = _Mint(self, ns, key, now)
        out = t.delta(self.store.get(ns, key), checked, mint)
        delta = None
        if out is not None:
            mint.now()  # a write that changes something is an event of the clock
            delta = self.store.local_delta(ns, key, out.store, out.ctx, mint.minted)
            self.store.apply(delta)
        return self.read(ns, key), delta

    # The shorthands' arguments are `object` for `write`'s reason: they are checked there.

    def write_kv(self, key: object, value: Any, context: object = None, *, now: float) -> tuple[KvView, Delta]:
        return self.write("kv", key, {"value": value, "context": context}, now=now)  # type: ignore[return-value]  # a kv write always mints a dot: never None

    def delete_kv(self, key: object, context: object = None, *, now: float) -> tuple[KvView, Delta | None]:
        return self.write("kv", key, {"delete": True, "context": context}, now=now)

    def add_counter(self, key: object, amount: object, *, now: float) -> tuple[int, Delta | None]:
        return self.write("counters", key, {"add": amount}, now=now)

    def add_to_set(self, key: object, elements: object, *, now: float) -> tuple[list, Delta | None]:
        return self.write("sets", key, {"add": elements}, now=now)

    def remove_from_set(self, key: object, elements: object, *, now: float) -> tuple[list, Delta | None]:
        return self.write("sets", key, {"remove": elements}, now=now)

    # -- replication ------------------------------------------------------------------

    def apply(self, delta: Delta, *, now: float | None = None) -> Applied:
        """Join a remote delta: idempotent and order-free. Raises before changing anything."""
        changed = self.store.apply(delta)
        if now is not None:
            latest = latest_timestamp(delta)
            if latest is not None:
                self.hlc.observe(latest, now)
        return changed

    def apply_wire(self, obj: object, *, now: float | None = None) -> Applied:
        return self.apply(Delta.from_wire(obj), now=now)

    def deltas_since(self, remote: VersionVector | CausalContext, hold=None) -> Delta | None:
        return self.store.deltas_since(remote, hold)

    def observe_peer(self, peer: str, applied: VersionVector | CausalContext, *, forget: bool = True,
                     copy: bool = True) -> None:
        """Record what a peer holds. With `forget`, dot->key entries every member holds go at once;
        a node hearing many peers per second passes False and calls `forget_stable` now and then.
        `copy=False`: `applied` is a message's, which nobody changes, so it is kept as it is."""
        vv = applied.vv if isinstance(applied, CausalContext) else applied
        self.peer_applied[peer] = vv.copy() if copy else vv
        if forget:
            self.forget_stable()

    def forget_stable(self) -> int:
        """Drop dot->key entries for dots every member is known to hold."""
        if len(self.peer_applied) < len(self.members) - 1:
            return 0  # not heard from every member yet (the test below, without a set as big as the cluster)
        others = self.members - {self.id}
        if not others <= self.peer_applied.keys():
            return 0
        # the pointwise minimum over us and every member, one entry at a time (a VersionVector.meet
        # per member built 50 vectors per call; min is commutative, so member order does not matter)
        vvs = [self.peer_applied[m]._v for m in others]
        stable: dict[str, int] = {}
        for r, n in self.store.applied.vv._v.items():
            low = min(n, *[v.get(r, 0) for v in vvs]) if vvs else n
            if low > 0:
                stable[r] = low
        return self.store.forget_stable(VersionVector(stable))

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
    """The newest hybrid logical timestamp a delta's values carry (registers carry them: kv's,
    and a map's register fields; each type's `timestamps` says)."""
    if delta.latest_known:  # computed once per delta (see its memos)
        return delta.latest
    latest = max((ts for (ns, _key), store in delta.entries.items() for ts in BY_NAMESPACE[ns].timestamps(store)),
                 default=None)
    ts = delta.latest = None if latest is None else Timestamp(*latest)
    delta.latest_known = True
    return ts
