"""Add-wins observed-remove set (delta-state, dot-based, no tombstones).

Store: DotMap  element (canonical JSON bytes) -> DotSet of the adds that put it there.
Adding an element writes a fresh dot and supersedes the element's dots this replica has
seen. Removing drops exactly the dots observed; an add concurrent with the remove carries
a dot the remover never saw, so it survives: add wins.

Laws: as for every causal CRDT; a remove that observed an add removes it everywhere.
"""

from __future__ import annotations

from functools import partial

from ..clocks import CausalContext, Dot, dot_from_wire
from ..errors import MalformedDelta
from ..values import canonical_from_wire
from .dotstore import join_dotmap, join_dotset

Store = dict[bytes, frozenset[Dot]]

NAME = "sets"
CONTEXT_REMOVES = True  # a dot absent from the store but in the context is dead
EMPTY_DOTS: frozenset[Dot] = frozenset()
join = partial(join_dotmap, inner=join_dotset, empty=EMPTY_DOTS)


def empty() -> Store:
    return {}


def add_delta(store: Store, elements: list[bytes], new_dots: list[Dot]):
    """One fresh dot per element; a dot shared by two elements would let removing one remove both."""
    delta: Store = {}
    seen: set[Dot] = set()
    for e, d in zip(elements, new_dots, strict=True):
        delta[e] = frozenset((d,))
        seen.update(store.get(e, EMPTY_DOTS))
        seen.add(d)
    return delta, seen


def remove_delta(store: Store, elements: list[bytes], event: Dot):
    """Drop the observed dots of each element; None when none of them is present here."""
    seen: set[Dot] = set()
    for e in elements:
        seen.update(store.get(e, EMPTY_DOTS))
    if not seen:
        return None
    seen.add(event)
    return {}, seen


def apply_add(store: Store, ctx: CausalContext, elements: list[bytes], new_dots: list[Dot]) -> None:
    for e, d in zip(elements, new_dots, strict=True):
        for old in store.get(e, EMPTY_DOTS):
            ctx.add(old)
        store[e] = frozenset((d,))
        ctx.add(d)


def apply_remove(store: Store, ctx: CausalContext, elements: list[bytes], event: Dot) -> None:
    removed = False
    for e in elements:
        for old in store.pop(e, EMPTY_DOTS):
            ctx.add(old)
            removed = True
    if removed:
        ctx.add(event)


def members(store: Store) -> list[bytes]:
    return sorted(store)


def dots(store: Store):
    for ds in store.values():
        yield from ds


def contents(store: Store) -> list[tuple[Dot, bytes]]:
    """What each add's seal covers: the element it added, by dot."""
    return sorted((d, e) for e, ds in store.items() for d in ds)


def without(store: Store, gone) -> Store:
    out = {}
    for e, ds in store.items():
        keep = ds - gone if not ds.isdisjoint(gone) else ds
        if keep:
            out[e] = keep
    return out


def to_wire(store: Store) -> list:
    return [[e, sorted([list(d) for d in ds])] for e, ds in sorted(store.items())]


def from_wire(obj: object) -> Store:
    if not isinstance(obj, list):
        raise MalformedDelta("a set store must be a list of [element, [dots...]]")
    out: Store = {}
    seen: set[Dot] = set()
    for item in obj:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], list) and item[1]):
            raise MalformedDelta("a set entry must be [element, [dot, ...]] with at least one dot")
        e = canonical_from_wire(item[0])
        if e in out:
            raise MalformedDelta("an element appears twice in one set store")
        ds = frozenset(dot_from_wire(d) for d in item[1])
        if ds & seen:
            raise MalformedDelta("one dot tags two elements of a set")
        seen |= ds
        out[e] = ds
    return out
