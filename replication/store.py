"""A typed keyspace of causal CRDTs sharing one causal context.

Per key only the dots of live values are kept. Per replica: the join context (every dot
whose fate is known), the applied context (dots whose effects are held: this is the
version vector the replica advertises), and a dot -> key map for dots not yet known to be
everywhere, which lets anti-entropy turn "you lack these dots" into "here are those keys"
without scanning the keyspace. Once every member has a dot, its map entry is dropped.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, NamedTuple

import msgpack

from .clocks import CausalContext, Dot, VersionVector
from .crdts import BY_NAMESPACE
from .delta import Delta, KeyRef
from .errors import StaleDelta
from .values import NAMESPACES

_MOD = 2**256


class Applied(NamedTuple):
    """What joining a delta changed: keys whose state moved, and dots newly applied."""

    keys: list[KeyRef]
    dots: list[Dot]


def _key_hash(ns: str, key: str, store) -> int:
    raw = msgpack.packb([ns, key, BY_NAMESPACE[ns].to_wire(store)], use_bin_type=True)
    return int.from_bytes(hashlib.sha256(raw).digest(), "big")


class Store:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, object]] = {ns: {} for ns in NAMESPACES}
        self.ctx = CausalContext()
        self.applied = CausalContext()
        self.key_of: dict[Dot, KeyRef] = {}
        # Sum of per-key hashes (AdHash): the digest updates in O(changed keys), not O(keyspace),
        # and only when asked for: keys changed since then wait in _dirty with their old state.
        self._sum = 0
        self._dirty: dict[KeyRef, object] = {}
        self._digest: str | None = None

    # -- reading -----------------------------------------------------------------

    def get(self, ns: str, key: str):
        s = self.data[ns].get(key)
        return s if s is not None else BY_NAMESPACE[ns].empty()

    def keys(self) -> Iterable[KeyRef]:
        for ns, m in self.data.items():
            for key in m:
                yield ns, key

    def __len__(self) -> int:
        return sum(len(m) for m in self.data.values())

    # -- writing -----------------------------------------------------------------

    def local_delta(self, ns: str, key: str, store, ctx_dots: Iterable[Dot], new_dots: Iterable[Dot]) -> Delta:
        """Package a mutator's output as a single-key delta (not yet applied)."""
        new = list(new_dots)
        return Delta(
            entries={(ns, key): store},
            ctx=CausalContext.of(ctx_dots),
            applied=CausalContext.of(new),
            keys={d: (ns, key) for d in new},
        )

    def apply(self, delta: Delta) -> Applied:
        """Join a delta in. Idempotent, commutative: any order, any duplicates."""
        if delta.basis is not None and not self.applied.covers(delta.basis):
            raise StaleDelta("this anti-entropy reply was computed for state this replica no longer has")
        if not delta.full and self.applied.covers(delta.applied) and self.ctx.covers(delta.ctx):
            return Applied([], [])  # everything it says is already known here: a duplicate
        refs = set(delta.entries)
        if delta.full:
            refs.update(self.keys())
        refs = sorted(refs)  # a stable order: observers see the same event stream in every process
        changed = []
        for ns, key in refs:
            mod = BY_NAMESPACE[ns]
            mine = self.data[ns].get(key) or mod.empty()
            theirs = delta.entries.get((ns, key)) or mod.empty()
            joined = mod.join(mine, self.ctx, theirs, delta.ctx)
            if joined != mine:
                self._replace(ns, key, mine, joined)
                changed.append((ns, key))
        fresh = list(delta.applied.dots_not_in(self.applied))
        for d in fresh:
            k = delta.key_of(d)
            if k is not None:
                self.key_of[d] = k
        self.ctx.merge(delta.ctx)
        self.applied.merge(delta.applied)
        self._digest = None
        return Applied(changed, fresh)

    def _replace(self, ns: str, key: str, old, new) -> None:
        self._dirty.setdefault((ns, key), old)
        if new:
            self.data[ns][key] = new
        else:
            self.data[ns].pop(key, None)

    # -- anti-entropy -------------------------------------------------------------

    def deltas_since(self, remote: CausalContext | VersionVector, hold=None) -> Delta | None:
        """What a replica whose applied context is `remote` lacks; None when it lacks nothing.

        `hold(dot)` may say a dot is still on its way by other means (just disseminated): when
        every missing dot is held, nothing is sent, and a later exchange will catch up.
        """
        if isinstance(remote, VersionVector):
            remote = CausalContext(remote)
        if not self.applied.cloud and remote.vv._v == self.applied.vv._v:
            return None  # the usual answer between converged replicas, decided by one C-level compare
        refs: set[KeyRef] = set()
        hints: dict[Dot, KeyRef] = {}
        held = 0
        for d in self.applied.dots_not_in(remote):
            if hold is not None and hold(d):
                held += 1
            k = self.key_of.get(d)
            if k is None:
                # Forgotten as stable, or learnt from a full state without its key: only a
                # full state transfer is sure to carry its effects.
                return self.full_delta(remote)
            refs.add(k)
            hints[d] = k
        if len(hints) == held:
            return None
        return Delta(
            entries={r: self.get(*r) for r in sorted(refs)},
            ctx=self.ctx.copy(),
            applied=self.applied.copy(),
            keys=hints,
            basis=remote.copy(),
        )

    def full_delta(self, remote: CausalContext | None = None) -> Delta:
        missing = self.applied.dots_not_in(remote) if remote is not None else self.applied.dots()
        return Delta(
            entries={(ns, key): s for ns, m in self.data.items() for key, s in m.items()},
            ctx=self.ctx.copy(),
            applied=self.applied.copy(),
            keys={d: self.key_of[d] for d in missing if d in self.key_of},
            full=True,
        )

    def forget_stable(self, stable: VersionVector) -> int:
        """Drop dot -> key entries every member already holds. Returns how many went."""
        gone = [d for d in self.key_of if stable.contains(d)]
        for d in gone:
            del self.key_of[d]
        return len(gone)

    # -- identity -----------------------------------------------------------------

    def digest(self) -> str:
        """Equal on two replicas exactly when keyspace, join context and applied context are equal."""
        if self._digest is None:
            for (ns, key), old in self._dirty.items():
                if old:
                    self._sum -= _key_hash(ns, key, old)
                new = self.data[ns].get(key)
                if new:
                    self._sum += _key_hash(ns, key, new)
            self._dirty.clear()
            self._sum %= _MOD
            raw = msgpack.packb(
                [self._sum.to_bytes(32, "big"), self.ctx.to_wire(), self.applied.to_wire()], use_bin_type=True
            )
            self._digest = hashlib.sha256(raw).hexdigest()
        return self._digest

    def key_metadata_bytes(self, ns: str, key: str) -> int:
        """Bytes of causal metadata stored for one key: its live dots, encoded."""
        dots = sorted(BY_NAMESPACE[ns].dots(self.get(ns, key)))
        return len(msgpack.packb([list(d) for d in dots]))
