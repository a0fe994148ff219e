"""The tap's lean path: `POST /api/join/{replica_id}` answered without FastAPI's routing.

A hall of phones taps hundreds of times a second, each tap one small write. Profiled under `bench
audience --phones 1000` (330 taps/s), the server spent 58 % of its wall time in HTTP requests, and
most of that in FastAPI itself: matching the path against every route, solving dependencies,
validating the body with pydantic, serialising the answer. The simulation, the thing the audience
is there to watch, got 16 % and fell behind, and two taps in three were refused (503 `overloaded`).

This middleware sits innermost, inside every other one (access control, the per-phone rate limit,
the body limit, the checks on path and body, request ids and the access line still apply), and
answers an ordinary tap itself: a well-formed body (`RequestHygieneMiddleware` has parsed it
already) naming a known replica. Anything else (a malformed or unknown body, a refused action, an
unknown replica, another method or path) goes on to the route, so every error keeps the shape and
status the route gives it. An error raised by the write itself (the replica is down, the
simulation is overloaded) is answered by the app's own error handlers, as the route's would be.
`tests/test_join_lean.py` sends the same taps, good and bad, both ways and compares the answers.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request

from replication.errors import EdgeStateError

from ...web.errors import ApiError, on_api_error, on_library_error
from ...web.hygiene import PARSED_JSON
from . import talk

PREFIX = "/api/join/"
ACTIONS = frozenset({"vote", "emoji", "word"})


def city_of(live: Any, replica_id: str) -> str:
    """The city of a replica's POP (its id when it has none)."""
    for p in live.placements:
        if p.id == replica_id:
            return p.pop.city
    return replica_id


async def write_tap(live: Any, hub: Any, replica_id: str, ns: str, key: str, op: dict) -> dict:
    """Write one tap at `replica_id` and answer it: the write's id (to follow on the stream), the
    replica and its city, the server's time to answer and the value there. The route and the
    lean path both answer with this."""
    before = hub.tracker.latest(replica_id)
    t0 = time.perf_counter()
    result = await live.awrite(replica_id, ns, key, op)
    answered_ms = (time.perf_counter() - t0) * 1000.0
    w = hub.latest_write(replica_id, ns, key)
    return {"id": w.id if w is not None and w is not before else None, "replica": replica_id,
            "city": city_of(live, replica_id), "answered_ms": round(answered_ms, 2),
            "value": result.values if ns == "kv" else result}


def _tap_of(doc: Any) -> tuple[str, str | None] | None:
    """(action, value) when `doc` is what the route's `Tap` model accepts (strict, no extra
    members), else None: the route then answers it."""
    if type(doc) is not dict or not 1 <= len(doc) <= 2 or not doc.keys() <= {"action", "value"}:
        return None
    action, value = doc.get("action"), doc.get("value")
    if type(action) is not str or action not in ACTIONS or not (value is None or type(value) is str):
        return None
    return action, value


class LeanTapMiddleware:
    def __init__(self, app, route) -> None:
        self.app = app
        self.route = route  # the route's object, noted in the scope for the access line's template

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        replica_id = scope["path"][len(PREFIX):]
        parsed = scope.get(PARSED_JSON)
        tap = _tap_of(parsed[1]) if parsed is not None else None
        live = scope["app"].state.live if tap is not None else None
        if tap is None or not replica_id or "/" in replica_id or not live.has(replica_id):
            await self.app(scope, receive, send)
            return
        try:
            ns, key, op = talk.operation(*tap)
        except talk.JoinError:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        try:
            out = await write_tap(live, scope["app"].state.join_hub, replica_id, ns, key, op)
        except (EdgeStateError, ApiError) as e:
            handler = on_library_error if isinstance(e, EdgeStateError) else on_api_error
            await (await handler(Request(scope, receive), e))(scope, receive, send)
            return
        body = orjson.dumps(out)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
