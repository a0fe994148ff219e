"""`GET /api/replicas/{id}/watch`: a replica's changes as Server-Sent Events.

One event per change the replica applied (`replication.changefeed`): its own writes, remote
deltas, anti-entropy and content repairs. The stream is plain SSE:

    id: RUN.SEQ                     the cursor: send it back as `Last-Event-ID` (or `?cursor=`)
    data: {"key", "type", "view", "origin", "via", "version_vector"}

`view` is what the key's GET route answers (`api.view_json`), read when the event is sent: never
older than the change, possibly newer (a later change to the same key then shows the same view).
Other events: `event: reset` (the cursor cannot be resumed without a gap: another server run,
a replica that lost or rolled back its state, older than the 10,000 changes kept; re-list the
keys with `GET /api/replicas/{id}/{type}`, then go on, the stream continues from now with the
cursor in its `id`), `event: overflow` (this reader fell more than the ring behind; the stream
closes, a reconnect with the last id gets `reset`), and `: ping` comment lines every 15 s.

Bounds: a connection holds no queue of its own (the replica's ring is the queue, shared); it is
dropped once the ring has passed it, even while its socket is blocked (the send is raced against
that), so a reader that never reads costs a blocked socket buffer and nothing more. At most
MAX_WATCHERS streams per server: beyond, 503 `too_many_watchers`.

`LocalWatch` is the stream of a replica held in this process (the simulator, a replica
process); `serve --processes` relays the replica process's own stream (`processes/cluster.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from replication.changefeed import ChangeFeed, Watcher
from replication.crdts import BY_NAMESPACE
from replication.errors import EdgeStateError
from replication.values import MAX_KEY_BYTES

from .api import AUTH, ERRORS, view_json
from .errors import ApiError

MAX_WATCHERS = 1_000  # concurrent streams per server
HEARTBEAT_S = 15.0
TAKE = 500  # changes looked at per wake: one chunk on the wire
FAREWELL_S = 1.0  # how long the `overflow` event may take to go out before the connection is cut

Read = Callable[[str, str], Awaitable[Any]]


def sse(data: dict, *, event: str | None = None, id: str | None = None) -> bytes:
    head = (f"event: {event}\n" if event else "") + (f"id: {id}\n" if id else "")
    return head.encode() + b"data: " + orjson.dumps(data) + b"\n\n"


class LocalWatch:
    """One watch over a feed in this process: an async iterator of SSE chunks, and `dropped`,
    set once the reader is too far behind (then `farewell()` is the last chunk to try)."""

    def __init__(self, feed: ChangeFeed, replica_id: str, cursor: str | None, *, prefix: str = "",
                 types: frozenset[str] | None = None, read: Read, heartbeat_s: float = HEARTBEAT_S) -> None:
        pos = feed.position(cursor)  # InvalidCursor (400) before the response starts
        self.reset_first = pos is None
        self.w = Watcher(feed, feed.seq if pos is None else pos, prefix=prefix, types=types)
        self.id = replica_id
        self.read = read
        self.heartbeat_s = heartbeat_s
        self.wake = asyncio.Event()
        self.dropped = asyncio.Event()
        self._unsub = feed.subscribe(self._changed)

    def _changed(self) -> None:
        self.wake.set()
        if self.w.lost and not self.w.renewed:
            self.dropped.set()

    def _reset(self, reason: str) -> bytes:
        self.w.restart()
        cur = self.w.feed.cursor(self.w.pos)
        return sse({"reason": reason, "cursor": cur}, event="reset", id=cur)

    def farewell(self) -> bytes:
        return sse({"message": f"this reader fell more than {self.w.feed.capacity} changes behind; "
                               "reconnect with the last event id (you will get `reset`)"}, event="overflow")

    def close(self) -> None:
        self._unsub()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        w = self.w
        yield (self._reset("the cursor cannot be resumed: re-list the keys, then follow this stream")
               if self.reset_first else b": watching\n\n")
        while True:
            if w.renewed:
                yield self._reset("the replica's changes were renewed (it restarted or rolled back): re-list the keys")
                continue
            if w.lost:
                self.dropped.set()
                return
            changes = w.take(TAKE)
            if changes:
                chunk = []
                for c in changes:
                    try:
                        value = await self.read(c.ns, c.key)
                    except EdgeStateError:  # the replica went down (or is recovering): reconnect later
                        return
                    view = view_json(c.ns, self.id, c.key, value)
                    chunk.append(sse({"key": c.key, "type": c.ns, "view": view, "origin": c.origin, "via": c.via,
                                      "version_vector": c.version_vector}, id=w.feed.cursor(c.seq)))
                if w.renewed:  # what was read may be undone state's: the reset above says so
                    continue
                yield b"".join(chunk)
                continue
            if w.pos < w.feed.seq:
                continue  # passed over changes it does not want
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), self.heartbeat_s)
            except TimeoutError:
                yield b": ping\n\n"


class _Gate:
    """The server's count of open watches (MAX_WATCHERS)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.open = limit, 0


def _gate(request: Request) -> _Gate:
    gate = getattr(request.app.state, "watch_gate", None)
    if gate is None:
        gate = request.app.state.watch_gate = _Gate(getattr(request.app.state, "max_watchers", MAX_WATCHERS))
    return gate


class EventStream(Response):
    """The response: SSE chunks from a watch, each send raced against the watch being dropped
    (a blocked socket cannot hold it), ended when the client goes away."""

    media_type = "text/event-stream"

    def __init__(self, watch, gate: _Gate) -> None:
        super().__init__(None, status_code=200)
        self.watch, self.gate = watch, gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch, gate = self.watch, self.gate
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store"),
                (b"x-accel-buffering", b"no")]})
            gone = asyncio.Event()

            async def listen() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone.set()

            listener = asyncio.create_task(listen())
            dropped = asyncio.create_task(watch.dropped.wait())
            left = asyncio.create_task(gone.wait())
            chunks = aiter(watch)
            try:
                while True:
                    nxt = asyncio.ensure_future(anext(chunks))
                    done, _ = await asyncio.wait({nxt, dropped, left}, return_when=asyncio.FIRST_COMPLETED)
                    if nxt not in done:
                        nxt.cancel()
                        break
                    try:
                        chunk = nxt.result()
                    except StopAsyncIteration:
                        break
                    sending = asyncio.ensure_future(send({"type": "http.response.body", "body": chunk,
                                                          "more_body": True}))
                    done, _ = await asyncio.wait({sending, dropped, left}, return_when=asyncio.FIRST_COMPLETED)
                    if sending not in done:
                        sending.cancel()
                        break
                    sending.result()
                if watch.dropped.is_set() and not gone.is_set():
                    with contextlib.suppress(Exception, TimeoutError):
                        await asyncio.wait_for(send({"type": "http.response.body", "body": watch.farewell(),
                                                     "more_body": True}), FAREWELL_S)
                with contextlib.suppress(Exception, TimeoutError):
                    await asyncio.wait_for(send({"type": "http.response.body", "body": b"", "more_body": False}),
                                           FAREWELL_S)
            finally:
                for t in (listener, dropped, left):
                    t.cancel()
                with contextlib.suppress(BaseException):
                    await chunks.aclose()
        finally:
            watch.close()
            gate.open -= 1


router = APIRouter()


@router.get("/api/replicas/{replica_id}/watch", dependencies=AUTH, name="watch_replica",
            responses={200: {"description": "Server-Sent Events, one per change (see the README)",
                             "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                       **{s: ERRORS[s] for s in (400, 401, 403, 404, 422, 503)}})
async def watch_replica(
    request: Request,
    replica_id: str,
    prefix: str = Query("", description="only keys that start with this text", max_length=MAX_KEY_BYTES),
    types: str | None = Query(None, description="comma-separated types (`kv,counters`); default: every type"),
    cursor: str | None = Query(None, description="resume after this event id (as `Last-Event-ID` does)",
                               max_length=64),
    last_event_id: str | None = Header(None, alias="Last-Event-ID", description="the last event id received"),
):
    """Follow this replica's changes as Server-Sent Events: every key it applies a change to (its own writes,
    other replicas' deltas, repairs), with the key's view, the writer (`origin`) and the replica's version
    vector after it. Resume after a disconnect with the last event id (`Last-Event-ID`, or `?cursor=`): every
    change since comes, in order, once; when that is impossible a `reset` event says to re-list."""
    wanted = None
    if types is not None:
        wanted = frozenset(t.strip() for t in types.split(",") if t.strip())
        unknown = sorted(wanted - BY_NAMESPACE.keys())
        if unknown or not wanted:
            raise ApiError(422, "invalid_types", f"types must name some of {sorted(BY_NAMESPACE)}; not {unknown}")
    if cursor is not None and last_event_id is not None and cursor != last_event_id:
        raise ApiError(422, "invalid_cursor", "give the cursor as Last-Event-ID or ?cursor=, not two different ones")
    gate = _gate(request)
    if gate.open >= gate.limit:
        raise ApiError(503, "too_many_watchers", f"this server serves at most {gate.limit} watches at once; retry later")
    watch = await request.app.state.live.awatch(replica_id, prefix, wanted, cursor or last_event_id)
    gate.open += 1
    return EventStream(watch, gate)


__all__ = ["MAX_WATCHERS", "EventStream", "LocalWatch", "router", "sse"]
