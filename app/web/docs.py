"""`/docs`: the OpenAPI console, with Swagger UI served from this server.

FastAPI's own `/docs` loads Swagger UI from a CDN: offline (a conference hall without
network) it would be blank, and online it is a request leaving the host. The bundle is
vendored in `swagger/` beside this module, served at `/swagger` (swagger-ui-dist 5.35.0, Apache-2.0, see its LICENSE).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

SWAGGER_DIR = Path(__file__).parent / "swagger"
PREFIX = "/swagger"


def install(app: FastAPI) -> None:
    """Route `/docs` (create the app with `docs_url=None`) and serve the bundle at `/swagger`."""
    app.mount(PREFIX, StaticFiles(directory=str(SWAGGER_DIR)), name="swagger")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title}: API",
            swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js", swagger_css_url=f"{PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{PREFIX}/favicon-32x32.png", oauth2_redirect_url=None,
        )
