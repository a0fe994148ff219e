"""The two ways to run a scenario's steps (`engine.Engine.run`, a generator of waits).

- `run_fast`: on a fresh `SimCluster`, as fast as the simulator goes: the command line and the
  tests. Deterministic: the same scenario, POPs and seed give the same events and figures.
- `run_live`: on the dashboard's running cluster, paced by virtual time so the audience sees
  each step on the map at the current speed. It never guesses with a wall-clock sleep: it
  waits until the pump has brought virtual time to the step's target (sleeping exactly the wall
  time that corresponds to at the current speed, capped at one frame so a speed change or a
  pause is noticed), and it runs a condition forward event by event up to the virtual time that
  corresponds to now, so "converged after X ms" is as exact live as in the fast driver.

Only asyncio here, duck-typed on the live cluster: no web framework.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Awaitable, Callable

from ..sim.cluster import SimCluster
from ..geo import place_replicas, select_pops
from .engine import Engine, Presenter, Until
from .spec import Scenario, ScenarioError

WARMUP_MS = 2000.0  # membership and the plumtree overlay form before the first step, as on a running server
LIVE_FRAME_S = 0.02
TALLY_S = 0.25  # the running total goes out at most this often while a live run waits


def build_cluster(scenario: Scenario, *, pops: str | None, seed: int, strategy: str = "plumtree",
                  sink: Callable | None = None) -> SimCluster:
    spec = pops or scenario.pops or "default"
    try:
        placements = place_replicas(select_pops(spec))
    except ValueError as e:
        raise ScenarioError(scenario.source, None if pops else scenario.line, f"pops {spec!r}: {e}") from None
    # tokens are signed with a secret; derive it from the seed so a rerun is the same run, byte for byte
    secret = hashlib.sha256(f"edgestate-scenario:{seed}".encode()).digest()
    return SimCluster(placements, strategy=strategy, seed=seed, sink=sink, secret=secret)


def run_fast(scenario: Scenario, *, pops: str | None = None, seed: int = 0, strategy: str = "plumtree",
             on_event: Callable[[dict], None] | None = None, sim_sink: Callable | None = None) -> dict:
    """Run on a fresh simulated cluster; returns the report. Raises `ScenarioError` for a
    scenario that does not fit the cluster (before anything runs)."""
    cluster = build_cluster(scenario, pops=pops, seed=seed, strategy=strategy, sink=sim_sink)
    scenario.bind(cluster.ids)
    cluster.sim.run_for(WARMUP_MS)
    engine = Engine(scenario, cluster, cluster, seed=seed, emit=on_event)
    sim = cluster.sim
    gen = engine.run()
    answer = None
    while True:
        try:
            req = gen.send(answer)
        except StopIteration as stop:
            return stop.value
        if isinstance(req, Presenter):
            answer = "none"  # nobody presents a fast run: it goes straight on
        elif isinstance(req, Until):
            answer = None
            if req.t > sim.now:
                sim.run_until(req.t)
        else:
            answer = sim.run_until_condition(req.pred, max_ms=max(0.0, req.deadline - sim.now))


async def run_live(scenario: Scenario, live, *, run_tag: str, emit: Callable[[dict], None],
                   frame_s: float = LIVE_FRAME_S, presenter: Callable[[float], Awaitable[str]] | None = None,
                   tally: Callable[[dict], None] | None = None, tally_s: float = TALLY_S) -> dict:
    """Run on a `LiveCluster` (its `pump` task advances time). The caller binds the scenario
    first, so a scenario that does not fit is refused before it starts.

    `presenter(max_s)`: waits for the presenter's → at a `say: {wait: presenter}` and answers
    "next" or "timeout" (without one the run goes straight on). `tally(event)`: while the run
    waits, the scenario's running total, at most every `tally_s` wall seconds and only when it
    changed (an event of kind "scenario" with `tally_only`), so the page's total follows the
    counter as it converges."""
    cluster = live.cluster
    engine = Engine(scenario, _LiveSteps(live), cluster, seed=cluster.seed, run_tag=run_tag, emit=emit)
    sim = live.sim
    gen = engine.run()
    answer = None
    last = {"at": 0.0, "tally": None}
    loop = asyncio.get_running_loop()

    async def sleep(s: float) -> None:
        await asyncio.sleep(s)
        if tally is None or engine.subject is None or loop.time() - last["at"] < tally_s:
            return
        last["at"] = loop.time()
        now = engine.tally()
        if now != last["tally"]:
            last["tally"] = now
            tally({"t": round(sim.now, 3), "kind": "scenario", "node": None, "name": scenario.name, "run": run_tag,
                   "status": "running", "tally_only": True, "tally": now})

    while True:
        try:
            req = gen.send(answer)
        except StopIteration as stop:
            return stop.value
        answer = None
        if isinstance(req, Presenter):
            answer = "none" if presenter is None else await presenter(req.max_s)
        elif isinstance(req, Until):
            while sim.now < req.t:
                target = live.target()
                if target >= req.t:
                    sim.run_until(req.t)  # the pump would get there within a frame: be exact
                    break
                await sleep(_wall_s(live, req.t - target, frame_s))
        else:
            while True:
                limit = min(req.deadline, max(live.target(), sim.now))
                if limit > sim.now:
                    answer = sim.run_until_condition(req.pred, max_ms=limit - sim.now)
                else:
                    answer = req.pred()
                if answer or sim.now >= req.deadline:
                    break
                await sleep(_wall_s(live, req.deadline - sim.now, frame_s))


class _LiveSteps:
    """What a live scenario's steps call. Reads and writes go through the live cluster as any
    client's do; the faults are the simulated cluster's own, synchronous ones (the live
    cluster's are coroutines, for the HTTP API), brought up to the wall clock first as the
    live cluster's would be."""

    def __init__(self, live) -> None:
        self.live = live
        self.cluster = live.cluster

    def write(self, replica_id: str, ns: str, key: str, op: dict):
        return self.live.write(replica_id, ns, key, op)

    def read(self, replica_id: str, ns: str, key: str):
        return self.live.read(replica_id, ns, key)

    def partition(self, groups: list[list[str]]) -> list[list[str]]:
        self.live.catch_up()
        return self.cluster.partition(groups)

    def heal(self) -> None:
        self.live.catch_up()
        self.cluster.heal()

    def crash(self, replica_id: str, lose_state: bool = False) -> None:
        self.live.catch_up()
        self.cluster.crash(replica_id, lose_state)

    def recover(self, replica_id: str) -> None:
        self.live.catch_up()
        self.cluster.recover(replica_id)


def _wall_s(live, virtual_ms: float, frame_s: float) -> float:
    if live.paused:
        return frame_s
    return max(0.001, min(frame_s, virtual_ms / 1000.0 / live.speed))
