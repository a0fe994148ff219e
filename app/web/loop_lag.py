"""How long the server's event loop is held: a task that asks to wake every few milliseconds
and records how late it woke.

Anything that holds the loop (a catch-up of the simulator, a big write, a snapshot for a new
WebSocket client, a garbage collection) delays every request and every frame by as much; this
probe sees it from inside, whatever held it. A stall that starts while the probe sleeps is seen
shortened by at most one period (`PERIOD_S`), so short periods keep the figure close; each wake
costs some tens of microseconds (~1 % of a core at 5 ms).

Two figures, both in `/metrics` (`metrics.Metrics`):
- `edgestate_event_loop_lag_seconds`: a histogram of every wake's lateness (for percentiles,
  from the difference between two scrapes);
- `edgestate_event_loop_lag_recent_max_seconds`: the longest lateness within the last
  `RECENT_S` seconds (a scraper polling more often than that sees every stall's peak).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Callable

PERIOD_S = 0.005
RECENT_S = 5.0
# a window's maximum is kept per bucket of this many seconds: bounded memory, whatever the rate
_BUCKET_S = 0.5


class RecentMax:
    """The largest value seen within the last `window_s` seconds (kept per `_BUCKET_S` of time)."""

    def __init__(self, window_s: float = RECENT_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._buckets: deque[tuple[float, float]] = deque()  # (bucket start, max in it)

    def add(self, value: float) -> None:
        now = self._clock()
        start = now - now % _BUCKET_S
        b = self._buckets
        if b and b[-1][0] == start:
            if value > b[-1][1]:
                b[-1] = (start, value)
        else:
            b.append((start, value))
        self._drop_old(now)

    def value(self) -> float:
        self._drop_old(self._clock())
        return max((v for _, v in self._buckets), default=0.0)

    def _drop_old(self, now: float) -> None:
        b = self._buckets
        while b and b[0][0] + _BUCKET_S <= now - self.window_s:
            b.popleft()


async def probe(record: Callable[[float], None], period_s: float = PERIOD_S) -> None:
    """Until cancelled: sleep `period_s`, and `record` how many seconds later than asked it woke."""
    clock = time.perf_counter
    while True:
        t = clock()
        await asyncio.sleep(period_s)
        record(max(0.0, clock() - t - period_s))
