"""The fan-out: the cluster's events to every WebSocket client, one batch per frame.

`Hub.on_event` runs synchronously inside the simulator loop (the bus calls it): the stream
model (`model`) decides what is forwarded and serialises it once; the bytes wait in a list
for the frame. Once per frame (`flush`, from the hub's loop task) what is pending becomes one
batch, handed as the same bytes object to every client's bounded queue (`client`), with the
coalesced slots (replica states, convergence, the clock, counters, each client's selected
detail) read from the cluster once (`snapshot`). A client over its bound is dropped, and so is
one whose current send has waited more than `send_deadline_s` (its socket's buffers, bounded by
`limits`, are full: it does not read), both with close code 1013.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, Callable

from .client import DEFAULT_MAX_BATCHES, DEFAULT_MAX_BYTES, DEFAULT_SEND_DEADLINE_S, Client, message, wake_in_groups
from .encoding import dumps, wall_ms
from .model import StreamModel
from .snapshot import ClusterReader, StreamSource

log = logging.getLogger(__name__)

FRAME_S = 0.05  # one batch per client per frame at most: 20 per second
WAKE_GROUP = 5  # senders woken per loop turn (client.wake_in_groups)
COUNTERS_EVERY_S = 0.5
# Replica states (each a digest of the replica's whole state) at most this often: under a hall's
# taps every replica changes every frame, and a backlog's contexts make a digest dear (every
# replica's, every frame, was 8 % of the server at 450 phones). The page recolours its markers at
# most every 300 ms anyway; a change after a quiet spell still goes out at the next frame.
STATES_EVERY_S = 0.25
CLOCK_EVERY_S = 1.0


class Hub:
    """Subscribes to the cluster's bus and fans its events out to WebSocket clients."""

    def __init__(
        self,
        live: StreamSource,
        *,
        state: Any = None,
        frame_s: float = FRAME_S,
        max_batches: int = DEFAULT_MAX_BATCHES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        send_deadline_s: float = DEFAULT_SEND_DEADLINE_S,
        wall_ms: Callable[[], float] = wall_ms,
    ) -> None:
        self.live = live
        self._app_state = state  # where the metrics hooks live, when they do
        self.frame_s = frame_s
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self.send_deadline_s = send_deadline_s
        self.wall_ms = wall_ms
        self.clients: set[Client] = set()
        self._pending: list[bytes] = []
        self._task: asyncio.Task | None = None
        self.model = StreamModel(wall_ms)
        self.reader = ClusterReader(live, self.model, wall_ms, frame_s)
        # counters
        self.forwarded_total = 0
        self.dropped_clients = 0
        self.frames = 0
        self.events_serialised = 0  # once per event, whatever the number of clients
        self.batches_built = 0  # once per frame with events: the same bytes go to every client
        self.states_built = 0  # replica states serialised (each a digest): at most every STATES_EVERY_S
        # last values of the coalesced slots, to send only changes
        self._last_conv: dict | None = None
        self._last_clock_key: tuple | None = None
        self._clock_at = 0.0
        self._counters_at = 0.0
        self._states_at = -math.inf
        self._unsubscribe = live.bus.subscribe(self.on_event)

    def close(self) -> None:
        self._unsubscribe()

    @property
    def events_total(self) -> int:
        return self.model.events_total

    # -- the bus side: synchronous, inside the simulator loop ------------------------------

    def on_event(self, ev: dict) -> None:
        try:
            data = self.model.take(ev, bool(self.clients))
        except Exception:  # never let the dashboard take the bus subscriber down
            log.exception("ws hub: could not handle event %r", ev.get("kind"))
            return
        if data is not None:
            # Serialised as the event happens, once: what waits for the next frame is bytes,
            # which the garbage collector does not track (thousands of pending dicts per second
            # would be promoted to its oldest generation and make full collections frequent).
            self._pending.append(data)
            self.forwarded_total += 1
            self.events_serialised += 1

    def counters(self) -> dict:
        return self.reader.counters(forwarded=self.forwarded_total, clients=len(self.clients))

    def snapshot(self) -> dict:
        return self.reader.snapshot(self.counters())

    def reset(self) -> None:
        """The cluster was reset: forget the old one's events (pending and kept), draw a new
        server id (so a page starts afresh, its log cleared) and queue every client a fresh
        snapshot, marked `reset`. Synchronous: no event slips in between."""
        self._pending.clear()
        self.model = self.reader.model = StreamModel(self.wall_ms)
        self.reader.new_run()
        self._last_conv = self.reader.convergence()
        self._last_clock_key = None
        first = self.reader.snapshot_bytes(self.counters(), reset=True)
        for c in list(self.clients):
            # what was queued for the old cluster (events, coalesced slots) would undo the snapshot
            c.forget()
            c.detail_sent = None
            if c.first is not None:
                c.first = first  # not yet sent its first snapshot: this one replaces it
            elif not c.offer(first):
                self.drop(c, f"more than {c.max_batches} frames or {c.max_bytes} bytes queued")
                continue
            c.wake.set()

    # -- clients ---------------------------------------------------------------------------

    def _metrics(self):
        return getattr(self._app_state, "metrics", None) if self._app_state is not None else None

    def connect(self) -> Client:
        """Register a client and queue its snapshot. Synchronous: no event slips in between."""
        if self.clients:
            self.flush()  # what is pending predates this client's snapshot
        else:
            self._pending.clear()
        c = Client(self.max_batches, self.max_bytes)
        if self._last_conv is None:
            self._last_conv = self.reader.convergence()
        c.first = self.reader.snapshot_bytes(self.counters())
        self.clients.add(c)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._loop())
        m = self._metrics()
        if m is not None:
            m.ws_connected(+1)
        return c

    def disconnect(self, c: Client) -> None:
        c.closed = True
        c.wake.set()
        if c in self.clients:
            self.clients.discard(c)
        m = self._metrics()
        if m is not None:
            m.ws_connected(-1)

    def drop(self, c: Client, why: str = "") -> None:
        """The client fell behind: forget its backlog, stop its sender (even mid-write)."""
        if c.dropped:
            return
        c.dropped = True
        c.forget()
        self.clients.discard(c)
        self.dropped_clients += 1
        c.wake.set()
        if c.sending and c.sender is not None:
            c.sender.cancel()
        m = self._metrics()
        if m is not None:
            m.ws_dropped()
        log.info("ws: dropped a client that fell behind (%s)", why or "its queue is over its bound")

    def select(self, c: Client, replica: str | None) -> None:
        c.select = replica
        c.detail_sent = None

    async def _loop(self) -> None:
        try:
            while self.clients:
                woken: list[Client] = []
                started = time.monotonic()
                try:
                    woken = self.flush(wake=False)
                except Exception:
                    log.exception("ws hub: flush failed")
                await wake_in_groups(woken, WAKE_GROUP)
                # the frame's grain holds whatever the groups took (the loop ran other work between them)
                await asyncio.sleep(max(0.0, self.frame_s - (time.monotonic() - started)))
        finally:
            self._task = None

    def flush(self, now: float | None = None, *, wake: bool = True) -> list[Client]:
        """One frame: serialise what is pending once, give the same bytes to every client. The
        clients with something to send are woken, or with `wake=False` returned for the caller
        to wake (the hub's loop wakes them a group per loop turn)."""
        now = time.monotonic() if now is None else now
        reader = self.reader
        self.frames += 1
        pending, self._pending = self._pending, []
        batch = None
        if pending:
            batch = b"[" + b",".join(pending) + b"]"
            self.batches_built += 1
        dirty: set[str] = set()
        if self.model.dirty and now - self._states_at >= STATES_EVERY_S:
            self._states_at = now
            dirty = self.model.take_dirty()
        states = {n: dumps(reader.state_of(n) | {"w": self.wall_ms()}) for n in dirty}
        self.states_built += len(states)
        slots: dict[str, bytes] = {}
        if dirty or self._last_conv is None:  # convergence follows the digests, which change only with states
            conv = reader.convergence()
            if conv != self._last_conv:
                self._last_conv = conv
                slots["convergence"] = dumps(conv | {"w": self.wall_ms()})
        clock = reader.clock()
        key = (clock["speed"], clock["paused"], clock["strategy"], clock["loss"],
               clock["now_ms"] if clock["paused"] else None)
        if key != self._last_clock_key or now - self._clock_at >= CLOCK_EVERY_S:
            self._last_clock_key, self._clock_at = key, now
            slots["clock"] = dumps(clock)
        if now - self._counters_at >= COUNTERS_EVERY_S:
            self._counters_at = now
            slots["counters"] = dumps(self.counters())
        details: dict[str, tuple[tuple, bytes]] = {}
        clock_now = time.monotonic()  # `now` may be a test's virtual time; sends are timed on this one
        woken: list[Client] = []
        shared: bytes | None = None  # the message of every client whose queue was empty: built once
        for c in list(self.clients):
            if c.stuck(clock_now, self.send_deadline_s):  # its socket is full: it does not read
                self.drop(c, f"a send waited more than {self.send_deadline_s:g} s")
                continue
            in_step = c.idle()
            c.whole = None  # its queue changes below
            if batch is not None and not c.offer(batch):
                self.drop(c, f"more than {c.max_batches} frames or {c.max_bytes} bytes queued")
                continue
            if states:
                c.states.update(states)
            if slots:
                c.slots.update(slots)
            if c.select is not None and self.live.has(c.select):
                sel = c.select
                ident = self.live.detail_ident(sel)
                if ident != c.detail_sent:
                    if sel not in details or details[sel][0] != ident:
                        details[sel] = (ident, dumps(reader.detail_of(sel) | {"w": self.wall_ms()}))
                    c.slots["detail"] = details[sel][1]
                    c.detail_sent = ident
            if batch is not None or states or slots or "detail" in c.slots:
                woken.append(c)
                if in_step and "detail" not in c.slots:
                    if shared is None:
                        shared = message([] if batch is None else [batch], states.values(), slots.values())
                    c.whole = shared
        if wake:
            for c in woken:
                c.wake.set()
        return woken
