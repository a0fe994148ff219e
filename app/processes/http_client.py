"""A minimal keep-alive HTTP/1.1 client on asyncio streams, for talking to replica processes.

Used by `serve --processes` (relaying the API to each replica) and `bench replica` (whose
figures should not be a client library's). It speaks only what our own servers answer:
`Content-Length` bodies, no chunking, no redirects. One request at a time per connection;
`Pool` keeps a few connections per address and opens new ones as needed. The response's
headers of the latest request are on `Conn.headers` (names lower-cased). With `ssl` (a client
context: `serve --attach` to an HTTPS replica) connections run over TLS, the certificate
checked against the host name; `headers` are sent on every request (a replica's token).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as _ssl
import time

IDLE_S = 3.0  # under uvicorn's 5 s keep-alive: an idle connection is not reused after this


class HttpError(Exception):
    """The connection failed or the answer was not HTTP we understand."""


class Conn:
    def __init__(self, host: str, port: int, *, timeout: float = 10.0, ssl: _ssl.SSLContext | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.ssl = ssl
        self.always = dict(headers or {})
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None
        self.used = time.monotonic()
        self.headers: dict[str, str] = {}

    async def open(self) -> None:
        try:
            self.r, self.w = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self.ssl,
                                        server_hostname=self.host.strip("[]") if self.ssl else None), self.timeout)
        except (OSError, TimeoutError, _ssl.SSLError) as e:
            raise HttpError(f"cannot connect to {self.host}:{self.port}: {e}") from None

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        extra = "".join(f"{k}: {v}\r\n" for k, v in {**self.always, **(headers or {})}.items())
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n")
        try:
            self.w.write(head.encode() + body)
            return await asyncio.wait_for(self._response(), self.timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            self.close()
            raise HttpError(f"{method} {path} at {self.host}:{self.port} failed: {e!r}") from None

    async def _response(self) -> tuple[int, bytes]:
        line = await self.r.readline()
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        status = int(line.split()[1])
        length = 0
        headers = {}
        while True:
            h = await self.r.readline()
            if h in (b"\r\n", b""):
                break
            name, _, value = h.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
            if name.strip().lower() == b"content-length":
                length = int(value)
        self.headers = headers
        return status, await self.r.readexactly(length)

    def close(self) -> None:
        if self.w is not None:
            with contextlib.suppress(Exception):
                self.w.close()
            self.w = None


class Pool:
    """Idle keep-alive connections per address; a failed one is dropped, never reused."""

    def __init__(self, *, timeout: float = 10.0, max_idle: int = 8, ssl: _ssl.SSLContext | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.timeout = timeout
        self.ssl = ssl
        self.headers = dict(headers or {})
        self.max_idle = max_idle
        self._idle: dict[tuple[str, int], list[Conn]] = {}

    async def request(self, host: str, port: int, method: str, path: str, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        status, _headers, raw = await self.request_full(host, port, method, path, body, headers)
        return status, raw

    async def request_full(self, host: str, port: int, method: str, path: str, body: bytes = b"",
                           headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """The status, the response's headers (names lower-cased) and the body."""
        idle = self._idle.setdefault((host, port), [])
        now = time.monotonic()
        while idle and now - idle[-1].used > IDLE_S:
            idle.pop().close()
        conn = idle.pop() if idle else None
        if conn is not None:
            try:
                out = await conn.request(method, path, body, headers)
            except HttpError:
                # The server may have closed it just now. Only a request that is safe to repeat
                # is retried: a POST (a counter's add) might have been applied already, unless
                # it carries an Idempotency-Key.
                if method == "POST" and not any(k.lower() == "idempotency-key" for k in headers or {}):
                    raise
            else:
                self._keep(idle, conn)
                return out[0], conn.headers, out[1]
        conn = Conn(host, port, timeout=self.timeout, ssl=self.ssl, headers=self.headers)
        await conn.open()
        out = await conn.request(method, path, body, headers)
        self._keep(idle, conn)
        return out[0], conn.headers, out[1]

    def _keep(self, idle: list[Conn], conn: Conn) -> None:
        conn.used = time.monotonic()
        if len(idle) < self.max_idle:
            idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conns in self._idle.values():
            for c in conns:
                c.close()
        self._idle.clear()
