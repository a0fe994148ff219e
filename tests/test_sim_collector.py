"""The batch collector policy (`replication.sim.collector`) and the premise it rests on: the
simulator makes no reference cycles, so full collections can wait without memory piling up."""

from __future__ import annotations

import gc
import random

import pytest

from replication.geo import place_replicas, select_pops
from replication.sim import collector
from replication.sim.cluster import SimCluster


def test_batch_makes_full_and_young_collections_rare_and_puts_the_thresholds_back():
    before = gc.get_threshold()
    with collector.batch():
        inside = gc.get_threshold()
    assert inside == (max(before[0], collector.YOUNG_AFTER), before[1], max(before[2], collector.FULL_AFTER))
    assert inside[2] >= 100 * 10  # a hundred times rarer than CPython's default
    assert inside[0] >= 100 * 700  # young passes too
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), collector.batch():
        raise RuntimeError("a failed run still gets its thresholds back")
    assert gc.get_threshold() == before


@pytest.mark.parametrize("replicas, strategy", [(None, "plumtree"), (120, "plumtree"), (None, "gossip")])
def test_the_simulator_leaves_no_reference_cycles_behind(replicas, strategy):
    """Writes of every type, a partition and its heal, a crash and a recovery: everything the
    run let go of was freed by reference counting, none of it waits for the collector."""
    cluster = SimCluster(place_replicas(select_pops("all"), replicas), strategy=strategy, seed=3)
    sim, ids = cluster.sim, cluster.ids
    rng = random.Random(1)
    sim.run_for(2000)
    gc.collect()
    gc.disable()
    try:
        for i in range(90):
            origin = rng.choice(ids)
            if i % 3 == 0:
                sim.write(origin, "kv", f"k{i % 7}", {"value": i})
            elif i % 3 == 1:
                sim.write(origin, "counters", f"c{i % 5}", {"add": 1})
            else:
                sim.write(origin, "sets", f"s{i % 4}", {"add": [f"v{i}"]})
            sim.run_for(50)
            if i == 20:
                sim.partition([ids[: len(ids) // 2], ids[len(ids) // 2:]])
            if i == 45:
                sim.heal()
            if i == 55:
                cluster.crash(ids[5])
            if i == 70:
                cluster.recover(ids[5])
        sim.run_for(5000)
        assert sim.converged()
        gc.set_debug(gc.DEBUG_SAVEALL)
        unreachable = gc.collect()
        kinds = sorted({type(o).__name__ for o in gc.garbage})[:10]
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()
    assert unreachable == 0, f"{unreachable} objects in reference cycles: {kinds}"
