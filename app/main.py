"""The app factory: all wiring is explicit here, and nothing is created at import time."""

from __future__ import annotations

from fastapi import FastAPI

from replication.cluster import LocalCluster

from . import api, errors


def create_app(cluster: LocalCluster) -> FastAPI:
    app = FastAPI(
        title="edgestate",
        summary="Edge state without coordination: write at any POP, read anywhere.",
        redoc_url=None,
    )
    app.state.cluster = cluster
    errors.install(app)
    app.include_router(api.router)
    return app
