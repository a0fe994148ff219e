"""The garbage collector's thresholds for a process that runs the simulator as a batch job.

CPython's full collection walks every tracked container, and a simulated cluster is almost all
long-lived containers: 10,000 replicas hold about 2.2 million, and one full pass over them took
1-2.5 s on a shared 2-core machine. With the default thresholds, 20 writes at 10,000 replicas ran
11 full passes, a third of the run's wall time (12.0 of 36.6 s). The simulator makes no
reference cycles in steady state (a full collection after those writes found 0 unreachable
objects), so a full pass waits for `FULL_AFTER` passes of the middle generation instead of 10.

The young generation is collected after `YOUNG_AFTER` allocations instead of 700: every message in
flight (its envelope, its heap entry, its payload's tuples) outlives a few hundred allocations, so
at 700 each was traversed by a young pass and again by a middle one before it was delivered and
freed by reference counting. That was a tenth of the compiled simulator's time (`replication/native.py`:
the same 54-POP workload 1.44 s with the default young threshold, 1.30 s with 100,000, 1.31 s with no
collector at all; three runs each, side by side). A cycle made now is still freed, a little later.

Only batch runs use this (`bench propagation`, `bench coordination`, `bench simspeed`'s
workload): the server keeps its own steward (`app/web/gc_steward.py`), which freezes the
long-lived state instead, since it must also bound its pauses.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

FULL_AFTER = 1000  # middle-generation passes per full pass (CPython's default: 10)
YOUNG_AFTER = 100_000  # allocations per young pass (CPython's default: 700)


@contextlib.contextmanager
def batch() -> Iterator[None]:
    """Rare full collections while the block runs; the previous thresholds after it."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], YOUNG_AFTER), before[1], max(before[2], FULL_AFTER))
    try:
        yield
    finally:
        gc.set_threshold(*before)


__all__ = ["FULL_AFTER", "YOUNG_AFTER", "batch"]
