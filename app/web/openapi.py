"""The OpenAPI schema as a generated client needs it: named operations, tags by area, and only
the error answers that can happen, in the one error shape.

- Operation ids are the routes' names in camelCase (`put_kv` → `putKv`; a route names itself
  with `name=` where its function's name would not say what it does), not FastAPI's
  `put_kv_api_replicas__replica_id__kv__key__put`. `watch` is reserved for the change stream.
- FastAPI declares a 422 `HTTPValidationError` on every route with a parameter or a body; that
  shape is never sent (`errors.py` reshapes validation errors to `ErrorOut`, code
  `validation_error`), so it is replaced by ours, and dropped where no parameter can fail
  validation (a plain string in the path, no query, no body).
- Tags group the operations by area (`TAGS`, in this order in `/docs`); a route that declares
  none gets its area from its path (`TAG_BY_PREFIX`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

ERROR_REF = "#/components/schemas/ErrorOut"

TAGS = [
    {"name": "data", "description": "Reads and writes of every CRDT type at one replica; listing keys; batches."},
    {"name": "faults", "description": "Partitions, crashes and recoveries (admin)."},
    {"name": "simulation", "description": "The simulated cluster's clock, speed, loss and strategy (admin)."},
    {"name": "scenarios", "description": "Scripted scenarios run live on the cluster."},
    {"name": "observe", "description": "Topology, replica states, convergence and the coordination panel."},
    {"name": "audience", "description": "The audience's phones (`/join`)."},
    {"name": "session", "description": "Signing in and out, and what the caller may do."},
    {"name": "ops", "description": "Health, readiness and metrics for operators and probes."},
]

VALIDATION_ERROR = {
    "description": "`validation_error`: a parameter or body field is missing, of the wrong type or out of "
                   "its bounds (the message names it); also the route's own 422 codes",
    "content": {"application/json": {"schema": {"$ref": ERROR_REF}}},
}


# where a route declares no tag (a new one): its area by path, so no operation is left untagged
TAG_BY_PREFIX = [("/api/replicas/{replica_id}/crash", "faults"), ("/api/replicas/{replica_id}/recover", "faults"),
                 ("/api/replicas/{replica_id}/", "data"), ("/api/faults/", "faults"), ("/api/sim", "simulation"),
                 ("/api/scenarios", "scenarios"), ("/api/join", "audience"), ("/api/session", "session"),
                 ("/api/", "observe"), ("/", "ops")]


def operation_id(route: APIRoute) -> str:
    """`route.name` in camelCase: what a generated client calls the operation."""
    head, *rest = route.name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _cannot_fail_validation(op: dict[str, Any]) -> bool:
    """No body, and every parameter a plain string in the path (any text matches it)."""
    if "requestBody" in op:
        return False
    for p in op.get("parameters", []):
        schema = p.get("schema", {})
        if p.get("in") != "path" or schema.get("type") != "string" or {"maxLength", "pattern", "enum"} & set(schema):
            return False
    return True


def reshape(schema: dict[str, Any], error_schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's generated schema, with its never-sent `HTTPValidationError` replaced by `ErrorOut`."""
    for path, item in schema.get("paths", {}).items():
        for op in item.values():
            if not op.get("tags"):
                op["tags"] = [next(tag for prefix, tag in TAG_BY_PREFIX if path.startswith(prefix))]
            answer = op.get("responses", {}).get("422")
            if answer is None or "HTTPValidationError" not in str(answer):
                continue
            if _cannot_fail_validation(op):
                del op["responses"]["422"]
            else:
                op["responses"]["422"] = VALIDATION_ERROR
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components.setdefault("ErrorOut", error_schema["ErrorOut"])
    components.setdefault("ErrorDetail", error_schema["ErrorDetail"])
    return schema


def install(app: FastAPI) -> None:
    """Serve the reshaped schema at /openapi.json (built once, on the first request).
    The app must have been made with `generate_unique_id_function=operation_id`."""
    from .api import ErrorOut  # the one error shape

    defs = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    error_schema = {"ErrorOut": {k: v for k, v in defs.items() if k != "$defs"}, **defs.get("$defs", {})}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = reshape(get_openapi(title=app.title, version=app.version, summary=app.summary,
                                         description=app.description, routes=app.routes), error_schema)
            used = {tag for item in schema.get("paths", {}).values() for op in item.values() for tag in op.get("tags", [])}
            schema["tags"] = [t for t in TAGS if t["name"] in used]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
