"""The app factory: all wiring is explicit here, and nothing is created at import time."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import api, errors
from .live import LiveCluster


def create_app(live: LiveCluster, *, run_clock: bool = False) -> FastAPI:
    """`run_clock`: advance virtual time with the wall clock while serving (tests drive it themselves)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(live.pump()) if run_clock else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(
        title="edgestate",
        summary="Edge state without coordination: write at any POP, read anywhere.",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.live = live
    errors.install(app)
    app.include_router(api.router)
    return app
