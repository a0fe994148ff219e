"""The HTTP API over a cluster: health, and reads and writes of every registered CRDT type.

`kv`, `counters` and `sets` have the routes the external contract fixed (kv's PUT and DELETE,
strict bodies); every other type registered in `replication.crdts` gets the same two routes
made from its module (`type_routes`): `POST /api/replicas/{id}/{namespace}/{key}` with an
operation as the body (the type's `OP_SCHEMA`; checked by the type, a bad one is 422
`invalid_operation` and changes nothing) and `GET` the same path, both answering
`{"key", "replica", ...the type's to_json}`, with the same errors, limits and `Idempotency-Key`.

Handlers are `async def` on purpose: they run on the event loop, so the replicas (plain
objects, not thread-safe) are never touched from two threads at once.
Each handler takes the cluster from `request.app.state`; there is no module-level state.
Keys come from the path (`{key:path}`), already percent-decoded, so `a/b` and `a%2Fb` name
the same key; a key that is not UTF-8 once decoded never gets here (`hygiene.py`: 422 `invalid_key`).

Writes take an optional `Idempotency-Key` header (`replication.idempotency` has the rules):
with one, the cluster applies the write once per key at that replica and answers a retry with
the first answer's bytes, marked `Idempotent-Replayed: true`. The fingerprint that decides
whether a retry is the same request is taken from the method, the path and the parsed body.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Callable

from fastapi import APIRouter, Body, Header, Path, Query, Request, Security
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from replication.contract import ClusterData
from replication.crdts import BY_NAMESPACE, CrdtType
from replication.idempotency import MAX_KEY_CHARS, TTL_MS, Once, check_idempotency_key, request_fingerprint
from replication import batch, listing
from replication.errors import EdgeStateError
from replication.replica import KvView
from replication.values import MAX_KEY_BYTES

from .converged import HEADER as CONVERGED, WaitConverged, wait_converged
from .errors import STATUS_BY_CODE, ApiError
from .hygiene import ParsedJsonRoute
from .security import ACCESS_SCOPE_KEY, bearer_scheme

router = APIRouter(route_class=ParsedJsonRoute)  # the body is parsed once, by the hygiene check
# declares the bearer token in the OpenAPI schema ("Authorize" in /docs); the access middleware checks it
AUTH = [Security(bearer_scheme)]

KV = "/api/replicas/{replica_id}/kv/{key:path}"
COUNTER = "/api/replicas/{replica_id}/counters/{key:path}"
SET = "/api/replicas/{replica_id}/sets/{key:path}"
DATA = ["data"]  # the OpenAPI tag (`openapi.TAGS`)
BESPOKE = frozenset({"kv", "counters", "sets"})  # routed by hand below; every other type by `type_routes`
ABSENT_IS_404 = frozenset({"kv"})  # types whose GET answers 404 for a key without a value


def write_request(ns: str, op: dict) -> tuple[str, dict]:
    """How a write travels over this API: (method, body) for the type's path (for relays)."""
    if ns == "kv":
        if op.get("delete"):
            return "DELETE", {"context": op.get("context")}
        return "PUT", {"value": op.get("value"), "context": op.get("context")}
    return "POST", op


def _cluster(request: Request) -> ClusterData:
    """The embedded `LiveCluster`, one replica process's `ReplicaService`, or `ProcessLive`:
    each plays the contract's data role (a process answers a write once it is durable)."""
    return request.app.state.live


REPLAYED = "Idempotent-Replayed"

Key = Annotated[str, Path(
    description=(f"the key: 1 to {MAX_KEY_BYTES} bytes of UTF-8, no control characters; percent-encode `/` "
                 "or send it as is (`a/b` and `a%2Fb` name the same key). 422 `invalid_key` otherwise."),
    json_schema_extra={"minLength": 1, "maxLength": MAX_KEY_BYTES},  # bytes: the library checks (chars ≤ bytes)
)]

# typed str (not str | None): a header is absent or a string; the default None means absent
IdempotencyKey = Annotated[str, Header(
    alias="Idempotency-Key",
    description=(
        f"Makes the write safe to retry: the same key with the same request (method, path and body) at the "
        f"same replica is applied once, and a retry gets the first answer again (status and body, marked "
        f"`{REPLAYED}: true`). A retry while the first is in flight waits for it. Kept at least "
        f"{TTL_MS // 60000} minutes, and across restarts of a real replica. A write answered with an error "
        f"leaves no record: its retry applies fresh. The same key with another request is 422 "
        f"`idempotency_key_reused`; a key that is not 1 to {MAX_KEY_CHARS} printable ASCII characters is 400 "
        f"`invalid_idempotency_key`; 429 `idempotency_table_full` (with `Retry-After`) when the replica holds "
        f"its maximum of records."),
    json_schema_extra={"minLength": 1, "maxLength": MAX_KEY_CHARS, "pattern": "^[ -~]+$"},
)]


async def _write(request: Request, replica_id: str, ns: str, key: str, op: dict, out: Callable[[Any], BaseModel],
                 idempotency_key: str | None):
    """A write, keyed or not. The answer to a keyed one is rendered to bytes once, so that
    its retries get exactly those bytes."""
    cluster = _cluster(request)
    if idempotency_key is None:
        return out(await cluster.awrite(replica_id, ns, key, op))
    once = Once(check_idempotency_key(idempotency_key), request_fingerprint(request.method, replica_id, ns, key, op),
                render=lambda result: out(result).model_dump_json().encode())
    answer = await cluster.awrite_once(replica_id, ns, key, op, once)
    return Response(answer.body, status_code=answer.status, media_type="application/json",
                    headers={REPLAYED: "true"} if answer.replayed else None)


# -- request bodies: strict JSON types, unknown fields refused ----------------------------


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class KvWrite(_Body):
    value: Any = Field(description="any JSON value")
    context: str | None = Field(None, description="the context token of the read this write supersedes")


class KvDelete(_Body):
    context: str | None = Field(None, description="the context token of the read to delete")


class CounterChange(_Body):
    add: int = Field(description="amount to add; negative to subtract")


class SetChange(_Body):
    """Exactly one of `add` and `remove`."""

    add: list[Any] | None = Field(None, description="elements to add")
    remove: list[Any] | None = Field(None, description="elements to remove")


# -- responses ------------------------------------------------------------------------------


class SiblingOut(BaseModel):
    value: Any
    replica: str
    counter: int
    hlc: tuple[int, int] = Field(description="[wall_ms, logical]: hybrid logical time of the write")


class KvOut(BaseModel):
    key: str
    replica: str
    values: list[Any]
    context: str | None
    siblings: list[SiblingOut]


class CounterOut(BaseModel):
    key: str
    replica: str
    value: int


class SetOut(BaseModel):
    key: str
    replica: str
    members: list[Any]


class HealthOut(BaseModel):
    status: str
    replicas: int


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route declares: only those it can send, each in the one error shape."""
    return {s: {"model": ErrorOut, "description": ERROR_MEANING[s]} for s in statuses}


ERROR_MEANING = {
    400: "a malformed request, the code says how: `invalid_json`, `duplicate_member`, `bad_context`, "
         "`invalid_idempotency_key` (writes); `invalid_cursor` (lists); `wait_not_supported` (reads)",
    401: "a token is needed (`unauthorized`)",
    403: "the token does not allow this (`forbidden`)",
    404: "no such replica, type or key (`unknown_replica`, `not_found`)",
    409: "not possible in this state or on this kind of cluster",
    413: "the request is over a bound (`body_too_large`, `value_too_large`, `too_many_members`, ...)",
    415: "the body is not sent as `application/json`",
    422: "`validation_error`, or the route's own refusal (the code says which)",
    429: "too many requests (`rate_limited`, `idempotency_table_full`): see `Retry-After`",
    503: "the replica cannot answer now (`replica_down`, `recovering`, `storage_unavailable`, "
         "`too_many_waiting`): retry",
}
ERRORS = errors(400, 401, 403, 404, 413, 415, 422, 429, 503)  # writes: a body
NOT_MODIFIED = {304: {"description": "Not Modified: the `If-None-Match` tag is this answer's `ETag`"}}
CONVERGED_HEADER = {CONVERGED: {"description": "with `?wait_converged`: whether the key had the same value at "
                                               "every replica up and reachable from this one when this "
                                               "answer was made",
                                "schema": {"type": "string", "enum": ["true", "false"]}}}
# reads: no body, so no 413/415; 400 only for `wait_not_supported`
READ_ERRORS: dict[int | str, dict[str, Any]] = {**NOT_MODIFIED, **errors(400, 401, 403, 404, 422, 503)}
LIST_ERRORS = errors(400, 401, 403, 404, 422, 503)


def read_answer(schema: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    """A key read's answers: 200 (with `X-Converged` when asked to wait), 304 and its errors."""
    ok: dict[str, Any] = {"headers": CONVERGED_HEADER}
    if schema is not None:
        ok["content"] = {"application/json": {"schema": schema}}
    return {200: ok, **READ_ERRORS}


# -- conditional reads ----------------------------------------------------------------------


def etag_of(body: bytes) -> str:
    """A strong tag of the answer's bytes: equal exactly when the answer is (a kv read's context
    token is part of it, so a tag changes with every new dot the replica sees for the key)."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110's weak comparison, used for If-None-Match: `*`, or any listed tag, W/ or not."""
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def conditional(request: Request, out: BaseModel, converged: bool | None = None) -> Response:
    """The answer with its `ETag`; 304 without a body when the client's `If-None-Match` names it.
    `converged`: the outcome of `?wait_converged`, when it was asked (`X-Converged`)."""
    body = out.model_dump_json().encode()
    etag = etag_of(body)
    headers = {"ETag": etag}
    if converged is not None:
        headers[CONVERGED] = str(converged).lower()
    inm = request.headers.get("if-none-match")
    if inm is not None and _matches(inm, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


async def _read(request: Request, replica_id: str, ns: str, key: str, wait_ms: int | None) -> tuple[Any, bool | None]:
    """The key's value at this replica, after waiting for it to converge when asked."""
    converged = None if wait_ms is None else await wait_converged(request, replica_id, ns, key, wait_ms)
    return await _cluster(request).aread(replica_id, ns, key), converged


def _kv_out(replica_id: str, view: KvView) -> KvOut:
    return KvOut(
        key=view.key,
        replica=replica_id,
        values=view.values,
        context=view.context,
        siblings=[
            SiblingOut(value=s.value, replica=s.replica, counter=s.counter, hlc=(s.wall_ms, s.logical))
            for s in view.siblings
        ],
    )


# -- routes ---------------------------------------------------------------------------------


@router.get("/healthz", tags=["ops"])
async def healthz(request: Request) -> HealthOut:
    return HealthOut(status="ok", replicas=len(_cluster(request).ids))


@router.put(KV, responses=ERRORS, dependencies=AUTH, tags=DATA)
async def put_kv(request: Request, replica_id: str, key: Key, body: KvWrite,
                 idempotency_key: IdempotencyKey = None) -> KvOut:
    """Write a value at one replica. Without `context`, it supersedes what that replica holds for the key."""
    return await _write(request, replica_id, "kv", key, {"value": body.value, "context": body.context},
                        lambda view: _kv_out(replica_id, view), idempotency_key)


@router.get(KV, responses=read_answer(), dependencies=AUTH, response_model=KvOut, tags=DATA)
async def get_kv(request: Request, replica_id: str, key: Key, wait_converged: WaitConverged = None) -> Response:
    """This replica's values (siblings when writes were concurrent) and a context token for the next write."""
    view, converged = await _read(request, replica_id, "kv", key, wait_converged)
    if not view.siblings:
        raise ApiError(404, "not_found", f"key {key!r} has no value at replica {replica_id!r}",
                       headers=None if converged is None else {CONVERGED: str(converged).lower()})
    return conditional(request, _kv_out(replica_id, view), converged)


@router.delete(KV, responses=ERRORS, dependencies=AUTH, tags=DATA)
async def delete_kv(
    request: Request,
    replica_id: str,
    key: Key,
    context: str | None = Query(None, description="context token; or send it as the JSON body's `context`"),
    body: KvDelete | None = None,
    idempotency_key: IdempotencyKey = None,
) -> KvOut:
    """Remove what the context saw (without one: what this replica holds). Returns the values that remain."""
    if body is not None and body.context is not None:
        if context is not None:
            raise ApiError(422, "invalid_operation", "give the context either in the body or as ?context=, not both")
        context = body.context
    return await _write(request, replica_id, "kv", key, {"delete": True, "context": context},
                        lambda view: _kv_out(replica_id, view), idempotency_key)


@router.post(COUNTER, responses=ERRORS, dependencies=AUTH, tags=DATA)
async def add_counter(request: Request, replica_id: str, key: Key, body: CounterChange,
                      idempotency_key: IdempotencyKey = None) -> CounterOut:
    """Add to a counter; answers its value at this replica. Send an `Idempotency-Key` to retry safely."""
    return await _write(request, replica_id, "counters", key, {"add": body.add},
                        lambda value: CounterOut(key=key, replica=replica_id, value=value), idempotency_key)


@router.get(COUNTER, responses=read_answer(), dependencies=AUTH, response_model=CounterOut, tags=DATA)
async def get_counter(request: Request, replica_id: str, key: Key, wait_converged: WaitConverged = None) -> Response:
    """A counter never written reads 0."""
    value, converged = await _read(request, replica_id, "counters", key, wait_converged)
    return conditional(request, CounterOut(key=key, replica=replica_id, value=value), converged)


@router.post(SET, responses=ERRORS, dependencies=AUTH, tags=DATA)
async def change_set(request: Request, replica_id: str, key: Key, body: SetChange,
                     idempotency_key: IdempotencyKey = None) -> SetOut:
    """Add or remove elements. An add concurrent with a remove wins."""
    # Pass on only the fields the client sent; the library insists on exactly one verb.
    op = {name: getattr(body, name) for name in body.model_fields_set}
    return await _write(request, replica_id, "sets", key, op,
                        lambda members: SetOut(key=key, replica=replica_id, members=members), idempotency_key)


@router.get(SET, responses=read_answer(), dependencies=AUTH, response_model=SetOut, tags=DATA)
async def get_set(request: Request, replica_id: str, key: Key, wait_converged: WaitConverged = None) -> Response:
    """A set never written reads as empty."""
    members, converged = await _read(request, replica_id, "sets", key, wait_converged)
    return conditional(request, SetOut(key=key, replica=replica_id, members=members), converged)


# -- every other registered type: its two routes, made from its module ------------------------------


class TypedOut(BaseModel):
    """A key's value at one replica, as its type shows it (`to_json`)."""

    model_config = ConfigDict(extra="allow")
    key: str
    replica: str


def _answer_schema(t: CrdtType) -> dict:
    view = t.VIEW_SCHEMA
    return {"type": "object",
            "properties": {"key": {"type": "string"}, "replica": {"type": "string"}, **view.get("properties", {})},
            "required": ["key", "replica", *view.get("required", [])]}


def type_routes(t: CrdtType) -> None:
    """`POST` and `GET /api/replicas/{replica_id}/{t.NAME}/{key}` for one type."""
    ns = t.NAME
    path = f"/api/replicas/{{replica_id}}/{ns}/{{key:path}}"
    about = "\n\n".join((t.__doc__ or ns).strip().split("\n\n")[:3])  # what it is, and its operations
    answer = {200: {"description": f"the {t.LABEL} at this replica",
                    "content": {"application/json": {"schema": _answer_schema(t)}}}, **ERRORS}
    read_answers = read_answer(_answer_schema(t))
    read_answers[200]["description"] = f"the {t.LABEL} at this replica"

    def out(replica_id: str, key: str) -> Callable[[Any], BaseModel]:
        return lambda v: TypedOut(key=key, replica=replica_id, **t.to_json(v))

    async def write(request: Request, replica_id: str, key: Key, body: Annotated[dict[str, Any], Body()],
                    idempotency_key: IdempotencyKey = None):
        return await _write(request, replica_id, ns, key, body, out(replica_id, key), idempotency_key)

    async def read(request: Request, replica_id: str, key: Key, wait_converged: WaitConverged = None):
        value, converged = await _read(request, replica_id, ns, key, wait_converged)
        return conditional(request, out(replica_id, key)(value), converged)

    router.add_api_route(
        path, write, methods=["POST"], responses=answer, dependencies=AUTH, response_model=None, tags=DATA,
        name=f"write_{t.LABEL}", summary=f"Write a {t.LABEL}", description=f"{about}\n\nAnswers its value at this replica.",
        openapi_extra={"requestBody": {"required": True,
                                       "content": {"application/json": {"schema": t.OP_SCHEMA}}}},
    )
    router.add_api_route(
        path, read, methods=["GET"], responses=read_answers, dependencies=AUTH, response_model=None, tags=DATA,
        name=f"read_{t.LABEL}", summary=f"Read a {t.LABEL}", description=f"{about}\n\nA key never written reads as empty.",
    )


# -- batches ------------------------------------------------------------------------------------------


class BatchIn(_Body):
    ops: list[Any] = Field(
        description=(f"1 to {batch.MAX_OPS} operations, applied in order: each is its single-write route's body "
                     "plus `type` (a namespace such as `counters`, or its label such as `counter`) and `key`; "
                     'a kv delete is `{"type": "kv", "key": "k", "delete": true, "context": ...}`'),
        json_schema_extra={"minItems": 1, "maxItems": batch.MAX_OPS})


class BatchResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: int = Field(description="200, or the status this operation alone would have had")
    type: str
    key: str
    error: ErrorDetail | None = Field(None, description="why this operation changed nothing (not with 200)")


class BatchOut(BaseModel):
    replica: str
    results: list[BatchResult] = Field(description="one per operation, in order: what its single write answers")


def view_json(ns: str, replica_id: str, key: str, value: Any) -> dict[str, Any]:
    """A write's answer as its single-write route gives it."""
    if ns == "kv":
        return _kv_out(replica_id, value).model_dump()
    if ns == "counters":
        return {"key": key, "replica": replica_id, "value": value}
    if ns == "sets":
        return {"key": key, "replica": replica_id, "members": value}
    return {"key": key, "replica": replica_id, **BY_NAMESPACE[ns].to_json(value)}


def _render_batch(replica_id: str, ops: list[batch.BatchOp]) -> Callable[[list[Any]], bytes]:
    def render(results: list[Any]) -> bytes:
        out = []
        for b, r in zip(ops, results, strict=True):
            if isinstance(r, EdgeStateError):
                out.append({"status": STATUS_BY_CODE.get(r.code, 400), "type": b.ns, "key": b.key,
                            "error": {"code": r.code, "message": r.message}})
            else:
                out.append({"status": 200, "type": b.ns, **view_json(b.ns, replica_id, b.key, r)})
        return BatchOut(replica=replica_id, results=out).model_dump_json(exclude_none=True).encode()
    return render


@router.post("/api/replicas/{replica_id}/batch", responses=ERRORS, dependencies=AUTH, response_model=BatchOut,
             name="write_batch", tags=DATA)
async def write_batch(request: Request, replica_id: str, body: BatchIn,
                      idempotency_key: IdempotencyKey = None) -> Response:
    """Up to 1,000 writes at one replica, applied in order with nothing in between and made durable together
    (one flush on a replica with a disk), answered together with one result per operation.

    The batch is checked whole first: if any operation is malformed (unknown type, bad key, an operation its
    type refuses as data, over a request bound) nothing is applied and the answer is that error, naming the
    operation's index. What only the replica's state decides (a set at its bound, a counter overflow, a map
    field of the other kind, a stale context token) fails that operation alone, with its status and error in
    its result; the others stand. In audience mode a batch needs the admin token (the audience's writes are
    rate-limited one by one)."""
    settings = getattr(request.app.state, "settings", None)
    access = request.scope.get(ACCESS_SCOPE_KEY)
    if settings is not None and settings.audience and not (access is not None and access.admin):
        raise ApiError(403, "batch_needs_admin", "in audience mode, batches need the admin token")
    ops = batch.check(body.ops)
    render = _render_batch(replica_id, ops)
    once = None
    if idempotency_key is not None:
        fingerprint = request_fingerprint("POST", replica_id, "batch", "", {"ops": body.ops})
        once = Once(check_idempotency_key(idempotency_key), fingerprint, render=render)
    answer = await _cluster(request).abatch(replica_id, ops, render, once)
    return Response(answer.body, status_code=answer.status, media_type="application/json",
                    headers={REPLAYED: "true"} if answer.replayed else None)


# -- listing keys, for every type ---------------------------------------------------------------------


class KeyList(BaseModel):
    """A page of keys (Workers KV's shape: `list_complete`, and a `cursor` for the next page)."""

    replica: str
    type: str
    keys: list[str] = Field(description="in code-point order")
    list_complete: bool = Field(description="no more keys after these (then `cursor` is null)")
    cursor: str | None = Field(description="opaque: pass it back as `?cursor=` for the next page")


def list_route(t: CrdtType) -> None:
    """`GET /api/replicas/{replica_id}/{t.NAME}`: a page of this replica's keys of the type."""
    ns = t.NAME

    async def list_keys(
        request: Request,
        replica_id: str,
        prefix: str = Query("", description="only keys that start with this text", max_length=MAX_KEY_BYTES),
        limit: int = Query(listing.DEFAULT_PAGE, description=f"keys per page, 1 to {listing.MAX_PAGE}"),
        cursor: str | None = Query(None, description="the `cursor` of the page before", max_length=2 * MAX_KEY_BYTES),
    ) -> KeyList:
        page = await _cluster(request).alist(replica_id, ns, prefix, cursor, limit)
        return KeyList(replica=replica_id, type=ns, keys=page.keys, list_complete=page.cursor is None,
                       cursor=page.cursor)

    router.add_api_route(
        f"/api/replicas/{{replica_id}}/{ns}", list_keys, methods=["GET"], responses=LIST_ERRORS, dependencies=AUTH,
        name=f"list_{ns}", tags=DATA, summary=f"List {t.LABEL} keys",
        description=(f"A page of the {t.LABEL} keys this replica holds, in code-point order, at most `limit`. "
                     "Every key present from the first page to the last is listed exactly once; keys written "
                     "meanwhile may or may not be. A key whose value was removed everywhere it was seen is not "
                     "listed."),
    )


for _t in BY_NAMESPACE.values():
    if _t.NAME not in BESPOKE:
        type_routes(_t)
    list_route(_t)
