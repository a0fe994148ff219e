"""`GET /metrics`: Prometheus text, from the cluster's event stream and a look at it when scraped.

Each app has its own `CollectorRegistry` (never the process-wide default one), so two apps in
one process count separately. `Metrics.observe` is subscribed to the live cluster's event bus
by the app factory; it runs for every simulated message, so it does little: a dict lookup and
an increment per event.

Time to reach all replicas: a write's first dot is remembered with the virtual time of the
write; each replica that applies that dot is noted; when every replica that is up has it, the
elapsed virtual time goes into the histogram. Writes still incomplete after `horizon_ms` of
virtual time (a partition, a crashed replica that never recovers) are forgotten, and at most
`max_pending` writes are tracked, so memory stays bounded whatever happens.

The per-message counts (messages, bytes, drops) are plain dict increments on the hot path,
turned into Prometheus counters only when scraped (`_TrafficCollector`).

Every app, the replica's too, also exports process metrics (prometheus_client's
`ProcessCollector`: `process_cpu_seconds_total`, `process_resident_memory_bytes`,
`process_open_fds`, ...; Linux only, empty elsewhere) and the HTTP requests it answered
(`HttpMetrics`, fed by `logs.RequestIdMiddleware`): `edgestate_http_requests_total` by method,
route template and status, and `edgestate_http_request_duration_seconds` by method and route.
Labels are bounded: the route is the template (`/api/replicas/{replica_id}/kv/{key}`, or
`unmatched`), never the raw path, and a method HTTP does not know is `other`.

The WebSocket endpoint (another module) reports its clients through `ws_connected(+1/-1)`
and `ws_dropped()`; the event-loop probe (`loop_lag.probe`, run by the app while it serves)
through `loop_lag(seconds)`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Callable

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .loop_lag import RECENT_S, RecentMax

if TYPE_CHECKING:
    from replication.contract import ClusterObserver

# virtual seconds: one ocean is ~0.04 s, the far side of the world ~0.15 s, repair after a heal ~1-2 s
# wall seconds the event loop was held past a probe's wake-up: fine around the 20 ms / 100 ms targets
LOOP_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.0175, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
# wall seconds to answer one HTTP request: a read ~0.5 ms, a durable write ~1-5 ms, a relayed one more
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# wall seconds of one group commit (SQLite COMMIT with synchronous=FULL: the fsync dominates)
FLUSH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "WS"})
PROPAGATION_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class _TrafficCollector(Collector):
    """Counters of simulated traffic: the cluster's own totals when it keeps them (a simulated
    cluster reports only a sample of its messages as events), else plain dicts kept by
    `Metrics.observe` from the events (cheap per message)."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def describe(self):
        return list(self._families({}, {}, {}))

    def collect(self):
        m = self.m
        if m.traffic is None:
            return list(self._families(dict(m.message_counts), dict(m.bytes_by_kind), dict(m.drops_by_reason)))
        t = m.traffic()
        messages = {(outcome, kind): n for outcome in ("sent", "delivered", "dropped") for kind, n in t[outcome].items()}
        return list(self._families(messages, t["bytes"], t["dropped_by_reason"]))

    @staticmethod
    def _families(messages: dict, wire: dict, drops: dict):
        f = CounterMetricFamily("edgestate_messages", "Messages on the simulated wire, by outcome "
                                "(sent, delivered, dropped) and message kind", labels=["outcome", "kind"])
        for (outcome, kind), n in sorted(messages.items()):
            f.add_metric([outcome, kind], n)
        yield f
        f = CounterMetricFamily("edgestate_messages_dropped_by_reason", "Messages dropped, by reason "
                                "(loss, partition, crashed)", labels=["reason"])
        for reason, n in sorted(drops.items()):
            f.add_metric([reason], n)
        yield f
        f = CounterMetricFamily("edgestate_wire_bytes", "Bytes sent on the simulated wire (msgpack), by message kind",
                                labels=["kind"])
        for kind, n in sorted(wire.items()):
            f.add_metric([kind], n)
        yield f


class HttpMetrics:
    """HTTP requests answered, by method, route template and status; and how long they took."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("edgestate_http_requests", "HTTP requests answered, by method, route template "
                                "and status", ["method", "route", "status"], registry=registry)
        self.duration = Histogram("edgestate_http_request_duration_seconds", "Wall time to answer an HTTP request "
                                  "(to its last byte), by method and route template", ["method", "route"],
                                  buckets=HTTP_BUCKETS, registry=registry)
        self._children: dict[tuple, tuple] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        c = self._children.get(key)
        if c is None:
            m = method if method in HTTP_METHODS else "other"
            c = self._children[key] = (self.requests.labels(m, route, str(status)), self.duration.labels(m, route))
        c[0].inc()
        c[1].observe(seconds)


def add_process_metrics(registry: CollectorRegistry) -> None:
    """This process's CPU seconds, resident memory, open files (from /proc; nothing elsewhere)."""
    ProcessCollector(registry=registry)


def flush_histogram(registry: CollectorRegistry) -> Histogram:
    """A replica's group commits: `edgestate_storage_flush_seconds` (fed by `ReplicaRunner.on_flush`)."""
    return Histogram("edgestate_storage_flush_seconds", "Wall time of one group commit (a SQLite COMMIT with "
                     "its fsync) that made writes durable", buckets=FLUSH_BUCKETS, registry=registry)


class Metrics:
    def __init__(self, replica_ids: list[str], *, horizon_ms: float = 60_000.0, max_pending: int = 50_000,
                 traffic: Callable[[], dict] | None = None) -> None:
        # the cluster's traffic totals (LiveCluster.traffic_totals), if it keeps them: then the
        # traffic events on the bus are a sample and are not counted here
        self.traffic = traffic
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.writes = Counter("edgestate_writes", "Writes taken by a replica, by CRDT type (its namespace)",
                              ["type", "replica"], registry=r)
        self.message_counts: dict[tuple[str, str], int] = {}  # (outcome, message kind) -> count
        self.bytes_by_kind: dict[str, int] = {}
        self.drops_by_reason: dict[str, int] = {}
        r.register(_TrafficCollector(self))
        self.propagation = Histogram(
            "edgestate_write_propagation_seconds",
            "Virtual time from a write until every replica that is up has applied it",
            buckets=PROPAGATION_BUCKETS, registry=r,
        )
        self.repairs = Counter("edgestate_antientropy_repairs", "Deltas applied from anti-entropy replies, by replica",
                               ["replica"], registry=r)
        self.repaired_dots = Counter("edgestate_antientropy_repaired_dots",
                                     "Dots (writes) that reached a replica by anti-entropy rather than dissemination",
                                     registry=r)
        self.ws_clients = Gauge("edgestate_websocket_clients", "WebSocket clients connected", registry=r)
        self.ws_dropped_total = Counter("edgestate_websocket_clients_dropped",
                                        "WebSocket clients dropped (too slow to keep up with the stream)", registry=r)
        self.rate_limited = Counter("edgestate_http_rate_limited", "Writes refused by the audience rate limit",
                                    registry=r)
        self.loop_lag_hist = Histogram(
            "edgestate_event_loop_lag_seconds",
            "How late the server's event-loop probe woke (wall seconds): how long something held the loop",
            buckets=LOOP_LAG_BUCKETS, registry=r,
        )
        self.loop_lag_recent = RecentMax()
        Gauge("edgestate_event_loop_lag_recent_max_seconds",
              f"The longest event-loop stall within the last {RECENT_S:g} wall seconds",
              registry=r).set_function(self.loop_lag_recent.value)
        # refreshed from the cluster at each scrape
        self.replicas = Gauge("edgestate_replicas", "Replicas, by status", ["status"], registry=r)
        self.converged = Gauge("edgestate_converged", "1 when every replica that is up has the same state", registry=r)
        self.in_flight = Gauge("edgestate_messages_in_flight", "Messages on the simulated wire now", registry=r)
        self.virtual_time = Gauge("edgestate_virtual_time_seconds", "The simulation's virtual clock", registry=r)

        self.http = HttpMetrics(r)
        add_process_metrics(r)

        self.horizon_ms = horizon_ms
        self.max_pending = max_pending
        self._ids = frozenset(replica_ids)
        self._down: set[str] = set()
        self._live = set(self._ids)
        self._pending: OrderedDict[tuple, tuple[float, set[str]]] = OrderedDict()  # dot -> (t0, replicas)
        self._children: dict[tuple, object] = {}

    # -- for the WebSocket endpoint ----------------------------------------------------------

    def ws_connected(self, delta: int = 1) -> None:
        """A client connected (+1) or went away (-1)."""
        self.ws_clients.inc(delta)

    def ws_dropped(self) -> None:
        """A client was dropped by the server (its queue overflowed)."""
        self.ws_dropped_total.inc()

    def loop_lag(self, seconds: float) -> None:
        """The event-loop probe woke `seconds` late."""
        self.loop_lag_hist.observe(seconds)
        self.loop_lag_recent.add(seconds)

    # -- from the event bus --------------------------------------------------------------------

    def _child(self, metric, *labels):
        key = (id(metric), *labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def observe(self, ev: dict) -> None:
        kind = ev["kind"]
        if kind == "sent" or kind == "delivered" or kind == "dropped":
            if self.traffic is not None:
                return
            msg = ev["msg"]
            counts = self.message_counts
            k = (kind, msg)
            counts[k] = counts.get(k, 0) + 1
            if kind == "sent":
                wire = self.bytes_by_kind
                wire[msg] = wire.get(msg, 0) + (ev.get("bytes") or 0)
            elif kind == "dropped":
                reason = ev.get("reason") or "unknown"
                self.drops_by_reason[reason] = self.drops_by_reason.get(reason, 0) + 1
        elif kind == "applied":
            self._applied(ev)
        elif kind == "write":
            self._child(self.writes, ev["ns"], ev["node"]).inc()
        elif kind == "crash":
            self._down.add(ev["node"])
            self._live = self._ids - self._down
            for dot in list(self._pending):
                self._check(dot, ev["t"])
        elif kind == "recover":
            self._down.discard(ev["node"])
            self._live = self._ids - self._down

    def _applied(self, ev: dict) -> None:
        t = ev["t"]
        node = ev["node"]
        dots = ev["dots"]
        via = ev.get("via")
        if via == "local":
            if dots:
                self._forget_old(t)
                dot = tuple(min(dots))
                self._pending[dot] = (t, {node})
                self._check(dot, t)
            return
        if via == "ae":
            self._child(self.repairs, node).inc()
            self.repaired_dots.inc(len(dots))
        pending = self._pending
        if not pending:
            return
        for d in dots:
            entry = pending.get(tuple(d))
            if entry is not None:
                entry[1].add(node)
                self._check(tuple(d), t)

    def _check(self, dot: tuple, t: float) -> None:
        t0, seen = self._pending[dot]
        live = self._live
        if len(seen) >= len(live) and live <= seen:
            del self._pending[dot]
            self.propagation.observe(max(0.0, t - t0) / 1000.0)

    def _forget_old(self, now: float) -> None:
        pending = self._pending
        while pending:
            dot, (t0, _) = next(iter(pending.items()))
            if now - t0 <= self.horizon_ms and len(pending) < self.max_pending:
                break
            pending.popitem(last=False)

    @property
    def pending_writes(self) -> int:
        return len(self._pending)

    # -- at scrape time -----------------------------------------------------------------------

    def refresh(self, live: ClusterObserver) -> None:
        states = live.replica_states()
        up = sum(1 for s in states if s["status"] == "up")
        self.replicas.labels("up").set(up)
        self.replicas.labels("down").set(len(states) - up)
        conv = live.convergence()
        self.converged.set(1 if conv["converged"] else 0)
        self.in_flight.set(conv["in_flight"])
        self.virtual_time.set(live.now_ms() / 1000.0)

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry in the format the scraper asks for (`Accept`): Prometheus text 0.0.4 by
        default, OpenMetrics or text 1.0 when asked."""
        try:
            encode, content_type = choose_encoder(accept or "")
            return encode(self.registry), content_type
        except Exception:  # an Accept header the client library cannot parse: use the default
            return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4


router = APIRouter()


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    tags=["ops"],
    name="get_metrics",
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request) -> Response:
    """Counters and histograms in Prometheus text format (one registry per app)."""
    m: Metrics = request.app.state.metrics
    m.refresh(request.app.state.live)
    body, content_type = m.exposition(request.headers.get("accept"))
    return Response(body, headers={"Content-Type": content_type})
