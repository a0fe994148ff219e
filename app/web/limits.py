"""Limits on what one request, and one client, may send: pure ASGI middleware.

- `BodyLimitMiddleware`: a request body over the limit is refused with 413 before any route
  sees it. Bytes are counted as they arrive, so a missing or lying `Content-Length` changes
  nothing; a declared length over the limit is refused without reading the body at all.
  Bodies here are small JSON documents, so an accepted one is held in memory and handed on.
- `RateLimitMiddleware`: in audience mode, a token bucket per client address for requests
  that write (the access middleware has classified the request before this runs); an empty
  bucket answers 429 with `Retry-After` in whole seconds. Holders of the admin token (the
  presenter) are not limited.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response
from .security import ACCESS_SCOPE_KEY, NEED_SCOPE_KEY


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n % (1024 * 1024) == 0 else f"{n} bytes"


DRAIN_BYTES = 4 * 1024 * 1024


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send, more=True)
            return

        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await self._too_large(scope, receive, send, more=message.get("more_body", False))
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: wait for the disconnect as usual

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, *, more: bool) -> None:
        # Read (and drop) a little more of what the client is still sending, so that an honest
        # client that is slightly over gets to read the answer instead of a reset connection.
        drained = 0
        while more and drained <= DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            more = message.get("more_body", False)
        response = error_response(
            413, "body_too_large", f"the request body is larger than {_size(self.max_bytes)}"
        )
        response.headers["Connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


class TokenBuckets:
    """One token bucket per client: `rate` tokens a second, up to `burst`. Bounded memory: the
    least recently seen clients are forgotten first (a forgotten client starts with a full bucket,
    which is where an idle one would be anyway)."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] | None = None, max_clients: int = 10_000
    ) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock or time.monotonic
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def take(self, client: str) -> float:
        """Take one token for `client`. Returns 0.0 if allowed, else the seconds until one is due."""
        now = self.clock()
        tokens, at = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[client] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, buckets: TokenBuckets, on_limited: Callable[[], None] | None = None) -> None:
        self.app = app
        self.buckets = buckets
        self.on_limited = on_limited

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get(NEED_SCOPE_KEY) == "write":
            access = scope.get(ACCESS_SCOPE_KEY)
            if not (access is not None and access.admin and access.authenticated):
                client = (scope.get("client") or ("unknown", 0))[0]
                wait = self.buckets.take(client)
                if wait > 0.0:
                    if self.on_limited is not None:
                        self.on_limited()
                    seconds = max(1, math.ceil(wait))
                    response = error_response(
                        429, "rate_limited",
                        f"too many writes from this client: at most {self.buckets.rate:g} per second "
                        f"(bursts of {self.buckets.burst:g}); retry in {seconds} s",
                        headers={"Retry-After": str(seconds)},
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
