"""Add-wins observed-remove set (delta-state, dot-based, no tombstones).

Store: DotMap  element (canonical JSON bytes) -> DotSet of the adds that put it there, held
as the bare Dot when it is one dot (nearly always) and as a frozenset when concurrent adds left
several: a set of 10,000 members on 22 replicas was 220,000 one-dot frozensets, every one
scanned by each full garbage collection (a 100-200 ms pause of the server), where the Dots
themselves are shared with the delta that brought them. `dots_of(v)` is the one way to read a value.
Adding an element writes a fresh dot and supersedes the element's dots this replica has
seen. Removing drops exactly the dots observed; an add concurrent with the remove carries
a dot the remover never saw, so it survives: add wins.

Operations: `{"add": [<json>, ...]}` and `{"remove": [<json>, ...]}`.

Laws: as for every causal CRDT; a remove that observed an add removes it everywhere.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Iterable, NamedTuple

from .. import bounds
from ..clocks import CausalContext, Dot, Seen, Timestamp, dot_from_wire
from ..errors import InvalidOperation, MalformedDelta
from ..values import canonical_from_wire, decode_value, encode_value
from .base import Mint, Mutation, Reader, canon, verb_of
from .dotstore import join_dotmap, join_dotset

DotSet = Dot | frozenset[Dot]  # see the module docstring: one dot is held bare
Store = dict[bytes, DotSet]

NAME = "sets"
LABEL = "set"
VERBS: tuple[str, ...] = ("add", "remove")
CONTEXT_REMOVES = True  # a dot absent from the store but in the context is dead
TAKES_CONTEXT = False
JOIN_BY_ENTRY = True  # the join works element by element: a store may join a small delta by the elements it touches
CHECKS = {"members": "jsonlist"}
EXAMPLES: tuple[dict, ...] = ({"add": [0]}, {"add": [1, 2]}, {"add": []}, {"remove": [0]}, {"remove": [1, 2, 3]})
SUMMARY_MEMBERS = 50  # members a summary (the dashboard's panel) lists
OP_SCHEMA = {
    "type": "object",
    "properties": {"add": {"type": "array", "description": "elements to add"},
                   "remove": {"type": "array", "description": "elements to remove"}},
    "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
}
VIEW_SCHEMA = {"type": "object", "properties": {"members": {"type": "array"}}, "required": ["members"]}
EMPTY_DOTS: frozenset[Dot] = frozenset()


def dots_of(v: DotSet) -> frozenset[Dot] | tuple[Dot]:
    return v if type(v) is frozenset else (v,)


def _pack(ds) -> DotSet:
    """The stored form of a dot set: the bare dot when it is one, else a frozenset (empty: falsy)."""
    if len(ds) == 1:
        for d in ds:
            return d
    return frozenset(ds)


def _join_entry(a: DotSet, ca: Seen, b: DotSet, cb: Seen) -> DotSet:
    if a is b:
        return a
    if type(a) is not frozenset and type(b) is not frozenset:
        # Two bare dots, the common case: join_dotset's rule without building two frozensets.
        if a == b:
            return a
        keep_a, keep_b = not cb.contains(a), not ca.contains(b)
        if keep_a and keep_b:
            return frozenset((a, b))
        return a if keep_a else b if keep_b else EMPTY_DOTS
    return _pack(join_dotset(frozenset(dots_of(a)), ca, frozenset(dots_of(b)), cb))


join = partial(join_dotmap, inner=_join_entry, empty=EMPTY_DOTS)


def empty() -> Store:
    return {}


class SetOp(NamedTuple):
    add: bool
    elements: list[bytes]  # canonical JSON, each once


# -- the protocol --------------------------------------------------------------------------------


def check(op: object) -> SetOp:
    verb = verb_of(NAME, op, VERBS)
    assert isinstance(op, dict)
    elements = op[verb]
    if not isinstance(elements, list):
        raise InvalidOperation("set elements must be given as a list")
    bounds.request_members(len(elements))  # before encoding any of them
    return SetOp(verb == "add", list(dict.fromkeys(encode_value(e) for e in elements)))


def _bound(store: Store, op: SetOp) -> None:
    """An add may not make the key hold more than its bound (`bounds`); members it holds count once."""
    if op.add:
        bounds.key_members(len(store), sum(1 for e in op.elements if e not in store))


def delta(store: Store, op: SetOp, mint: Mint) -> Mutation | None:
    _bound(store, op)
    if op.add:
        if not op.elements:
            return None
        return Mutation(*add_delta(store, op.elements, [mint.dot() for _ in op.elements]))
    seen = _observed(store, op.elements)
    if not seen:
        return None
    seen.add(mint.dot())
    return Mutation({}, seen)


def mutate(store: Store, ctx: CausalContext, op: SetOp, mint: Mint) -> None:
    _bound(store, op)
    if op.add:
        apply_add(store, ctx, op.elements, [mint.dot() for _ in op.elements])
    elif _observed(store, op.elements):
        apply_remove(store, ctx, op.elements, mint.dot())


def sequential(value: Any, op: dict) -> list:
    cur = list(value or [])
    for x in op.get("add", []):
        if x not in cur:
            cur.append(x)
    for x in op.get("remove", []):
        if x in cur:
            cur.remove(x)
    return cur


def describe(key: str, op: dict) -> str:
    verb = "add" if "add" in op else "remove"
    return f"{'adds' if verb == 'add' else 'removes'} {canon(op.get(verb))} in set {key}"


def value(store: Store, reader: Reader | None = None) -> list[Any]:
    return [decode_value(e) for e in members(store)]


def to_json(v: list) -> dict:
    return {"members": v}


def from_json(key: str, body: dict | None) -> list:
    return [] if body is None else body["members"]


def summary(v: list) -> dict:
    return {"members": v[:SUMMARY_MEMBERS], "size": len(v)}


figures = to_json


def holds(store: Store, dot: Dot, content: object) -> bool:
    return any(dot in dots_of(ds) for ds in store.values())


def timestamps(store: Store) -> Iterable[Timestamp]:
    return ()


# -- the dot store ---------------------------------------------------------------------------------


def _observed(store: Store, elements: list[bytes]) -> set[Dot]:
    seen: set[Dot] = set()
    for e in elements:
        seen.update(dots_of(store.get(e, EMPTY_DOTS)))
    return seen


def add_delta(store: Store, elements: list[bytes], new_dots: list[Dot]):
    """One fresh dot per element; a dot shared by two elements would let removing one remove both."""
    delta: Store = {}
    seen: set[Dot] = set()
    for e, d in zip(elements, new_dots, strict=True):
        delta[e] = d
        seen.update(dots_of(store.get(e, EMPTY_DOTS)))
        seen.add(d)
    return delta, seen


def apply_add(store: Store, ctx: CausalContext, elements: list[bytes], new_dots: list[Dot]) -> None:
    for e, d in zip(elements, new_dots, strict=True):
        for old in dots_of(store.get(e, EMPTY_DOTS)):
            ctx.add(old)
        store[e] = d
        ctx.add(d)


def apply_remove(store: Store, ctx: CausalContext, elements: list[bytes], event: Dot) -> None:
    removed = False
    for e in elements:
        for old in dots_of(store.pop(e, EMPTY_DOTS)):
            ctx.add(old)
            removed = True
    if removed:
        ctx.add(event)


def members(store: Store) -> list[bytes]:
    return sorted(store)


def dots(store: Store):
    for ds in store.values():
        yield from dots_of(ds)


def holding(store: Store, gone: set[Dot]) -> list[bytes]:
    """The elements holding one of `gone` (a removal's dots), for a store joining a small delta."""
    return [e for e, ds in store.items() if not gone.isdisjoint(dots_of(ds))]


def contents(store: Store) -> list[tuple[Dot, bytes]]:
    """What each add's seal covers: the element it added, by dot."""
    return sorted((d, e) for e, ds in store.items() for d in dots_of(ds))


def without(store: Store, gone) -> Store:
    out = {}
    for e, ds in store.items():
        held = dots_of(ds)
        if gone.isdisjoint(held):
            out[e] = ds
            continue
        keep = [d for d in held if d not in gone]
        if keep:
            out[e] = _pack(keep)
    return out


def to_wire(store: Store) -> list:
    return [[e, sorted([list(d) for d in dots_of(ds)])] for e, ds in sorted(store.items())]


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
        out[e] = _pack(ds)
    return out
