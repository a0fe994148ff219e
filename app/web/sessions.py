"""Signing in from a browser: a session cookie instead of a token on every request.

A browser cannot put a bearer token on a page load or a WebSocket handshake, and on an open
`--audience` server nothing ever challenges it for Basic credentials, so the presenter had no
way to get the admin controls in a browser. `POST /api/session` with `{"token": ...}` (the
admin token, or the write token) sets a session cookie; the access middleware
(`security.py`) then grants that token's rights to requests carrying the cookie, the page and
`/ws` included. `DELETE /api/session` signs out.

- The cookie holds a random session id (256 bits), never the token. Sessions live in this
  server's memory (`Sessions`): bounded (the oldest are dropped first), each expires after
  12 hours, and signing out forgets it here, so a copied cookie dies with sign-out or a restart.
- Cookie flags: HttpOnly (scripts cannot read it), SameSite=Strict (no other site's page sends
  it), Path=/, Max-Age of the session, and Secure when the request came over HTTPS.
- CSRF: besides SameSite=Strict and the `Origin` check every state-changing request gets, a
  request that changes state and is authorised by the cookie must carry the header
  `X-Edgestate-CSRF: 1`. A cross-site form cannot set a header, and a cross-site script cannot
  send one without a CORS preflight this server never approves. Without it: 403
  `csrf_header_missing`. Reads and the `/ws` handshake need no header (they change nothing,
  and the handshake's `Origin` is checked).
- Guessing: a wrong token is 401 `unauthorized` whatever was wrong, compared in constant
  time; each client address gets `SIGN_IN_BURST` attempts, then one every
  `1 / SIGN_IN_RATE` seconds (429 `rate_limited` with `Retry-After`).
"""

from __future__ import annotations

import math
import secrets
import time
from collections import OrderedDict
from typing import Callable, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict

from .api import errors
from .errors import ApiError, error_response
from .limits import TokenBuckets
from .security import ACCESS_SCOPE_KEY, SESSION_COOKIE, SIGNED_IN_SCOPE_KEY, Access, Settings, grant

Role = Literal["admin", "write"]

SESSION_TTL_S = 12 * 3600.0
MAX_SESSIONS = 1000  # a presenter or two signs in; a flood of sign-ins must not grow memory
SIGN_IN_RATE = 1 / 12  # attempts per second per client address, after...
SIGN_IN_BURST = 5  # ...this many at once


class Sessions:
    """Session id -> (role, expiry), in memory, bounded; `clock` in seconds (monotonic)."""

    def __init__(self, *, ttl_s: float = SESSION_TTL_S, max_sessions: int = MAX_SESSIONS,
                 clock: Callable[[], float] | None = None) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.clock = clock or time.monotonic
        self._by_id: OrderedDict[str, tuple[Role, float]] = OrderedDict()
        self.sign_ins = TokenBuckets(SIGN_IN_RATE, SIGN_IN_BURST, clock=self.clock)

    def create(self, role: Role) -> str:
        sid = secrets.token_urlsafe(32)
        self._by_id[sid] = (role, self.clock() + self.ttl_s)
        while len(self._by_id) > self.max_sessions:
            self._by_id.popitem(last=False)
        return sid

    def role(self, sid: str | None) -> Role | None:
        if not sid:
            return None
        entry = self._by_id.get(sid)  # a dict lookup: the id is 256 random bits, not a secret to time
        if entry is None:
            return None
        role, expires = entry
        if self.clock() >= expires:
            del self._by_id[sid]
            return None
        return role

    def drop(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)

    def __len__(self) -> int:
        return len(self._by_id)


# -- routes -----------------------------------------------------------------------------------

router = APIRouter()


class SignIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    token: str


class SessionOut(BaseModel):
    can_write: bool
    can_admin: bool
    audience: bool
    signed_in: bool = False  # a session cookie authorised this request
    can_sign_in: bool = False  # there is a token a browser could sign in with


def session_out(request: Request, access: Access, *, signed_in: bool) -> SessionOut:
    s: Settings = request.app.state.settings
    return SessionOut(can_write=access.write, can_admin=access.admin, audience=s.audience,
                      signed_in=signed_in, can_sign_in=s.admin_token is not None or s.token is not None)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post("/api/session", status_code=200, tags=["session"], responses=errors(401, 413, 415, 422, 429),
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "type": "object", "required": ["token"], "additionalProperties": False,
                 "properties": {"token": {"type": "string", "description": "the admin or write token"}}}}}}})
async def sign_in(request: Request, response: Response) -> SessionOut:
    """Exchange a token for a session cookie (HttpOnly, SameSite=Strict, 12 h)."""
    sessions: Sessions = request.app.state.sessions
    settings: Settings = request.app.state.settings
    wait = sessions.sign_ins.take(_client(request))
    if wait > 0.0:
        seconds = max(1, math.ceil(wait))
        return error_response(429, "rate_limited",  # type: ignore[return-value]
                              f"too many sign-in attempts from this address; retry in {seconds} s",
                              headers={"Retry-After": str(seconds)})
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, "unsupported_media_type", 'send the token as JSON: {"token": "..."}')
    try:
        body = SignIn.model_validate_json(await request.body())
    except ValueError:
        raise ApiError(422, "invalid_body", 'the body must be {"token": "<the admin or write token>"}') from None
    access = grant(settings, body.token)
    if not access.authenticated:
        raise ApiError(401, "unauthorized", "that token is not this server's admin or write token")
    role: Role = "admin" if settings.admin_token is not None and access.admin else "write"
    sid = sessions.create(role)
    response.set_cookie(SESSION_COOKIE, sid, max_age=int(sessions.ttl_s), path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    response.headers["Cache-Control"] = "no-store"
    return session_out(request, access, signed_in=True)


@router.delete("/api/session", tags=["session"])
async def sign_out(request: Request, response: Response) -> SessionOut:
    """Forget this browser's session here and clear its cookie."""
    request.app.state.sessions.drop(request.cookies.get(SESSION_COOKIE))
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
    return session_out(request, grant(request.app.state.settings, None), signed_in=False)


def current(request: Request) -> SessionOut:
    """GET /api/session's answer: what this request (token or cookie) may do."""
    settings: Settings = request.app.state.settings
    access = request.scope.get(ACCESS_SCOPE_KEY) or grant(settings, None)
    return session_out(request, access, signed_in=bool(request.scope.get(SIGNED_IN_SCOPE_KEY)))

