"""One error shape for the whole HTTP API: `{"error": {"code": "...", "message": "..."}}`.

Library errors map to a status by their stable `code`; FastAPI's own 404, 405 and
request-validation errors are reshaped to match, so a client parses one format only.
Anything else is a bug in edgestate: 500 `internal`, logged with its traceback.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from replication.errors import EdgeStateError

log = logging.getLogger(__name__)

# Every library error is raised before any state changes, so each is the client's to fix.
STATUS_BY_CODE = {
    "invalid_key": 422,
    "invalid_cursor": 400,
    "invalid_limit": 422,
    "invalid_value": 422,
    "invalid_operation": 422,
    "counter_overflow": 422,
    "value_too_large": 413,
    "too_many_members": 413,  # per request: `replication.bounds`
    "too_many_fields": 413,
    "set_too_large": 422,  # per key: the request is fine, the key is full
    "map_too_large": 422,
    "bad_context": 400,
    "unknown_type": 404,
    "unknown_replica": 404,
    "replica_down": 503,
    "overloaded": 503,
    "storage_unavailable": 503,
    "recovering": 503,
    "not_supported_with_processes": 409,
    "not_supported_with_attach": 409,
    "invalid_idempotency_key": 400,
    "idempotency_key_reused": 422,
    "idempotency_table_full": 429,
}


class ApiError(Exception):
    """An error decided by the web layer itself (not by the library), e.g. a key with no value."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None, **more) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers  # sent with the error (Retry-After, X-Converged)
        self.more = more  # members beside code and message (a relayed bound's `limit`)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   **more) -> JSONResponse:
    """The one error shape; `more` adds members beside code and message (a bound's `limit`)."""
    return JSONResponse({"error": {"code": code, "message": message, **more}}, status_code=status, headers=headers)


def _code_for_status(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"


async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.more)


async def on_library_error(request: Request, exc: EdgeStateError) -> JSONResponse:
    retry_after = getattr(exc, "retry_after_s", None)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    limit = getattr(exc, "limit", None)
    # a bound (`replication.bounds`): its name and value, beside code and message
    more = {"limit": {"name": limit, "value": exc.value}} if limit is not None else {}
    return error_response(STATUS_BY_CODE.get(exc.code, 400), exc.code, exc.message, headers, **more)


async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
    status = exc.status_code
    where = f"{request.method} {request.url.path}"
    if status == 404:
        code, message = "not_found", f"no such path: {where}"
    elif status == 405:
        # Starlette names only the first route that matched the path; every method is its own route here.
        allow = ", ".join(sorted(_allowed_methods(request)))
        headers = {**(exc.headers or {}), "Allow": allow}
        return error_response(405, "method_not_allowed", f"method not allowed: {where}; allowed: {allow}", headers)
    else:
        code, message = _code_for_status(status), str(exc.detail)
    return error_response(status, code, message, headers=exc.headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> set[str]:
    """Every method some route accepts at this path (asked through the public `matches`)."""
    routes = request.app.router.routes
    allowed = {
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    }
    if "GET" in allowed:
        allowed.add("HEAD")  # answered wherever GET is (hygiene.py)
    return allowed


def _field(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)


async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    for e in errors:
        if e.get("type") == "json_invalid":
            reason = (e.get("ctx") or {}).get("error", "JSON decode error")
            pos = e["loc"][1] if len(e["loc"]) > 1 else "?"
            return error_response(400, "invalid_json", f"the request body is not valid JSON: {reason} at character {pos}")
    if isinstance(exc.body, (bytes, bytearray)):
        # FastAPI parses a body as JSON only when its Content-Type says so; otherwise it stays bytes.
        return error_response(
            415, "unsupported_media_type", "the request body must be JSON, sent with Content-Type: application/json"
        )
    message = "; ".join(f"{_field(e['loc'])}: {e['msg']}" for e in errors) or "invalid request"
    return error_response(422, "validation_error", message)


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal server error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(EdgeStateError, on_library_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    # Starlette runs this one outermost and re-raises afterwards, so the server logs it too.
    app.add_exception_handler(Exception, on_unexpected)
