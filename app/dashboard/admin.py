"""Observation, faults and simulation control over HTTP.

- Observation (reads): `GET /api/topology`, `GET /api/replicas`, `GET /api/convergence`,
  `GET /api/sim`, and `GET /api/session` (what the caller may do, for the page; signing in
  and out is `web/sessions.py`).
- Faults (admin): `POST`/`DELETE /api/faults/partition`, `POST /api/replicas/{id}/crash`,
  `POST /api/replicas/{id}/recover`.
- Simulation (admin): `PUT /api/sim/strategy|speed|loss`, `POST /api/sim/pause|resume|step`.
- Reset (admin): `POST /api/reset` starts a fresh cluster with the same replicas (a running
  scenario is stopped first; every `/ws` client gets a new snapshot). 409
  `not_supported_with_processes` under `serve --processes`.

Every request body is checked in full before anything changes, so a refused request leaves
the cluster exactly as it was. Who may call what is decided by the access middleware
(`security.py`), not here.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Body, Request, Security
from pydantic import BaseModel, ConfigDict, Field

from replication.contract import DashboardCluster
from replication.dissemination import StrategyName

from ..web.api import ErrorOut, errors
from ..web.errors import ApiError
from .simulated import MAX_SPEED
from ..web import sessions
from ..web.security import bearer_scheme

router = APIRouter(
    dependencies=[Security(bearer_scheme)],  # for /docs; the access middleware checks tokens
    responses=errors(401, 403),  # a 422 where a body or parameter can fail validation: `web.openapi`
)

MAX_STEP_MS = 60_000.0  # one step runs at most a virtual minute: a step is work done inside the request

Strategy = StrategyName  # the library's names: the API's enum follows them


def _cluster(request: Request) -> DashboardCluster:
    return request.app.state.live


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


# -- observation ----------------------------------------------------------------------------


class ReplicaInfo(BaseModel):
    id: str
    city: str
    region: str
    lat: float
    lon: float


class TopologyOut(BaseModel):
    replicas: list[ReplicaInfo]
    rtt_ms: dict[str, dict[str, float]] = Field(description="modelled round-trip time between each pair of replicas")
    measured_rtt_ms: dict[str, dict[str, float]] | None = Field(
        None, description="`serve --attach` only: the round trips each replica's failure detector measured to its "
                          "peers (smoothed), beside the model's")


class ReplicaState(BaseModel):
    id: str
    status: Literal["up", "down"]
    version_vector: dict[str, int] = Field(description="per actor, the highest write this replica has applied")
    digest: str = Field(description="hex digest of the replica's state: equal digests, equal state")
    incarnation: int = Field(description="how many times this replica came back without its state")
    reason: str | None = Field(None, description="`serve --attach` only: why a replica shows down (it cannot be "
                                                 "reached, or its feed failed)")


class ReplicasOut(BaseModel):
    replicas: list[ReplicaState]


class ConvergenceOut(BaseModel):
    converged: bool = Field(description="every replica that is up has the same state")
    digests: dict[str, str] = Field(description="state digest of each replica that is up")
    in_flight: int = Field(description="messages on the simulated wire")


@router.get("/api/topology", tags=["observe"], name="get_topology", response_model_exclude_none=True)
async def topology(request: Request) -> TopologyOut:
    """The replicas, where they are, and the modelled round-trip times between them."""
    live = _cluster(request)
    out = TopologyOut.model_validate(live.topology())
    measured = getattr(live, "measured_rtt", None)  # only attached replicas report their own
    if measured is not None:
        out.measured_rtt_ms = measured()
    return out


@router.get("/api/replicas", tags=["observe"], name="get_replicas", response_model_exclude_none=True)
async def replicas(request: Request) -> ReplicasOut:
    """Each replica's status, version vector and state digest."""
    live = _cluster(request)
    away = live.unreachable() if hasattr(live, "unreachable") else {}  # attached replicas: why one is down
    return ReplicasOut(replicas=[ReplicaState.model_validate({**s, "reason": away.get(s["id"])})
                                 for s in live.replica_states()])


@router.get("/api/convergence", tags=["observe"], name="get_convergence")
async def convergence(request: Request) -> ConvergenceOut:
    """Whether the replicas that are up agree now (they may lag each other: that is the point)."""
    return ConvergenceOut.model_validate(_cluster(request).convergence())


# -- faults ---------------------------------------------------------------------------------


class PartitionIn(_Body):
    groups: list[list[str]] = Field(
        description="replica ids, one list per side; replicas not listed form one more group",
        examples=[[["lhr", "fra"], ["syd", "sin"]]],
    )


class PartitionOut(BaseModel):
    partitioned: bool
    groups: list[list[str]] = Field(description="the groups in force (empty when healed)")


class CrashIn(_Body):
    lose_state: bool = Field(False, description="the replica comes back empty, under a new actor id")


def check_groups(groups: list[list[str]], known: list[str]) -> None:
    """Refuse a partition the cluster would not take, naming the offending replica, before any change."""
    if not groups:
        raise ApiError(422, "invalid_partition", "body.groups: give at least one group of replica ids")
    where: dict[str, int] = {}
    known_set = set(known)
    for i, group in enumerate(groups):
        if not group:
            raise ApiError(422, "invalid_partition", f"body.groups[{i}] is empty")
        for rid in group:
            if rid not in known_set:
                raise ApiError(
                    422, "invalid_partition",
                    f"body.groups[{i}]: no replica {rid!r} in this cluster (known: {', '.join(known)})",
                )
            if rid in where:
                raise ApiError(
                    422, "invalid_partition",
                    f"body.groups[{i}]: replica {rid!r} is already in groups[{where[rid]}]; list each replica once",
                )
            where[rid] = i


@router.post("/api/faults/partition", tags=["faults"], responses={422: {
    "model": ErrorOut, "description": "`invalid_partition`: an unknown replica, one listed twice, an empty group; "
                                      "or `validation_error`"}})
async def partition(request: Request, body: PartitionIn) -> PartitionOut:
    """Split the network: messages between groups are dropped until the partition is healed.
    A new partition replaces the one in force."""
    live = _cluster(request)
    check_groups(body.groups, live.ids)
    return PartitionOut(partitioned=True, groups=await live.partition(body.groups))


@router.delete("/api/faults/partition", tags=["faults"])
async def heal(request: Request) -> PartitionOut:
    """Heal the partition (if any). Replicas converge within about one anti-entropy period."""
    await _cluster(request).heal()
    return PartitionOut(partitioned=False, groups=[])


def _state_of(live: DashboardCluster, replica_id: str) -> ReplicaState:
    return next(ReplicaState.model_validate(s) for s in live.replica_states() if s["id"] == replica_id)


@router.post("/api/replicas/{replica_id}/crash", tags=["faults"], responses=errors(404))
async def crash(request: Request, replica_id: str, body: CrashIn | None = Body(None)) -> ReplicaState:
    """Stop a replica: it sends nothing and messages to it are dropped; reads and writes
    addressed to it answer 503 `replica_down`. Crashing it again may only add `lose_state`."""
    live = _cluster(request)
    await live.crash(replica_id, lose_state=body.lose_state if body is not None else False)
    return _state_of(live, replica_id)


@router.post("/api/replicas/{replica_id}/recover", tags=["faults"], responses=errors(404))
async def recover(request: Request, replica_id: str) -> ReplicaState:
    """Bring a crashed replica back; it catches up by anti-entropy. A replica that is up stays as it is."""
    live = _cluster(request)
    await live.recover(replica_id)
    return _state_of(live, replica_id)


# -- simulation control ---------------------------------------------------------------------


class SimOut(BaseModel):
    strategy: Strategy
    speed: float = Field(description="virtual time per wall time, as requested")
    effective_speed: float = Field(description="virtual time per wall time over the last seconds: below `speed` "
                                               "when simulating costs more wall time than it covers (0 when paused)")
    loss: float = Field(description="probability that a message is lost")
    paused: bool
    now_ms: float = Field(description="virtual time")


class StrategyIn(_Body):
    strategy: Strategy


class SpeedIn(_Body):
    speed: float = Field(gt=0, le=MAX_SPEED, allow_inf_nan=False, description="1 is real time; smaller is slower")


class LossIn(_Body):
    loss: float = Field(ge=0, le=1, allow_inf_nan=False, description="probability that a message is lost")


class StepIn(_Body):
    ms: float = Field(gt=0, le=MAX_STEP_MS, allow_inf_nan=False, description="virtual milliseconds to run")


def _sim(live: DashboardCluster) -> SimOut:
    return SimOut(**live.sim_info())


@router.get("/api/sim", tags=["simulation"])
async def get_sim(request: Request) -> SimOut:
    """The simulation's settings and virtual time."""
    return _sim(_cluster(request))


@router.put("/api/sim/strategy", tags=["simulation"])
async def set_strategy(request: Request, body: StrategyIn) -> SimOut:
    """Switch how writes spread, live, at every replica."""
    live = _cluster(request)
    live.set_strategy(body.strategy)
    return _sim(live)


@router.put("/api/sim/speed", tags=["simulation"])
async def set_speed(request: Request, body: SpeedIn) -> SimOut:
    live = _cluster(request)
    live.set_speed(body.speed)
    return _sim(live)


@router.put("/api/sim/loss", tags=["simulation"])
async def set_loss(request: Request, body: LossIn) -> SimOut:
    live = _cluster(request)
    live.set_loss(body.loss)
    return _sim(live)


@router.post("/api/sim/pause", tags=["simulation"])
async def pause(request: Request) -> SimOut:
    """Stop virtual time (messages in flight stay in flight)."""
    live = _cluster(request)
    live.pause()
    return _sim(live)


@router.post("/api/sim/resume", tags=["simulation"])
async def resume(request: Request) -> SimOut:
    live = _cluster(request)
    live.resume()
    return _sim(live)


@router.post("/api/sim/step", tags=["simulation"])
async def step(request: Request, body: StepIn) -> SimOut:
    """Run virtual time forward by `ms` (the presenter's step button, while paused)."""
    live = _cluster(request)
    live.step(body.ms)
    return _sim(live)


class ResetOut(BaseModel):
    stopped_run: str | None = Field(description="the scenario run that was stopped first, if one was running")
    sim: SimOut = Field(description="the settings the fresh cluster runs with: the server's start values")


@router.post("/api/reset", tags=["simulation"],
             responses={409: {"model": ErrorOut, "description": "`not_supported_with_processes`: under `serve --processes`"}})
async def reset(request: Request) -> ResetOut:
    """Start a fresh cluster with the same replicas: every key gone at every replica, partitions
    healed, crashed replicas back, strategy, loss and speed at the values the server started
    with, the event log and the coordination panel's last writes cleared. A running scenario is
    stopped first. Every page connected on /ws gets a new snapshot (with a new `server` id: its
    log starts afresh). Real replica processes (`serve --processes`) answer 409: wiping their
    durable data is not offered."""
    live = _cluster(request)
    # a cluster of processes refuses (NotWithProcesses: 409) with nothing changed: no scenario
    # ever runs there, so stopping the current one is a no-op
    stopped = await request.app.state.scenarios.stop_current()
    await live.reset()
    hub = getattr(request.app.state, "ws_hub", None)
    if hub is not None:
        hub.reset()
    join_hub = getattr(request.app.state, "join_hub", None)
    if join_hub is not None:  # /join's stream: the old cluster's writes and totals are gone
        join_hub.reset()
    steward = getattr(request.app.state, "gc_steward", None)
    if steward is not None:  # the old cluster was frozen out of collection: free it at the next period
        steward.reclaim_soon()
    return ResetOut(stopped_run=stopped, sim=_sim(live))


# -- the caller -----------------------------------------------------------------------------


@router.get("/api/session", tags=["session"], name="get_session")
async def session(request: Request) -> sessions.SessionOut:
    """What the caller (with the token or session cookie it sent, if any) may do."""
    return sessions.current(request)
