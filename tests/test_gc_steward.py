"""The garbage-collector steward: long-lived objects frozen out of full passes, frozen garbage
reclaimed on schedule (app/web/gc_steward.py)."""

from __future__ import annotations

import gc
import weakref

from app.web.gc_steward import GcSteward


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_a_step_freezes_what_survives_and_a_reclaim_frees_frozen_garbage():
    gc.unfreeze()
    try:
        steward = GcSteward(period_s=3600, reclaim_s=3600)
        cycle = _Node()
        gone = weakref.ref(cycle)
        steward.step()
        assert gc.get_freeze_count() > 0 and steward.stats.freezes == 1
        del cycle
        gc.collect()  # a full pass does not see frozen objects: the cycle survives it
        assert gone() is not None, "frozen garbage is kept until a reclaim"
        steward.reclaim_s = 0.0
        steward.step()
        assert gone() is None, "the reclaim unfroze and collected it"
        assert steward.stats.reclaims == 1 and steward.stats.reclaimed >= 1
    finally:
        gc.unfreeze()


def test_full_passes_after_a_step_scan_only_what_is_younger():
    gc.unfreeze()
    try:
        keep = [[i] for i in range(50_000)]  # long-lived, tracked
        gc.collect()
        before = len(gc.get_objects())
        GcSteward(period_s=3600, reclaim_s=3600).step()
        after = len(gc.get_objects())
        assert after < before - 45_000, (before, after)
        assert keep[-1] == [49_999]
    finally:
        gc.unfreeze()
