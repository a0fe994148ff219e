"""Access control for everything the server answers, as one pure ASGI middleware.

Who may do what is decided here, from the request's method and path alone, before any route
runs: so it covers the routes of every module (the API, the page, `/ws`) without them calling
anything, and a route added later is protected by default (any method that changes something
needs at least the write token).

The rules (`Settings` says which apply):

- Bound to loopback with no token: open, for local demos.
- `token`: requests that change state need `Authorization: Bearer <token>`.
- `admin_token`: fault and simulation controls (partition, crash, recover, `/api/sim/*`
  changes, starting a scenario, `POST /api/reset`) need it. The admin token is never weaker than the write
  token: once a write token is set, or in audience mode, the admin controls need their own
  `admin_token` and are off (403 `admin_disabled`) without one. The admin token also works
  wherever the write token does.
- `private`: reads, the page and `/ws` need a token too. `/healthz` always answers.
- Wrong or missing token: 401 with `WWW-Authenticate: Bearer`, and the same message whatever
  was wrong. Tokens are compared in constant time.

A browser that signed in (`POST /api/session`, see `sessions.py`) carries a session cookie
instead: it gives the rights of the token it was made from, when no token is sent, on every
route and on `/ws`; a request that changes state on the cookie's say-so must also carry the
`X-Edgestate-CSRF: 1` header (403 `csrf_header_missing` otherwise).

Browsers cannot put a bearer token on a page load or a WebSocket handshake, so a token is also
taken as the password of HTTP Basic credentials (any user name; a page load that needs a token
is answered with a Basic challenge too, so the browser asks once and then sends it on every
request, `/ws` included), and on a WebSocket handshake as `?access_token=<token>`.

Cross-site requests: a request that changes state, and every WebSocket handshake, is refused
(403) when it carries an `Origin` that is not the host it was sent to. Browsers always send
`Origin` there; a client without one (curl, scripts) is not a browser and is let through. When
the server is open (loopback, no token), it answers only requests addressed to a loopback name,
so a web page cannot reach it by pointing its own host name at 127.0.0.1 (DNS rebinding).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol
from urllib.parse import parse_qsl, urlsplit

from fastapi.security import HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response

MiB = 1024 * 1024
REALM = "edgestate"

ACCESS_SCOPE_KEY = "edgestate.access"  # the caller's Access, for /api/session and the rate limiter
NEED_SCOPE_KEY = "edgestate.need"  # what this request needs: none, read, write or admin
SIGNED_IN_SCOPE_KEY = "edgestate.signed_in"  # True when a session cookie gave the access

SESSION_COOKIE = "edgestate_session"  # sessions.py: a random id, never a token
SESSION_PATH = "/api/session"  # signing in and out: open to all, but only from this origin
CSRF_HEADER = "x-edgestate-csrf"  # what a cookie-authorised change must carry (sessions.py)

Need = Literal["none", "read", "write", "admin"]

_TOKEN_CHARS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: fits a header as is
WEAK_TOKEN_CHARS = 16  # `serve` warns about a shorter token


@functools.lru_cache(maxsize=1024)  # asked on every request, of a handful of names; parsing an address is not free
def is_loopback(host: str) -> bool:
    """True for `localhost`, `*.localhost`, 127.0.0.0/8 and ::1 (with or without brackets)."""
    h = host.strip().lower().rstrip(".")
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Settings:
    """How the app guards itself. The defaults are an open server for tests and local demos.

    `host` is the address the server is bound to, or None when the app is not served on a
    socket of its own (in-process tests): it decides whether a token is required (any address
    but loopback) and whether the loopback-only Host check applies.
    """

    host: str | None = None
    token: str | None = None
    admin_token: str | None = None
    private: bool = False
    audience: bool = False
    write_rate: float = 5.0  # audience mode: writes per second per client...
    write_burst: int = 10  # ...after a burst of this many
    max_body_bytes: int = MiB

    def problems(self) -> list[str]:
        """What is wrong with these settings, as messages naming the flag to fix (empty: fine)."""
        out = []
        for flag, tok in (("--token", self.token), ("--admin-token", self.admin_token)):
            if tok is not None and not _TOKEN_CHARS.match(tok):
                out.append(f"{flag} must be printable ASCII characters without spaces (and not empty)")
        if self.token is not None and self.token == self.admin_token:
            out.append("--admin-token must differ from --token: the admin token guards more")
        if self.host is not None and not is_loopback(self.host) and self.token is None:
            out.append(
                f"--host {self.host} is reachable from other machines: give a --token for writes "
                "(and an --admin-token for faults and simulation controls)"
            )
        if self.private and self.token is None:
            out.append("--private needs a --token to let readers in")
        if not (self.write_rate > 0 and self.write_burst >= 1):
            out.append("the write rate limit needs a positive rate and a burst of at least 1")
        if self.max_body_bytes < 1:
            out.append("the body limit must be positive")
        return out

    @property
    def open(self) -> bool:
        """No token of any kind: everything is allowed (loopback demos, tests)."""
        return self.token is None and self.admin_token is None

    @property
    def admin_enabled(self) -> bool:
        """Whether anyone may use the admin controls: with an admin token, or on an open non-audience server."""
        return self.admin_token is not None or (self.token is None and not self.audience)

    @property
    def loopback_only(self) -> bool:
        """An open server bound to loopback answers only requests addressed to a loopback name."""
        return self.open and self.host is not None and is_loopback(self.host)


class Access(NamedTuple):
    read: bool
    write: bool
    admin: bool
    authenticated: bool  # a configured token was presented


def grant(settings: Settings, presented: str | None) -> Access:
    """What a caller presenting `presented` (or nothing) may do."""
    is_write = _matches(presented, settings.token)
    is_admin = _matches(presented, settings.admin_token)
    write = settings.token is None or is_write or is_admin
    admin = is_admin if settings.admin_token is not None else settings.admin_enabled
    read = not settings.private or write
    return Access(read=read, write=write, admin=admin, authenticated=is_write or is_admin)


def _matches(presented: str | None, expected: str | None) -> bool:
    if expected is None:
        return False
    # compare_digest takes time independent of where the inputs differ (lengths may show)
    return hmac.compare_digest((presented or "").encode(), expected.encode())


# For the OpenAPI schema only (an "Authorize" button in /docs): routers declare it, it checks
# nothing. The middleware below decides.
bearer_scheme = HTTPBearer(
    auto_error=False,
    description="the write token (--token) or the admin token (--admin-token); not needed on an open server",
)


# -- what a request needs ---------------------------------------------------------------------

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ADMIN_PATH = re.compile(r"^/api/(?:faults|sim|scenarios)(?:/.*)?$|^/api/reset/?$|^/api/replicas/[^/]+/(?:crash|recover)/?$")
ALWAYS_OPEN = frozenset({"/healthz", "/readyz"})  # probes carry no token


def need_of(scope: Scope) -> Need:
    path = scope.get("path", "")
    if path in ALWAYS_OPEN:
        return "none"
    if path == SESSION_PATH and scope["type"] == "http" and scope.get("method") in ("POST", "DELETE"):
        return "none"  # signing in and out needs no rights: the token is in the body
    if scope["type"] == "websocket":
        return "read"
    if scope.get("method", "GET") in SAFE_METHODS:
        return "read"
    if _ADMIN_PATH.match(path):
        return "admin"
    return "write"


def presented_token(scope: Scope, headers: Headers) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, rest = auth.strip().partition(" ")
        scheme = scheme.lower()
        rest = rest.strip()
        if scheme == "bearer":
            return rest
        if scheme == "basic":
            try:
                _user, _, password = base64.b64decode(rest, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
            return password
        return None
    if scope["type"] == "websocket":
        for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
            if name == "access_token":
                return value
    return None


# -- hosts and origins ----------------------------------------------------------------------

_DEFAULT_PORTS = {"http": "80", "ws": "80", "https": "443", "wss": "443"}


def _split_host(netloc: str) -> tuple[str, str | None]:
    netloc = netloc.strip().lower()
    if netloc.startswith("["):  # [v6]:port
        end = netloc.find("]")
        host, rest = netloc[: end + 1], netloc[end + 1 :]
        return host, rest[1:] if rest.startswith(":") else None
    host, sep, port = netloc.rpartition(":")
    return (host, port) if sep else (netloc, None)


def _host_header(scope: Scope, headers: Headers) -> tuple[str, str | None] | None:
    host = headers.get("host")
    if host is None:
        server = scope.get("server")
        if not server:
            return None
        host = f"{server[0]}:{server[1]}"
    return _split_host(host)


def origin_matches(origin: str, host: tuple[str, str | None] | None) -> bool:
    """Is `origin` (scheme://host[:port]) the host the request was sent to?"""
    if host is None:
        return False
    try:
        parts = urlsplit(origin)
        o_host, o_port = _split_host(parts.netloc)
    except ValueError:
        return False
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not o_host:
        return False  # "null", file://, extensions...
    o_port = o_port or _DEFAULT_PORTS[scheme]
    h_host, h_port = host
    # the Host header omits the port when it is the scheme's default; behind a TLS proxy the
    # server cannot tell which scheme the browser used, so either default is taken
    h_ports = {h_port} if h_port else {"80", "443"}
    return o_host == h_host and o_port in h_ports


# -- the middleware -------------------------------------------------------------------------


class SessionLookup(Protocol):
    def role(self, sid: str | None) -> Literal["admin", "write"] | None: ...


def session_access(settings: Settings, role: Literal["admin", "write"]) -> Access:
    """What a session may do: what the token it was made from gives."""
    return grant(settings, settings.admin_token if role == "admin" else settings.token)


def _cookie(headers: Headers, name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        k, sep, v = part.strip().partition("=")
        if sep and k == name:
            return v.strip()
    return None


class AccessMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, sessions: SessionLookup | None = None) -> None:
        self.app = app
        self.settings = settings
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        s = self.settings
        headers = Headers(scope=scope)
        need = need_of(scope)
        presented = presented_token(scope, headers)
        access = grant(s, presented)
        role = self.sessions.role(_cookie(headers, SESSION_COOKIE)) if presented is None and self.sessions is not None else None
        if role is not None:
            access = session_access(s, role)
        scope[NEED_SCOPE_KEY] = need
        scope[ACCESS_SCOPE_KEY] = access
        scope[SIGNED_IN_SCOPE_KEY] = role is not None
        path = scope.get("path", "")

        host = _host_header(scope, headers)
        if s.loopback_only and path not in ALWAYS_OPEN and (host is None or not is_loopback(host[0])):
            await deny(scope, receive, send, 403, "host_not_allowed",
                       "this server is open to local clients only; address it as localhost or 127.0.0.1, "
                       "or start it with --token to serve other host names")
            return
        origin = headers.get("origin")
        changes = need in ("write", "admin") or (path == SESSION_PATH and scope.get("method") not in SAFE_METHODS)
        if origin is not None and (scope["type"] == "websocket" or changes):
            if not origin_matches(origin, host):
                await deny(scope, receive, send, 403, "origin_not_allowed",
                           "cross-origin request refused: the Origin header is not this server")
                return

        if role is not None and scope["type"] == "http" and need in ("write", "admin") and \
                headers.get(CSRF_HEADER) != "1":
            await deny(scope, receive, send, 403, "csrf_header_missing",
                       "a change made on a session cookie must carry the header X-Edgestate-CSRF: 1")
            return
        if need == "none" or getattr(access, need):
            await self.app(scope, receive, send)
            return
        if need == "admin" and not s.admin_enabled:
            await deny(scope, receive, send, 403, "admin_disabled",
                       "fault and simulation controls are off: start the server with --admin-token to use them")
            return
        challenge = [f'Bearer realm="{REALM}"']
        if scope["type"] == "http" and "text/html" in headers.get("accept", ""):
            challenge.append(f'Basic realm="{REALM}", charset="UTF-8"')  # lets a browser ask for it
        await deny(scope, receive, send, 401, "unauthorized",
                   "a valid token is required: send Authorization: Bearer <token>", challenge)


async def deny(
    scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str,
    challenges: list[str] | None = None,
) -> None:
    """Answer with the JSON error; a WebSocket handshake is refused before it is accepted."""
    response = error_response(status, code, message)
    for c in challenges or ():
        response.raw_headers.append((b"www-authenticate", c.encode("latin-1")))
    if scope["type"] == "websocket" and "websocket.http.response" not in scope.get("extensions", {}):
        # a server without the denial-response extension answers a close before accept with 403
        await send({"type": "websocket.close", "code": 1008, "reason": ""})
        return
    await response(scope, receive, send)


_QUERY_TOKEN = re.compile(r"(access_token=)[^&\s\"']*")


class RedactTokens(logging.Filter):
    """Blank out `access_token=...` in log lines (uvicorn logs each request's path and query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _QUERY_TOKEN.sub(r"\1REDACTED", a) if isinstance(a, str) and "access_token=" in a else a
                for a in record.args
            )
        if isinstance(record.msg, str) and "access_token=" in record.msg:
            record.msg = _QUERY_TOKEN.sub(r"\1REDACTED", record.msg)
        return True
