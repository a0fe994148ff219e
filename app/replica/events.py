"""Replica processes report what happens in them to a dashboard (or a benchmark).

`EventFeed` is the one source: it stamps the node's events and fans them out to whoever
listens, and says nothing (builds nothing) while no one does. Two kinds of listener:
`EventStream`, the TCP stream below (`--events`, for `serve --processes` on this host), and
readers of the replica's own `GET /api/events` (`app/replica/feed_http.py`, for `serve
--attach` on other hosts).

The stream is JSON lines, one event per line, each stamped with the replica's id and the
host's wall clock in milliseconds (`t`): processes on one host share that clock, so a
collector can line up "written at lhr" with "applied at syd". Kinds:

- `applied`: `dots`, `keys`, `via` ("local" for the replica's own write), as the node reports;
- `membership`: `peer`, `status`;
- `sent`: `dst`, `kind`, `due` (when the frame will be written, after injected latency), `bytes`;
- `status`: `actor`, `version_vector`, `digest`, `keys`, sent when it changed (at most every 200 ms).

The replica never waits for the collector: events queue in memory (bounded; the oldest go
first when it is full, counted in the next status as `events_dropped`), and a collector that
is down is retried with backoff. The first line a replica sends is `{"hello": <token>}`,
the token from `EDGESTATE_EVENTS_TOKEN`; a collector drops a connection whose first line
does not carry its token, so another local user cannot paint events on someone's map.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
from collections import deque
from collections.abc import Callable

import orjson

log = logging.getLogger("edgestate.events")

TOKEN_ENV = "EDGESTATE_EVENTS_TOKEN"
MAX_QUEUED = 50_000
STATUS_EVERY_S = 0.2
MAX_LINE = 1024 * 1024


def _plain(ev: tuple) -> dict:
    kind, data = ev
    out = {"type": kind}
    for k, v in data.items():
        if k == "dots":
            v = [[d[0], d[1]] for d in v]
        elif k == "keys":
            v = [[ns, key] for ns, key in v]
        out[k] = v
    return out


class EventFeed:
    """This replica's events, each a JSON-ready dict built once and handed to every listener.

    Listeners are called synchronously from the node's callbacks: each must only queue (and
    bound its queue). The `status` event is sent when it changed, at most every STATUS_EVERY_S;
    a listener that joins late asks `status_now()` for the current one."""

    def __init__(self, replica_id: str) -> None:
        self.id = replica_id
        self._listeners: list[Callable[[dict], None]] = []
        self._runner = None
        self._task: asyncio.Task | None = None
        self.dropped = 0  # events a listener had to drop (its queue full), reported in `status`

    def subscribe(self, fn: Callable[[dict], None]) -> Callable[[], None]:
        self._listeners.append(fn)

        def stop() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(fn)

        return stop

    def _emit(self, obj: dict) -> None:
        for fn in list(self._listeners):
            fn(obj)

    def push(self, events: list[tuple]) -> None:
        if not self._listeners:
            return
        t = time.time() * 1000.0
        for ev in events:
            self._emit({"replica": self.id, "t": t, **_plain(ev)})

    def sent(self, dst: str, kind: str, delay_ms: float, nbytes: int) -> None:
        if not self._listeners:
            return
        t = time.time() * 1000.0
        self._emit({"replica": self.id, "t": t, "type": "sent", "dst": dst, "kind": kind, "due": t + delay_ms,
                    "bytes": nbytes})

    def start(self, runner) -> None:
        self._runner = runner
        self._task = asyncio.get_running_loop().create_task(self._status())

    def _snapshot(self) -> dict:
        s = self._runner.status()
        node = self._runner.node
        # the SWIM probes' measured round trips (smoothed), for the dashboard to show beside the model's
        rtt = {p: round(ms, 3) for p, ms in node.membership.rtt_ms.items()} if node is not None else {}
        return {"actor": s["actor"], "version_vector": s["version_vector"], "digest": s["digest"],
                "keys": s["keys"], "peers": s["peers"], "rtt_ms": rtt, "events_dropped": self.dropped}

    def status_now(self) -> dict | None:
        """The current `status` event (None before `start`)."""
        if self._runner is None:
            return None
        return {"replica": self.id, "t": time.time() * 1000.0, "type": "status", **self._snapshot()}

    async def _status(self) -> None:
        last = None
        while True:
            if self._listeners:
                snap = self._snapshot()
                if snap != last:
                    last = snap
                    self._emit({"replica": self.id, "t": time.time() * 1000.0, "type": "status", **snap})
            else:
                last = None  # the next listener gets a status at once
            await asyncio.sleep(STATUS_EVERY_S)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class EventStream:
    """The TCP stream to one collector (`--events`): a listener of the feed."""

    def __init__(self, replica_id: str, host: str, port: int, *, token: str | None = None) -> None:
        self.id = replica_id
        self.addr = (host, port)
        self.token = token if token is not None else os.environ.get(TOKEN_ENV, "")
        self._queue: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.dropped = 0
        self._feed: EventFeed | None = None

    def put(self, obj: dict) -> None:
        if len(self._queue) >= MAX_QUEUED:
            self._queue.popleft()
            self.dropped += 1
            if self._feed is not None:
                self._feed.dropped += 1
        self._queue.append(orjson.dumps(obj) + b"\n")
        self._wake.set()

    def start(self, feed: EventFeed) -> None:
        self._feed = feed
        feed.subscribe(self.put)
        self._tasks = [asyncio.get_running_loop().create_task(self._send())]

    async def _send(self) -> None:
        backoff = 0.05
        while True:
            try:
                _r, w = await asyncio.open_connection(*self.addr)
            except OSError:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            try:
                w.write(orjson.dumps({"hello": self.token, "replica": self.id}) + b"\n")
                while True:
                    if not self._queue:
                        self._wake.clear()
                        await self._wake.wait()
                    batch = []
                    while self._queue and len(batch) < 1000:
                        batch.append(self._queue.popleft())
                    w.write(b"".join(batch))
                    await w.drain()
            except (ConnectionError, OSError):
                pass  # the collector went away: reconnect; events sent meanwhile may be lost
            finally:
                w.close()

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


class EventCollector:
    """The receiving end: a loopback server that hands each event (a dict) to `on_event`."""

    def __init__(self, on_event: Callable[[dict], None], *, token: str, host: str = "127.0.0.1") -> None:
        self.on_event = on_event
        self.token = token
        self.host = host
        self.port = 0
        self._server = None
        self._conns: set[asyncio.Task] = set()
        self.rejected = 0

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve, self.host, port, limit=MAX_LINE)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._conns.add(task)
        try:
            hello = orjson.loads(await reader.readline())
            if not (isinstance(hello, dict) and isinstance(hello.get("hello"), str)
                    and hmac.compare_digest(hello["hello"].encode(), self.token.encode())):
                self.rejected += 1
                return
            while True:
                line = await reader.readline()
                if not line:
                    return
                ev = orjson.loads(line)
                if isinstance(ev, dict) and isinstance(ev.get("replica"), str):
                    self.on_event(ev)
        except (orjson.JSONDecodeError, ValueError, ConnectionError, OSError, asyncio.LimitOverrunError):
            self.rejected += 1
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()
            self._conns.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._conns):
            t.cancel()


__all__ = ["TOKEN_ENV", "EventCollector", "EventFeed", "EventStream"]
