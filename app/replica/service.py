"""The HTTP API of one real replica process (`edgestate replica --http ...`).

The same routes, errors and access rules as the dashboard's server, for one replica: reads and
writes at `/api/replicas/{its id}/...` (a write is answered once it is durable; 503
`storage_unavailable` means it was not applied at all; `Idempotency-Key` makes it safe to retry), `/healthz`,
`/readyz` (`web.health`), `/metrics` (with process, HTTP and flush-latency metrics), `GET /api/replicas` (its id, status, version vector, digest), `GET /api/status`
(all an operator may want: actor, boots, peers, queues, bad frames),
`POST`/`DELETE /api/faults/partition` to cut it off from peers (tests, `serve --processes` and
`serve --attach`), and `GET /api/events`, its event feed for a dashboard on another host
(`feed_http`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any, Callable

import orjson
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import Response
from starlette.middleware import Middleware
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from replication.batch import BatchOp
from replication.derived import partition_groups
from replication.errors import UnknownReplica
from replication.idempotency import Answer, Once
from replication.io.runner import ReplicaRunner

from ..web import api
from . import feed_http
from .events import EventFeed
from .fast_writes import FastWrites
from ..web import docs
from ..web import errors
from ..web import health
from ..web import logs
from ..web import openapi, otel, watch
from ..web.watch import LocalWatch
from ..web.metrics import HttpMetrics, add_process_metrics, flush_histogram
from ..dashboard.admin import PartitionIn, PartitionOut, check_groups
from ..web.detail import replica_detail
from .answers import DetailOut, ReplicaSummaries, ReplicaSummary, StatusOut
from ..web.errors import ApiError
from ..web.hygiene import RequestHygieneMiddleware
from ..web.limits import BodyLimitMiddleware
from ..web.security import AccessMiddleware, Settings


class ReplicaService:
    """What the shared API routes call, for a cluster of one: this process's replica. It plays
    the data role of the cluster contract (`replication.contract.ClusterData`); faults and
    observation have this process's own routes below."""

    def __init__(self, runner: ReplicaRunner) -> None:
        self.runner = runner
        self.ids = [runner.id]

    def _known(self, replica_id: str) -> None:
        if replica_id != self.runner.id:
            raise UnknownReplica(f"this process serves replica {self.runner.id!r} only, not {replica_id!r}")

    async def awrite(self, replica_id: str, ns: str, key: str, op: dict) -> Any:
        self._known(replica_id)
        return await self.runner.write(ns, key, op)

    async def awrite_once(self, replica_id: str, ns: str, key: str, op: dict, once: Once) -> Answer:
        self._known(replica_id)
        return await self.runner.write_once(ns, key, op, once)

    async def aread(self, replica_id: str, ns: str, key: str) -> Any:
        self._known(replica_id)
        return await self.runner.read(ns, key)

    async def abatch(self, replica_id: str, ops: list[BatchOp], render: Callable[[list[Any]], bytes],
                     once: Once | None) -> Answer:
        self._known(replica_id)
        return await self.runner.write_batch(ops, render, once)

    async def awatch(self, replica_id: str, prefix: str, types: frozenset[str] | None,
                     cursor: str | None) -> LocalWatch:
        """Views are read as `aread` reads them: once every local write before is durable."""
        self._known(replica_id)
        self.runner.check_serving()
        assert self.runner.node is not None and self.runner.node.feed is not None  # serving: started
        return LocalWatch(self.runner.node.feed, replica_id, cursor, prefix=prefix, types=types,
                          read=self.runner.read)

    async def alist(self, replica_id: str, ns: str, prefix: str, cursor: str | None, limit: int) -> Any:
        self._known(replica_id)
        return await self.runner.list_keys(ns, prefix, cursor, limit)

    async def aunready(self) -> str | None:
        """`/readyz`: why this replica may not take writes now (`ReplicaRunner.unready`)."""
        return self.runner.unready()


def _family(kind, name: str, doc: str, label: str, samples) -> CounterMetricFamily | GaugeMetricFamily:
    f = kind(name, doc, labels=[label])
    for value, n in samples:
        f.add_metric([value], n)
    return f


class _RunnerCollector(Collector):
    def __init__(self, runner: ReplicaRunner) -> None:
        self.r = runner

    def collect(self):
        r = self.r
        st = r.stats
        mine = lambda n: [(r.id, n)]
        c = CounterMetricFamily
        yield _family(c, "edgestate_writes", "Local writes made durable and acknowledged", "replica", mine(st.writes))
        yield _family(c, "edgestate_remote_deltas_logged", "Remote deltas written to the log before applying",
                      "replica", mine(st.remote_deltas_logged))
        yield _family(c, "edgestate_duplicate_deltas", "Remote deltas already held (no disk write)", "replica",
                      mine(st.duplicates_skipped))
        if r.storage is not None:
            yield _family(c, "edgestate_storage_flushes", "Group commits (one fsync each)", "replica",
                          mine(r.storage.stats.flushes))
            yield _family(c, "edgestate_storage_checkpoints", "Checkpoints written", "replica",
                          mine(r.storage.stats.checkpoints))
        yield _family(c, "edgestate_storage_flush_errors", "Flushes the disk refused", "replica", mine(st.flush_errors))
        yield _family(c, "edgestate_storage_rollbacks", "Failed flushes undone (state reloaded from disk)", "replica",
                      mine(st.rollbacks))
        yield _family(c, "edgestate_writes_refused", "Local writes answered 503 storage_unavailable, not applied",
                      "replica", mine(st.writes_refused))
        yield _family(c, "edgestate_idempotent_replays", "Keyed writes answered from their record", "replica",
                      mine(st.idempotent_replays))
        yield _family(GaugeMetricFamily, "edgestate_idempotency_records", "Idempotency records held", "replica",
                      mine(len(r.ledger)))
        damaged = Counter(d.file for d in r.damage)
        yield _family(c, "edgestate_storage_corrupt_records", "Damaged records (rows, WAL frames) found at start, by file",
                      "file", sorted(damaged.items()))
        yield _family(c, "edgestate_storage_repairs", "Damaged storage salvaged and repaired from peers at start",
                      "replica", mine(int(r.repair is not None)))
        yield _family(GaugeMetricFamily, "edgestate_recovering",
                      "1 while a repaired replica catches up (reads and writes answer 503)", "replica",
                      mine(int(r.recovering)))
        if r.transport is not None:
            net = r.transport.stats
            yield _family(c, "edgestate_frames", "Frames on the wire, by direction", "direction",
                          [("in", net.frames_in), ("out", net.frames_out)])
            yield _family(c, "edgestate_wire_bytes", "Bytes on the wire, by direction", "direction",
                          [("in", net.bytes_in), ("out", net.bytes_out)])
            yield _family(c, "edgestate_bad_frames", "Frames refused (connection closed), by reason", "reason",
                          sorted(net.bad_frames.items()))
            yield _family(c, "edgestate_frames_dropped", "Outgoing frames dropped, by reason", "reason",
                          sorted(net.dropped_out.items()))
            yield _family(c, "edgestate_peer_connections_refused",
                          "Peer connections refused before any frame was taken (TLS handshake failed: a foreign "
                          "CA or an expired certificate; identity: a certificate naming another replica), or "
                          "closed (idle, replaced), by reason", "reason", sorted(net.refused.items()))
            yield _family(GaugeMetricFamily, "edgestate_peer_tls", "1 when peer links run over mutual TLS",
                          "replica", mine(int(r.transport.encrypted)))
        if r.node is not None:
            found = r.node.replica.store.integrity
            yield _family(c, "edgestate_content_checks", "What content anti-entropy and the scrub found and repaired, "
                          "by finding (see README: Content, not only version vectors)", "finding",
                          sorted(asdict(found).items()))
            counts = Counter(r.node.membership.status(p) for p in r.node.peers)
            yield _family(GaugeMetricFamily, "edgestate_peers", "Peers by membership status", "status",
                          sorted(counts.items()))


router = APIRouter(responses=api.errors(401, 403))  # with --token: the access middleware


def _runner(request: Request) -> ReplicaRunner:
    return request.app.state.live.runner


@router.get("/api/replicas", tags=["observe"], name="get_replicas")
async def replicas(request: Request) -> ReplicaSummaries:
    """This replica, as the dashboard's `/api/replicas` lists each one."""
    s = _runner(request).status()
    return ReplicaSummaries(replicas=[ReplicaSummary(id=s["id"], status="up", version_vector=s["version_vector"],
                                                     digest=s["digest"])])


@router.get("/api/status", tags=["observe"], name="get_status")
async def status(request: Request) -> StatusOut:
    """Who this replica is, its durability, its peers and its links."""
    return StatusOut.model_validate(_runner(request).status())


MAX_RECENT = 200


@router.get("/api/detail", tags=["observe"], name="get_detail",
            responses=api.errors(422, 503))  # 422 `invalid_recent`; 503 while it cannot serve
async def detail(request: Request, recent: str = Query("[]", max_length=64 * 1024,
                 description="JSON list of [namespace, key], oldest first: listed first, newest at the top")
                 ) -> DetailOut:  # type: ignore[valid-type]
    """The replica's keyspace as the dashboard lists it (`serve --processes` relays it)."""
    try:
        refs = orjson.loads(recent)
    except orjson.JSONDecodeError:
        refs = None
    if not (isinstance(refs, list) and len(refs) <= MAX_RECENT and all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(x, str) for x in r) for r in refs)):
        raise ApiError(422, "invalid_recent", f"recent must be a JSON list of at most {MAX_RECENT} [namespace, key] pairs")
    runner = _runner(request)
    runner.check_serving()
    await runner.barrier()  # no value a crash could take back
    assert runner.node is not None  # started: serving
    return DetailOut.model_validate(replica_detail(runner.node.replica, [(ns, key) for ns, key in refs], True))


@router.post("/api/faults/partition", tags=["faults"], responses={422: {
    "model": api.ErrorOut, "description": "`invalid_partition`: an unknown replica, one listed twice, an empty group; "
                                          "or `validation_error`"}})
async def partition(request: Request, body: PartitionIn) -> PartitionOut:
    """Cut this replica off from every peer outside its own group (the same body as the
    dashboard's). Each process is told separately; replicas not listed form one more group."""
    runner = _runner(request)
    known = [runner.id, *sorted(runner.peer_addrs)]
    check_groups(body.groups, known)
    groups = partition_groups(body.groups, known)
    mine = next(set(g) for g in groups if runner.id in g)
    runner.partition(set(runner.peer_addrs) - mine)
    return PartitionOut(partitioned=True, groups=groups)


@router.delete("/api/faults/partition", tags=["faults"])
async def heal(request: Request) -> PartitionOut:
    _runner(request).partition(set())
    return PartitionOut(partitioned=False, groups=[])


def create_replica_app(runner: ReplicaRunner, *, settings: Settings | None = None,
                       access_log: bool = True, feed: EventFeed | None = None, fast_writes: bool = True) -> FastAPI:
    """`feed`: the replica's events, served at `GET /api/events` (404 there without one).
    `fast_writes`: answer the hot writes in `fast_writes.FastWrites` (False: every request
    through FastAPI, the path the fast one is compared with)."""
    settings = settings or Settings()
    problems = settings.problems()
    if problems:
        raise ValueError("; ".join(problems))
    app = FastAPI(title=f"edgestate replica {runner.id}", redoc_url=None, docs_url=None,
                  generate_unique_id_function=openapi.operation_id, telemetry=otel.OFF)
    openapi.install(app)
    docs.install(app)
    app.state.live = ReplicaService(runner)
    app.state.settings = settings
    app.state.feed = feed
    app.state.feed_readers = {}
    app.state.stopping = lambda: False  # the CLI points it at its server's should_exit
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RunnerCollector(runner))
    add_process_metrics(registry)
    http = HttpMetrics(registry)
    runner.on_flush = flush_histogram(registry).observe
    errors.install(app)
    app.include_router(api.router)
    app.include_router(watch.router)
    app.include_router(health.router)
    app.include_router(router)
    app.include_router(feed_http.router)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    app.add_middleware(RequestHygieneMiddleware)  # innermost: sees the body once the limit has bounded it
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessMiddleware, settings=settings)
    logs.install(app, access_log=access_log, on_request=http.observe)  # outermost: every answer has an id
    if fast_writes:  # innermost, after the route note: every check in front of a route has run
        app.user_middleware.append(Middleware(FastWrites))
    return app
