"""The audience's side: `/join` for phones, its light stream, and the QR code that leads there.

- `GET /join`: the page for a phone (`templates/join.html`, `static/js/join.js`,
  `static/css/join.css`), with a strict Content-Security-Policy: its own script and style only,
  no inline code, connections to this server only.
- `GET /api/join/pops?tz=Europe/Paris&offset=60`: the POPs, nearest to that time zone first
  (`zones`), for the page to preselect one.
- `POST /api/join/{replica_id}` with `{"action": "vote"}`, `{"action": "emoji", "value": "🎉"}`
  or `{"action": "word", "value": "hello"}`: one tap (`talk` says what each writes and what is
  refused). It is a write like any other: the write token when one is set, and in audience mode
  the per-client-address rate limit. Answers the write's id (to follow on the stream), the
  replica and its city, the server's time to answer (`answered_ms`) and the value there.
- `WebSocket /ws/join`: the light stream (`stream`).
- `GET /join/qr.svg` and `GET /api/join/info`: the join URL's QR code and the URL itself, for the
  presenter's screen (`qr`).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict

from ...web.api import AUTH, ERRORS
from ...web.errors import ApiError
from ...web.hygiene import ParsedJsonRoute
from . import talk, zones
from .lean import write_tap
from .qr import join_url, qr_svg
from .stream import JoinHub, router as stream_router

# the page's own script, style and connections, nothing inline; images: the QR code (same origin)
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {"Cache-Control": "no-cache", "Referrer-Policy": "same-origin", "Content-Security-Policy": CSP,
                "X-Content-Type-Options": "nosniff"}


class Tap(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    action: Literal["vote", "emoji", "word"]
    value: str | None = None


class TapOut(BaseModel):
    id: str | None
    replica: str
    city: str
    answered_ms: float
    value: Any


class PopOut(BaseModel):
    id: str
    city: str
    country: str


class PopsOut(BaseModel):
    nearest: str | None
    pops: list[PopOut]


class InfoOut(BaseModel):
    url: str
    emoji: list[str]
    max_word_chars: int


router = APIRouter(route_class=ParsedJsonRoute)


def _hub(request: Request) -> JoinHub:
    return request.app.state.join_hub


@router.get("/api/join/pops", dependencies=AUTH, tags=["audience"], name="get_join_pops")
async def pops(request: Request, tz: str | None = Query(None, max_length=zones.MAX_ZONE_CHARS),
               offset: int | None = Query(None, ge=-zones.MAX_OFFSET_MIN, le=zones.MAX_OFFSET_MIN)) -> PopsOut:
    """The POPs, nearest first to a browser in time zone `tz` (IANA) at `offset` minutes east of UTC."""
    ordered = zones.nearest(request.app.state.live.placements, tz, offset)
    guessed = zones.zone_point(tz, offset) is not None
    return PopsOut(nearest=ordered[0].id if ordered and guessed else None,
                   pops=[PopOut(id=p.id, city=p.pop.city, country=p.pop.country) for p in ordered])


@router.post("/api/join/{replica_id}", responses=ERRORS, dependencies=AUTH, tags=["audience"], name="join_tap")
async def tap(request: Request, replica_id: str, body: Tap) -> TapOut:
    """One tap from a phone: +1, an emoji or a word, written at `replica_id`."""
    try:
        ns, key, op = talk.operation(body.action, body.value)
    except talk.JoinError as e:
        raise ApiError(422, e.code, e.message) from None
    live = request.app.state.live
    if not live.has(replica_id):
        raise ApiError(404, "unknown_replica", f"no replica {replica_id!r}")
    return TapOut(**await write_tap(live, _hub(request), replica_id, ns, key, op))


@router.get("/api/join/info", dependencies=AUTH, tags=["audience"], name="get_join_info")
async def info(request: Request) -> InfoOut:
    """The URL the QR code encodes, and what a phone may send."""
    return InfoOut(url=_join_url(request), emoji=list(talk.EMOJI), max_word_chars=talk.MAX_WORD_CHARS)


def _join_url(request: Request) -> str:
    return join_url(request.app.state.public_url, request.url.scheme, request.headers.get("host"))


def install(app: FastAPI, live: Any, public_url: str | None = None) -> JoinHub:
    """Route `/join`, its API, its stream and the QR code. `public_url`: what the QR code encodes
    (checked by `qr.check_public_url`), or None for the address each request came to."""
    from fastapi.templating import Jinja2Templates

    from ..page import _app_dir, _asset_version

    templates = Jinja2Templates(directory=str(_app_dir("templates")))
    version = _asset_version(_app_dir("static"))
    hub = JoinHub(live)
    app.state.join_hub = hub
    app.state.public_url = public_url
    pages = APIRouter(include_in_schema=False)

    @pages.get("/join", response_class=HTMLResponse)
    async def join_page(request: Request):
        return templates.TemplateResponse(request, "join.html", {"v": version, "emoji": talk.EMOJI,
                                                                 "max_word": talk.MAX_WORD_CHARS},
                                          headers=PAGE_HEADERS)

    @pages.get("/join/qr.svg")
    async def qr(request: Request):
        return Response(qr_svg(_join_url(request)), media_type="image/svg+xml",
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                                 "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})

    app.include_router(router)
    app.include_router(pages)
    app.include_router(stream_router)
    return hub


def install_lean(app: FastAPI) -> None:
    """Answer ordinary taps inside every middleware but before FastAPI's routing (`lean`). Call
    it after every other middleware is added: the end of the list is innermost."""
    from starlette.middleware import Middleware

    from .lean import LeanTapMiddleware

    route = next(r for r in router.routes if getattr(r, "name", None) == "join_tap")
    app.user_middleware.append(Middleware(LeanTapMiddleware, route=route))
