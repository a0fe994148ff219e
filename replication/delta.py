"""Deltas: the unit of replication, and their wire form.

A delta is a fragment of keyspace state plus the causal facts needed to join it:

- `entries`: (namespace, key) -> dot store, the current state of each key it carries;
- `ctx`: the join context. Every dot in it is either live in `entries` or known to be
  removed, except (for anti-entropy replies) dots the receiver already holds, which the
  `basis` guarantees;
- `applied`: the dots whose *effects* the delta conveys in full. The receiver's version
  vector (what it advertises to anti-entropy) only ever grows by these;
- `keys`: for each applied dot, the key it touched, so the receiver can serve that dot to
  others later without scanning its keyspace;
- `basis`: for a partial anti-entropy reply, the version vector it was computed against.
  The receiver must still cover it, or the reply is stale;
- `full`: the sender's whole keyspace. Keys it lacks are removed where its context says so.

Two contexts are kept because a write's delta names the dots it superseded; a receiver
learns those are dead before it has seen *their* deltas (and what they superseded).
Claiming them as applied would let anti-entropy skip them forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

from .clocks import CausalContext, Dot, dot_from_wire
from .crdts import BY_NAMESPACE
from .errors import EdgeStateError, MalformedDelta
from .values import check_key, check_namespace

KeyRef = tuple[str, str]
WIRE_VERSION = 1


@dataclass
class Delta:
    entries: dict[KeyRef, object]
    ctx: CausalContext
    applied: CausalContext
    keys: dict[Dot, KeyRef] = field(default_factory=dict)
    basis: CausalContext | None = None
    full: bool = False

    def wire_size(self) -> int:
        """Bytes of this delta as msgpack; computed once (a delta is forwarded many times)."""
        size = self.__dict__.get("_wire_size")
        if size is None:
            size = self.__dict__["_wire_size"] = len(msgpack.packb(self.to_wire(), use_bin_type=True))
        return size

    def key_of(self, dot: Dot) -> KeyRef | None:
        k = self.keys.get(dot)
        if k is None and len(self.entries) == 1 and not self.full:
            # a single-key delta touches only that key: every dot it names is one of its dots
            return next(iter(self.entries))
        return k

    def to_wire(self) -> list:
        only = next(iter(self.entries)) if len(self.entries) == 1 and not self.full else None
        hints = [[d[0], d[1], k[0], k[1]] for d, k in sorted(self.keys.items()) if k != only]
        return [
            WIRE_VERSION,
            [[ns, key, BY_NAMESPACE[ns].to_wire(s)] for (ns, key), s in sorted(self.entries.items())],
            self.ctx.to_wire(),
            self.applied.to_wire(),
            hints,
            None if self.basis is None else self.basis.to_wire(),
            self.full,
        ]

    @classmethod
    def from_wire(cls, obj: object) -> Delta:
        """Decode and check a delta from a peer. Raises MalformedDelta, never anything else."""
        try:
            return cls._from_wire(obj)
        except MalformedDelta:
            raise
        except EdgeStateError as e:
            raise MalformedDelta(f"bad delta: {e.message}") from None
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise MalformedDelta(f"bad delta: {e}") from None

    @classmethod
    def _from_wire(cls, obj: object) -> Delta:
        if not (isinstance(obj, list) and len(obj) == 7):
            raise MalformedDelta("a delta must be a 7-element list")
        version, raw_entries, raw_ctx, raw_applied, raw_hints, raw_basis, full = obj
        if version != WIRE_VERSION:
            raise MalformedDelta(f"unsupported delta version {version!r}")
        if type(full) is not bool:
            raise MalformedDelta("a delta's full flag must be a boolean")
        if not isinstance(raw_entries, list) or not isinstance(raw_hints, list):
            raise MalformedDelta("a delta's entries and key hints must be lists")
        entries: dict[KeyRef, object] = {}
        for item in raw_entries:
            if not (isinstance(item, list) and len(item) == 3):
                raise MalformedDelta("a delta entry must be [namespace, key, store]")
            ns, key, raw_store = item
            ref = (check_namespace(ns), check_key(key))
            if ref in entries:
                raise MalformedDelta(f"key {ref} appears twice in one delta")
            entries[ref] = BY_NAMESPACE[ns].from_wire(raw_store)
        keys: dict[Dot, KeyRef] = {}
        for h in raw_hints:
            if not (isinstance(h, list) and len(h) == 4):
                raise MalformedDelta("a key hint must be [replica, counter, namespace, key]")
            keys[dot_from_wire(h[:2])] = (check_namespace(h[2]), check_key(h[3]))
        delta = cls(
            entries=entries,
            ctx=CausalContext.from_wire(raw_ctx),
            applied=CausalContext.from_wire(raw_applied),
            keys=keys,
            basis=None if raw_basis is None else CausalContext.from_wire(raw_basis),
            full=full,
        )
        delta.check()
        return delta

    def check(self) -> None:
        """The invariants a receiver relies on; a delta that breaks one could silently lose data."""
        if self.full and self.basis is not None:
            raise MalformedDelta("a full delta carries no basis")
        for (ns, _key), store in self.entries.items():
            for d in BY_NAMESPACE[ns].dots(store):
                if not self.ctx.contains(d):
                    raise MalformedDelta(f"live dot {d} is missing from the delta's context")
        if not self.ctx.covers(self.applied):
            raise MalformedDelta("a delta claims effects of dots outside its context")
        if not self.full:
            for d, k in self.keys.items():
                if k not in self.entries:
                    raise MalformedDelta(f"dot {d} is said to touch {k}, which the delta does not carry")
            if self.basis is None and len(self.entries) != 1:
                raise MalformedDelta("a partial delta without a basis must carry exactly one key")
