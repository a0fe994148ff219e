"""Dot stores and their joins: the shared lattice under every causal CRDT here.

A causal CRDT's state is a pair (store, context). The store holds the dots of live data;
the context holds every dot whose fate is known. Joining two states keeps a dot when
both stores have it, or when one store has it and the other side's context has never
seen it. A dot seen by one side and absent from its store was removed there, and stays
removed. This is why removal needs no tombstones: the context, not the store, remembers.

Laws (checked by tests/test_crdt_laws.py for every type): the join is commutative,
associative and idempotent on reachable states.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from ..clocks import Dot, Seen

V = TypeVar("V")


def join_dotfun(a: dict[Dot, V], ca: Seen, b: dict[Dot, V], cb: Seen) -> dict[Dot, V]:
    """DotFun: dot -> value. A dot names one write, so both sides agree on its value."""
    out = {d: v for d, v in a.items() if d in b or not cb.contains(d)}
    for d, v in b.items():
        if d not in out and not ca.contains(d):
            out[d] = v
    return out


def join_dotset(a: frozenset[Dot], ca: Seen, b: frozenset[Dot], cb: Seen) -> frozenset[Dot]:
    keep = {d for d in a if d in b or not cb.contains(d)}
    keep.update(d for d in b if not ca.contains(d))
    return frozenset(keep)


def join_dotmap(
    a: dict, ca: Seen, b: dict, cb: Seen, inner: Callable, empty
) -> dict:
    """DotMap: key -> dot store. A key whose joined store is empty disappears."""
    out = {}
    for k in a.keys() | b.keys():
        j = inner(a.get(k, empty), ca, b.get(k, empty), cb)
        if j:
            out[k] = j
    return out
