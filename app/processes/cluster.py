"""`serve --processes`: the dashboard over real replica processes instead of the simulator.

`ProcessLive` plays the same roles of the cluster contract as `LiveCluster`
(`replication.contract.DashboardCluster`: the API, the WebSocket hub, /metrics), for a
`ProcessCluster` of `edgestate replica` subprocesses on loopback with injected latency:

- reads and writes are relayed to the replica's own HTTP API (answered once durable there),
  with the client's `Idempotency-Key`: the replica keeps the record, and its answer's bytes
  come back as they are;
- each replica streams its events here (`replica_events`): they are republished on the bus
  in the simulator's shape, with `t` in milliseconds since the dashboard started, so the
  page, the hub and the metrics work unchanged (time runs at speed 1, and cannot pause);
- a replica's version vector and digest come from its latest `status` event, its keyspace
  (for the side panel) from `GET /api/detail`, polled for the replicas someone has selected;
- crash sends SIGKILL; recover restarts the process from its data directory; a crash that
  loses state deletes the directory and restarts under the next actor (`--actor`);
- a partition is set at every replica (each drops frames to and from the other side);
- message counters come from the replicas' `sent` events: sent by kind, delivered by kind
  once the delivery time each was sent with has passed (the wire itself drops nothing);
- the simulator's own controls (strategy, speed, loss, pause, step, reset) answer 409.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import secrets
import shutil
import ssl
import time
from collections import Counter
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any, Callable, NamedTuple, NoReturn
from urllib.parse import quote, urlencode

import orjson

from replication import derived
from replication.contract import (
    ClockInfo,
    Convergence,
    ReplicaState,
    ReplicaStatus,
    SimInfo,
    Topology,
    TrafficStats,
)
from replication.baseline.costs import LastWrites
from replication.crdts import BY_NAMESPACE
from replication.errors import NotWithProcesses, ReplicaDown, UnknownReplica
from replication.geo import LatencyModel, Placement
from replication.idempotency import Answer, Once
from replication.node import incarnation_of
from replication.io.runner import fresh_actor
from replication.batch import BatchOp
from replication.listing import Page
from replication.values import check_namespace

from ..web.api import ABSENT_IS_404, write_request
from ..web.detail import empty_detail
from ..web.errors import ApiError
from ..web.events import EventBus
from .http_client import HttpError, Pool
from .supervisor import ProcessCluster
from .watch_relay import RelayedWatch
from ..replica.events import TOKEN_ENV, EventCollector

log = logging.getLogger("edgestate.processes")

DETAIL_POLL_S = 0.25
CONTROL_TIMEOUT_S = 5.0


class _OnWire(NamedTuple):
    """A frame a replica reported sending, until its (injected) delivery time."""

    at: float  # ms on this dashboard's clock
    kind: str  # the message kind, for the counters by kind



def _raise_relayed(rid: str, status: int, raw: bytes) -> NoReturn:
    """A replica's error answer, raised again here with its code (and a bound's `limit`)."""
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        data = {}
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        more = {"limit": err["limit"]} if isinstance(err.get("limit"), dict) else {}  # a bound, relayed whole
        raise ApiError(status, str(err.get("code")), str(err.get("message")), **more)
    raise ApiError(502, "bad_gateway", f"replica {rid} answered {status}")

class ProcessLive:
    def __init__(self, placements: list[Placement], root: str | Path, *, strategy: str = "plumtree",
                 inject_latency: bool = True) -> None:
        self.placements = placements
        self.pop_of = {p.id: p.pop for p in placements}
        self.ids = [p.id for p in placements]
        self.root = Path(root)
        self.strategy = strategy
        self.inject_latency = inject_latency
        self.bus = EventBus()
        self.model = LatencyModel()
        self.procs: ProcessCluster | None = None
        self._collector: EventCollector | None = None
        self._pool = Pool(timeout=CONTROL_TIMEOUT_S)
        self._t0 = time.time() * 1000.0
        self._state: dict[str, ReplicaStatus] = {
            rid: {"status": "down", "version_vector": {}, "digest": "", "incarnation": 0, "keys": 0} for rid in self.ids}
        self._actor = dict.fromkeys(self.ids, "")  # as each replica last reported it
        self._down: set[str] = set(self.ids)
        self._killed: set[str] = set()  # crashed, not yet told to recover: late status events are the dead's
        self._groups: list[list[str]] | None = None
        self._mid = 0
        self._due: list[_OnWire] = []  # heap of the frames still on the wire, by delivery time
        self._sent: Counter[str] = Counter()
        self._delivered: Counter[str] = Counter()
        self._writes = 0
        self._details: dict[str, tuple[tuple, dict]] = {}
        self._watch: dict[str, float] = {}  # replica -> when its detail was last asked for
        self._recent: list = []
        self._next_actor: dict[str, str] = {}  # for a replica that lost its state, when it restarts
        self._tasks: list[asyncio.Task] = []
        # arrivals come from the replicas' own events; the write itself runs (durably) in another
        # process, so its local cost is not timed here
        self.last_writes = LastWrites()
        self.bus.subscribe(self.last_writes.observe)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        token = secrets.token_hex(16)
        self._collector = EventCollector(self._on_event, token=token)
        port = await self._collector.start()
        self.procs = ProcessCluster(self.ids, self.root, inject_latency=self.inject_latency, strategy=self.strategy,
                                    events=("127.0.0.1", port), env={TOKEN_ENV: token})
        await asyncio.to_thread(self.procs.start)
        self._tasks.append(asyncio.get_running_loop().create_task(self._poll_details()))

    async def _stop_tasks(self) -> None:
        """Cancel the background tasks (detail polling, and what a subclass adds) and wait for them."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def close(self) -> None:
        await self._stop_tasks()
        self._pool.close()
        if self.procs is not None:
            await asyncio.to_thread(self.procs.close)
        if self._collector is not None:
            await self._collector.close()

    async def pump(self) -> None:
        """The simulator's pump has no counterpart: the processes run on their own."""
        await asyncio.Event().wait()

    # -- time -----------------------------------------------------------------------------------

    def now_ms(self) -> float:
        return time.time() * 1000.0 - self._t0

    def target(self) -> float:
        return self.now_ms()

    speed = 1.0
    paused = False

    def catch_up(self) -> None:
        pass

    # -- events from the replicas ---------------------------------------------------------------

    def _on_event(self, ev: dict) -> None:
        rid = ev["replica"]
        if rid not in self._state:
            return
        t = float(ev.get("t", 0.0)) - self._t0
        kind = ev.get("type")
        if kind == "status":
            if rid in self._killed:
                return  # the dead process's last words, arriving late
            first = rid in self._down
            actor = ev.get("actor") or rid
            self._state[rid] = {"status": "up", "version_vector": ev.get("version_vector") or {},
                                "digest": ev.get("digest") or "", "incarnation": incarnation_of(rid, actor) or 0,
                                "keys": ev.get("keys") or 0}
            self._actor[rid] = actor
            if first:
                self._down.discard(rid)
                self.bus.publish({"t": t, "kind": "recover", "node": rid})
            self.bus.publish({"t": t, "kind": "status", "node": rid})
        elif kind == "applied":
            via = ev.get("via")
            self.bus.publish({"t": t, "kind": "applied", "node": rid, "dots": ev.get("dots") or [],
                              "keys": ev.get("keys") or [], "via": via})
            if via == "local":
                self._writes += 1
                for ns, key in ev.get("keys") or []:
                    self.bus.publish({"t": t, "kind": "write", "node": rid, "ns": ns, "key": key})
        elif kind == "sent":
            self._mid += 1
            at = float(ev.get("due", 0.0)) - self._t0
            msg = str(ev.get("kind"))
            self._sent[msg] += 1
            heapq.heappush(self._due, _OnWire(at, msg))
            self.bus.publish({"t": t, "kind": "sent", "node": rid, "src": rid, "dst": ev.get("dst"),
                              "msg": ev.get("kind"), "mid": self._mid, "deliver_at": at,
                              "bytes": ev.get("bytes") or 0})
        elif kind == "membership":
            self.bus.publish({"t": t, "kind": "membership", "node": rid, "peer": ev.get("peer"),
                              "status": ev.get("status")})

    # -- what observers read --------------------------------------------------------------------

    def has(self, nid: str) -> bool:
        return nid in self._state

    def state_of(self, nid: str) -> ReplicaStatus:
        st = self._state[nid]
        return {"status": st["status"], "version_vector": st["version_vector"], "digest": st["digest"],
                "incarnation": st["incarnation"], "keys": st["keys"]}

    def digests(self) -> dict[str, str]:
        return {rid: st["digest"] for rid, st in self._state.items() if rid not in self._down}

    def clock_info(self) -> ClockInfo:
        return {"now_ms": self.now_ms(), "speed": 1.0, "paused": False, "strategy": self.strategy, "loss": 0.0,
                "processes": True}

    def stats(self) -> TrafficStats:
        now = self.now_ms()
        due = self._due
        while due and due[0].at <= now:
            self._delivered[heapq.heappop(due).kind] += 1
        return {"sent": dict(self._sent), "delivered": dict(self._delivered), "dropped": {}, "dropped_by_reason": {},
                "in_flight": len(due), "writes": self._writes,
                "unshown": 0}

    def detail_ident(self, nid: str) -> Hashable:
        self._watch[nid] = time.monotonic()
        got = self._details.get(nid)
        st = self._state[nid]
        return (nid, st["digest"], st["status"], st["incarnation"], got[0] if got else None)

    def detail(self, nid: str, recent: Iterable[tuple[str, str]]) -> dict[str, Any]:
        self._watch[nid] = time.monotonic()
        self._recent = list(recent)[-100:]
        got = self._details.get(nid)
        st = self._state[nid]
        base = empty_detail(st["status"], st["digest"], st["version_vector"], st["keys"])
        if got is None or st["status"] != "up":
            return base
        return {**got[1], "status": st["status"]}

    async def _poll_details(self) -> None:
        while True:
            await asyncio.sleep(DETAIL_POLL_S)
            now = time.monotonic()
            for rid, at in list(self._watch.items()):
                if now - at > 5.0:
                    del self._watch[rid]  # no one has looked for a while
                    continue
                if rid in self._down:
                    continue
                recent = quote(orjson.dumps(self._recent).decode())
                try:
                    status, _h, body = await self._request(rid, "GET", f"/api/detail?recent={recent}")
                except HttpError:
                    continue
                if status == 200:
                    d = orjson.loads(body)
                    self._details[rid] = ((d.get("digest"), d.get("keys"), len(body)), d)

    def sim_info(self) -> SimInfo:
        return {"strategy": self.strategy, "speed": 1.0, "effective_speed": 1.0, "loss": 0.0, "paused": False,
                "now_ms": self.now_ms()}

    def topology(self) -> Topology:
        return derived.topology(self.placements, self.model)

    def replica_states(self) -> list[ReplicaState]:
        return [{"id": rid, "status": st["status"], "version_vector": st["version_vector"], "digest": st["digest"],
                 "incarnation": st["incarnation"]} for rid, st in self._state.items()]

    local_writes_timed = False

    def partition_groups(self) -> list[list[str]] | None:
        """Each group in `ids` order, as the simulator reports them."""
        if self._groups is None:
            return None
        return [[rid for rid in self.ids if rid in set(g)] for g in self._groups]

    def down(self) -> list[str]:
        return [rid for rid in self.ids if rid in self._down]

    def convergence(self) -> Convergence:
        return derived.convergence(self.digests(), self.stats()["in_flight"])

    # -- reads and writes, relayed ----------------------------------------------------------------

    def _endpoint(self, rid: str) -> tuple[str, int, ssl.SSLContext | None, dict[str, str]]:
        """Where replica `rid`'s HTTP API answers: host, port, TLS context, headers for every request."""
        return "127.0.0.1", self._procs.replicas[rid].http_port, None, {}

    async def _request(self, rid: str, method: str, path: str, body: bytes = b"",
                       headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request to a replica's HTTP API (HttpError when it cannot be had): the one place
        that knows where a replica answers (`serve --attach` points it at other hosts)."""
        return await self._pool.request_full("127.0.0.1", self._procs.replicas[rid].http_port, method, path, body,
                                             headers)

    @property
    def _procs(self) -> ProcessCluster:
        if self.procs is None:
            raise RuntimeError("the replica processes are not started (start() first)")
        return self.procs

    def _known(self, rid: str) -> None:
        if rid not in self._state:
            raise UnknownReplica(f"no replica {rid!r} in this cluster (known: {', '.join(self.ids)})")

    async def _call(self, rid: str, method: str, ns: str, key: str | None, body: dict | None,
                    once: Once | None = None, query: str = "") -> dict | Answer | None:
        """Relay one request (to a key, or with `key` None to the type's list); a keyed write's
        answer comes back as the replica's own bytes."""
        self._known(rid)
        if rid in self._down:
            raise ReplicaDown(rid, self.now_ms())
        path = f"/api/replicas/{quote(rid, safe='')}/{ns}"
        path += f"/{quote(key, safe='')}" if key is not None else f"?{query}"
        try:
            status, headers, raw = await self._request(
                rid, method, path, orjson.dumps(body) if body is not None else b"",
                {"Idempotency-Key": once.key} if once else None)
        except HttpError:
            # Not known to have been applied or not: a keyed write is safe to send again.
            raise ReplicaDown(rid, self.now_ms()) from None
        if status == 200 and once is not None:
            return Answer(status, raw, replayed=headers.get("idempotent-replayed") == "true")
        data = orjson.loads(raw) if raw else {}
        if status == 200:
            return data
        if status == 404 and method == "GET" and ns in ABSENT_IS_404:
            return None
        _raise_relayed(rid, status, raw)

    async def awrite(self, rid: str, ns: str, key: str, op: dict) -> Any:
        data = await self._relay_write(rid, ns, key, op, None)
        assert not isinstance(data, Answer)  # unkeyed: the replica's JSON
        return _result(ns, key, data)

    async def awrite_once(self, rid: str, ns: str, key: str, op: dict, once: Once) -> Answer:
        """The key goes to the replica, which keeps the record (durably, with the write)."""
        answer = await self._relay_write(rid, ns, key, op, once)
        assert isinstance(answer, Answer)  # a keyed write that succeeded: anything else raised
        return answer

    async def _relay_write(self, rid: str, ns: str, key: str, op: dict, once: Once | None):
        method, body = write_request(ns, op)
        return await self._call(rid, method, ns, key, body, once)

    async def awatch(self, rid: str, prefix: str, types: frozenset[str] | None, cursor: str | None) -> RelayedWatch:
        """The replica's own stream, relayed (`watch_relay`): its cursors, its bounds."""
        self._known(rid)
        if rid in self._down:
            raise ReplicaDown(rid, self.now_ms())
        try:
            host, port, tls, headers = self._endpoint(rid)
            return await RelayedWatch.open(host, port, rid, prefix, types, cursor,
                                           lambda status, raw: _raise_relayed(rid, status, raw), CONTROL_TIMEOUT_S,
                                           ssl=tls, headers=headers)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                ssl.SSLError):
            raise ReplicaDown(rid, self.now_ms()) from None

    async def aread(self, rid: str, ns: str, key: str) -> Any:
        data = await self._call(rid, "GET", ns, key, None)
        assert not isinstance(data, Answer)
        return _result(ns, key, data)

    async def abatch(self, rid: str, ops: list[BatchOp], render: Callable[[list[Any]], bytes],
                     once: Once | None) -> Answer:
        """The replica applies, renders and keeps the record; its bytes come back as they are."""
        self._known(rid)
        if rid in self._down:
            raise ReplicaDown(rid, self.now_ms())
        body = {"ops": [{"type": b.ns, "key": b.key, **b.op} for b in ops]}
        try:
            status, headers, raw = await self._request(
                rid, "POST", f"/api/replicas/{quote(rid, safe='')}/batch", orjson.dumps(body),
                {"Idempotency-Key": once.key} if once else None)
        except HttpError:
            raise ReplicaDown(rid, self.now_ms()) from None
        if status == 200:
            return Answer(status, raw, replayed=headers.get("idempotent-replayed") == "true")
        _raise_relayed(rid, status, raw)

    async def alist(self, rid: str, ns: str, prefix: str, cursor: str | None, limit: int) -> Page:
        check_namespace(ns)
        query = urlencode({"prefix": prefix, "limit": limit, **({"cursor": cursor} if cursor is not None else {})})
        data = await self._call(rid, "GET", ns, None, None, query=query)
        assert isinstance(data, dict)
        return Page(list(data["keys"]), data.get("cursor"))

    # -- faults -----------------------------------------------------------------------------------

    async def _control(self, rid: str, method: str, path: str, body: dict | None = None) -> None:
        """Tell one replica (async, within CONTROL_TIMEOUT_S): one that cannot be told is logged,
        not waited for; it learns the partition when it is recovered (`_partition_when_up`)."""
        try:
            status, _h, _raw = await self._request(rid, method, path,
                                                   orjson.dumps(body) if body is not None else b"")
        except (HttpError, OSError, asyncio.TimeoutError) as e:
            log.warning("could not tell %s %s %s: %s", rid, method, path, e)
            return
        if status != 200:
            log.warning("%s answered %s to %s %s", rid, status, method, path)

    async def aunready(self) -> str | None:
        """`/readyz`: None when every replica process the operator has not crashed answers its
        own /readyz 200; else which are not, and why."""
        if self.procs is None:
            return "starting"
        problems = await self._unready_up()
        return ", ".join(problems) if problems else None

    async def _unready_up(self) -> list[str]:
        """Each replica not crashed here whose own /readyz is not 200, and why."""
        async def one(rid: str) -> str | None:
            try:
                status, _h, raw = await self._request(rid, "GET", "/readyz")
            except (HttpError, OSError, asyncio.TimeoutError):
                return f"{rid} does not answer"
            if status == 200:
                return None
            try:
                return f"{rid} {orjson.loads(raw)['error']['reason']}"
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return f"{rid} answered {status}"

        got = await asyncio.gather(*(one(rid) for rid in self.ids if rid not in self._down))
        return [p for p in got if p is not None]

    async def _tell_all_up(self, method: str, path: str, body: dict | None = None) -> None:
        if self.procs is None:  # not started: the record is all there is
            return
        await asyncio.gather(*(self._control(rid, method, path, body) for rid in self.ids if rid not in self._down))

    async def partition(self, groups: list[list[str]]) -> list[list[str]]:
        final = derived.partition_groups(groups, self.ids)
        self._groups = final
        await self._tell_all_up("POST", "/api/faults/partition", {"groups": final})
        self.bus.publish({"t": self.now_ms(), "kind": "partition", "node": None, "groups": final})
        return final

    async def heal(self) -> None:
        self._groups = None
        await self._tell_all_up("DELETE", "/api/faults/partition")
        self.bus.publish({"t": self.now_ms(), "kind": "heal", "node": None})

    async def crash(self, rid: str, lose_state: bool = False) -> None:
        """SIGKILL, also for a process told to recover that has not reported yet. Crashing a
        crashed replica only adds `lose_state`."""
        self._known(rid)
        procs = self._procs
        if rid not in self._killed:
            await asyncio.to_thread(procs.kill, rid)  # SIGKILL, then its exit is reaped off the loop
            self._down.add(rid)
            self._killed.add(rid)
            self._state[rid]["status"] = "down"
            self.bus.publish({"t": self.now_ms(), "kind": "crash", "node": rid})
        if lose_state and rid not in self._next_actor:
            await asyncio.to_thread(shutil.rmtree, procs.replicas[rid].data_dir, ignore_errors=True)
            # a new lineage: an actor no one can hold, even if this view of its last one is stale
            self._next_actor[rid] = fresh_actor(rid, incarnation_of(rid, self._actor[rid]) or 0)

    async def recover(self, rid: str) -> None:
        """Restart the process (it reports `status` once up: that marks it recovered)."""
        self._known(rid)
        procs = self._procs
        if rid not in self._down or procs.replicas[rid].running:
            return
        self._killed.discard(rid)
        fresh = self._next_actor.pop(rid, None)
        procs.spawn(rid, extra=("--actor", fresh) if fresh else ())
        if self._groups is not None:
            groups = self._groups
            self._tasks.append(asyncio.get_running_loop().create_task(self._partition_when_up(rid, groups)))

    async def _partition_when_up(self, rid: str, groups) -> None:
        with contextlib.suppress(RuntimeError):
            await asyncio.to_thread(self._procs.wait_ready, [rid])
            if self._groups == groups:
                await self._control(rid, "POST", "/api/faults/partition", {"groups": groups})

    # -- the simulator's own controls -------------------------------------------------------------

    def _refuse(self, what: str):
        raise NotWithProcesses(f"{what} is a control of the simulator; these replicas are real processes")

    def set_strategy(self, name: str) -> None:
        self._refuse("switching strategy")

    def set_speed(self, speed: float) -> None:
        self._refuse("speed")

    def set_loss(self, p: float) -> None:
        self._refuse("message loss")

    def pause(self) -> None:
        self._refuse("pause")

    def resume(self) -> None:
        self._refuse("resume")

    def step(self, ms: float) -> None:
        self._refuse("step")

    async def reset(self) -> None:
        # a fresh cluster here would mean wiping every replica's SQLite data under a running
        # process and a new actor for each: a restart of the processes, not a simulator control
        self._refuse("reset")


def _result(ns: str, key: str, data: dict | None):
    """A replica's answer as the value its type reads as (what the embedded cluster returns;
    only a register's read answers 404 for nothing there, and every type reads None as empty)."""
    return BY_NAMESPACE[check_namespace(ns)].from_json(key, data)
