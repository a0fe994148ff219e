"""Multi-value register (delta-state, dot-based).

Store: DotFun  dot -> (canonical JSON value, HLC timestamp of the write).
Concurrent writes survive side by side as siblings: the parallel universes.
A write supersedes exactly the dots its causal context saw; with no context given it
supersedes what the writing replica currently holds for the key.

Laws: join is a semilattice join (commutative, associative, idempotent);
state ⊔ write_delta(state) == apply_write(state); replicas that join the same deltas in
any order, with duplicates, are equal.
"""

from __future__ import annotations

from typing import Iterable

from ..clocks import CausalContext, Dot, Timestamp, check_replica_id, dot_from_wire
from ..errors import MalformedDelta
from ..values import canonical_from_wire
from .dotstore import join_dotfun

Sibling = tuple[bytes, Timestamp]
Store = dict[Dot, Sibling]

NAME = "kv"
CONTEXT_REMOVES = True  # a dot absent from the store but in the context is dead
join = join_dotfun


def empty() -> Store:
    return {}


def write_delta(store: Store, dot: Dot, value: bytes, ts: Timestamp, observed: Iterable[Dot] | None = None):
    """The delta of writing `value` at `dot`: (delta store, delta context dots)."""
    seen = set(store) if observed is None else set(observed)
    seen.add(dot)
    return {dot: (value, ts)}, seen


def clear_delta(store: Store, event: Dot, observed: Iterable[Dot] | None = None):
    """The delta of deleting what was observed; None when nothing would change."""
    seen = set(store) if observed is None else set(observed)
    if not seen:
        return None
    seen.add(event)
    return {}, seen


def apply_write(store: Store, ctx: CausalContext, dot: Dot, value: bytes, ts: Timestamp, observed=None) -> None:
    """The same write as a direct in-place mutation (the reference the delta is checked against)."""
    seen = list(store) if observed is None else list(observed)
    for d in seen:
        store.pop(d, None)
        ctx.add(d)
    store[dot] = (value, ts)
    ctx.add(dot)


def siblings(store: Store) -> list[tuple[Dot, Sibling]]:
    """Live values in a replica-independent order (by dot), so every replica lists them alike."""
    return sorted(store.items())


def dots(store: Store):
    return store.keys()


def contents(store: Store) -> list[tuple[Dot, tuple[bytes, int, int]]]:
    """What each live dot's seal covers: the value and its timestamp, by dot."""
    return [(d, (v, ts[0], ts[1])) for d, (v, ts) in sorted(store.items())]


def without(store: Store, gone) -> Store:
    return {d: s for d, s in store.items() if d not in gone}


def to_wire(store: Store) -> list:
    return [[d[0], d[1], v, ts[0], ts[1]] for d, (v, ts) in sorted(store.items())]


def from_wire(obj: object) -> Store:
    if not isinstance(obj, list):
        raise MalformedDelta("a kv store must be a list of [replica, counter, value, wall_ms, logical]")
    out: Store = {}
    for item in obj:
        if not (isinstance(item, list) and len(item) == 5):
            raise MalformedDelta("a kv sibling must be [replica, counter, value, wall_ms, logical]")
        r, n, raw, wall, logical = item
        dot = dot_from_wire([check_replica_id(r), n])
        if type(wall) is not int or type(logical) is not int or wall < 0 or logical < 0:
            raise MalformedDelta("a sibling's timestamp must be two non-negative integers")
        if dot in out:
            raise MalformedDelta(f"dot {dot} appears twice in one kv store")
        out[dot] = (canonical_from_wire(raw), Timestamp(wall, logical))
    return out
