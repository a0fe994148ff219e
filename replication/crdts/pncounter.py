"""PN-counter (delta-state, dot-based, self-contained deltas).

Store: dot -> (p, n): one entry per actor that has counted, holding the running sums of its
increments p and decrements n as of that dot. A change writes the actor's new totals under a
fresh dot.

Join: per actor, the entry with the higher dot wins; both totals only grow with the dot, so
that entry supersedes every earlier one of the same actor. This is the state-based
PN-counter's pointwise max (Shapiro et al., 2011), keyed by dot, and it makes a delta
self-contained: it carries its actor's whole entry, so deltas joined in any order, with
gaps and duplicates, give the right value at every step (a delta that arrives late, after
a newer one of its actor, changes nothing). The dot-set join of the causal counter in
Almeida, Shoker, Baquero, "Delta State Replicated Data Types" (2018) names only the one
dot a change superseded, and is correct only under causal delivery: with d2 lost, d1 and
d3 both survived and were summed.

Operations: `{"add": <integer>}` (negative to subtract; zero changes nothing).
Value: the sum over entries of p - n.
Laws: as for every causal CRDT, on any order of delivery; the value equals the sum of the
`add`s of each actor up to the newest dot of that actor held.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..clocks import MAX_COUNTER, CausalContext, Dot, Seen, Timestamp, dot_from_wire
from ..errors import CounterOverflow, InvalidOperation, MalformedDelta
from .base import Mint, Mutation, Reader, verb_of

Store = dict[Dot, tuple[int, int]]

NAME = "counters"
LABEL = "counter"
VERBS: tuple[str, ...] = ("add",)
CONTEXT_REMOVES = False  # entries die by a newer dot of their actor, never by a context
TAKES_CONTEXT = False
CHECKS = {"value": "int"}
EXAMPLES: tuple[dict, ...] = tuple({"add": n} for n in (-3, -1, 0, 1, 2, 5))
OP_SCHEMA = {
    "type": "object",
    "properties": {"add": {"type": "integer", "description": "amount to add; negative to subtract"}},
    "required": ["add"], "additionalProperties": False,
}
VIEW_SCHEMA = {"type": "object", "properties": {"value": {"type": "integer"}}, "required": ["value"]}


def join(a: Store, _ca: Seen, b: Store, _cb: Seen) -> Store:
    """Per actor, the newer entry. Contexts play no part: no entry is ever removed."""
    if len(b) == 1 and a:  # a write's delta: one actor's entry, joined at every replica
        [(d, v)] = b.items()
        actor = d[0]
        mine = [x for x in a if x[0] == actor]
        if len(mine) <= 1:  # one entry per actor, as every store holds (from_wire refuses two)
            if mine and mine[0][1] >= d[1]:
                return dict(a)  # ours is as new: the delta changes nothing
            out = dict(a)
            if mine:
                del out[mine[0]]
            out[d] = v
            return out
    return _join_all(a, b)


def _join_all(a: Store, b: Store) -> Store:
    """The join over every entry of both (what the one-entry way must equal)."""
    newest: dict[str, Dot] = {}
    for d in (*a, *b):
        cur = newest.get(d[0])
        if cur is None or d[1] > cur[1]:
            newest[d[0]] = d
    return {d: a[d] if d in a else b[d] for d in newest.values()}


def empty() -> Store:
    return {}


def _own(store: Store, replica: str) -> tuple[Dot | None, int, int]:
    for d, (p, n) in store.items():
        if d[0] == replica:
            return d, p, n
    return None, 0, 0


def _next(store: Store, replica: str, amount: int) -> tuple[Dot | None, int, int]:
    _amount(amount)
    old, p, n = _own(store, replica)
    if amount >= 0:
        p += amount
    else:
        n -= amount
    if p > MAX_COUNTER or n > MAX_COUNTER:
        raise CounterOverflow("this change would overflow the replica's 63-bit counter")
    return old, p, n


def _amount(amount: object) -> int:
    if type(amount) is not int:
        raise InvalidOperation("a counter change must be a whole number (an integer)")
    return amount


# -- the protocol -------------------------------------------------------------------------------


def check(op: object) -> int:
    verb_of(NAME, op, VERBS)
    assert isinstance(op, dict)
    return _amount(op["add"])


def delta(store: Store, amount: int, mint: Mint) -> Mutation | None:
    old, p, n = _next(store, mint.actor, amount)
    if amount == 0:
        return None
    dot = mint.dot()
    return Mutation({dot: (p, n)}, {dot} if old is None else {old, dot})


def mutate(store: Store, ctx: CausalContext, amount: int, mint: Mint) -> None:
    apply_add(store, ctx, mint.actor, mint.dot(), amount)


def sequential(value: Any, op: dict) -> int:
    return (value or 0) + int(op.get("add", 0))


def describe(key: str, op: dict) -> str:
    return f"adds {op.get('add')} to counter {key}"


def to_json(v: int) -> dict:
    return {"value": v}


def from_json(key: str, body: dict | None) -> int:
    return 0 if body is None else body["value"]


summary = to_json
figures = to_json


def holds(store: Store, dot: Dot, content: object) -> bool:
    """An actor's newer entry holds every earlier one's increments."""
    return any(d[0] == dot[0] and d[1] >= dot[1] for d in store)


def timestamps(store: Store) -> Iterable[Timestamp]:
    return ()


# -- the dot store --------------------------------------------------------------------------------


def add_delta(store: Store, replica: str, dot: Dot, amount: int):
    """The delta of adding `amount` (negative to subtract); None for zero."""
    old, p, n = _next(store, replica, amount)
    if amount == 0:
        return None
    seen = {dot} if old is None else {old, dot}
    return {dot: (p, n)}, seen


def apply_add(store: Store, ctx: CausalContext, replica: str, dot: Dot, amount: int) -> None:
    old, p, n = _next(store, replica, amount)
    if amount == 0:
        return
    if old is not None:
        del store[old]
    store[dot] = (p, n)
    ctx.add(dot)


def value(store: Store, reader: Reader | None = None) -> int:
    return sum(p - n for p, n in store.values())


def dots(store: Store):
    return store.keys()


def contents(store: Store) -> list[tuple[Dot, tuple[int, int]]]:
    """What each entry's seal covers: its actor's totals at that dot."""
    return sorted(store.items())


def without(store: Store, gone) -> Store:
    return {d: t for d, t in store.items() if d not in gone}


def to_wire(store: Store) -> list:
    return [[d[0], d[1], p, n] for d, (p, n) in sorted(store.items())]


def from_wire(obj: object) -> Store:
    if not isinstance(obj, list):
        raise MalformedDelta("a counter store must be a list of [replica, counter, p, n]")
    out: Store = {}
    seen: set[str] = set()  # a set, not a scan of `out`: a peer's delta must not cost O(n^2)
    for item in obj:
        if not (isinstance(item, list) and len(item) == 4):
            raise MalformedDelta("a counter entry must be [replica, counter, p, n]")
        r, c, p, n = item
        dot = dot_from_wire([r, c])
        for x in (p, n):
            if type(x) is not int or not 0 <= x <= MAX_COUNTER:
                raise MalformedDelta("counter totals must be integers in [0, 2^63)")
        if r in seen:
            raise MalformedDelta(f"replica {r!r} has two entries in one counter")
        seen.add(r)
        out[dot] = (p, n)
    return out
