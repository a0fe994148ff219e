"""What a request must be before any route sees it: one pure ASGI middleware, for every route.

- The path must be UTF-8 once percent-decoded. The server decodes `%FE` and `%FF` alike to
  U+FFFD, so without this check `kv/coll%FEx` and `kv/coll%FFx` would name one key. A bad
  byte in a key is 422 `invalid_key`; anywhere else in the path, 422 `invalid_path`. So is a
  control character (U+0000-U+001F, U+007F). The check reads the undecoded `raw_path`; a server
  that gives none is trusted as it is (the replication core still refuses a new key with a
  control character: `values.check_new_key`).
- A JSON body must not repeat a member name in any object, nested ones included: with
  `{"add": 1, "add": 100}` the parser would keep the last and the client may have meant the
  first, so it is 400 `duplicate_member` and changes nothing. Bodies that are not JSON, or not
  valid JSON, are passed on untouched: the route answers those as before (415, 400
  `invalid_json`). The check is the parse: the document it builds is left in the scope
  (`PARSED_JSON`) for the route, whose request class (`ParsedJsonRoute`) takes it instead of
  parsing the body again (parsing costs ~9 ms per MiB of body, all of it holding the loop).
- `HEAD` is answered wherever `GET` is: FastAPI's routes do not add it themselves. The request
  goes on as a `GET` and the answer keeps its headers (Content-Length included) without the body.

Install it inside `BodyLimitMiddleware`, so that the body it holds in memory is already bounded.
"""

from __future__ import annotations

import asyncio

import json
import re
from typing import Any, Callable, Coroutine
from urllib.parse import unquote_to_bytes

from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response

KEYED_PREFIX = (b"", b"api", b"replicas")  # /api/replicas/{id}/{namespace}/{key...}
KEY_SEGMENT = 5  # index of the key's first segment in raw_path.split(b"/")


class _Duplicate(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


PARSED_JSON = "edgestate.parsed_json"  # scope key: (the body, the document parsed from it)


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Called for every object, and builds it as json.loads would (it keeps the last of a repeated
    # name, which is refused here anyway), so the document is the one the route would parse.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _Duplicate(name)
            seen.add(name)
    return obj


_NOT_JSON = object()


def parse_unique(body: bytes) -> tuple[str | None, Any]:
    """(the first member name some object in `body` repeats, None) or (None, the parsed document);
    (None, `_NOT_JSON`) when `body` is not JSON (the route's own parser answers it)."""
    try:
        return None, json.loads(body, object_pairs_hook=_unique_members)
    except _Duplicate as d:
        return d.name, _NOT_JSON
    except (ValueError, RecursionError):
        return None, _NOT_JSON


def duplicate_member(body: bytes) -> str | None:
    """The first member name some object in `body` repeats, or None (also when `body` is not JSON)."""
    return parse_unique(body)[0]


class ParsedJsonRequest(Request):
    """A request whose `json()` is the document the middleware parsed, when it parsed this body."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            held = self.scope.get(PARSED_JSON)
            body = await self.body()
            # only for the very body the middleware parsed (a bytes compare: ~0.1 ms per MiB)
            if held is not None and held[0] == body:
                self._json = held[1]
            else:
                self._json = json.loads(body)
        return self._json


class ParsedJsonRoute(APIRoute):
    """A FastAPI route that reads its JSON body through `ParsedJsonRequest` (FastAPI's documented
    way to give a route its own request class)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def parsed_once(request: Request) -> Response:
            return await handler(ParsedJsonRequest(request.scope, request.receive))

        return parsed_once


_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def bad_path_segment(raw_path: bytes) -> tuple[int, str] | None:
    """(index in `raw_path.split(b"/")`, what is wrong) of the first segment that is not UTF-8
    once percent-decoded, or holds a control character (U+0000-U+001F, U+007F: they would reach
    logs, terminals and the page as they are, and the router does not match a newline)."""
    for i, segment in enumerate(raw_path.split(b"/")):
        raw = unquote_to_bytes(segment)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return i, "is not valid UTF-8 once percent-decoded"
        bad = _CONTROL.search(raw)
        if bad:
            return i, f"must not contain control characters (found U+{bad.group()[0]:04X})"
    return None


def is_json(content_type: str | None) -> bool:
    """What FastAPI parses as JSON: application/json and application/*+json."""
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


class RequestHygieneMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path")
        if raw_path is not None:
            found = bad_path_segment(raw_path)
            if found is not None:
                bad, why = found
                segments = raw_path.split(b"/")
                in_key = tuple(segments[:3]) == KEYED_PREFIX and bad >= KEY_SEGMENT
                code, what = ("invalid_key", "the key") if in_key else ("invalid_path", "the path")
                await error_response(
                    422, code, f"{what} {why} (segment {segments[bad][:80].decode('latin-1')!r})",
                )(scope, receive, send)
                return
        if scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
            receive, send = _head_only(receive, send)
        if is_json(Headers(scope=scope).get("content-type")):
            body, receive = await _read_body(receive)
            if body is None:  # the client went away: nothing to answer
                return
            name, doc = parse_unique(body)
            if doc is not _NOT_JSON:
                scope = {**scope, PARSED_JSON: (body, doc)}
            if name is not None:
                await error_response(
                    400, "duplicate_member",
                    f"the request body names the member {name!r} twice in one object; each name may appear once",
                )(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _head_only(receive: Receive, send: Send) -> tuple[Receive, Send]:
    """A GET's answer cut to its head: the response ends right after its headers, whatever the
    route goes on to send, and the route then hears that the client left. Without that, `HEAD`
    on a stream (`/watch`, `/api/events`) kept its connection open for as long as the stream ran."""
    ended = asyncio.Event()

    async def head_send(message: Message) -> None:
        if ended.is_set():
            return
        if message["type"] == "http.response.start":
            await send(message)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            ended.set()
            return
        await send({**message, "body": b""} if message["type"] == "http.response.body" else message)

    async def head_receive() -> Message:
        if ended.is_set():
            return {"type": "http.disconnect"}
        got = asyncio.ensure_future(receive())
        end = asyncio.ensure_future(ended.wait())
        done, _ = await asyncio.wait({got, end}, return_when=asyncio.FIRST_COMPLETED)
        if got in done:
            end.cancel()
            return got.result()
        got.cancel()
        return {"type": "http.disconnect"}

    return head_receive, head_send


async def _read_body(receive: Receive) -> tuple[bytes | None, Receive]:
    """The whole body, and a `receive` that hands it on as one message."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None, receive
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect as usual

    return body, replay
