"""What the app drives. For now: an embedded cluster whose replicas exchange deltas instantly.

There is no network model yet (the simulator comes with dissemination); a write at one
replica is joined at every other replica before the call returns. Replicas still each
keep their own state, and convergence is checked by comparing their digests.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from .errors import EdgeStateError
from .geo import Pop
from .replica import Replica


class UnknownReplica(EdgeStateError):
    code = "unknown_replica"


class LocalCluster:
    def __init__(self, pops: list[Pop], *, secret: bytes | None = None, clock: Callable[[], float] | None = None):
        # A fresh secret per cluster: its replicas mint dots from 1 again, so a token kept
        # from an earlier run would otherwise name dots of writes its holder never saw.
        secret = secret or os.urandom(32)
        self.pops = {p.id: p for p in pops}
        ids = list(self.pops)
        self.replicas = {i: Replica(i, secret=secret, members=ids) for i in ids}
        # The cluster is the I/O edge, so it may read time; replicas only receive it.
        self._clock = clock or (lambda: time.time() * 1000.0)

    def replica(self, replica_id: str) -> Replica:
        try:
            return self.replicas[replica_id]
        except KeyError:
            known = ", ".join(self.replicas)
            raise UnknownReplica(f"no replica {replica_id!r} in this cluster (known: {known})") from None

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
