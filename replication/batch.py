"""A batch of writes at one replica: up to `MAX_OPS` operations across types, applied in order
in one step (nothing else runs between them), made durable together and answered together.

An operation is the single-write route's body plus where it goes: `{"type": "kv", "key": "k",
"value": 1}`, `{"type": "counter", "key": "c", "add": 1}`, `{"type": "set", "key": "s", "add":
["x"]}`, `{"type": "map", "key": "m", "set": {"f": 1}}`, `{"type": "kv", "key": "k", "delete":
true, "context": "..."}`. `type` is a type's namespace (`counters`) or its label (`counter`).

Checked whole before anything is applied (`check`): a batch that is not a list of such objects,
is empty or too long, names an unknown type, a bad key, or an operation its type refuses as data
(`InvalidOperation`, a bad value, a request over its bounds) is refused whole and changes nothing,
with the index of the first bad operation in the message. What only the replica's state can
decide (a set at its bound, a counter that would overflow, a map field of the other kind, a
context token that does not verify) is decided per operation as it is applied: that operation
answers its error and changes nothing, the others stand. So a batch is not a transaction: each
operation is one write, as if sent alone, in order, with nothing in between.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .crdts import BY_NAMESPACE
from .errors import EdgeStateError, InvalidOperation
from .values import check_new_key

MAX_OPS = 1000
_BY_NAME = {**{t.LABEL: ns for ns, t in BY_NAMESPACE.items()}, **{ns: ns for ns in BY_NAMESPACE}}


class BatchOp(NamedTuple):
    ns: str
    key: str
    op: dict[str, Any]  # the type's operation, as `Replica.write` takes it


def check(ops: object) -> list[BatchOp]:
    if not isinstance(ops, list):
        raise InvalidOperation("`ops` must be a list of operations")
    if not ops:
        raise InvalidOperation("a batch needs at least one operation")
    if len(ops) > MAX_OPS:
        raise InvalidOperation(f"a batch holds at most {MAX_OPS} operations, got {len(ops)}")
    out = []
    for i, item in enumerate(ops):
        try:
            out.append(_one(item))
        except EdgeStateError as e:
            e.message = f"operation {i}: {e.message}"
            e.args = (e.message,)
            raise
    return out


def _one(item: object) -> BatchOp:
    if not isinstance(item, dict):
        raise InvalidOperation("an operation must be an object with `type` and `key`")
    name, key = item.get("type"), item.get("key")
    ns = _BY_NAME.get(name) if isinstance(name, str) else None
    if ns is None:
        raise InvalidOperation(f"unknown type {name!r}: expected one of {', '.join(sorted(_BY_NAME))}")
    check_new_key(key)
    op = {k: v for k, v in item.items() if k not in ("type", "key")}
    if ns == "kv" and op.get("delete") is not True and "delete" in op:
        raise InvalidOperation("`delete` must be true (or absent)")
    BY_NAMESPACE[ns].check(op)  # its shape and its request bounds, before anything is applied
    assert isinstance(key, str)
    return BatchOp(ns, key, op)
