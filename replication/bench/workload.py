"""A deterministic workload for a replica on disk: local writes and a peer's deltas.

Batches of operations against `lhr`, the replica under test: local writes of every registered
type (kv, counters and sets by hand; any other, such as the map, drawn from its `EXAMPLES`), a
peer `fra` (in memory) writing too, and anti-entropy replies from `fra`, partial or full. Local
writes are applied and then appended; remote deltas are appended, flushed, and only then
applied, the order the real runner keeps. The same seed gives the same operations, so a run
without storage (`storage=None`) predicts the state a stored run must restore to.

Used by the storage tests and the disk-fault campaign.
"""

from __future__ import annotations

import random

from ..crdts import types
from ..crdts.base import FROM_READ
from ..delta import Delta
from ..errors import InvalidOperation, StaleDelta
from ..replica import Replica

# The types `op` writes by hand; every other registered one (the map) draws its `EXAMPLES`.
OTHER_TYPES = [t for t in types() if t.NAME not in ("kv", "counters", "sets")]


class Workload:
    def __init__(self, seed: int | str, *, batch: int = 10, keys: int = 15) -> None:
        self.rng = random.Random(seed)
        self.fra = Replica("fra")
        self.batch = batch
        self.keys = keys
        self.i = 0

    def op(self, rep: Replica) -> Delta | None:
        """One random write at `rep` (kv values are strings, so a campaign can find them on disk)."""
        rng, i = self.rng, self.i
        key = f"k{rng.randrange(self.keys)}"
        now = 1_700_000_000_000 + i
        op = rng.random()
        if op < 0.45:
            return rep.write_kv(key, f"value {i} {rng.getrandbits(48):012x}", now=now)[1]
        if op < 0.55:
            return rep.delete_kv(key, now=now)[1]
        if op < 0.75:
            return rep.add_counter(key, rng.choice([-3, 1, 7]), now=now)[1]
        if op < 0.85:
            return rep.add_to_set(key, [rng.randrange(8)], now=now)[1]
        if op < 0.92 or not OTHER_TYPES:
            return rep.remove_from_set(key, [rng.randrange(8)], now=now)[1]
        t = rng.choice(OTHER_TYPES)
        write = rng.choice(t.EXAMPLES)
        if write.get("context") == FROM_READ:
            write = {**write, "context": getattr(rep.read(t.NAME, key), "context", None)}
        try:
            return rep.write(t.NAME, key, write, now=now)[1]
        except InvalidOperation:
            return None  # e.g. a map field holding the other type here: refused, nothing changed

    def run_batch(self, lhr: Replica, storage, size: int | None = None) -> list[Delta]:
        """One acknowledged batch of `size` operations (default: the workload's batch).
        `storage` (a Storage, or None for a run in memory) gets what the runner would give it.
        Returns the remote deltas applied."""
        remote: list[Delta] = []
        for _ in range(self.batch if size is None else size):
            self.i += 1
            r = self.rng.random()
            if r < 0.5:
                d = self.op(lhr)
                if d is not None:
                    if self.rng.random() < 0.3:
                        self.fra.apply(d)  # the peer sees it: its next writes supersede it
                    if storage is not None:
                        storage.append(d)
            elif r < 0.9:
                d = self.op(self.fra)
                if d is not None:
                    remote.append(d)
            else:
                d = (self.fra.store.full_delta(lhr.applied_context) if self.rng.random() < 0.3
                     else self.fra.deltas_since(lhr.applied_context))
                if d is not None:
                    remote.append(d)
        if storage is not None:
            for d in remote:
                storage.append(d)
            storage.flush()
        for d in remote:
            try:
                lhr.apply(d)
            except StaleDelta:
                pass  # computed for a state lhr has moved past: the next exchange redoes it
        return remote


__all__ = ["Workload"]
