"""Multi-value register (delta-state, dot-based): the `kv` namespace.

Store: DotFun  dot -> (canonical JSON value, HLC timestamp of the write).
Concurrent writes survive side by side as siblings: the parallel universes.
A write supersedes exactly the dots its causal context saw; with no context given it
supersedes what the writing replica currently holds for the key.

Operations: `{"value": <json>, "context": <token or null>}` and `{"delete": true, "context": ...}`.
A read returns every sibling and a context token naming them, to send with the next write.

Laws: join is a semilattice join (commutative, associative, idempotent);
state ⊔ write_delta(state) == apply_write(state); replicas that join the same deltas in
any order, with duplicates, are equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple

from ..clocks import CausalContext, Dot, Timestamp, check_replica_id, dot_from_wire
from ..errors import MalformedDelta
from ..values import canonical_from_wire, decode_value, encode_value
from .base import FROM_READ, Mint, Mutation, Reader, canon, verb_of
from .dotstore import join_dotfun

Sibling = tuple[bytes, Timestamp]
Store = dict[Dot, Sibling]

NAME = "kv"
LABEL = "kv"
VERBS: tuple[str, ...] = ("value", "delete")
CONTEXT_REMOVES = True  # a dot absent from the store but in the context is dead
TAKES_CONTEXT = True
JOIN_BY_ENTRY = True  # the join keeps or drops each dot on its own: a store may join a small delta entry by entry
CHECKS = {"values": "jsonlist", "siblings": "int"}  # what a scenario may expect of a key (see `figures`)
EXAMPLES: tuple[dict, ...] = (
    {"value": 0}, {"value": 1}, {"value": {"a": [1, None]}}, {"delete": True},
    {"value": 2, "context": FROM_READ}, {"delete": True, "context": FROM_READ},
)
OP_SCHEMA = {
    "type": "object",
    "properties": {"value": {"description": "any JSON value"}, "delete": {"const": True},
                   "context": {"type": ["string", "null"], "description": "the token of the read this supersedes"}},
    "additionalProperties": False,
}
VIEW_SCHEMA = {
    "type": "object",
    "properties": {"values": {"type": "array"}, "context": {"type": ["string", "null"]},
                   "siblings": {"type": "array", "items": {"type": "object"}}},
    "required": ["values", "context", "siblings"],
}
join = join_dotfun


@dataclass(frozen=True)
class KvSibling:
    value: Any
    replica: str
    counter: int
    wall_ms: int
    logical: int


@dataclass(frozen=True)
class KvView:
    key: str
    siblings: tuple[KvSibling, ...]
    context: str | None

    @property
    def values(self) -> list[Any]:
        return [s.value for s in self.siblings]


class KvOp(NamedTuple):
    value: bytes | None  # None: a delete
    context: Any  # a token, or None (Any, not object: mypyc resolves a NamedTuple field's type by name in the module)


def empty() -> Store:
    return {}


def write_delta(store: Store, dot: Dot, value: bytes, ts: Timestamp, observed: Iterable[Dot] | None = None):
    """The delta of writing `value` at `dot`: (delta store, delta context dots)."""
    seen = set(store) if observed is None else set(observed)
    seen.add(dot)
    return {dot: (value, ts)}, seen


def apply_write(store: Store, ctx: CausalContext, dot: Dot, value: bytes, ts: Timestamp, observed=None) -> None:
    """The same write as a direct in-place mutation (the reference the delta is checked against)."""
    seen = list(store) if observed is None else list(observed)
    for d in seen:
        store.pop(d, None)
        ctx.add(d)
    store[dot] = (value, ts)
    ctx.add(dot)


# -- the protocol: operations ----------------------------------------------------------------


def check(op: object) -> KvOp:
    verb = verb_of(NAME, op, VERBS, ("context",))
    assert isinstance(op, dict)
    return KvOp(encode_value(op["value"]) if verb == "value" else None, op.get("context"))


def delta(store: Store, op: KvOp, mint: Mint) -> Mutation | None:
    observed = None if op.context is None else mint.observed(op.context)
    if op.value is None:
        seen = set(store) if observed is None else set(observed)
        if not seen:
            return None
        seen.add(mint.dot())
        return Mutation({}, seen)
    dot = mint.dot()
    return Mutation(*write_delta(store, dot, op.value, mint.now(), observed))


def mutate(store: Store, ctx: CausalContext, op: KvOp, mint: Mint) -> None:
    observed = None if op.context is None else mint.observed(op.context)
    if op.value is not None:
        apply_write(store, ctx, mint.dot(), op.value, mint.now(), observed)
        return
    seen = list(store) if observed is None else list(observed)
    if not seen:
        return
    for d in seen:
        store.pop(d, None)
        ctx.add(d)
    ctx.add(mint.dot())


def sequential(value: Any, op: dict) -> Any:
    return op.get("value")


def describe(key: str, op: dict) -> str:
    return f"deletes {key}" if op.get("delete") else f"writes {canon(op.get('value'))} to {key}"


# -- the protocol: values ------------------------------------------------------------------------


def value(store: Store, reader: Reader) -> KvView:
    return KvView(
        key=reader.key,
        siblings=tuple(KvSibling(decode_value(v), d[0], d[1], ts[0], ts[1]) for d, (v, ts) in siblings(store)),
        context=reader.token(store) if store else None,
    )


def _sibling_json(s: KvSibling) -> dict:
    return {"value": s.value, "replica": s.replica, "counter": s.counter, "hlc": [s.wall_ms, s.logical]}


def to_json(view: KvView) -> dict:
    return {"values": view.values, "context": view.context, "siblings": [_sibling_json(s) for s in view.siblings]}


def from_json(key: str, body: dict | None) -> KvView:
    if body is None:  # the API answers 404 for a key without a value
        return KvView(key, (), None)
    sibs = tuple(KvSibling(s["value"], s["replica"], s["counter"], s["hlc"][0], s["hlc"][1])
                 for s in body.get("siblings", []))
    return KvView(key, sibs, body.get("context"))


def summary(view: KvView) -> dict:
    return {"siblings": [_sibling_json(s) for s in view.siblings]}


def figures(view: KvView) -> dict:
    return {"values": view.values, "siblings": len(view.siblings)}


def holds(store: Store, dot: Dot, content: object) -> bool:
    return dot in store


def timestamps(store: Store) -> Iterable[Timestamp]:
    return (ts for _v, ts in store.values())


# -- the dot store -----------------------------------------------------------------------------


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
