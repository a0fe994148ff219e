"""`?wait_converged=MS` on key reads: answer once the key has converged, or after MS at most.

What "converged" means here is per key, not per cluster: the key's value is the same at every
replica that is up and that this replica can reach now (all of them, or its side of a partition;
kv: the same siblings, by writer and counter; every other type: the same view). That is "this
replica has everything the others it can hear from have": nothing more can arrive until the
network changes. A whole-cluster test (`/api/convergence`) would make a read of a quiet key wait
for unrelated writes in flight, and on a busy cluster it may never hold; per key, a read at
Sydney after a write at London returns as soon as Sydney has it and nobody else has anything
newer. Under a partition a read waits for its own side only (waiting for the other side would
wait out every partition); `X-Converged: false` means the time ran out first.

Where it can be asked: any cluster that sees all its replicas (the simulated dashboard, and
`serve --processes`, whose reads are relayed to each process). A single `edgestate replica` sees
only itself: it cannot know what its peers hold now, so it answers 400 `wait_not_supported`
rather than a guess (ask through a dashboard over the processes, or poll).

Waiting never blocks the event loop: the read sleeps between checks (10 ms doubling to 100 ms),
bounded by MS (≤ 30,000), by the server's cap (`app.state.wait_cap_ms`) and by the number of
reads that may wait at once (`MAX_WAITING`; beyond it, 503 `too_many_waiting` with Retry-After).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import Query, Request

from replication.errors import EdgeStateError

from .errors import ApiError

MAX_WAIT_MS = 30_000
MAX_WAITING = 64  # reads waiting at once per server: each costs a check of every replica per poll
FIRST_POLL_S = 0.01
MAX_POLL_S = 0.1
HEADER = "X-Converged"

WaitConverged = Annotated[int | None, Query(
    ge=0, le=MAX_WAIT_MS,
    description=(
        f"Wait up to this many milliseconds (0 to {MAX_WAIT_MS}) until the key has the same value at every "
        f"replica that is up and that this one can reach (its side of a partition), then answer; the `{HEADER}` header says whether it had (`true`) or the time ran "
        "out (`false`: the answer is this replica's value then, as without waiting). Use it instead of a "
        "`sleep` after a write elsewhere or a heal. 400 `wait_not_supported` on a single `edgestate replica` "
        "(it cannot see its peers); 503 `too_many_waiting` when too many reads wait at once."),
)]


def _comparable(ns: str, value: Any) -> bytes:
    """What must be equal at every replica: kv's siblings by writer (its context token may
    differ while the values agree); any other type's value as it reads."""
    from .api import view_json  # the read's own rendering

    view = view_json(ns, "", "", value)
    if ns == "kv":
        view = sorted((s["replica"], s["counter"]) for s in view["siblings"])
    return orjson.dumps(view, option=orjson.OPT_SORT_KEYS)


def _reachable(cluster: Any, replica_id: str) -> list[str]:
    """The replicas that are up on `replica_id`'s side of the partition in force (if any)."""
    down = set(cluster.down())
    side = next((g for g in cluster.partition_groups() or [] if replica_id in g), cluster.ids)
    return [rid for rid in side if rid not in down]


async def key_converged(cluster: Any, replica_id: str, ns: str, key: str) -> bool:
    seen: set[bytes] = set()
    for rid in _reachable(cluster, replica_id):
        try:
            seen.add(_comparable(ns, await cluster.aread(rid, ns, key)))
        except (EdgeStateError, ApiError):  # a replica that went away or is repairing meanwhile
            return False
        if len(seen) > 1:
            return False
    return True


async def wait_converged(request: Request, replica_id: str, ns: str, key: str, ms: int) -> bool:
    """Wait until `key` has converged or `ms` (capped) has passed; whether it had."""
    cluster = request.app.state.live
    if not callable(getattr(cluster, "partition_groups", None)):
        raise ApiError(400, "wait_not_supported",
                       "wait_converged needs a view of every replica: a single replica process cannot see what its "
                       "peers hold (ask a dashboard over the processes, or poll)")
    state = request.app.state
    waiting = getattr(state, "converged_waiting", 0)
    if waiting >= MAX_WAITING:
        raise ApiError(503, "too_many_waiting", f"{MAX_WAITING} reads are waiting for convergence already; retry",
                       headers={"Retry-After": "1"})
    await cluster.aread(replica_id, ns, key)  # an unknown or crashed replica answers its error now, not after MS
    ms = min(ms, getattr(state, "wait_cap_ms", MAX_WAIT_MS))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ms / 1000
    poll = FIRST_POLL_S
    state.converged_waiting = waiting + 1
    try:
        while True:
            if await key_converged(cluster, replica_id, ns, key):
                return True
            left = deadline - loop.time()
            if left <= 0:
                return False
            await asyncio.sleep(min(poll, left))
            poll = min(2 * poll, MAX_POLL_S)
    finally:
        state.converged_waiting -= 1
