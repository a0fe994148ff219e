"""Observed-remove map of registers and counters (delta-state, dot-based): the `maps` namespace.

A map key holds fields. A field is a multi-value register or a PN-counter, typed by the
operation that made it, as a Riak map's fields or a Redis Active-Active hash's are:

    {"set": {"colour": "red", "size": "M"}}     registers: each value supersedes what this replica saw
    {"add": {"visits": 1, "stock": -2}}         counters: add, negative to subtract
    {"remove": ["colour", "visits"]}            removes fields, whatever they hold

Every part of the key shares the key's causal context, as the delta-CRDT paper's ORMap embeds
its dot stores (Almeida, Shoker, Baquero 2018). Store: field name -> `Field`, three dot stores:

- `reg`: the register, a DotFun dot -> (canonical JSON value, HLC timestamp), exactly `kv`'s;
- `ctr`: the counter, one entry per actor: dot -> (p, n, bp, bn), the actor's running totals
  of increments and decrements, and the base (bp, bn) they count from. Per actor the newest
  dot wins, with no help from contexts, so a counter delta is self-contained as the top-level
  counter's is (`pncounter`): joined in any order, with gaps and duplicates, it never over-counts;
- `rec`: resets, a DotFun dot -> floors: what a removal of a counter took away, per actor the
  entry it observed, (dot, p, n).

Removing a field is observed-remove, add-wins like the OR-set: the register dots the remover
saw die by the context; a value written concurrently survives. A counter cannot die that way
(its entries ignore contexts, or a late delta could bring an old entry back), so the remover
writes a reset instead, naming the entry it saw of each actor. An entry at or below its actor's
floor is dead; a later one counts only what it added above the floor. So a concurrent increment
survives with exactly its own amount, never the totals the remover took away: the counter's
value is the sum over actors of (p - max(bp, fp)) - (n - max(bn, fn)), f the actor's highest
floor. An actor that has seen a reset continues its totals from the floor and writes the floor
as its entry's base, so its entry says what it adds even where the reset has not arrived yet.
A later removal that sees resets folds them into its own (their dots in its context), so a
field keeps one reset (more only while removals were concurrent). That reset is this type's
one tombstone: a removed counter field keeps one floor per actor that counted it, the price of
both self-contained entries and exact removal. (Riak's map embeds a dot-per-actor counter
without it: a concurrent increment there brings back the whole of its actor's old totals, and
with deltas, whose contexts have gaps, an old entry arriving late after its successor was
removed would come back for good.)

A field's type is fixed while it has a value: `set` on a field holding a counter, or `add` on
one holding a register, is refused (remove it first). Concurrent `set` and `add` of one field
at two replicas make a field holding both, shown as a conflict until it is removed.

Value: `fields`, one value per field (a counter's total; a register's value, or with siblings
the one written last by hybrid logical time, ties by dot), and `conflicts`, every field holding
more than one concurrent value with all of them: register values in dot order (as `kv` lists
siblings), then the counter's total.

Laws: as for every causal CRDT (`crdts.base`); a removal that observed a value removes it
everywhere; the counter's value at every step is what its actors added above the floors held.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Any, Iterable, NamedTuple

from .. import bounds
from ..clocks import MAX_COUNTER, CausalContext, Dot, Timestamp, check_replica_id, dot_from_wire
from ..errors import CounterOverflow, InvalidOperation, MalformedDelta
from ..values import canonical_from_wire, decode_value, encode_value
from .base import Mint, Mutation, Reader, canon, verb_of
from .dotstore import join_dotfun

NAME = "maps"
LABEL = "map"
VERBS: tuple[str, ...] = ("set", "add", "remove")
CONTEXT_REMOVES = True  # register values and resets die by the context
TAKES_CONTEXT = False
JOIN_BY_ENTRY = True  # the join works field by field: a store may join a small delta by the fields it touches
CHECKS = {"fields": "json", "conflicts": "json"}
MAX_FIELD_BYTES = 256
SUMMARY_FIELDS = 50  # fields a summary (the dashboard's panel) lists

Floors = tuple[tuple[Dot, int, int], ...]  # per actor, sorted: the entry a reset saw and its totals


class Field(NamedTuple):
    reg: dict[Dot, tuple[bytes, Timestamp]]
    ctr: dict[Dot, tuple[int, int, int, int]]
    rec: dict[Dot, Floors]


Store = dict[str, Field]
_EMPTY = Field({}, {}, {})

EXAMPLES: tuple[dict, ...] = (
    {"set": {"a": 1}}, {"set": {"a": 2, "b": "x"}}, {"set": {"n": True}}, {"set": {}},
    {"add": {"n": 1}}, {"add": {"n": -2, "m": 3}}, {"add": {"a": 1}}, {"add": {"m": 0}},
    {"remove": ["a"]}, {"remove": ["n"]}, {"remove": ["a", "m", "n"]}, {"remove": ["zz"]},
)
OP_SCHEMA = {
    "type": "object",
    "description": "exactly one of `set`, `add` and `remove`",
    "properties": {
        "set": {"type": "object", "additionalProperties": {"description": "any JSON value"},
                "description": "fields to set, each to a JSON value (a register)"},
        "add": {"type": "object", "additionalProperties": {"type": "integer"},
                "description": "fields to count, each by an integer (a counter; negative to subtract)"},
        "remove": {"type": "array", "items": {"type": "string"}, "description": "fields to remove"},
    },
    "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
}
VIEW_SCHEMA = {
    "type": "object",
    "properties": {
        "fields": {"type": "object", "description": "each field's value: a counter's total, a register's value "
                                                    "(with siblings, the one written last)"},
        "conflicts": {"type": "object", "additionalProperties": {"type": "array", "items": {}},
                      "description": "fields holding concurrent values, with all of them"},
    },
    "required": ["fields", "conflicts"],
}


@dataclass(frozen=True)
class MapView:
    fields: dict[str, Any]
    conflicts: dict[str, list[Any]]


class MapOp(NamedTuple):
    verb: str
    items: tuple  # set: (field, value bytes); add: (field, amount); remove: field names


# -- the parts of a field -------------------------------------------------------------------------


def _floors(rec: dict[Dot, Floors]) -> dict[str, tuple[Dot, int, int]]:
    """Per actor, the highest floor among a field's resets."""
    out: dict[str, tuple[Dot, int, int]] = {}
    for floors in rec.values():
        for f in floors:
            cur = out.get(f[0][0])
            if cur is None or f[0][1] > cur[0][1]:
                out[f[0][0]] = f
    return out


def _floored(d: Dot, floors: dict[str, tuple[Dot, int, int]]) -> bool:
    f = floors.get(d[0])
    return f is not None and d[1] <= f[0][1]


def _total(field: Field) -> int:
    floors = _floors(field.rec)
    total = 0
    for d, (p, n, bp, bn) in field.ctr.items():
        f = floors.get(d[0])
        fp, fn = (f[1], f[2]) if f is not None else (0, 0)
        total += (p - max(bp, fp)) - (n - max(bn, fn))
    return total


def _chain(field: Field, actor: str) -> tuple[Dot | None, int, int, int, int]:
    """An actor's counter in this field: its live entry's dot, its totals and the base to write."""
    f = _floors(field.rec).get(actor)
    fp, fn = (f[1], f[2]) if f is not None else (0, 0)
    for d, (p, n, bp, bn) in field.ctr.items():
        if d[0] == actor:
            return d, p, n, max(bp, fp), max(bn, fn)
    return None, fp, fn, fp, fn


# -- the protocol: operations -------------------------------------------------------------------


def check_field(name: object, error: type[Exception] = InvalidOperation) -> str:
    if not isinstance(name, str):
        raise error("a field name must be a string")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise error("a field name must be valid UTF-8 text (no lone surrogates)") from None
    if not 0 < size <= MAX_FIELD_BYTES:
        raise error(f"a field name must be 1 to {MAX_FIELD_BYTES} bytes of UTF-8, got {size}")
    return name


def check(op: object) -> MapOp:
    verb = verb_of(NAME, op, VERBS)
    assert isinstance(op, dict)
    arg = op[verb]
    if isinstance(arg, (list, dict)):
        bounds.request_fields(len(arg))  # before checking or encoding any of them
    if verb == "remove":
        if not isinstance(arg, list):
            raise InvalidOperation("remove takes a list of field names")
        return MapOp(verb, tuple(sorted({check_field(n) for n in arg})))
    if not isinstance(arg, dict):
        raise InvalidOperation(f"{verb} takes an object of field names and their "
                               f"{'values' if verb == 'set' else 'amounts'}")
    items = []
    for name, v in sorted(arg.items()):
        check_field(name)
        if verb == "set":
            items.append((name, encode_value(v)))
        elif type(v) is not int:
            raise InvalidOperation(f"field {name!r}: a counter change must be a whole number (an integer)")
        else:
            items.append((name, v))
    return MapOp(verb, tuple(items))


def _bound(store: Store, op: MapOp) -> None:
    """A write may not make the key hold more fields than its bound (`bounds`). A counter change
    of 0 makes no field; a removal never adds one (a counter's reset keeps the field it was)."""
    if op.verb != "remove":
        bounds.key_fields(len(store), sum(1 for it in op.items if it[0] not in store and
                                          (op.verb == "set" or it[1] != 0)))


def _refuse_other_type(store: Store, op: MapOp) -> None:
    _bound(store, op)
    for item in op.items:
        f = store.get(item[0])
        if f is None:
            continue
        if op.verb == "set" and f.ctr:
            raise InvalidOperation(f"field {item[0]!r} holds a counter here: remove it before setting a value")
        if op.verb == "add" and f.reg:
            raise InvalidOperation(f"field {item[0]!r} holds a value here: remove it before counting in it")


def _counted(store: Store, op: MapOp, actor: str) -> list[tuple[str, Dot | None, tuple[int, int, int, int]]]:
    """Each non-zero change as (field, the actor's entry it replaces, the new entry); refuses an
    overflow before anything is minted."""
    out = []
    for name, amount in op.items:
        if amount == 0:
            continue
        old, p, n, bp, bn = _chain(store.get(name, _EMPTY), actor)
        if amount > 0:
            p += amount
        else:
            n -= amount
        if p > MAX_COUNTER or n > MAX_COUNTER:
            raise CounterOverflow(f"field {name!r}: this change would overflow the replica's 63-bit counter")
        out.append((name, old, (p, n, bp, bn)))
    return out


def _reset(field: Field) -> Floors:
    """A removal's reset: its field's floors raised to the counter entries it sees."""
    floors = _floors(field.rec)
    for d, (p, n, _bp, _bn) in field.ctr.items():
        floors[d[0]] = (d, p, n)  # a live entry is above its actor's floor
    return tuple(sorted(floors.values()))


def delta(store: Store, op: MapOp, mint: Mint) -> Mutation | None:
    _refuse_other_type(store, op)
    out: Store = {}
    seen: set[Dot] = set()
    if op.verb == "set":
        if not op.items:
            return None
        ts = mint.now()
        for name, raw in op.items:
            seen.update(store.get(name, _EMPTY).reg)
            d = mint.dot()
            seen.add(d)
            out[name] = Field({d: (raw, ts)}, {}, {})
        return Mutation(out, seen)
    if op.verb == "add":
        changes = _counted(store, op, mint.actor)
        if not changes:
            return None
        for name, old, entry in changes:
            d = mint.dot()
            seen.add(d)
            if old is not None:
                seen.add(old)
            out[name] = Field({}, {d: entry}, {})
        return Mutation(out, seen)
    minted = False
    for name in op.items:
        f = store.get(name)
        if f is None:
            continue
        seen.update(f.reg)
        if f.ctr:
            seen.update(f.ctr)
            seen.update(f.rec)
            d = mint.dot()
            seen.add(d)
            minted = True
            out[name] = Field({}, {}, {d: _reset(f)})
    if not seen:
        return None  # nothing here to remove
    if not minted:
        seen.add(mint.dot())  # the removal's own event, as the OR-set's remove has
    return Mutation(out, seen)


def mutate(store: Store, ctx: CausalContext, op: MapOp, mint: Mint) -> None:
    """The same operations as direct in-place mutations (the reference `delta` is checked against)."""
    _refuse_other_type(store, op)
    if op.verb == "set":
        if not op.items:
            return
        ts = mint.now()
        for name, raw in op.items:
            f = store.get(name, _EMPTY)
            for d in f.reg:
                ctx.add(d)
            d = mint.dot()
            ctx.add(d)
            store[name] = Field({d: (raw, ts)}, dict(f.ctr), dict(f.rec))
    elif op.verb == "add":
        for name, old, entry in _counted(store, op, mint.actor):
            f = store.get(name, _EMPTY)
            ctr = {od: e for od, e in f.ctr.items() if od != old}
            d = mint.dot()
            ctr[d] = entry
            ctx.add(d)
            store[name] = Field(dict(f.reg), ctr, dict(f.rec))
    else:
        touched = minted = False
        for name in op.items:
            f = store.get(name)
            if f is None or not (f.reg or f.ctr):
                continue
            touched = True
            for d in chain(f.reg, f.ctr):
                ctx.add(d)
            rec = f.rec
            if f.ctr:
                for d in f.rec:
                    ctx.add(d)
                d = mint.dot()
                ctx.add(d)
                minted = True
                rec = {d: _reset(f)}
            store[name] = Field({}, {}, dict(rec))
            if not rec:
                del store[name]
        if touched and not minted:
            ctx.add(mint.dot())


def sequential(value: Any, op: dict) -> dict:
    """One copy, in log order: a field set is replaced, a counted one summed, a removed one gone."""
    fields = dict(value or {})
    for name, v in (op.get("set") or {}).items():
        fields[name] = v
    for name, n in (op.get("add") or {}).items():
        cur = fields.get(name)
        fields[name] = (cur if type(cur) is int else 0) + n
    for name in op.get("remove") or []:
        fields.pop(name, None)
    return fields


def describe(key: str, op: dict) -> str:
    if "set" in op:
        return f"sets {canon(op['set'])} in map {key}"
    if "add" in op:
        return f"adds {canon(op['add'])} in map {key}"
    return f"removes {canon(op.get('remove'))} from map {key}"


# -- the protocol: values -----------------------------------------------------------------------


def value(store: Store, reader: Reader | None = None) -> MapView:
    fields: dict[str, Any] = {}
    conflicts: dict[str, list[Any]] = {}
    for name in sorted(store):
        f = store[name]
        if not (f.reg or f.ctr):
            continue  # removed: only a reset is left
        values = [decode_value(v) for _d, (v, _ts) in sorted(f.reg.items())]
        if f.ctr:
            values.append(_total(f))
            fields[name] = values[-1]
        else:
            _d, (raw, _ts) = max(f.reg.items(), key=lambda it: (it[1][1], it[0]))
            fields[name] = decode_value(raw)
        if len(values) > 1:
            conflicts[name] = values
    return MapView(fields, conflicts)


def to_json(v: MapView) -> dict:
    return {"fields": v.fields, "conflicts": v.conflicts}


def from_json(key: str, body: dict | None) -> MapView:
    return MapView({}, {}) if body is None else MapView(dict(body["fields"]), dict(body["conflicts"]))


def summary(v: MapView) -> dict:
    names = list(v.fields)[:SUMMARY_FIELDS]
    return {"fields": {n: v.fields[n] for n in names},
            "conflicts": {n: v.conflicts[n] for n in names if n in v.conflicts}, "size": len(v.fields)}


figures = to_json


def holds(store: Store, dot: Dot, content: Any) -> bool:
    """A register value or a reset holds while its dot is live; a counter entry while its actor's
    entry in that field is as new, or a floor at or above it says a removal took it in."""
    f = store.get(content[1]) if isinstance(content, tuple) and len(content) > 1 else None
    if f is None:
        return False
    if content[0] != "c":
        return dot in f.reg or dot in f.rec
    return any(d[0] == dot[0] and d[1] >= dot[1] for d in f.ctr) or _floored(dot, _floors(f.rec))


def timestamps(store: Store) -> Iterable[Timestamp]:
    return (ts for f in store.values() for _v, ts in f.reg.values())


# -- the dot store ------------------------------------------------------------------------------


def empty() -> Store:
    return {}


def join(a: Store, ca, b: Store, cb) -> Store:
    out: Store = {}
    for name in a.keys() | b.keys():
        fa, fb = a.get(name, _EMPTY), b.get(name, _EMPTY)
        reg = join_dotfun(fa.reg, ca, fb.reg, cb)
        rec = join_dotfun(fa.rec, ca, fb.rec, cb)
        newest: dict[str, Dot] = {}
        for d in chain(fa.ctr, fb.ctr):
            cur = newest.get(d[0])
            if cur is None or d[1] > cur[1]:
                newest[d[0]] = d
        floors = _floors(rec)
        ctr = {d: fa.ctr[d] if d in fa.ctr else fb.ctr[d] for d in newest.values() if not _floored(d, floors)}
        if reg or ctr or rec:
            out[name] = Field(reg, ctr, rec)
    return out


def dots(store: Store) -> Iterable[Dot]:
    for f in store.values():
        yield from f.reg
        yield from f.ctr
        yield from f.rec


def contents(store: Store) -> list[tuple[Dot, tuple]]:
    """What each live dot's seal covers: its field and what it holds there."""
    out: list[tuple[Dot, tuple]] = []
    for name, f in store.items():
        out += [(d, ("r", name, v, ts[0], ts[1])) for d, (v, ts) in f.reg.items()]
        out += [(d, ("c", name, *e)) for d, e in f.ctr.items()]
        out += [(d, ("x", name, tuple((fd[0], fd[1], p, n) for fd, p, n in floors))) for d, floors in f.rec.items()]
    out.sort()
    return out


def without(store: Store, gone) -> Store:
    out: Store = {}
    for name, f in store.items():
        kept = Field(*({d: x for d, x in part.items() if d not in gone} for part in f))
        if kept.reg or kept.ctr or kept.rec:
            out[name] = kept
    return out


def to_wire(store: Store) -> list:
    return [
        [name,
         [[d[0], d[1], v, ts[0], ts[1]] for d, (v, ts) in sorted(f.reg.items())],
         [[d[0], d[1], *e] for d, e in sorted(f.ctr.items())],
         [[d[0], d[1], [[fd[0], fd[1], p, n] for fd, p, n in floors]] for d, floors in sorted(f.rec.items())]]
        for name, f in sorted(store.items())
    ]


def _total_of(x: object) -> int:
    if type(x) is not int or not 0 <= x <= MAX_COUNTER:
        raise MalformedDelta("counter totals must be integers in [0, 2^63)")
    return x


def _field_from_wire(item: object, seen: set[Dot]) -> tuple[str, Field]:
    if not (isinstance(item, list) and len(item) == 4 and all(isinstance(x, list) for x in item[1:])):
        raise MalformedDelta("a map field must be [name, [register...], [counter...], [reset...]]")
    name = check_field(item[0], MalformedDelta)

    def fresh(r: object, n: object) -> Dot:
        d = dot_from_wire([check_replica_id(r), n])
        if d in seen:
            raise MalformedDelta(f"dot {tuple(d)} appears twice in one map")
        seen.add(d)
        return d

    reg: dict[Dot, tuple[bytes, Timestamp]] = {}
    for s in item[1]:
        if not (isinstance(s, list) and len(s) == 5):
            raise MalformedDelta("a map register value must be [replica, counter, value, wall_ms, logical]")
        r, n, raw, wall, logical = s
        if type(wall) is not int or type(logical) is not int or wall < 0 or logical < 0:
            raise MalformedDelta("a register value's timestamp must be two non-negative integers")
        reg[fresh(r, n)] = (canonical_from_wire(raw), Timestamp(wall, logical))
    ctr: dict[Dot, tuple[int, int, int, int]] = {}
    actors: set[str] = set()
    for e in item[2]:
        if not (isinstance(e, list) and len(e) == 6):
            raise MalformedDelta("a map counter entry must be [replica, counter, p, n, base p, base n]")
        d = fresh(e[0], e[1])
        p, n, bp, bn = (_total_of(x) for x in e[2:])
        if bp > p or bn > n:
            raise MalformedDelta("a counter entry's base must not exceed its totals")
        if d[0] in actors:
            raise MalformedDelta(f"replica {d[0]!r} has two entries in one map counter")
        actors.add(d[0])
        ctr[d] = (p, n, bp, bn)
    rec: dict[Dot, Floors] = {}
    for x in item[3]:
        if not (isinstance(x, list) and len(x) == 3 and isinstance(x[2], list) and x[2]):
            raise MalformedDelta("a map reset must be [replica, counter, [[replica, counter, p, n], ...]]")
        d = fresh(x[0], x[1])
        floors = []
        for f in x[2]:
            if not (isinstance(f, list) and len(f) == 4):
                raise MalformedDelta("a reset's floor must be [replica, counter, p, n]")
            floors.append((dot_from_wire([check_replica_id(f[0]), f[1]]), _total_of(f[2]), _total_of(f[3])))
        floors.sort()
        if len({f[0][0] for f in floors}) != len(floors):
            raise MalformedDelta("a reset names one replica twice")
        rec[d] = tuple(floors)
    if not (reg or ctr or rec):
        raise MalformedDelta(f"map field {name!r} holds nothing")
    floors_held = _floors(rec)
    if any(_floored(d, floors_held) for d in ctr):
        raise MalformedDelta(f"map field {name!r} holds a counter entry its own reset removed")
    return name, Field(reg, ctr, rec)


def from_wire(obj: object) -> Store:
    if not isinstance(obj, list):
        raise MalformedDelta("a map store must be a list of fields")
    out: Store = {}
    seen: set[Dot] = set()
    for item in obj:
        name, f = _field_from_wire(item, seen)
        if name in out:
            raise MalformedDelta(f"map field {name!r} appears twice")
        out[name] = f
    return out
