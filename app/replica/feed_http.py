"""`GET /api/events`: a replica's event feed over its own HTTP, for a dashboard on another host.

`edgestate serve --attach` reads it (`app/attach/`); it carries what `--events` sends a local
dashboard over TCP (`events.EventFeed`: `status`, `applied`, `sent`, `membership`), as
Server-Sent Events, one JSON object per `data:` line. The first event is the current
`status`, so a reader knows at once what the replica holds; a comment line (`: keep-alive`)
every KEEPALIVE_S lets a reader tell a silent replica from a cut link.

Who may read it: on a replica with a token (`--token`/`--admin-token`) only a caller presenting
one of them, even where other reads are open: it names every key written and every frame sent.
Open replicas (loopback, no token) answer anyone, as their other routes do.

Bounded per connection: each reader has a queue of MAX_QUEUED events. A reader that falls so
far behind is sent `event: overflow` (saying how many it was behind) and the stream ends; it
may reconnect and starts again from the current status. Events are never buffered without
limit, and the replica never waits for a reader.

This is not the per-key change stream for clients (`/api/replicas/{id}/watch`): it has no
cursor and does not resume; a dashboard only needs the present and what happens next.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ..web.errors import ApiError
from ..web.security import ACCESS_SCOPE_KEY, Access
from .events import EventFeed

MAX_QUEUED = 10_000
KEEPALIVE_S = 1.0
MAX_READERS = 16  # a dashboard holds one; a few more for a second screen or a test

router = APIRouter()


class Reader:
    """One connection's bounded queue; `overflowed` once it had to drop."""

    def __init__(self, limit: int = MAX_QUEUED) -> None:
        self.queue: asyncio.Queue[dict] = asyncio.Queue(limit)
        self.overflowed = False

    def put(self, ev: dict) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(ev)
        except asyncio.QueueFull:
            self.overflowed = True


def frame(ev: dict) -> bytes:
    return b"data: " + orjson.dumps(ev) + b"\n\n"


async def stream(feed: EventFeed, reader: Reader, keepalive_s: float = KEEPALIVE_S,
                 stopping: Callable[[], bool] = lambda: False) -> AsyncIterator[bytes]:
    """The reader's stream, until it overflows or `stopping()` (the server shuts down: uvicorn
    waits for every open response before the replica's clean stop, so a stream must end)."""
    now = feed.status_now()
    if now is not None:
        yield frame(now)
    while not stopping():
        if reader.overflowed:
            yield b"event: overflow\ndata: " + orjson.dumps(
                {"message": f"this reader fell {reader.queue.qsize()} events behind and was dropped; reconnect"}
            ) + b"\n\n"
            return
        try:
            ev = await asyncio.wait_for(reader.queue.get(), keepalive_s)
        except asyncio.TimeoutError:
            yield b": keep-alive\n\n"
            continue
        chunk = [frame(ev)]
        while not reader.queue.empty() and len(chunk) < 500:  # what has piled up goes in one write
            chunk.append(frame(reader.queue.get_nowait()))
        yield b"".join(chunk)


@router.get("/api/events", include_in_schema=True, summary="This replica's event feed (Server-Sent Events)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "the events, until the reader "
                                                                                 "leaves or falls behind"}})
async def events(request: Request) -> StreamingResponse:
    """What `serve --attach` draws: `status` first, then `applied`, `sent`, `membership` and `status`
    events as they happen. Needs the replica's token wherever it has one."""
    settings = request.app.state.settings
    access: Access | None = request.scope.get(ACCESS_SCOPE_KEY)
    if not settings.open and not (access is not None and access.authenticated):
        raise ApiError(401, "unauthorized", "the event feed needs this replica's token: "
                                            "send Authorization: Bearer <token>")
    feeds: dict = request.app.state.feed_readers
    feed: EventFeed | None = request.app.state.feed
    if feed is None:
        raise ApiError(404, "not_found", "this replica has no event feed")
    if len(feeds) >= MAX_READERS:
        raise ApiError(429, "too_many_readers", f"at most {MAX_READERS} readers of /api/events at once")
    reader = Reader()

    async def body() -> AsyncIterator[bytes]:
        # subscribed and counted here, not in the route: a generator that never starts (the
        # client left before the first byte) then holds nothing
        feeds[id(reader)] = reader
        stop = feed.subscribe(reader.put)
        try:
            async for chunk in stream(feed, reader, stopping=request.app.state.stopping):
                yield chunk
        finally:
            stop()
            feeds.pop(id(reader), None)

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


__all__ = ["KEEPALIVE_S", "MAX_QUEUED", "MAX_READERS", "Reader", "router", "stream"]
