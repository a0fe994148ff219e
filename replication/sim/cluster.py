"""Replicas at POPs on the simulated WAN (latency model, dissemination, anti-entropy,
membership), on a virtual clock: what `app/dashboard/simulated.py` runs against the wall clock, and the
scenarios and benches run as fast as they can. Its answers have the contract's shapes
(`contract`), derived as every cluster derives them (`derived`).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Callable, Iterable

from .. import derived
from ..contract import Convergence, ReplicaState, ReplicaStatus, Topology
from ..errors import UnknownReplica
from ..geo import LatencyModel, Placement
from ..dissemination import STRATEGIES
from ..dissemination.roottrees import RootTrees
from ..dissemination.seedtree import SeedTree
from ..node import LARGE_CLUSTER, Node, NodeConfig
from ..replica import Replica
from .simulator import SimEvent, Simulator


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
        traffic_limit: int | None = None,
        traffic_kinds: Iterable[str] | None = None,
        epoch_ms: float = 0.0,
        acks: bool | None = None,
        coalesce_ms: float = 0.0,
        scrub: bool = True,
    ) -> None:
        self.placements = list(placements)
        self.pop_of = {p.id: p.pop for p in self.placements}
        self._link_rows: dict[str, dict[str, float]] = {}
        self.ids = [p.id for p in self.placements]
        self.model = model or LatencyModel()
        self.config = config or NodeConfig(strategy=strategy, record_events=sink is not None, coalesce_ms=coalesce_ms)
        if not scrub:  # the scrub finds only memory changed behind the store's back: a bench that never
            # does that may skip it (at 10,000 replicas it was over half of an idle virtual second's wall time)
            self.config = replace(self.config, ae_scrub_work=0)
        # payload acks (see DisseminationConfig.acks): with lossy links, or when asked (a crash bench)
        self._acks_forced = acks
        self.config.dissemination.acks = bool(loss > 0) if acks is None else acks
        self.secret = secret or os.urandom(32)
        self.seed = seed
        self.epoch_ms = epoch_ms
        self._wrap = wrap
        # one-way latency depends only on the two POPs: computed once per pair of POPs (the seed tree
        # and every node's overlay ask it for millions of pairs of replicas at 1,000 and beyond)
        pops = {p.pop.id: p.pop for p in self.placements}
        self._pop_ms = {a: {b: self.model.one_way_ms(pa, pb) for b, pb in pops.items()} for a, pa in pops.items()}
        self._large = len(self.ids) > LARGE_CLUSTER
        self._members = frozenset(self.ids)  # shared by every node of a large cluster, never copied
        self._ids_t = tuple(self.ids)
        # every node builds its first plumtree from this tree: the same for all, computed once
        self.seed_tree = pop_seed_tree(self.placements, self.one_way_ms) if self._large else SeedTree(self.ids, self.one_way_ms)
        # replicas sharing POPs: every root gets a good tree from its first write (see roottrees)
        self.root_trees = (RootTrees([(p.id, p.pop.id) for p in self.placements], lambda a, b: self._pop_ms[a][b])
                           if len(pops) < len(self.ids) else None)
        self.sim = Simulator.from_placements(
            self.placements, self._make_node, self.model,
            seed=seed, loss=loss, duplicate=duplicate, reorder=reorder, sink=sink, traffic_events=traffic_events,
            traffic_limit=traffic_limit, traffic_kinds=traffic_kinds, work_clock=time.perf_counter_ns,
        )

    def _link_row(self, pop: str) -> dict[str, float]:
        """Every replica's one-way latency from `pop`: one dict per POP, shared by the replicas
        there (at 10,000 replicas on 54 POPs, 54 rows of 10,000, not 10,000 of them)."""
        rows = self._link_rows
        row = rows.get(pop)
        if row is None:
            ms = self._pop_ms[pop]
            row = rows[pop] = {rid: ms[p.id] for rid, p in self.pop_of.items()}
        return row

    def _make_node(self, nid: str, incarnation: int):
        # asked on every push and announcement: a dict's own lookup, no Python frame per call
        link_ms = self._link_row(self.pop_of[nid].id).__getitem__
        large = self._large  # a large cluster's nodes share one member set (see Node's `cluster`)
        node = Node(
            nid, self._ids_t if large else self.ids, config=self.config, seed=self.seed, incarnation=incarnation,
            secret=self.secret, link_ms=link_ms, epoch_ms=self.epoch_ms, seed_tree=self.seed_tree,
            cluster=self._members if large else None, root_trees=self.root_trees,
        )
        return self._wrap(node) if self._wrap else node

    def attach(self, *, sink: Callable[[SimEvent], None] | None = None, wrap: Callable[[Node], object] | None = None,
               traffic_events: bool = True) -> None:
        """A sink and a node wrapper for a cluster built without them, as if they had been given to
        the constructor: nodes record events from now on, and nodes built later are wrapped too.
        Observing changes nothing the nodes do (tests/test_bench_propagation.py: a bench's forks of
        one settled cluster give the figures of clusters built with them)."""
        if sink is not None:
            self.config.record_events = True
        if wrap is not None:
            self._wrap = wrap
        self.sim.attach(sink=sink, traffic_events=traffic_events, wrap=wrap)

    def one_way_ms(self, a: str, b: str) -> float:
        return self._pop_ms[self.pop_of[a].id][self.pop_of[b].id]

    # -- what the app drives ---------------------------------------------------------------

    def _known(self, replica_id: str) -> str:
        if replica_id not in self.pop_of:
            known = ", ".join(self.ids)
            raise UnknownReplica(f"no replica {replica_id!r} in this cluster (known: {known})")
        return replica_id

    def write(self, replica_id: str, ns: str, key: str, op: dict):
        return self.sim.write(self._known(replica_id), ns, key, op)

    def last_write_us(self) -> float | None:
        """Wall-clock microseconds of the node's own work for the latest write (replica, delta,
        the envelopes it sends): what the writer waits for locally, before any network."""
        ns = self.sim.last_write_work_ns
        return None if ns is None else ns / 1000.0

    def partition_groups(self) -> list[list[str]] | None:
        return self.sim.groups()

    def down(self) -> list[str]:
        return [i for i in self.ids if not self.sim.up(i)]

    def check_up(self, replica_id: str) -> None:
        """Raise UnknownReplica, or ReplicaDown while it is crashed: what a write there would."""
        self.sim.check_up(self._known(replica_id))

    def read(self, replica_id: str, ns: str, key: str):
        return self.sim.read(self._known(replica_id), ns, key)

    def list_keys(self, replica_id: str, ns: str, prefix: str = "", cursor: str | None = None, limit: int = 1000):
        return self.sim.list_keys(self._known(replica_id), ns, prefix, cursor, limit)

    def partition(self, groups: list[list[str]]) -> list[list[str]]:
        for g in groups:
            for r in g:
                self._known(r)
        return self.sim.partition(groups)

    def heal(self) -> None:
        self.sim.heal()

    def crash(self, replica_id: str, lose_state: bool = False) -> None:
        self.sim.crash(self._known(replica_id), lose_state)

    def recover(self, replica_id: str) -> None:
        self.sim.recover(self._known(replica_id))

    def set_loss(self, p: float) -> None:
        """Message loss on every link; plumtree acknowledges payloads while links lose any
        (every node shares this config: the change reaches them all at once)."""
        self.sim.set_loss(p)
        if self._acks_forced is None:
            self.config.dissemination.acks = p > 0

    def set_strategy(self, name: str) -> None:
        if name not in STRATEGIES:
            raise ValueError(f"unknown strategy {name!r}: expected one of {', '.join(STRATEGIES)}")
        self.config.strategy = name  # replicas that restart later use it too
        for node in self.sim.nodes.values():
            node.set_strategy(name)

    def replica(self, replica_id: str) -> Replica:
        """The replica at node `replica_id` (its state now, up or down). KeyError if unknown."""
        return self.sim.nodes[replica_id].replica  # type: ignore[return-value]  # our nodes hold Replicas

    def topology(self) -> Topology:
        return derived.topology(self.placements, self.model)

    def state_of(self, replica_id: str) -> ReplicaStatus:
        r = self.replica(replica_id)
        return {"status": "up" if self.sim.up(replica_id) else "down", "version_vector": r.version_vector.to_dict(),
                "digest": r.digest(), "incarnation": self.sim.incarnation(replica_id), "keys": len(r.store)}

    def replica_states(self) -> list[ReplicaState]:
        out: list[ReplicaState] = []
        for i in self.ids:
            r = self.replica(i)
            out.append({
                "id": i, "status": "up" if self.sim.up(i) else "down",
                "version_vector": r.version_vector.to_dict(), "digest": r.digest(),
                "incarnation": self.sim.incarnation(i),
            })
        return out

    def convergence(self) -> Convergence:
        return derived.convergence(self.sim.digests(), self.sim.in_flight())

    def settle(self, max_ms: float = 60_000.0) -> bool:
        """Run virtual time until every live replica has the same state (tests, scripts)."""
        return self.sim.run_until_condition(self.sim.converged, max_ms=max_ms)


POP_TREE_FANOUT = 3  # children per replica in the tree inside one POP


def pop_seed_tree(placements: list[Placement], one_way_ms: Callable[[str, str], float]) -> SeedTree:
    """The seed tree of a large cluster, in O(replicas + POPs^2) rather than Prim's O(replicas^2):
    the minimum spanning tree of the POPs (over each POP's first replica), and inside each POP
    its replicas in a tree of POP_TREE_FANOUT children each. Every link inside a POP costs the
    same, so Prim there makes a star (one replica pushing to all the others of its POP: 185 at
    10,000 replicas); this tree keeps every node's fanout small for a few hops more (~1 ms each)."""
    by_pop: dict[str, list[str]] = {}
    for p in placements:
        by_pop.setdefault(p.pop.id, []).append(p.id)
    heads = [ids[0] for ids in by_pop.values()]
    top = SeedTree(heads, one_way_ms)
    edges = [(a, b, one_way_ms(a, b)) for a, b in top.edges()]
    for ids in by_pop.values():
        for i in range(1, len(ids)):
            parent = ids[(i - 1) // POP_TREE_FANOUT]
            edges.append((parent, ids[i], one_way_ms(parent, ids[i])))
    return SeedTree.from_edges([p.id for p in placements], edges)
