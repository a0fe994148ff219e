"""Scenarios over HTTP, run live on the dashboard's cluster.

- `GET /api/scenarios`: the built-in scenarios (name, title, description, claim).
- `POST /api/scenarios/{name}` (admin): start one; 202 with its run id. One at a time: 409
  `scenario_running` while another runs. 404 `unknown_scenario`. 422 `invalid_scenario` when it
  names a replica this cluster does not have (started with other `--pops`).
- `GET /api/scenarios/runs/{run}`: progress (the current step's caption) and, once done, the report.
- `DELETE /api/scenarios/runs/{run}` (admin): stop it where it is (faults it set stay: heal them).
- `POST /api/scenarios/runs/{run}/next` (admin): the presenter's →: a run waiting at a
  `say: {wait: presenter}` goes on. 409 `not_waiting` when it is not waiting (it went on by
  itself after its `max_wait_s`, or never waited there).

A run is a task on the event loop (the cluster is not thread-safe), paced by virtual time
(`replication.scenarios.run_live`). Its progress goes out on the cluster's event bus as events
of kind "scenario", which `/ws` forwards to the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import OrderedDict
from typing import Any, Literal

from fastapi import APIRouter, Request, Response, Security
from pydantic import BaseModel, Field

from replication.scenarios import Catalogue, ScenarioError, run_live

from ..web.api import ErrorOut, errors
from ..web.errors import ApiError
from .simulated import LiveCluster
from ..web.security import bearer_scheme

log = logging.getLogger(__name__)

KEEP_RUNS = 32  # finished runs kept for GET .../runs/{id}; older ones are forgotten

router = APIRouter(dependencies=[Security(bearer_scheme)], responses=errors(401, 403), tags=["scenarios"])


class Run:
    def __init__(self, run_id: str, name: str, claim: str) -> None:
        self.id, self.name, self.claim = run_id, name, claim
        self.status = "running"
        self.events: list[dict] = []
        self.report: dict | None = None
        self.task: asyncio.Task | None = None
        self.gate: asyncio.Event | None = None  # set while the run waits for the presenter's →

    @property
    def waiting(self) -> bool:
        return self.gate is not None and not self.gate.is_set()

    async def wait_for_presenter(self, max_s: float) -> str:
        """Until `next()` or `max_s` wall seconds: "next" or "timeout" (never forever)."""
        self.gate = gate = asyncio.Event()
        try:
            await asyncio.wait_for(gate.wait(), max_s)
            return "next"
        except asyncio.TimeoutError:
            return "timeout"
        finally:
            self.gate = None

    def next(self) -> None:
        if not self.waiting:
            raise ApiError(409, "not_waiting", f"run {self.id} is {self.status} and not waiting for the presenter")
        self.gate.set()

    def view(self) -> dict:
        last = self.events[-1] if self.events else {}
        return {"run": self.id, "name": self.name, "claim": self.claim, "status": self.status,
                "step": last.get("step", 0), "of": last.get("of"), "caption": last.get("caption"),
                "waiting": "presenter" if self.waiting else None, "events": self.events, "report": self.report}


class ScenarioRuns:
    """The built-ins and the runs of this app: at most one running."""

    def __init__(self, live, catalogue: Catalogue | None = None) -> None:
        self.live = live
        self.catalogue = catalogue or Catalogue.builtin()
        self.runs: OrderedDict[str, Run] = OrderedDict()
        self._ids = itertools.count(1)
        self.current: Run | None = None

    def start(self, name: str) -> Run:
        scenario = self.catalogue.scenarios.get(name)
        if scenario is None:
            raise ApiError(404, "unknown_scenario",
                           f"no scenario {name!r} (known: {', '.join(self.catalogue.scenarios)})")
        if not isinstance(self.live, LiveCluster):
            raise ApiError(409, "not_supported_with_processes",
                           "scenarios run on the simulated cluster; this server runs replica processes")
        if self.current is not None:
            raise ApiError(409, "scenario_running",
                           f"scenario {self.current.name!r} is running (run {self.current.id}); wait for it to end")
        try:
            scenario.bind(self.live.ids)
        except ScenarioError as e:
            raise ApiError(422, "invalid_scenario", str(e)) from None
        run = Run(str(next(self._ids)), name, scenario.claim)
        self.runs[run.id] = run
        while len(self.runs) > KEEP_RUNS:
            self.runs.popitem(last=False)
        self.current = run

        def emit(ev: dict) -> None:
            run.events.append(ev)
            self.live.bus.publish(ev)

        run.task = asyncio.get_running_loop().create_task(self._run(run, scenario, emit))
        return run

    async def _run(self, run: Run, scenario, emit) -> None:
        try:
            report = await run_live(scenario, self.live, run_tag=run.id, emit=emit,
                                    presenter=run.wait_for_presenter, tally=self.live.bus.publish)
            run.report = report
            run.status = "passed" if report["passed"] else "failed"
        except asyncio.CancelledError:
            run.status = "cancelled"
            emit({"t": self.live.sim.now, "kind": "scenario", "node": None, "name": run.name, "run": run.id,
                  "step": 0, "of": None, "op": None, "line": None, "status": "cancelled",
                  "caption": f"stopped before checking: {run.claim}"})
            raise
        except Exception:  # a bug in a step must not take the server down: the run fails, visibly
            log.exception("scenario %s (run %s) crashed", run.name, run.id)
            run.status = "failed"
            emit({"t": self.live.sim.now, "kind": "scenario", "node": None, "name": run.name, "run": run.id,
                  "step": 0, "of": None, "op": None, "line": None, "status": "failed",
                  "caption": f"✗ {run.claim}", "error": "internal error while running the scenario"})
        finally:
            if self.current is run:
                self.current = None

    async def stop(self, run: Run) -> None:
        if run.task is not None and not run.task.done():
            run.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run.task

    async def stop_current(self) -> str | None:
        """Stop the run in progress, if any (before a reset); its id."""
        run = self.current
        if run is None:
            return None
        await self.stop(run)
        return run.id

    async def close(self) -> None:
        if self.current is not None:
            await self.stop(self.current)


def _runs(request: Request) -> ScenarioRuns:
    return request.app.state.scenarios


class ScenarioInfo(BaseModel):
    name: str
    title: str
    description: str
    claim: str


class ScenariosOut(BaseModel):
    scenarios: list[ScenarioInfo]
    running: str | None = Field(description="the id of the run in progress, if any")


RunStatus = Literal["running", "passed", "failed", "cancelled"]


class RunStarted(BaseModel):
    run: str
    name: str
    status: RunStatus
    url: str = Field(description="where to follow the run (also sent as `Location`)")


class RunOut(BaseModel):
    run: str
    name: str
    claim: str
    status: RunStatus
    step: int
    of: int | None
    caption: str | None = Field(description="what the scenario is doing now (at the end: ✓ or ✗ and the claim)")
    waiting: Literal["presenter"] | None = Field(None, description="'presenter' while the run waits for POST .../next (the → key)")
    events: list[dict[str, Any]] = Field(description="the run's scenario events, as sent on /ws")
    report: dict[str, Any] | None = Field(description="once it has ended: every step, check and figure")


@router.get("/api/scenarios", name="list_scenarios")
async def list_scenarios(request: Request) -> ScenariosOut:
    runs = _runs(request)
    return ScenariosOut(scenarios=[ScenarioInfo(**s.summary()) for s in runs.catalogue.scenarios.values()],
                        running=runs.current.id if runs.current else None)


STARTED = {202: {"description": "started: follow it at `Location` (the body's `url`) or on /ws",
                  "headers": {"Location": {"description": "the run's URL", "schema": {"type": "string"}}}},
           **errors(404, 409), 422: {"model": ErrorOut, "description": "`invalid_scenario`: it names a replica "
                                                                        "this cluster does not have"}}


@router.post("/api/scenarios/{name}", status_code=202, responses=STARTED)
async def start_scenario(request: Request, response: Response, name: str) -> RunStarted:
    """Start a scenario on the live cluster; it runs at the current speed. Follow it on /ws or at the run's URL."""
    run = _runs(request).start(name)
    url = f"/api/scenarios/runs/{run.id}"
    response.headers["Location"] = url
    return RunStarted(run=run.id, name=run.name, status=run.status, url=url)


def _run_of(request: Request, run_id: str) -> Run:
    run = _runs(request).runs.get(run_id)
    if run is None:
        raise ApiError(404, "unknown_run", f"no scenario run {run_id!r} (finished runs are kept for a while)")
    return run


@router.get("/api/scenarios/runs/{run_id}", responses=errors(404), name="get_scenario_run")
async def get_run(request: Request, run_id: str) -> RunOut:
    return RunOut(**_run_of(request, run_id).view())


@router.delete("/api/scenarios/runs/{run_id}", responses=errors(404), name="stop_scenario_run")
async def stop_run(request: Request, run_id: str) -> RunOut:
    """Stop a running scenario where it is (a run that has ended stays as it was). A partition or
    crash it set stays in force: heal or recover from the toolbar."""
    run = _run_of(request, run_id)
    await _runs(request).stop(run)
    return RunOut(**run.view())


@router.post("/api/scenarios/runs/{run_id}/next", responses=errors(404, 409), name="next_scenario_step")
async def next_caption(request: Request, run_id: str) -> RunOut:
    """The presenter's →: a run waiting at a `say: {wait: presenter}` goes on (409 `not_waiting`
    otherwise). A run nobody advances goes on by itself after the step's `max_wait_s`."""
    run = _run_of(request, run_id)
    run.next()
    await asyncio.sleep(0)  # let the run take its next step before answering
    return RunOut(**run.view())
