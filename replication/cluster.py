"""What the app drives: clusters of replicas.

- `LocalCluster`: replicas exchange deltas instantly; a write at one replica is joined at
  every other before the call returns. Each replica still keeps its own state.
- `SimCluster`: replicas at POPs on the simulated WAN (latency model, dissemination,
  anti-entropy, membership), on a virtual clock.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from .errors import EdgeStateError
from .geo import LatencyModel, Placement, Pop
from .node import Node, NodeConfig
from .replica import Replica
from .sim import SimEvent, Simulator


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


class SimCluster:
    """Replicas at POPs on the simulated WAN: real nodes, virtual time, seeded faults."""

    def __init__(
        self,
        placements: list[Placement],
        *,
        strategy: str = "plumtree",
        seed: int = 0,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        model: LatencyModel | None = None,
        config: NodeConfig | None = None,
        sink: Callable[[SimEvent], None] | None = None,
        secret: bytes | None = None,
        wrap: Callable[[Node], object] | None = None,
        traffic_events: bool = True,
    ) -> None:
        self.placements = list(placements)
        self.pop_of = {p.id: p.pop for p in self.placements}
        self.ids = [p.id for p in self.placements]
        self.model = model or LatencyModel()
        self.config = config or NodeConfig(strategy=strategy, record_events=sink is not None)
        self.secret = secret or os.urandom(32)
        self.seed = seed
        self._wrap = wrap
        self.sim = Simulator.from_placements(
            self.placements, self._make_node, self.model,
            seed=seed, loss=loss, duplicate=duplicate, reorder=reorder, sink=sink, traffic_events=traffic_events,
        )

    def _make_node(self, nid: str, incarnation: int):
        here = self.pop_of[nid]
        pop_of, one_way = self.pop_of, self.model.one_way_ms
        known: dict[str, float] = {}

        def link_ms(peer: str) -> float:  # asked on every push and announcement: remember it
            v = known.get(peer)
            if v is None:
                v = known[peer] = one_way(here, pop_of[peer])
            return v

        node = Node(
            nid, self.ids, config=self.config, seed=self.seed, incarnation=incarnation, secret=self.secret,
            link_ms=link_ms,
        )
        return self._wrap(node) if self._wrap else node

    def one_way_ms(self, a: str, b: str) -> float:
        return self.model.one_way_ms(self.pop_of[a], self.pop_of[b])
