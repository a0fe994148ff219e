"""Keeps the long-lived state out of the garbage collector's full passes.

A full collection scans every tracked object and every container's contents: with the default 22
replicas each holding sets at their 10,000-member bound, one took 100-250 ms, a stall of the
event loop (and of every request and WebSocket frame behind it) whenever enough new objects had
survived. Almost all of that is the cluster's state, which lives for the whole run and holds no
reference cycles. So every `PERIOD_S` the steward collects the young generations (cheap) and
freezes what survived (`gc.freeze`: moved out of every later collection, O(1)); full passes then
scan only what is younger than a period.

The price: a reference cycle that becomes garbage after it was frozen is not freed until the next
reclaim. Every `RECLAIM_S` the steward unfreezes and runs one full collection, so such garbage
lives at most that long; that one pass is the only long one, counted in `reclaims`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import time
from dataclasses import dataclass

PERIOD_S = 5.0
RECLAIM_S = 15 * 60.0


@dataclass
class StewardStats:
    freezes: int = 0
    reclaims: int = 0
    reclaimed: int = 0  # unreachable objects the reclaims found (frozen garbage, and any other)
    longest_reclaim_ms: float = 0.0


class GcSteward:
    def __init__(self, period_s: float = PERIOD_S, reclaim_s: float = RECLAIM_S) -> None:
        self.period_s = period_s
        self.reclaim_s = reclaim_s
        self.stats = StewardStats()
        self._task: asyncio.Task | None = None
        self._since_reclaim = time.monotonic()

    def step(self) -> None:
        """One period's work: reclaim if due, then collect the young and freeze the survivors."""
        if time.monotonic() - self._since_reclaim >= self.reclaim_s:
            t0 = time.perf_counter()
            gc.unfreeze()
            self.stats.reclaimed += gc.collect()
            self.stats.reclaims += 1
            self.stats.longest_reclaim_ms = max(self.stats.longest_reclaim_ms, (time.perf_counter() - t0) * 1000)
            self._since_reclaim = time.monotonic()
        gc.collect(1)
        gc.freeze()
        self.stats.freezes += 1

    def reclaim_soon(self) -> None:
        """Make the next step a reclaim: a whole cluster just became garbage (`POST /api/reset`).
        It was frozen, and holds cycles, so without this it would stay until the next reclaim is
        due: measured, 40 sets of 500 members on 22 POPs kept ~150 MB per reset for up to
        RECLAIM_S; with it, RSS stays flat across resets."""
        self._since_reclaim = -math.inf

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            self.step()

    def start(self) -> None:
        """Freeze what exists now (the cluster just built), then every period."""
        self.step()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop, and hand everything frozen back to the collector (a test process goes on)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        gc.unfreeze()


__all__ = ["GcSteward", "StewardStats"]
