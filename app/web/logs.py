"""Logs, one format for `edgestate serve` and `edgestate replica`: `--log-level`, `--log-format
text|json`, `--no-access-log`, and the `X-Request-ID` every HTTP answer carries.

`configure` sets up stdlib logging once, on the root logger (stderr), and makes uvicorn's own
loggers go through it (uvicorn is then started with `log_config=None`, so it adds no handler of
its own, and `access_log=False`: the access line is ours, because uvicorn's cannot carry the
request id). Every line has an ISO 8601 UTC timestamp with milliseconds.

    text: 2026-12-01T14:33:00.123Z INFO edgestate.access: GET /api/replicas/lhr/kv/a 200 1.4 ms [id=...]
    json: {"ts": "2026-12-01T14:33:00.123Z", "level": "info", "logger": "edgestate.access", "msg": "...",
           "request_id": "...", "method": "GET", "path": "/api/...", "route": "/api/replicas/{replica_id}/kv/{key}",
           "status": 200, "duration_ms": 1.4, "client": "127.0.0.1"}

`RequestIdMiddleware` (outermost, so a 401 or a 413 carries an id and is logged too) takes the
client's `X-Request-ID` when it is printable ASCII of at most 128 characters, makes one
otherwise (a client's bad id is replaced, not refused: the request itself may be fine), echoes
it in the response, and writes the access line. While a request runs, its id is in a context
variable, so any other line logged on its behalf names it too. It also reports each request to
an optional `on_request(method, route, status, seconds)` (the HTTP metrics), by route template
(`/api/replicas/{replica_id}/kv/{key}`, never the raw path: bounded label values).
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone

import orjson

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
ACCESS_LOGGER = "edgestate.access"
MAX_REQUEST_ID = 128
UNMATCHED = "unmatched"  # the route label of a request no route took (a 404 on a made-up path)

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("edgestate_request_id", default=None)
_ACCESS_FIELDS = ("method", "path", "route", "status", "duration_ms", "client")


def add_arguments(parser, *, default_level: str = "info") -> None:
    """The three flags, the same on every command that serves."""
    g = parser.add_argument_group("logging", "Lines go to stderr, each with an ISO 8601 UTC timestamp.")
    g.add_argument("--log-level", default=default_level, choices=LEVELS,
                   help="the least severe lines written (default: %(default)s)")
    g.add_argument("--log-format", default="text", choices=FORMATS,
                   help="text lines, or one JSON object per line (ts, level, logger, msg; access lines add "
                        "request_id, method, path, route, status, duration_ms, client) (default: %(default)s)")
    g.add_argument("--no-access-log", dest="access_log", action="store_false",
                   help="no line per HTTP request (default: one, at info level)")


def _logger_name(record: logging.LogRecord) -> str:
    # uvicorn logs its start-up and shutdown on "uvicorn.error", at info: shown as "uvicorn", so
    # that a search for "error" finds errors
    return "uvicorn" if record.name == "uvicorn.error" else record.name


def _ts(created: float) -> str:
    return datetime.fromtimestamp(created, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _printable(text: str) -> str:
    """Control characters escaped (a request's path may carry %0A or %00, decoded): one record is
    one line, and nothing a client sends can forge a line of its own or drive a terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_ts(record.created)} {record.levelname} {_logger_name(record)}: {_printable(record.getMessage())}"
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            line += f" [id={rid}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict = {"ts": _ts(record.created), "level": record.levelname.lower(), "logger": _logger_name(record),
                     "msg": record.getMessage()}
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            out["request_id"] = rid
        for f in _ACCESS_FIELDS:
            v = getattr(record, f, None)
            if v is not None:
                out[f] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure(level: str = "info", fmt: str = "text", *, stream=None) -> None:
    """Route every logger (ours, uvicorn's) to one stderr handler in `fmt`, at `level`."""
    if level not in LEVELS or fmt not in FORMATS:
        raise ValueError(f"log level {level!r} / format {fmt!r}: choose from {LEVELS} / {FORMATS}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        lg.setLevel(logging.NOTSET)  # the root's level decides


def uvicorn_options(level: str) -> dict:
    """What uvicorn.Config needs so that it leaves logging as `configure` set it."""
    return {"log_config": None, "log_level": level, "access_log": False}


def check_request_id(value: str | None) -> str:
    """The client's id when it is printable ASCII (no spaces at the ends) of at most 128
    characters; a fresh one otherwise."""
    if value and len(value) <= MAX_REQUEST_ID and value.isascii() and value.isprintable() and value == value.strip():
        return value
    return uuid.uuid4().hex


ROUTE_NOTE = "edgestate.route"  # in scope["state"], which every copy of the scope shares


def _template(route) -> str | None:
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) and path else None


def route_of(scope: dict) -> str:
    """The template of the route that took the request (bounded: one per route), else UNMATCHED."""
    noted = (scope.get("state") or {}).get(ROUTE_NOTE)
    return noted or _template(scope.get("route")) or UNMATCHED


class RouteNoteMiddleware:
    """Innermost: the router notes its route in the scope it is given, and a layer between
    (hygiene hands on a copy, with the parsed body or with HEAD as GET) would keep that from
    the outer middleware; the state dict is shared by every copy, so the template goes there."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            state = scope.get("state")
            found = _template(scope.get("route"))
            if isinstance(state, dict) and found is not None:
                state[ROUTE_NOTE] = found


class RequestIdMiddleware:
    """Pure ASGI (no body buffering): ids, the access line, and the per-request report."""

    def __init__(self, app, *, access_log: bool = True,
                 on_request: Callable[[str, str, int, float], None] | None = None) -> None:
        self.app = app
        self.access_log = access_log
        self.on_request = on_request
        self.log = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = None
        for k, v in scope.get("headers") or ():
            if k == b"x-request-id":
                given = v.decode("latin-1")
                break
        rid = check_request_id(given)
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id_var.set(rid)
        status = 500  # what the client gets if the app raises before answering
        t0 = time.perf_counter()

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode("ascii")))
                message = {**message, "headers": headers}
            elif message["type"] == "websocket.accept":
                status = 101
                headers = [*message.get("headers", ()), (b"x-request-id", rid.encode("ascii"))]
                message = {**message, "headers": headers}
            elif message["type"] == "websocket.close" and status == 500:
                status = 403  # closed before accept: the server answers the handshake 403
            elif message["type"] == "websocket.http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - t0
            request_id_var.reset(token)
            method = scope.get("method", "WS") if scope["type"] == "http" else "WS"
            route = route_of(scope)
            if self.on_request is not None:
                self.on_request(method, route, status, seconds)
            if self.access_log and self.log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                self.log.info("%s %s %d %.1f ms", method, scope.get("path", ""), status, seconds * 1000.0,
                              extra={"request_id": rid, "method": method, "path": scope.get("path", ""),
                                     "route": route, "status": status, "duration_ms": round(seconds * 1000.0, 3),
                                     "client": client[0] if client else None})


def install(app, *, access_log: bool = True, on_request: Callable[[str, str, int, float], None] | None = None) -> None:
    """Add the middleware; call it after every other `add_middleware`, so the request id's is
    the outermost layer (and the route note the innermost)."""
    from starlette.middleware import Middleware

    app.user_middleware.append(Middleware(RouteNoteMiddleware))  # the end of the list is innermost
    app.add_middleware(RequestIdMiddleware, access_log=access_log, on_request=on_request)
