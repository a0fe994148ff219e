"""Bounds on what one write may carry and what one key may hold, for the types that grow.

A set key or a map key could otherwise grow without end, and every read of it (and every write,
which answers with the key's value) costs in proportion to its size. So local operations are
bounded, in each type's `check` (per request: before anything is encoded or minted) and
`delta` (per key: against the key's state at the writing replica), which every path a write
takes goes through (`Replica.write`: the HTTP API of every server, the `--processes` relay,
`edgestate replica`, scenarios' write steps, the benches; `check` alone in the coordinated
baseline, whose log is applied after the request is answered):

- members per set request, and members per set key (an add that would make the key hold more is
  refused; an add of members it holds already, and every removal, goes through);
- fields per map request (set, add or remove), and fields per map key (counting a removed
  counter field's reset, which keeps its entry);
- a kv value, a set member and a map field's value are each at most `values.MAX_VALUE_BYTES` of
  JSON (`value_too_large`), as before.

Remote deltas are never refused for size: a bound refused there would leave replicas apart for
ever (the delta's dots are in its sender's context, and anti-entropy would send them again). So
a key can pass its bound through adds made concurrently at several replicas (by at most one
bound per replica that added); there further adds that grow it are refused, removals go through.
A single remote delta is bounded by the peer frame's size.

The bounds are read when a write is checked, so a bench can lift them (`lifted`) to measure
what an unbounded write costs beside a bounded one.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from .errors import MapTooLarge, SetTooLarge, TooManyFields, TooManyMembers

MAX_SET_REQUEST_MEMBERS = 1_000
MAX_SET_MEMBERS = 10_000
MAX_MAP_REQUEST_FIELDS = 250  # a map field costs about four set members to write and join
MAX_MAP_FIELDS = 10_000

_NAMES = ("MAX_SET_REQUEST_MEMBERS", "MAX_SET_MEMBERS", "MAX_MAP_REQUEST_FIELDS", "MAX_MAP_FIELDS")


def request_members(n: int) -> None:
    if n > MAX_SET_REQUEST_MEMBERS:
        raise TooManyMembers("max_set_request_members", MAX_SET_REQUEST_MEMBERS,
                            f"a set operation takes at most {MAX_SET_REQUEST_MEMBERS} members; got {n}")


def key_members(held: int, new: int) -> None:
    if new and held + new > MAX_SET_MEMBERS:
        raise SetTooLarge("max_set_members", MAX_SET_MEMBERS,
                            f"a set holds at most {MAX_SET_MEMBERS} members; this one holds {held} here and the "
                            f"add would make it {held + new}")


def request_fields(n: int) -> None:
    if n > MAX_MAP_REQUEST_FIELDS:
        raise TooManyFields("max_map_request_fields", MAX_MAP_REQUEST_FIELDS,
                            f"a map operation takes at most {MAX_MAP_REQUEST_FIELDS} fields; got {n}")


def key_fields(held: int, new: int) -> None:
    if new and held + new > MAX_MAP_FIELDS:
        raise MapTooLarge("max_map_fields", MAX_MAP_FIELDS,
                            f"a map holds at most {MAX_MAP_FIELDS} fields (a removed counter's reset counts); "
                            f"this one holds {held} here and the write would make it {held + new}")


def current() -> dict[str, int]:
    """The bounds in force, by name (for the README's table and tests)."""
    return {name.lower(): globals()[name] for name in _NAMES}


@contextmanager
def lifted() -> Iterator[None]:
    """No bounds inside (a bench measuring an unbounded write beside a bounded one); not for servers."""
    saved = {name: globals()[name] for name in _NAMES}
    try:
        for name in _NAMES:
            globals()[name] = 2**62
        yield
    finally:
        globals().update(saved)


__all__ = ["MAX_MAP_FIELDS", "MAX_MAP_REQUEST_FIELDS", "MAX_SET_MEMBERS", "MAX_SET_REQUEST_MEMBERS",
           "current", "key_fields", "key_members", "lifted", "request_fields", "request_members"]
