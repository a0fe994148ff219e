"""The behaviour every CRDT type implements, as riak_dt's `riak_dt` behaviour does for its types.

A type is a module (the way an Erlang module implements a behaviour), registered once in
`replication.crdts` with `register(module)`. Everything else (the replica, the store, deltas,
seals, storage, the HTTP API, the dashboard's panel, scenarios, the coordinated baseline, the
property harness and the fault campaign's oracle) looks the type up by its namespace and calls
these, and knows nothing else about it. riak_dt's callbacks map onto ours so:

    new/0            empty()
    update/3         check(op) then delta(state, op, mint): operations are plain data (the JSON the
                     API takes); `check` refuses a bad one with a typed error before anything
                     changes; `delta` is the delta-mutator, given the key's state and a `Mint`
                     for fresh dots, the write's time and context tokens
    merge/2          join(a, ctx_a, b, ctx_b): the dot-store join under the two causal contexts
    value/1          value(state, reader), and its JSON: to_json / from_json (the API's body),
                     summary (the dashboard's panel), figures (scenario checks)
    to_binary/1      to_wire(state) / from_wire(obj): msgpack-able, checked, one error type
    from_binary/1

plus what delta-state replication needs beyond riak_dt: `dots(state)` (the live dots: the key's
causal metadata), `contents(state)` (each live dot with the content its seal covers),
`without(state, dots)`, `holds(state, dot, content)` (whether a write's effect is still there,
for the oracle), `timestamps(state)` (hybrid logical times the replica's clock must observe), a
reference in-place `mutate` (the law "the delta-mutator equals the mutation" is checked against
it), `sequential(value, op)` (the same operation on one copy, in log order: the coordinated
baseline's state machine) and `EXAMPLES`, operations the property harness draws from.

Optional, for a type whose state is a dict joined entry by entry (an entry that neither side's
store holds with a dot the other's context knows stays as it is): `JOIN_BY_ENTRY = True` lets the
store join a small delta over only the entries it touches, and `holding(state, dots)` names the
entries holding some of `dots` faster than looking at each. A type that sets it must keep
`join(a, ca, b, cb)` restricted to any set of entries equal to the whole join restricted to them.

Laws every type keeps (tests/test_crdt_laws.py and tests/test_causal_deltas.py check them for
every registered type): the join is commutative, associative and idempotent on reachable
states; `state ⊔ delta(state, op) == mutate(state, op)`; replicas that join the same deltas in
any order, with loss and duplicates, converge; and after every delivery a replica holds
exactly the join of the deltas it applied, which round-trips through its wire form with every
seal verifying.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ..clocks import CausalContext, Dot, Timestamp
from ..errors import InvalidOperation

# An operation's context given as "whatever a read at this replica returns now": the
# property harness resolves it (a real client sends the token it was given).
FROM_READ = "@read"


class Mint(Protocol):
    """What a delta-mutator may ask of the replica it runs at. Nothing it does changes state:
    a mutator that raises after asking leaves the replica as it was."""

    actor: str

    def dot(self) -> Dot:
        """The next fresh dot of this write (consecutive: the first call, the second, ...)."""

    def now(self) -> Timestamp:
        """This write's hybrid logical time (the same for every call of one write)."""

    def observed(self, token: object) -> list[Dot]:
        """The dots a context token, issued by a read of this key, names. Raises BadContext."""


class Reader(Protocol):
    """What a read may ask of the replica: the key, and a token naming dots it returns."""

    key: str

    def token(self, dots: Iterable[Dot]) -> str: ...


class Mutation(NamedTuple):
    """A delta-mutator's result: the delta's dot store and its causal context (every dot whose
    fate the delta knows: those it makes live, and those it supersedes)."""

    store: Any
    ctx: Iterable[Dot]


@runtime_checkable
class CrdtType(Protocol):
    """One CRDT type. Implemented by a module; see the module docstring for the callbacks."""

    NAME: str  # its namespace: in paths, deltas, storage ("maps")
    LABEL: str  # one of it, in scenario files and on the page ("map")
    VERBS: tuple[str, ...]  # an operation's verbs, as scenario files may write them
    CONTEXT_REMOVES: bool  # a dot in the context and absent from the store is dead
    TAKES_CONTEXT: bool  # its operations accept a `context` token from a read
    EXAMPLES: tuple[dict, ...]  # operations for the property harness
    CHECKS: dict[str, str]  # what a scenario's `expect` may say of a key: figure -> "int", "json" or
    #                         "jsonlist" (a list compared as a multiset); `figures` gives them
    OP_SCHEMA: dict  # JSON Schema of an operation (the API's request body)
    VIEW_SCHEMA: dict  # JSON Schema of `to_json`'s answer (without key and replica)

    def empty(self) -> Any: ...
    def check(self, op: object) -> Any: ...
    def delta(self, state: Any, op: Any, mint: Mint) -> Mutation | None: ...
    def mutate(self, state: Any, ctx: CausalContext, op: Any, mint: Mint) -> None: ...
    def join(self, a: Any, ca: Any, b: Any, cb: Any) -> Any: ...
    def value(self, state: Any, reader: Reader) -> Any: ...
    def to_json(self, value: Any) -> dict: ...
    def from_json(self, key: str, body: dict | None) -> Any: ...
    def summary(self, value: Any) -> dict: ...
    def figures(self, value: Any) -> dict: ...
    def describe(self, key: str, op: Any) -> str: ...
    def dots(self, state: Any) -> Iterable[Dot]: ...
    def contents(self, state: Any) -> list[tuple[Dot, Any]]: ...
    def without(self, state: Any, gone: Any) -> Any: ...
    def holds(self, state: Any, dot: Dot, content: Any) -> bool: ...
    def timestamps(self, state: Any) -> Iterable[Timestamp]: ...
    def to_wire(self, state: Any) -> list: ...
    def from_wire(self, obj: object) -> Any: ...
    def sequential(self, value: Any, op: dict) -> Any: ...


# -- helpers the type modules share ---------------------------------------------------------------


def verb_of(ns: str, op: object, verbs: Iterable[str], extra: Iterable[str] = ()) -> str:
    """The one verb of an operation object; every other field must be one of `extra`."""
    if not isinstance(op, dict):
        raise InvalidOperation("an operation must be an object")
    if "delete" in op and op["delete"] is not True:
        raise InvalidOperation("delete must be true when given")
    verbs = tuple(verbs)
    given = [v for v in verbs if v in op]
    if len(given) != 1 or set(op) - set(verbs) - set(extra):
        raise InvalidOperation(f"a {ns} operation needs exactly one of {', '.join(sorted(verbs))}")
    return given[0]


def canon(v: Any) -> str:
    """A JSON value as compact, key-sorted text (for captions and comparisons)."""
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


class SimpleMint:
    """A `Mint` for tests and tools working on bare dot stores: dots of `actor` from `first`, a
    timestamp from a function, tokens that are the list of dots they name."""

    def __init__(self, actor: str, first: int, now: Callable[[], Timestamp] | None = None,
                 read: Callable[[], Iterable[Dot]] | None = None) -> None:
        self.actor = actor
        self.minted: list[Dot] = []
        self._first = first
        self._now = now
        self._read = read

    def dot(self) -> Dot:
        d = Dot(self.actor, self._first + len(self.minted))
        self.minted.append(d)
        return d

    def now(self) -> Timestamp:
        return self._now() if self._now is not None else Timestamp(0, self._first)

    def observed(self, token: object) -> list[Dot]:
        if token == FROM_READ and self._read is not None:
            return list(self._read())
        return list(token)  # type: ignore[call-overload]


def missing_members(t: object) -> list[str]:
    """The protocol members a would-be type lacks (what `register` refuses it for)."""
    names = [n for n in CrdtType.__annotations__] + [
        n for n, v in vars(CrdtType).items() if callable(v) and not n.startswith("_")
    ]
    return [n for n in names if not hasattr(t, n)]


__all__ = ["FROM_READ", "CrdtType", "Mint", "Mutation", "Reader", "SimpleMint", "canon", "missing_members", "verb_of"]
