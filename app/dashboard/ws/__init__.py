"""WebSocket `/ws`: the live stream the dashboard draws.

On connect a client gets one snapshot; then a stream of batches. Every message is a binary
frame holding UTF-8 JSON: an array of event objects (`[{"kind": "snapshot", ...}]` first,
then `[{"kind": "sent", ...}, {"kind": "applied", ...}, {"kind": "state", ...}, ...]`).

The parts, one module each:

- `model`: what the stream forwards and what a snapshot needs that only the stream knows
  (messages in flight, partition groups, the recent writes and their arrivals, recently
  touched keys). Synchronous, fed by the cluster's event bus.
- `snapshot`: reading the cluster (never mutating it, never running the simulator): replica
  states, convergence, the clock, counters, a replica's detail, and the snapshot itself,
  with the facts the page takes from the server instead of keeping copies: the bounds of the
  recent writes and of the messages in flight, the strategies, and the cuts its buttons make.
- `client`: one connection's bounded queue and its own sender task.
- `hub`: the fan-out: one batch per frame, the same bytes to every client, slow ones dropped.
- `endpoint`: the `/ws` route.
- `limits`: what one connection may cost (message size, no compression, bounded send
  buffers) and the uvicorn settings every server of `/ws` runs with.

How it stays cheap and never stalls the cluster:

- The bus calls `Hub.on_event` synchronously inside the simulator loop. It never awaits and
  never touches asyncio: it filters the event, serialises it once (orjson) and appends the
  bytes to a list. Bytes, not dicts, wait for the frame: the garbage collector does not
  track them, so thousands of events a second do not make its full collections frequent.
- Once per frame (`FRAME_S`) the hub's loop task joins what is pending into one batch and
  hands the same bytes object to every client's queue. Replica states, convergence, the
  clock, counters and the selected-POP detail are coalesced slots: each is serialised once
  per frame, and a client that is behind holds only the latest per replica (latest wins),
  never a backlog of them.
- Each client has its own sender task and a bounded queue of frames. A client more than
  `max_batches` frames or `max_bytes` behind, or whose send has waited `send_deadline_s`
  (its socket's bounded buffers are full: it does not read), is dropped with close code 1013
  (try again later); the page reconnects and gets a fresh snapshot. Its sender may be blocked inside a
  slow socket write: it is cancelled, nothing else waits for it.

What is forwarded (and why):

- `sent` for the kinds the map animates (`ANIMATED`: write payloads, plumtree IHAVE
  announcements, GRAFT repairs, anti-entropy replies): src, dst, t, deliver_at, mid. The
  page flies each along its great-circle arc, timed by the simulation clock; `deliver_at`
  is null when the message was lost or cut off when sent.
- `dropped` for the animated kinds (the reason: loss, partition, crashed).
- `applied`, `crash`, `recover`, `partition`, `heal`.
- `scenario`: a running scenario's progress (name, run, step, of, op, caption, status
  running/passed/failed, and a check's or a step's figures; `say: true` for a story line,
  `waiting: "presenter"` at a line that waits for the presenter's →, `tally`: the running total
  of the counter or set it is about; `tally_only` events carry just that total, while it waits).
- Not forwarded one by one: `delivered` (the page lands a message at its deliver_at), SWIM
  pings/acks/ping-reqs, anti-entropy digests, neighbour/prune/graft_ack control traffic,
  `membership` changes and `write` (its `applied` carries the same). They are counted:
  the `counters` slot carries the simulator's message counts by kind twice a second.

Event fields are those of `app.web.events` plus `"w"`: the server's wall clock (Unix ms) when
the hub saw the event, so a client (the `bench ws` benchmark) can measure its lag.

Client -> server: `{"select": "<replica id>"}` (or null) asks for the `detail` slot: that
replica's keys, values (siblings side by side), counters and sets, resent when its state
changes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from .client import DEFAULT_MAX_BATCHES, DEFAULT_MAX_BYTES, Client
from .encoding import dumps
from .endpoint import CLOSE_TOO_SLOW, MAX_CLIENT_MESSAGE, router
from .hub import CLOCK_EVERY_S, COUNTERS_EVERY_S, FRAME_S, Hub
from .snapshot import StreamSource
from .model import ANIMATED, MAX_IN_FLIGHT, RECENT_KEYS, RECENT_WRITES, StreamModel

__all__ = [
    "ANIMATED", "CLOCK_EVERY_S", "CLOSE_TOO_SLOW", "COUNTERS_EVERY_S", "DEFAULT_MAX_BATCHES", "DEFAULT_MAX_BYTES",
    "FRAME_S", "MAX_CLIENT_MESSAGE", "MAX_IN_FLIGHT", "RECENT_KEYS", "RECENT_WRITES", "Client", "Hub", "StreamModel",
    "dumps", "install", "router",
]


def install(app: FastAPI, live: StreamSource, **hub_options: Any) -> Hub:
    """Create the hub for this app (subscribed to the live cluster's bus) and route `/ws`."""
    hub = Hub(live, state=app.state, **hub_options)
    app.state.ws_hub = hub
    app.include_router(router)
    return hub
