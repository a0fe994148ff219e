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
- `full`: the sender's whole keyspace. Keys it lacks are removed where its context says so;
- `seals`: for every live dot in `entries`, the seal its writer made over its content
  (`replication.seals`). `check` verifies them all: a delta whose content does not match
  its seals comes from a damaged sender and is refused whole;
- `repair`: a content repair from anti-entropy (`Store.repair`). It can only add: its
  context is exactly the live dots it carries, so it never says a dot is dead, and its
  applied context is empty, so it never claims a write's effects (what a write superseded
  still arrives by the ordinary path).

Two contexts are kept because a write's delta names the dots it superseded; a receiver
learns those are dead before it has seen *their* deltas (and what they superseded).
Claiming them as applied would let anti-entropy skip them forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from .clocks import CausalContext, Dot, dot_from_wire
from . import seals as _seals
from .crdts import BY_NAMESPACE
from .errors import EdgeStateError, MalformedDelta
from .values import check_key, check_namespace

KeyRef = tuple[str, str]
WIRE_VERSION = 2  # 2: every entry carries its live dots' seals; the repair flag


@dataclass
class Delta:
    entries: dict[KeyRef, object]
    ctx: CausalContext
    applied: CausalContext
    keys: dict[Dot, KeyRef] = field(default_factory=dict)
    basis: CausalContext | None = None
    full: bool = False
    seals: dict[Dot, bytes] = field(default_factory=dict)
    repair: bool = False
    # Memos, computed once: a delta is never changed once made, and is forwarded many times (in the
    # simulator every replica holds the one object). Fields, not `__dict__` entries, for mypyc.
    wire_bytes: int = field(init=False, repr=False, compare=False)
    latest: Any = field(init=False, repr=False, compare=False)  # replica.latest_timestamp's
    latest_known: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # their values here, not as defaults: compiled, those were not set
        self.wire_bytes, self.latest, self.latest_known = -1, None, False

    def wire_size(self) -> int:
        """Bytes of this delta as msgpack; computed once."""
        size = self.wire_bytes
        if size < 0:
            size = self.wire_bytes = len(msgpack.packb(self.to_wire(), use_bin_type=True))
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
        seals = self.seals
        entries = []
        for (ns, key), s in sorted(self.entries.items()):
            mod = BY_NAMESPACE[ns]
            entries.append([ns, key, mod.to_wire(s), _seals.blob(sorted(mod.dots(s)), seals)])
        return [
            WIRE_VERSION,
            entries,
            self.ctx.to_wire(),
            self.applied.to_wire(),
            hints,
            None if self.basis is None else self.basis.to_wire(),
            self.full,
            self.repair,
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
        if not (isinstance(obj, list) and len(obj) == 8):
            if isinstance(obj, list) and obj and obj[0] != WIRE_VERSION:
                raise MalformedDelta(f"unsupported delta version {obj[0]!r}")
            raise MalformedDelta("a delta must be an 8-element list")
        version, raw_entries, raw_ctx, raw_applied, raw_hints, raw_basis, full, repair = obj
        if version != WIRE_VERSION:
            raise MalformedDelta(f"unsupported delta version {version!r}")
        if type(full) is not bool or type(repair) is not bool:
            raise MalformedDelta("a delta's full and repair flags must be booleans")
        if not isinstance(raw_entries, list) or not isinstance(raw_hints, list):
            raise MalformedDelta("a delta's entries and key hints must be lists")
        entries: dict[KeyRef, object] = {}
        seals: dict[Dot, bytes] = {}
        for item in raw_entries:
            if not (isinstance(item, list) and len(item) == 4):
                raise MalformedDelta("a delta entry must be [namespace, key, store, seals]")
            ns, key, raw_store, raw_seals = item
            ref = (check_namespace(ns), check_key(key))
            if ref in entries:
                raise MalformedDelta(f"key {ref} appears twice in one delta")
            mod = BY_NAMESPACE[ns]
            store = entries[ref] = mod.from_wire(raw_store)
            for d, s in _seals.split(ns, key, sorted(mod.dots(store)), raw_seals).items():
                if d in seals:
                    raise MalformedDelta(f"dot {d} is live in two keys of one delta")
                seals[d] = s
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
            seals=seals,
            repair=repair,
        )
        delta.check()
        return delta

    def check(self) -> None:
        """The invariants a receiver relies on; a delta that breaks one could silently lose data."""
        if self.full and self.basis is not None:
            raise MalformedDelta("a full delta carries no basis")
        live = 0
        seals = self.seals
        for (ns, key), store in self.entries.items():
            for d, content in BY_NAMESPACE[ns].contents(store):
                if not self.ctx.contains(d):
                    raise MalformedDelta(f"live dot {d} is missing from the delta's context")
                if not _seals.verifies(ns, key, d, content, seals.get(d)):
                    raise _seals.BadSeal(ns, key, d, "in a delta")
                live += 1
        if len(seals) != live:
            raise MalformedDelta("a delta's seals must be those of its live dots, each once")
        if not self.ctx.covers(self.applied):
            raise MalformedDelta("a delta claims effects of dots outside its context")
        if self.repair:
            if self.full or self.basis is not None or self.keys or self.applied.vv or self.applied.cloud:
                raise MalformedDelta("a repair carries key states only: no basis, hints or applied dots")
            if sum(n for _r, n in self.ctx.vv.items()) + len(self.ctx.cloud) != live:
                raise MalformedDelta("a repair's context must be exactly the live dots it carries")
        elif not self.full:
            for d, k in self.keys.items():
                if k not in self.entries:
                    raise MalformedDelta(f"dot {d} is said to touch {k}, which the delta does not carry")
            if self.basis is None and len(self.entries) != 1:
                raise MalformedDelta("a partial delta without a basis must carry exactly one key")
