"""What the app drives. For now: an embedded cluster whose replicas exchange deltas instantly.

There is no network model yet (the simulator comes with dissemination); a write at one
replica is joined at every other replica before the call returns. Replicas still each
keep their own state, and convergence is checked by comparing their digests.
"""

from __future__ import annotations

import time
from typing import Callable

from .geo import Pop
from .replica import DEV_SECRET, Replica


class UnknownReplica(KeyError):
    pass


class LocalCluster:
    def __init__(self, pops: list[Pop], *, secret: bytes = DEV_SECRET, clock: Callable[[], float] | None = None):
        self.pops = {p.id: p for p in pops}
        ids = list(self.pops)
        self.replicas = {i: Replica(i, secret=secret, members=ids) for i in ids}
        # The cluster is the I/O edge, so it may read time; replicas only receive it.
        self._clock = clock or (lambda: time.time() * 1000.0)

    def replica(self, replica_id: str) -> Replica:
        try:
            return self.replicas[replica_id]
        except KeyError:
            raise UnknownReplica(replica_id) from None

    def write(self, replica_id: str, ns: str, key: str, op: dict):
        """Write at one replica, then hand the delta to every other replica."""
        origin = self.replica(replica_id)
        now = self._clock()
        view, delta = origin.write(ns, key, op, now=now)
        if delta is not None:
            for r in self.replicas.values():
                if r is not origin:
                    r.apply(delta, now=now)
        return view

    def read(self, replica_id: str, ns: str, key: str):
        return self.replica(replica_id).read(ns, key)

    def digests(self) -> dict[str, str]:
        return {i: r.digest() for i, r in self.replicas.items()}

    def converged(self) -> bool:
        return len(set(self.digests().values())) == 1
