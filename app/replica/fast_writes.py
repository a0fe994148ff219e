"""The hot writes of a replica process, answered without FastAPI's per-request machinery.

A durable write is one SQLite commit; everything else a request costs is Python on the event
loop, and under load that work, not the disk, set the rate: profiling `bench replica` put
about half of each write's loop time in Starlette's routing (a regex per route, in order),
FastAPI's dependency solving and pydantic's request validation, around a replica write that
took a fifth. This layer answers the three writes clients send most — `PUT .../kv/{key}`,
`POST .../counters/{key}`, `POST .../sets/{key}` — directly.

It is a pure ASGI middleware installed innermost, so everything in front of a route still
runs first and unchanged: the request id and access line, the access rules, the body limit,
and the hygiene check, whose parsed document (`hygiene.PARSED_JSON`) is the body used here.
It takes a request only when it can prove the slow path would accept it — the route's method
and path, a JSON body already parsed, exactly the fields and JSON types the route's pydantic
model (`api.KvWrite`, `CounterChange`, `SetChange`, all strict) accepts, at most one
`Idempotency-Key` — and hands it to the very code the route calls (`api._write`, which renders
the answer with the route's response model). Everything else (a bad body, a wrong type, an
unknown field, a second `Idempotency-Key`, any other path or method) goes on to FastAPI, whose
answer is the contract; `tests/test_fast_writes.py` sends each such request to both paths and
compares status, headers and body. Errors the write itself raises (a bad key, a value over a
bound, an unknown replica, storage unavailable) are rendered by the same handler FastAPI uses
(`errors.on_library_error`); anything unexpected propagates to the same 500 handler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from replication.errors import EdgeStateError

from ..web import api, errors
from ..web.hygiene import PARSED_JSON
from ..web.logs import ROUTE_NOTE

_IDEMPOTENCY = b"idempotency-key"
_INT64 = 1 << 63  # a counter step the library takes as is; a bigger int goes the slow way


def _kv(doc: Any) -> dict | None:
    """`api.KvWrite` (strict, no unknown fields): `value` any JSON, `context` a string or null."""
    if type(doc) is not dict or "value" not in doc or len(doc) > 2:
        return None
    context = doc.get("context")
    if (len(doc) == 2 and "context" not in doc) or not (context is None or type(context) is str):
        return None
    return {"value": doc["value"], "context": context}


def _counter(doc: Any) -> dict | None:
    """`api.CounterChange`: exactly `add`, an int (strict: not a bool, not a float)."""
    if type(doc) is not dict or len(doc) != 1:
        return None
    add = doc.get("add")
    if type(add) is not int or not -_INT64 <= add < _INT64:
        return None
    return {"add": add}


def _set(doc: Any) -> dict | None:
    """`api.SetChange`: `add` and `remove`, each a list or null; only the fields sent are passed
    on (the route passes `model_fields_set`), so the library can insist on exactly one verb."""
    if type(doc) is not dict or not doc.keys() <= {"add", "remove"}:
        return None
    if any(not (v is None or type(v) is list) for v in doc.values()):
        return None
    return dict(doc)


def _hot(pattern: str, ns: str, method: str, body: Callable[[Any], dict | None], out):
    regex, template, _ = compile_path(pattern)  # the route's own regex: the same paths match
    return regex, ns, method, body, out, template


_ROUTES = (
    _hot(api.KV, "kv", "PUT", _kv, lambda rid, key: lambda view: api._kv_out(rid, view)),
    _hot(api.COUNTER, "counters", "POST", _counter,
         lambda rid, key: lambda value: api.CounterOut(key=key, replica=rid, value=value)),
    _hot(api.SET, "sets", "POST", _set,
         lambda rid, key: lambda members: api.SetOut(key=key, replica=rid, members=members)),
)


def _one_header(scope: Scope, name: bytes) -> tuple[bool, str | None]:
    """(usable, value): the header's value (latin-1, as Starlette decodes it) or None when it is
    absent; not usable when it is sent more than once (the slow path decides then)."""
    found = None
    for k, v in scope["headers"]:
        if k == name:
            if found is not None:
                return False, None
            found = v.decode("latin-1")
    return True, found


class FastWrites:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("PUT", "POST") and not scope.get("root_path"):
            taken = self._take(scope)
            if taken is not None:
                await self._write(scope, receive, send, *taken)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _take(scope: Scope) -> tuple | None:
        """(replica id, namespace, key, operation, Idempotency-Key, render, template) when this
        request is one the fast path answers exactly as the route would; else None."""
        held = scope.get(PARSED_JSON)
        if held is None:  # not JSON, not valid JSON, or no body: the route's errors
            return None
        path, method = scope["path"], scope["method"]
        for regex, ns, route_method, body, out, template in _ROUTES:
            if method != route_method:
                continue
            m = regex.match(path)
            if m is None:
                continue
            op = body(held[1])
            usable, idem = _one_header(scope, _IDEMPOTENCY)
            if op is None or not usable:
                return None
            rid, key = m["replica_id"], m["key"]
            return rid, ns, key, op, idem, out(rid, key), template
        return None

    @staticmethod
    async def _write(scope: Scope, receive: Receive, send: Send, rid: str, ns: str, key: str, op: dict,
                     idem: str | None, render, template: str) -> None:
        state = scope.get("state")
        if isinstance(state, dict):
            state[ROUTE_NOTE] = template  # the metrics' route label, as the router would note it
        request = Request(scope, receive)
        response: Response
        try:
            answer = await api._write(request, rid, ns, key, op, render, idem)
        except EdgeStateError as e:
            response = await errors.on_library_error(request, e)
        else:
            if isinstance(answer, Response):  # keyed: the record's bytes
                response = answer
            else:  # unkeyed: the model, rendered as FastAPI renders a route's
                response = Response(answer.model_dump_json().encode(), media_type="application/json")
        await response(scope, receive, send)
