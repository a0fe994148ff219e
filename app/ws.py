"""WebSocket `/ws`: the live stream the dashboard draws.

On connect a client gets one snapshot; then a stream of batches. Every message is a binary
frame holding UTF-8 JSON: an array of event objects (`[{"kind": "snapshot", ...}]` first,
then `[{"kind": "sent", ...}, {"kind": "applied", ...}, {"kind": "state", ...}, ...]`).

How it stays cheap and never stalls the cluster:

- The bus calls `Hub.on_event` synchronously inside the simulator loop. It never awaits and
  never touches asyncio: it filters the event, serialises it once (orjson) and appends the
  bytes to a list. Bytes, not dicts, wait for the frame: the garbage collector does not
  track them, so thousands of events a second do not make its full collections frequent.
- Once per frame (`FRAME_S`) the hub's loop task joins what is pending into one batch and
  hands the same bytes object to every client's queue. Replica states, convergence, the
  clock, counters and the selected-POP detail are coalesced slots: each is serialised once
  per frame, and a client that is behind holds only the latest per replica (latest wins),
  never a backlog of them.
- Each client has its own sender task and a bounded queue of frames. A client more than
  `max_batches` frames or `max_bytes` behind is dropped with close code 1013 (try again
  later); the page reconnects and gets a fresh snapshot. Its sender may be blocked inside a
  slow socket write: it is cancelled, nothing else waits for it.

What is forwarded (and why):

- `sent` for the kinds the map animates (`ANIMATED`: write payloads, plumtree IHAVE
  announcements, GRAFT repairs, anti-entropy replies): src, dst, t, deliver_at, mid. The
  page flies each along its great-circle arc, timed by the simulation clock; `deliver_at`
  is null when the message was lost or cut off when sent.
- `dropped` for the animated kinds (the reason: loss, partition, crashed).
- `applied`, `crash`, `recover`, `partition`, `heal`.
- `scenario`: a running scenario's progress (name, run, step, of, op, caption, status
  running/passed/failed, and a check's or a step's figures).
- Not forwarded one by one: `delivered` (the page lands a message at its deliver_at), SWIM
  pings/acks/ping-reqs, anti-entropy digests, neighbour/prune/graft_ack control traffic,
  `membership` changes and `write` (its `applied` carries the same). They are counted:
  the `counters` slot carries the simulator's message counts by kind twice a second.

Event fields are those of `app.events` plus `"w"`: the server's wall clock (Unix ms) when
the hub saw the event, so a client (the `bench ws` benchmark) can measure its lag.

Client -> server: `{"select": "<replica id>"}` (or null) asks for the `detail` slot: that
replica's keys, values (siblings side by side), counters and sets, resent when its state
changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict, deque
from typing import Any, Callable

import orjson
from fastapi import APIRouter, FastAPI, WebSocket

from replication.contract import ClusterObserver

log = logging.getLogger(__name__)

FRAME_S = 0.05  # one batch per client per frame at most: 20 per second
COUNTERS_EVERY_S = 0.5
CLOCK_EVERY_S = 1.0
ANIMATED = frozenset({"payload", "ihave", "graft", "ae_reply"})
CLOSE_TOO_SLOW = 1013  # "try again later": the client fell behind the stream
DEFAULT_MAX_BATCHES = 64  # frames a client may be behind: about three seconds
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
MAX_IN_FLIGHT = 4000  # animated messages remembered for the snapshot
RECENT_WRITES = 12
RECENT_KEYS = 2000
MAX_CLIENT_MESSAGE = 4096

_EVENT_KINDS = frozenset({"crash", "recover"})


def dumps(obj: Any) -> bytes:
    """orjson, falling back to the standard library for what orjson refuses (huge ints)."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), default=str).encode("utf-8")


def _wall_ms() -> float:
    return round(time.time() * 1000.0, 1)


class Client:
    """One connection's queue: frames (shared bytes) plus coalesced slots, drained by its sender."""

    def __init__(self, max_batches: int, max_bytes: int) -> None:
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self.batches: deque[bytes] = deque()
        self.bytes = 0
        self.states: dict[str, bytes] = {}  # replica id -> its latest state event
        self.slots: dict[str, bytes] = {}  # "convergence", "clock", "counters", "detail" -> latest
        self.wake = asyncio.Event()
        self.dropped = False
        self.closed = False
        self.sending = False
        self.sender: asyncio.Task | None = None
        self.select: str | None = None
        self.detail_sent: tuple | None = None  # (replica, digest, status) of the last detail queued
        self.messages = 0
        self.first: bytes | None = None  # the snapshot, sent before anything else

    def offer(self, batch: bytes) -> bool:
        """Queue a frame; False when that puts the client over its bound."""
        self.batches.append(batch)
        self.bytes += len(batch)
        return len(self.batches) <= self.max_batches and self.bytes <= self.max_bytes

    def take(self) -> bytes | None:
        """Everything queued, as one JSON array: frames first, then the latest of each slot."""
        if not self.batches and not self.states and not self.slots:
            return None
        if len(self.batches) == 1 and not self.states and not self.slots:
            out = self.batches.popleft()
            self.bytes = 0
            return out
        parts: list = []
        while self.batches:
            b = self.batches.popleft()
            if len(b) > 2:
                parts.append(memoryview(b)[1:-1])
        self.bytes = 0
        parts.extend(self.states.values())
        parts.extend(self.slots.values())
        self.states.clear()
        self.slots.clear()
        return b"[" + b",".join(parts) + b"]"

    async def run(self, websocket: WebSocket) -> None:
        """The sender task: one per client, so a slow socket only ever blocks itself."""
        if self.first is not None:  # the snapshot, on its own
            first, self.first = self.first, None
            self.sending = True
            try:
                await websocket.send_bytes(first)
            finally:
                self.sending = False
            self.messages += 1
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.dropped or self.closed:
                return
            data = self.take()
            if data is None:
                continue
            self.sending = True
            try:
                await websocket.send_bytes(data)
            finally:
                self.sending = False
            self.messages += 1


class Hub:
    """Subscribes to the cluster's bus and fans its events out to WebSocket clients."""

    def __init__(
        self,
        live: ClusterObserver,
        *,
        state: Any = None,
        frame_s: float = FRAME_S,
        max_batches: int = DEFAULT_MAX_BATCHES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        wall_ms: Callable[[], float] = _wall_ms,
    ) -> None:
        self.live = live
        self._app_state = state  # where the metrics hooks live, when they do
        self.frame_s = frame_s
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self.wall_ms = wall_ms
        self.clients: set[Client] = set()
        self._pending: list[bytes] = []
        self._dirty: set[str] = set()
        self._task: asyncio.Task | None = None
        self._topology: dict | None = None
        # what a snapshot needs, kept from the stream itself
        self.in_flight: dict[int, bytes] = {}  # mid -> its serialised "sent" event
        self.groups: list[list[str]] | None = None
        self.writes: OrderedDict[str, dict] = OrderedDict()
        self._write_of_dot: dict[tuple, str] = {}
        self._recent_keys: OrderedDict[tuple, None] = OrderedDict()
        # counters
        self.events_total = 0
        self.forwarded_total = 0
        self.membership_changes = 0
        self.dropped_clients = 0
        self.frames = 0
        self.events_serialised = 0  # once per event, whatever the number of clients
        self.batches_built = 0  # once per frame with events: the same bytes go to every client
        # last values of the coalesced slots, to send only changes
        self._last_conv: dict | None = None
        self._last_clock_key: tuple | None = None
        self._clock_at = 0.0
        self._counters_at = 0.0
        self._unsubscribe = live.bus.subscribe(self.on_event)

    def close(self) -> None:
        self._unsubscribe()

    # -- the bus side: synchronous, inside the simulator loop ------------------------------

    def on_event(self, ev: dict) -> None:
        try:
            self._on_event(ev)
        except Exception:  # never let the dashboard take the bus subscriber down
            log.exception("ws hub: could not handle event %r", ev.get("kind"))

    def _on_event(self, ev: dict) -> None:
        self.events_total += 1
        kind = ev["kind"]
        if kind == "sent":
            msg = ev["msg"]
            if msg not in ANIMATED:
                return
            at = ev["deliver_at"]
            data = dumps({
                "kind": "sent", "t": round(ev["t"], 3), "src": ev["src"], "dst": ev["dst"], "msg": msg,
                "mid": ev["mid"], "deliver_at": None if at is None else round(at, 3), "w": self.wall_ms(),
            })
            if at is not None:
                fl = self.in_flight
                fl[ev["mid"]] = data
                if len(fl) > MAX_IN_FLIGHT:
                    del fl[next(iter(fl))]
            if self.clients:
                self._forward(data)
            return
        if kind == "delivered":
            if ev["msg"] in ANIMATED:
                self.in_flight.pop(ev["mid"], None)
            return
        if kind == "dropped":
            msg = ev["msg"]
            if msg not in ANIMATED:
                return
            self.in_flight.pop(ev["mid"], None)
            out = {"kind": "dropped", "t": round(ev["t"], 3), "src": ev["src"], "dst": ev["dst"], "msg": msg,
                   "mid": ev["mid"], "reason": ev["reason"]}
        elif kind == "applied":
            node = ev["node"]
            self._dirty.add(node)
            self._track_applied(node, ev)
            out = {"kind": "applied", "t": round(ev["t"], 3), "node": node, "dots": ev["dots"], "keys": ev["keys"],
                   "via": ev["via"]}
        elif kind == "status":  # a replica process reported a new version vector or digest
            self._dirty.add(ev["node"])
            return
        elif kind in _EVENT_KINDS:
            self._dirty.add(ev["node"])
            out = {"kind": kind, **ev}  # every event object starts with its kind
        elif kind == "partition":
            self.groups = [list(g) for g in ev["groups"]]
            out = {"kind": "partition", "t": ev["t"], "groups": self.groups}
        elif kind == "heal":
            self.groups = None
            out = {"kind": "heal", "t": ev["t"]}
        elif kind == "membership":
            self.membership_changes += 1
            return
        elif kind == "scenario":  # a scripted scenario's progress: captions, checks, the verdict
            out = dict(ev)
        else:  # "write" (its "applied" says the same) and kinds added later
            return
        if self.clients:
            out["w"] = self.wall_ms()
            self._forward(dumps(out))

    def _forward(self, data: bytes) -> None:
        # Serialised here, once, as the event happens: what waits for the next frame is bytes,
        # which the garbage collector does not track (thousands of pending dicts per second
        # would be promoted to its oldest generation and make full collections frequent).
        self._pending.append(data)
        self.forwarded_total += 1
        self.events_serialised += 1

    def _track_applied(self, node: str, ev: dict) -> None:
        keys = ev["keys"]
        recent = self._recent_keys
        for k in keys:
            ref = (k[0], k[1])
            recent[ref] = None
            recent.move_to_end(ref)
        while len(recent) > RECENT_KEYS:
            recent.popitem(last=False)
        dots = ev["dots"]
        if not dots:
            return
        if ev["via"] == "local":
            first = dots[0]
            wid = f"{first[0]}:{first[1]}"
            self.writes[wid] = {"id": wid, "origin": node, "t": ev["t"], "keys": keys, "arrivals": {node: ev["t"]}}
            for d in dots:
                self._write_of_dot[(d[0], d[1])] = wid
            while len(self.writes) > RECENT_WRITES:
                _, old = self.writes.popitem(last=False)
                self._write_of_dot = {d: w for d, w in self._write_of_dot.items() if w != old["id"]}
            return
        seen = set()
        for d in dots:
            wid = self._write_of_dot.get((d[0], d[1]))
            if wid is not None and wid not in seen:
                seen.add(wid)
                self.writes[wid]["arrivals"].setdefault(node, ev["t"])

    # -- reading the cluster (never mutates it, never runs the simulator) ------------------

    def topology(self) -> dict:
        if self._topology is None:
            self._topology = self.live.topology()
        return self._topology

    def state_of(self, nid: str) -> dict:
        return {"kind": "state", "node": nid, **self.live.state_of(nid)}

    def convergence(self) -> dict:
        digests = self.live.digests()
        distinct = len(set(digests.values()))
        return {"kind": "convergence", "converged": distinct <= 1, "distinct": distinct, "up": len(digests)}

    def clock(self) -> dict:
        return {"kind": "clock", **self.live.clock_info(), "w": self.wall_ms()}

    def counters(self) -> dict:
        st = self.live.stats()
        return {
            "kind": "counters", "sent": st["sent"], "delivered": st["delivered"], "dropped": st["dropped"],
            "dropped_by_reason": st["dropped_by_reason"], "in_flight": st["in_flight"], "writes": st["writes"],
            "membership": self.membership_changes, "events": self.events_total,
            "forwarded": self.forwarded_total, "clients": len(self.clients), "w": self.wall_ms(),
        }

    def detail_of(self, nid: str) -> dict:
        """One replica's keyspace, most recently touched keys first (at most DETAIL_KEYS)."""
        return {"kind": "detail", "node": nid, **self.live.detail(nid, self._recent_keys)}

    def snapshot(self) -> dict:
        return {
            "kind": "snapshot", "w": self.wall_ms(), "topology": self.topology(),
            "replicas": [self.state_of(n) for n in self.live.ids],
            "convergence": self.convergence(), "clock": self.clock(), "counters": self.counters(),
            "groups": self.groups, "writes": list(self.writes.values()), "animated": sorted(ANIMATED),
            "frame_ms": self.frame_s * 1000.0,
        }

    def snapshot_bytes(self) -> bytes:
        """`[snapshot]`, with the in-flight messages spliced in as the bytes already made."""
        body = dumps(self.snapshot())
        flying = b",".join(self.in_flight.values())
        return b"[" + body[:-1] + b',"in_flight":[' + flying + b"]}]"

    # -- clients ---------------------------------------------------------------------------

    def _metrics(self):
        return getattr(self._app_state, "metrics", None) if self._app_state is not None else None

    def connect(self) -> Client:
        """Register a client and queue its snapshot. Synchronous: no event slips in between."""
        if self.clients:
            self.flush()  # what is pending predates this client's snapshot
        else:
            self._pending.clear()
        c = Client(self.max_batches, self.max_bytes)
        if self._last_conv is None:
            self._last_conv = self.convergence()
        c.first = self.snapshot_bytes()
        self.clients.add(c)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._loop())
        m = self._metrics()
        if m is not None:
            m.ws_connected(+1)
        return c

    def disconnect(self, c: Client) -> None:
        c.closed = True
        c.wake.set()
        if c in self.clients:
            self.clients.discard(c)
        m = self._metrics()
        if m is not None:
            m.ws_connected(-1)

    def drop(self, c: Client) -> None:
        """The client fell behind: forget its backlog, stop its sender (even mid-write)."""
        if c.dropped:
            return
        c.dropped = True
        c.batches.clear()
        c.states.clear()
        c.slots.clear()
        self.clients.discard(c)
        self.dropped_clients += 1
        c.wake.set()
        if c.sending and c.sender is not None:
            c.sender.cancel()
        m = self._metrics()
        if m is not None:
            m.ws_dropped()
        log.info("ws: dropped a client that fell behind (more than %d frames or %d bytes queued)",
                 c.max_batches, c.max_bytes)

    def select(self, c: Client, replica: str | None) -> None:
        c.select = replica
        c.detail_sent = None

    async def _loop(self) -> None:
        try:
            while self.clients:
                try:
                    self.flush()
                except Exception:
                    log.exception("ws hub: flush failed")
                await asyncio.sleep(self.frame_s)
        finally:
            self._task = None

    def flush(self, now: float | None = None) -> None:
        """One frame: serialise what is pending once, give the same bytes to every client."""
        now = time.monotonic() if now is None else now
        self.frames += 1
        pending, self._pending = self._pending, []
        batch = None
        if pending:
            batch = b"[" + b",".join(pending) + b"]"
            self.batches_built += 1
        dirty, self._dirty = self._dirty, set()
        states = {n: dumps(self.state_of(n) | {"w": self.wall_ms()}) for n in dirty}
        slots: dict[str, bytes] = {}
        if dirty or self._last_conv is None or pending:
            conv = self.convergence()
            if conv != self._last_conv:
                self._last_conv = conv
                slots["convergence"] = dumps(conv | {"w": self.wall_ms()})
        clock = self.clock()
        key = (clock["speed"], clock["paused"], clock["strategy"], clock["loss"],
               clock["now_ms"] if clock["paused"] else None)
        if key != self._last_clock_key or now - self._clock_at >= CLOCK_EVERY_S:
            self._last_clock_key, self._clock_at = key, now
            slots["clock"] = dumps(clock)
        if now - self._counters_at >= COUNTERS_EVERY_S:
            self._counters_at = now
            slots["counters"] = dumps(self.counters())
        details: dict[str, tuple[tuple, bytes]] = {}
        for c in list(self.clients):
            if batch is not None and not c.offer(batch):
                self.drop(c)
                continue
            if states:
                c.states.update(states)
            if slots:
                c.slots.update(slots)
            if c.select is not None and self.live.has(c.select):
                sel = c.select
                ident = self.live.detail_ident(sel)
                if ident != c.detail_sent:
                    if sel not in details or details[sel][0] != ident:
                        details[sel] = (ident, dumps(self.detail_of(sel) | {"w": self.wall_ms()}))
                    c.slots["detail"] = details[sel][1]
                    c.detail_sent = ident
            if batch is not None or states or slots or "detail" in c.slots:
                c.wake.set()


async def _receive(websocket: WebSocket, hub: Hub, client: Client) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("text")
        if data is None:
            data = message.get("bytes")
        if not data or len(data) > MAX_CLIENT_MESSAGE:
            continue
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "select" in obj:
            sel = obj["select"]
            if sel is None or (isinstance(sel, str) and hub.live.has(sel)):
                hub.select(client, sel)


router = APIRouter()


@router.websocket("/ws")
async def live_stream(websocket: WebSocket) -> None:
    hub: Hub = websocket.app.state.ws_hub
    await websocket.accept()
    client = hub.connect()
    client.sender = asyncio.create_task(client.run(websocket))
    receiver = asyncio.create_task(_receive(websocket, hub, client))
    try:
        await asyncio.wait({client.sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hub.disconnect(client)
        for task in (client.sender, receiver):
            task.cancel()
        for task in (client.sender, receiver):
            with contextlib.suppress(BaseException):
                await task
    if client.dropped:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(websocket.close(code=CLOSE_TOO_SLOW, reason="too slow: fell behind the stream"), 2.0)


def install(app: FastAPI, live: ClusterObserver, **hub_options: Any) -> Hub:
    """Create the hub for this app (subscribed to the live cluster's bus) and route `/ws`."""
    hub = Hub(live, state=app.state, **hub_options)
    app.state.ws_hub = hub
    app.include_router(router)
    return hub
