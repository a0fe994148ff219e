"""Following one attached replica's event feed (`GET /api/events`, Server-Sent Events).

`follow` runs as a task for the dashboard's life: it connects (TLS where the URL is https,
the replica's token in `Authorization`), hands each event to `on_event`, and says when the
replica is reachable (`on_up`, at its first event) and when not (`on_down(reason)`: refused,
timed out, the link silent past READ_TIMEOUT_S, an HTTP error with the replica's own code, or
the reader dropped for falling behind). Then it tries again after a backoff that doubles from
BACKOFF_MIN_S to BACKOFF_MAX_S, back to the minimum once a connection delivered events.

Every step is awaited with a deadline on the event loop: nothing here blocks it, and a
replica that hangs costs a task, not the dashboard.

Event times are the dashboard's: each event's `t` (the replica's wall clock) is replaced by
the time it arrived here, and `due` moved by the same amount, so a replica whose clock is off
by seconds still draws its messages in order with the others'.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import orjson

from .config import Target

log = logging.getLogger("edgestate.attach")

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 5.0  # the replica sends a keep-alive every second (`feed_http.KEEPALIVE_S`)
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0
MAX_LINE = 1024 * 1024
MAX_HEAD = 64 * 1024


class FeedError(Exception):
    """Why the feed is not flowing, in words for the operator."""


async def _head(r: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    line = await asyncio.wait_for(r.readline(), READ_TIMEOUT_S)
    if not line:
        raise FeedError("the connection closed before an answer")
    try:
        status = int(line.split()[1])
    except (IndexError, ValueError):
        raise FeedError(f"not an HTTP answer: {line[:60]!r}") from None
    headers: dict[str, str] = {}
    size = len(line)
    while True:
        h = await asyncio.wait_for(r.readline(), READ_TIMEOUT_S)
        size += len(h)
        if size > MAX_HEAD:
            raise FeedError("an answer's head over 64 KiB")
        if h in (b"\r\n", b"\n", b""):
            return status, headers
        name, _, value = h.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")


async def _chunks(r: asyncio.StreamReader, chunked: bool) -> AsyncIterator[bytes]:
    """The body's bytes as they come (HTTP/1.1 chunked transfer coding undone)."""
    while True:
        if not chunked:
            data = await asyncio.wait_for(r.read(65536), READ_TIMEOUT_S)
            if not data:
                return
            yield data
            continue
        size_line = await asyncio.wait_for(r.readline(), READ_TIMEOUT_S)
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError:
            raise FeedError(f"a bad chunk size line: {size_line[:40]!r}") from None
        if size == 0:
            return
        if size > MAX_LINE:
            raise FeedError("a chunk over 1 MiB")
        data = await asyncio.wait_for(r.readexactly(size + 2), READ_TIMEOUT_S)
        yield data[:-2]


def _error_reason(status: int, body: bytes) -> str:
    try:
        err = orjson.loads(body)["error"]
        return f"HTTP {status} {err['code']}: {err['message']}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"HTTP {status}"


def retime(ev: dict, now_ms: float) -> dict:
    """`t` becomes when it arrived here; `due` keeps its distance from `t`."""
    t = ev.get("t")
    if isinstance(t, (int, float)):
        if isinstance(ev.get("due"), (int, float)):
            ev["due"] = now_ms + (ev["due"] - t)
    ev["t"] = now_ms
    return ev


async def read_once(target: Target, on_event: Callable[[dict], None], on_up: Callable[[], None]) -> None:
    """One connection, until it ends: raises FeedError (or OSError, a timeout) saying why."""
    ctx = target.ssl_context()
    try:
        r, w = await asyncio.wait_for(
            asyncio.open_connection(target.host, target.port, ssl=ctx, limit=MAX_LINE,
                                    server_hostname=target.host if ctx else None), CONNECT_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise FeedError(f"no connection within {CONNECT_TIMEOUT_S:.0f} s") from None
    try:
        auth = f"Authorization: Bearer {target.token}\r\n" if target.token else ""
        host = f"[{target.host}]" if ":" in target.host else target.host
        w.write(f"GET /api/events HTTP/1.1\r\nHost: {host}:{target.port}\r\nAccept: text/event-stream\r\n"
                f"{auth}\r\n".encode())
        await asyncio.wait_for(w.drain(), READ_TIMEOUT_S)
        status, headers = await _head(r)
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if status != 200:
            body = b""
            if "content-length" in headers:
                n = min(int(headers["content-length"]), MAX_HEAD)
                body = await asyncio.wait_for(r.readexactly(n), READ_TIMEOUT_S)
            raise FeedError(_error_reason(status, body))
        buf = b""
        event_name = ""
        data: list[bytes] = []
        up = False
        async for piece in _chunks(r, chunked):
            buf += piece
            if len(buf) > MAX_LINE and b"\n" not in buf:
                raise FeedError("an event over 1 MiB")
            *lines, buf = buf.split(b"\n")
            for line in lines:
                line = line.rstrip(b"\r")
                if line == b"":
                    if event_name == "overflow":
                        raise FeedError("this dashboard fell behind the replica's events and was dropped")
                    if data:
                        ev = orjson.loads(b"\n".join(data))
                        if isinstance(ev, dict) and ev.get("replica") == target.id:
                            if not up:
                                up = True
                                on_up()
                            on_event(retime(ev, time.time() * 1000.0))
                        elif isinstance(ev, dict) and "replica" in ev:
                            raise FeedError(f"the replica at {target.url} says it is {ev.get('replica')!r}, "
                                            f"not {target.id!r}")
                    event_name, data = "", []
                elif line.startswith(b":"):
                    continue  # keep-alive
                elif line.startswith(b"data:"):
                    data.append(line[5:].lstrip(b" "))
                elif line.startswith(b"event:"):
                    event_name = line[6:].strip().decode("latin-1")
        raise FeedError("the replica closed the stream")
    finally:
        w.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(w.wait_closed(), 1.0)


def describe(e: BaseException) -> str:
    if isinstance(e, FeedError):
        return str(e)
    if isinstance(e, asyncio.TimeoutError):
        return f"silent for {READ_TIMEOUT_S:.0f} s (no event, no keep-alive)"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, orjson.JSONDecodeError):
        return "an event that is not JSON"
    if isinstance(e, OSError):
        return e.strerror or repr(e)
    return repr(e)


async def follow(target: Target, on_event: Callable[[dict], None], on_up: Callable[[], None],
                 on_down: Callable[[str], None], *, backoff_min_s: float = BACKOFF_MIN_S,
                 backoff_max_s: float = BACKOFF_MAX_S) -> None:
    """Forever (until cancelled): read the feed, say why it stopped, wait, again."""
    backoff = backoff_min_s
    last = None
    while True:
        delivered = False

        def up() -> None:
            nonlocal delivered
            delivered = True
            on_up()

        try:
            await read_once(target, on_event, up)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - every way a remote feed can fail is a reason to show
            reason = describe(e)
            if delivered:
                backoff = backoff_min_s
            # a line when the reason changes, not one per retry of a replica that stays away
            log.log(logging.WARNING if reason != last else logging.DEBUG,
                    "replica %s at %s: %s; trying again in %.1f s", target.id, target.url, reason, backoff)
            last = reason
            on_down(reason)
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, backoff_max_s)


__all__ = ["FeedError", "follow", "read_once", "retime"]
