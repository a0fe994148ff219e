"""What coordination would cost this cluster, now: the figures behind the dashboard's panel.

Three things, each pure (no web, no wall clock of its own):

- `commit_baseline`: the Raft-style baseline (`consensus.ConsensusCluster`) on the same
  placements and latency model, one write per writer POP, one at a time: each POP's commit
  latency under a global leader. Placements never change while a cluster runs, so callers
  compute this once per leader and keep it.
- `who_can_write`: given the partition groups in force and the replicas that are down, which
  POPs could take a write now under each model. CRDT: every replica that is up (a write is
  answered locally). Consensus: only the up replicas in the leader's group, and only when the
  leader is up and that group's up replicas are a majority of the whole cluster (a down
  replica cannot acknowledge).
- `LastWrites`: per POP, its most recent local write, the wall-clock microseconds of the
  node's own work for it, and when each replica applied it (from the cluster's events), so
  "everywhere in Y ms" is virtual time from the write until every replica that is up has it.
  It is a `writes.WriteTracker` (the one way writes are followed) that keeps one per POP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from .consensus import ConsensusCluster, majority
from ..geo import LatencyModel, Placement
from ..writes import WriteTracker

__all__ = ["Baseline", "LastWrites", "commit_baseline", "who_can_write"]

# virtual ms one baseline write may take; with no faults the slowest commit is a few hundred ms
COMMIT_DEADLINE_MS = 10_000.0


@dataclass(frozen=True)
class Baseline:
    leader: str
    quorum: int
    commit_ms: dict[str, float]  # writer -> virtual ms from submit to committed and acknowledged there
    rtt_to_leader_ms: dict[str, float]


def commit_baseline(placements: list[Placement], model: LatencyModel, leader: str | None = None,
                    *, seed: int = 0, deadline_ms: float = COMMIT_DEADLINE_MS) -> Baseline:
    """Run the consensus baseline once per writer on a fresh, fault-free cluster (the leader
    by default: the most central POP)."""
    cc = ConsensusCluster(list(placements), leader=leader, seed=seed, model=model)
    leader = cc.leader
    commit: dict[str, float] = {}
    for origin in cc.ids:
        t = cc.write(origin, "kv", "coordinated", {"value": origin})
        ok = cc.run_until_committed([t], max_ms=deadline_ms)
        commit[origin] = cc.latency_ms(t) if ok else math.inf
        cc.sim.run_for(50)  # let the commit notices land, so writes do not queue behind each other
    rtt = {i: 0.0 if i == leader else 2 * cc.one_way_ms(i, leader) for i in cc.ids}
    return Baseline(leader=leader, quorum=majority(len(cc.ids)), commit_ms=commit, rtt_to_leader_ms=rtt)


def who_can_write(ids: list[str], groups: list[list[str]] | None, down: Iterable[str], leader: str) -> dict:
    """Writers under each model for this network and these crashes (see the module doc)."""
    down_set = set(down)
    up = [i for i in ids if i not in down_set]
    if groups:
        side = next((set(g) for g in groups if leader in g), {leader})
    else:
        side = set(ids)
    leader_side_up = [i for i in ids if i in side and i not in down_set]
    quorum = majority(len(ids))
    reason = None
    if leader in down_set:
        reason = f"the leader {leader} is down"
    elif len(leader_side_up) < quorum:
        reason = (f"the leader's side has {len(leader_side_up)} replicas up, "
                  f"short of a majority of {quorum}")
    consensus = [] if reason else leader_side_up
    return {"crdt": up, "consensus": consensus, "leader_side": [i for i in ids if i in side],
            "consensus_blocked": reason}


class LastWrites(WriteTracker):
    """Each POP's latest local write and its arrivals, bounded: one write per POP.

    A `WriteTracker` (`replication.writes`) that keeps only each origin's latest write. Fed
    with the cluster's events as JSON-ready dicts (`observe`), and with the wall-clock cost of
    each local write (`timed`) by whoever made the write.
    """

    def __init__(self) -> None:
        super().__init__(keep=0, latest_per_origin=True)

    def report(self, origin: str, up: list[str]) -> dict | None:
        """The latest write at `origin`: its cost, and how far it has spread among `up`."""
        w = self.latest(origin)
        if w is None:
            return None
        reached, of, everywhere = w.spread(up)
        return {"id": w.id, "t_ms": w.t, "local_us": w.local_us, "everywhere_ms": everywhere,
                "reached": reached, "of": of}
