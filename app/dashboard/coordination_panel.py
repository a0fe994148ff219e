"""`GET /api/coordination`: this cluster's writes against a global leader, for the page's panel.

Thin on purpose: the figures come from `replication.baseline.costs`. What lives here is the
cache (the baseline depends only on the placements, the latency model and the leader, none of
which change while the server runs) and the JSON shape.

The baseline runs the consensus simulation once per leader asked for, in a worker thread: it
reads only the placements and the model, never the live cluster, so the event loop keeps
serving (and the replicas are still only ever touched from the loop's thread).
"""

from __future__ import annotations

import asyncio
import math

from fastapi import APIRouter, FastAPI, Query, Request
from pydantic import BaseModel, Field

from replication.contract import CoordinationInputs, DashboardCluster
from replication.baseline.costs import Baseline, commit_baseline, who_can_write

from ..web.api import ErrorOut
from ..web.errors import ApiError

router = APIRouter()


class Baselines:
    """Consensus commit latencies per leader, computed at most once each."""

    def __init__(self, placements, model) -> None:
        self._placements = list(placements)
        self._model = model
        self._by_leader: dict[str | None, Baseline] = {}
        self._lock = asyncio.Lock()

    async def get(self, leader: str | None) -> Baseline:
        got = self._by_leader.get(leader)
        if got is not None:
            return got
        async with self._lock:  # two first requests must not both run the simulation
            got = self._by_leader.get(leader)
            if got is None:
                got = await asyncio.to_thread(commit_baseline, self._placements, self._model, leader)
                self._by_leader[leader] = got
                self._by_leader.setdefault(got.leader, got)
            return got


# -- response -----------------------------------------------------------------------------------


class LastWriteOut(BaseModel):
    id: str = Field(description="the write's first dot, actor:counter (as in the /ws stream's writes)")
    t_ms: float = Field(description="virtual time of the write")
    reached: int = Field(description="replicas that are up and have applied it")
    of: int = Field(description="replicas that are up")


class PopCost(BaseModel):
    consensus_commit_ms: float | None = Field(
        description="virtual ms from a write here until a global leader has committed it and told this POP")
    rtt_to_leader_ms: float
    local_us: float | None = Field(
        description="wall-clock microseconds of this POP's latest local write (null: none yet, or not timed here)")
    everywhere_ms: float | None = Field(
        description="virtual ms from that write until every replica that is up had applied it (null: not yet)")
    last_write: LastWriteOut | None
    can_write_crdt: bool
    can_write_consensus: bool


class WritersOut(BaseModel):
    crdt: list[str] = Field(description="POPs that can take a write now without coordination: every one that is up")
    consensus: list[str] = Field(description="POPs whose write a global leader could commit now")
    leader_side: list[str] = Field(description="the leader's partition group (every POP when healed)")
    consensus_blocked: str | None = Field(description="why no POP can write under consensus, if none can")


class CoordinationOut(BaseModel):
    leader: str
    default_leader: str = Field(description="the POP whose leadership gives the lowest mean commit latency")
    quorum: int
    replicas: int
    partitioned: bool
    groups: list[list[str]] | None
    down: list[str]
    writers: WritersOut
    local_writes_timed: bool = Field(description="false when the replicas are separate processes")
    pops: dict[str, PopCost]


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


@router.get("/api/coordination", responses={422: {"model": ErrorOut, "description": "`unknown_leader`"}}, tags=["observe"],
             name="get_coordination")
async def coordination(
    request: Request,
    leader: str | None = Query(None, description="the global leader's POP (default: the most central one)"),
) -> CoordinationOut:
    """Each POP's latest write (local cost, time to reach every replica) against its commit
    latency under a global leader, and who could write now under each model."""
    live: DashboardCluster = request.app.state.live
    baselines: Baselines = request.app.state.coordination
    ids = list(live.ids)
    if leader is not None and leader not in ids:
        raise ApiError(422, "unknown_leader", f"no replica {leader!r} in this cluster (known: {', '.join(ids)})")
    default = await baselines.get(None)
    base = default if leader is None or leader == default.leader else await baselines.get(leader)
    live.catch_up()
    groups = live.partition_groups()
    down = live.down()
    writers = who_can_write(ids, groups, down, base.leader)
    up = [i for i in ids if i not in set(down)]
    crdt, cons = set(writers["crdt"]), set(writers["consensus"])
    pops = {}
    for i in ids:
        last = live.last_writes.report(i, up)
        pops[i] = PopCost(
            consensus_commit_ms=_finite(base.commit_ms[i]), rtt_to_leader_ms=base.rtt_to_leader_ms[i],
            local_us=last["local_us"] if last else None, everywhere_ms=last["everywhere_ms"] if last else None,
            last_write=LastWriteOut(**{k: last[k] for k in ("id", "t_ms", "reached", "of")}) if last else None,
            can_write_crdt=i in crdt, can_write_consensus=i in cons,
        )
    return CoordinationOut(
        leader=base.leader, default_leader=default.leader, quorum=base.quorum, replicas=len(ids),
        partitioned=groups is not None, groups=groups, down=down, writers=WritersOut(**writers),
        local_writes_timed=bool(live.local_writes_timed), pops=pops,
    )


def install(app: FastAPI, live: CoordinationInputs) -> None:
    app.state.coordination = Baselines(live.placements, live.model)
    app.include_router(router)
