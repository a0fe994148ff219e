"""The app factory: all wiring is explicit here, and nothing is created at import time."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Callable

from fastapi import FastAPI

from . import admin
from . import coordination_panel as coordination
from . import join
from . import page
from . import scenario_api
from . import ws
from ..web import api
from ..web import docs
from ..web import errors
from ..web import health
from ..web import logs
from ..web import loop_lag
from ..web import metrics
from ..web import openapi, otel
from ..web import sessions
from ..web import watch
from ..web.gc_steward import GcSteward
from ..web.hygiene import RequestHygieneMiddleware
from ..web.limits import BodyLimitMiddleware, RateLimitMiddleware, TokenBuckets
from ..web.security import AccessMiddleware, Settings

if TYPE_CHECKING:
    from replication.contract import DashboardCluster
    from replication.scenarios import Catalogue


def create_app(
    live: DashboardCluster,
    *,
    run_clock: bool = False,
    gc_steward: bool = True,
    settings: Settings | None = None,
    wall_clock: Callable[[], float] | None = None,
    scenarios: Catalogue | None = None,
    public_url: str | None = None,
    access_log: bool = True,
) -> FastAPI:
    """`live`: the simulated `LiveCluster`, or `ProcessLive` over real replica processes.
    `run_clock`: advance virtual time with the wall clock while serving (tests drive it themselves),
    and probe the event loop for stalls (`/metrics`: `edgestate_event_loop_lag_*`); with it,
    `gc_steward` keeps the cluster's state out of full collections (`web.gc_steward`).
    `settings`: tokens, audience mode and limits (default: open, as for a loopback demo).
    `wall_clock`: seconds, for the audience rate limit (default: time.monotonic).
    `scenarios`: what `POST /api/scenarios/{name}` may run (default: the built-ins).
    `public_url`: what the `/join` QR code encodes (`join.qr.check_public_url`; default: the
    address each request came to). `access_log`: a line per request on the `edgestate.access`
    logger (`web.logs`)."""
    settings = settings or Settings()
    problems = settings.problems()
    if problems:
        raise ValueError("; ".join(problems))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await live.start()
        tasks = [asyncio.create_task(live.pump()),
                 asyncio.create_task(loop_lag.probe(app.state.metrics.loop_lag))] if run_clock else []
        steward = app.state.gc_steward = GcSteward() if run_clock and gc_steward else None
        if steward is not None:
            steward.start()
        try:
            yield
        finally:
            await app.state.scenarios.close()
            if steward is not None:
                await steward.stop()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await live.close()

    app = FastAPI(
        title="edgestate",
        summary="Edge state without coordination: write at any POP, read anywhere.",
        redoc_url=None,
        docs_url=None,  # ours, served locally: see docs.py
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
        telemetry=otel.OFF,
    )
    openapi.install(app)
    app.state.live = live
    app.state.settings = settings
    app.state.metrics = metrics.Metrics(live.ids, traffic=getattr(live, "traffic_totals", None))
    live.bus.subscribe(app.state.metrics.observe)
    errors.install(app)
    app.include_router(api.router)
    app.include_router(watch.router)
    app.include_router(health.router)
    ws.install(app, live)
    page.install(app)
    join.install(app, live, public_url)
    docs.install(app)
    app.include_router(admin.router)
    app.state.sessions = sessions.Sessions(clock=wall_clock)
    app.include_router(sessions.router)
    app.state.scenarios = scenario_api.ScenarioRuns(live, scenarios)
    app.include_router(scenario_api.router)
    coordination.install(app, live)
    app.include_router(metrics.router)
    # innermost first: access control runs first, then the rate limit, then the body limit,
    # then the checks on the path and the (now bounded) body
    app.add_middleware(RequestHygieneMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.audience:
        buckets = TokenBuckets(settings.write_rate, settings.write_burst, clock=wall_clock)
        app.add_middleware(RateLimitMiddleware, buckets=buckets, on_limited=app.state.metrics.rate_limited.inc)
    app.add_middleware(AccessMiddleware, settings=settings, sessions=app.state.sessions)
    logs.install(app, access_log=access_log, on_request=app.state.metrics.http.observe)  # outermost
    join.install_lean(app)  # innermost
    return app
