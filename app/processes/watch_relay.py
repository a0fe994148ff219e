"""`serve --processes`: a watch relayed from the replica process's own `GET .../watch`.

The replica keeps the feed, the cursors and the bounds; this end opens one HTTP/1.1 request
per watch on loopback and passes the event stream's bytes on as they come (de-chunked), so the
cursor a client resumes with is the replica's own. Nothing is buffered here beyond the chunk
in hand: when the client does not read, this end stops reading, the replica's send blocks, and
the replica drops the watch (`overflow`) as it would a direct reader; the event then arrives
here and is passed on, and the stream ends.
"""

from __future__ import annotations

from ssl import SSLContext

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import NoReturn
from urllib.parse import quote, urlencode

MAX_HEAD = 64 * 1024


class RelayedWatch:
    """A `contract.ChangeStream` over the replica's stream. `dropped` never fires here: the
    replica decides that and says so in the stream itself."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w
        self.dropped = asyncio.Event()

    @classmethod
    async def open(cls, host: str, port: int, rid: str, prefix: str, types: frozenset[str] | None,
                   cursor: str | None, on_error: Callable[[int, bytes], NoReturn], timeout: float, *,
                   ssl: SSLContext | None = None, headers: dict[str, str] | None = None) -> RelayedWatch:
        """Connect and read the answer's head; an error answer goes to `on_error` (it raises).
        `ssl`, `headers`: for a replica behind https and a token (`serve --attach`)."""
        r, w = await asyncio.wait_for(asyncio.open_connection(
            host, port, limit=MAX_HEAD, ssl=ssl, server_hostname=host.strip("[]") if ssl else None), timeout)
        try:
            q = {"prefix": prefix, **({"types": ",".join(sorted(types))} if types else {}),
                 **({"cursor": cursor} if cursor else {})}
            extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
            w.write((f"GET /api/replicas/{quote(rid, safe='')}/watch?{urlencode(q)} HTTP/1.1\r\n"
                     f"Host: {host}:{port}\r\nAccept: text/event-stream\r\n{extra}\r\n").encode())
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), timeout)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
            if status != 200:
                n = int(headers.get("content-length", "0"))
                body = await asyncio.wait_for(r.readexactly(n), timeout) if n else b""
                on_error(status, body)
            if headers.get("transfer-encoding", "").lower() != "chunked":
                raise ConnectionError("the replica's watch stream is not chunked")
        except BaseException:
            w.close()
            raise
        return cls(r, w)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        r = self.r
        try:
            while True:
                size = int((await r.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    return
                data = await r.readexactly(size)
                await r.readexactly(2)
                yield data
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            return  # the replica went away: the client reconnects with its last id

    def farewell(self) -> bytes:
        return b""

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.w.close()
