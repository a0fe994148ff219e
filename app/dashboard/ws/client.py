"""One connection of the stream: a bounded queue of frames plus coalesced slots, and the
sender task that drains it (one per client, so a slow socket only ever blocks itself)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Collection

from fastapi import WebSocket

DEFAULT_MAX_BATCHES = 64  # frames a client may be behind: about three seconds
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
# A send waiting this long means the socket's bounded buffers (`limits`) are full: the client
# does not read. Without it a client that never reads is found only once its queue fills.
DEFAULT_SEND_DEADLINE_S = 3.0


def message(batches: Collection[bytes], states: Collection[bytes], slots: Collection[bytes]) -> bytes:
    """One WebSocket message: the frames' events in order (each frame a JSON array), then the
    latest of each coalesced slot, as one JSON array. A lone frame is sent as it is."""
    if len(batches) == 1 and not states and not slots:
        return next(iter(batches))
    parts: list = [memoryview(b)[1:-1] for b in batches if len(b) > 2]
    parts.extend(states)
    parts.extend(slots)
    return b"[" + b",".join(parts) + b"]"


class Client:
    """One connection's queue: frames (shared bytes) plus coalesced slots, drained by its sender."""

    def __init__(self, max_batches: int, max_bytes: int) -> None:
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self.batches: deque[bytes] = deque()
        self.bytes = 0
        self.states: dict[str, bytes] = {}  # replica id -> its latest state event
        self.slots: dict[str, bytes] = {}  # "convergence", "clock", "counters", "detail" -> latest
        self.wake = asyncio.Event()
        self.dropped = False
        self.closed = False
        self.sending = False
        self.send_since = 0.0  # monotonic time the current send started (while `sending`)
        self.sender: asyncio.Task | None = None
        self.select: str | None = None
        self.detail_sent: tuple | None = None  # (replica, digest, status) of the last detail queued
        self.messages = 0
        self.first: bytes | None = None  # the snapshot, sent before anything else
        # What `take` would build from the queue, when the hub built it once for every client
        # whose queue it found empty (`Hub.flush`): a hundred clients in step then share one
        # message instead of each joining its own copy. Cleared by anything that changes the queue.
        self.whole: bytes | None = None

    def idle(self) -> bool:
        """Nothing queued: the next frame alone will be what `take` returns."""
        return not self.batches and not self.states and not self.slots

    def offer(self, batch: bytes) -> bool:
        """Queue a frame; False when that puts the client over its bound."""
        self.whole = None
        self.batches.append(batch)
        self.bytes += len(batch)
        return len(self.batches) <= self.max_batches and self.bytes <= self.max_bytes

    def take(self) -> bytes | None:
        """Everything queued, as one JSON array: frames first, then the latest of each slot."""
        if self.idle():
            return None
        out = self.whole if self.whole is not None else message(self.batches, self.states.values(), self.slots.values())
        self.whole = None
        self.batches.clear()
        self.bytes = 0
        self.states.clear()
        self.slots.clear()
        return out

    def forget(self) -> None:
        """Drop everything queued (the client fell behind: it starts again from a snapshot)."""
        self.whole = None
        self.batches.clear()
        self.states.clear()
        self.slots.clear()

    def _start_send(self) -> None:
        self.send_since = time.monotonic()
        self.sending = True

    def stuck(self, now: float, deadline_s: float) -> bool:
        """Whether one send has been waiting longer than the deadline: the socket's bounded
        buffers are full because the client does not read (`limits`)."""
        return self.sending and now - self.send_since > deadline_s

    async def run(self, websocket: WebSocket) -> None:
        """The sender task: one per client, so a slow socket only ever blocks itself."""
        if self.first is not None:  # the snapshot, on its own
            first, self.first = self.first, None
            self._start_send()
            try:
                await websocket.send_bytes(first)
            finally:
                self.sending = False
            self.messages += 1
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self.dropped or self.closed:
                return
            data = self.take()
            if data is None:
                continue
            self._start_send()
            try:
                await websocket.send_bytes(data)
            finally:
                self.sending = False
            self.messages += 1


async def wake_in_groups(clients: list, group: int) -> None:
    """Set each client's `wake`, `group` of them per loop turn: each send is tens of microseconds,
    so a hundred or a thousand senders woken in one turn hold the loop for milliseconds or tens of
    them, and every request and timer that falls due meanwhile waits. The loop runs between groups."""
    for i in range(0, len(clients), group):
        if i:
            await asyncio.sleep(0)
        for c in clients[i:i + group]:
            c.wake.set()
