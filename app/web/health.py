"""`GET /readyz`: may this server take writes now? (`/healthz`, in `api`, says only that the
process answers.)

200 `{"status": "ready"}`, or 503 in the error shape with a `reason` beside code and message.
What "ready" means is the cluster's to say, through an optional `aunready()` returning None
(ready) or the reason it is not:

- a replica process (`edgestate replica`): not while an empty replica waits to hear from its
  peers which actors of its id they hold (`joining`: writes would wait, up to 5 s), nor while
  a repaired one catches up (`repairing`: reads and writes answer 503) — `ReplicaRunner.unready`;
- `serve --processes`: every replica process the operator has not crashed answers its own
  `/readyz` 200 (a crashed one is the operator's choice, and the others still take writes);
- the simulated dashboard has no such state: ready once it serves (it has no `aunready`).

Like `/healthz` it needs no token (`security.ALWAYS_OPEN`): probes carry none.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from .errors import ApiError

router = APIRouter()


class ReadyOut(BaseModel):
    status: str = "ready"


class NotReadyDetail(BaseModel):
    code: str
    message: str
    reason: str


class NotReadyOut(BaseModel):
    error: NotReadyDetail


@router.get("/readyz", tags=["ops"], responses={503: {"model": NotReadyOut, "description": "not ready: `error.reason` says why"}})
async def readyz(request: Request) -> ReadyOut:
    """200 when this server may take writes; 503 `not_ready` with a `reason` otherwise."""
    check = getattr(request.app.state.live, "aunready", None)
    reason = await check() if check is not None else None
    if reason is not None:
        raise ApiError(503, "not_ready", f"not ready to take writes: {reason}", reason=reason)
    return ReadyOut()
