"""`replication.writes.WriteTracker`: a write and its arrivals, the one way the hub, the
coordination panel and `bench propagation` follow writes."""

from __future__ import annotations

import pytest

from replication.clocks import Dot
from replication.sim.cluster import SimCluster
from replication.geo import place_replicas, select_pops
from replication.writes import WriteTracker, write_id


def applied(node, t, dots, via, keys=None):
    return {"kind": "applied", "t": t, "node": node, "dots": [list(d) for d in dots], "keys": keys or [["kv", "k"]],
            "via": via}


def test_a_local_apply_starts_a_write_and_first_arrivals_are_kept_with_how_they_came():
    wt = WriteTracker()
    w = wt.observe(applied("a", 10.0, [("a", 1)], "local"))
    assert w is not None and w.id == "a:1" and w.origin == "a" and w.keys == [["kv", "k"]]
    assert wt.observe(applied("b", 30.0, [("a", 1)], "payload")) is None
    wt.observe(applied("b", 35.0, [("a", 1)], "ae"))  # a duplicate: the first arrival stands
    wt.observe(applied("c", 40.0, [("a", 1), ("x", 9)], "ae"))  # with a dot nobody follows
    assert w.arrivals == {"a": 10.0, "b": 30.0, "c": 40.0}
    assert w.via == {"a": "local", "b": "payload", "c": "ae"} and w.repaired()
    assert w.spread(["a", "b", "c"]) == (3, 3, 30.0)
    assert w.spread(["a", "b", "d"]) == (2, 3, None)  # d is up and does not have it yet
    assert w.spread([]) == (0, 0, None)
    assert w.to_json() == {"id": "a:1", "origin": "a", "t": 10.0, "keys": [["kv", "k"]],
                           "arrivals": {"a": 10.0, "b": 30.0, "c": 40.0}}
    assert wt.get(("a", 1)) is w and wt.get(["a", 1]) is w and wt.get(("x", 9)) is None


def test_a_write_of_several_dots_arrives_once_per_replica_whichever_dot_comes_first():
    wt = WriteTracker()
    w = wt.observe(applied("a", 1.0, [("a", 1), ("a", 2)], "local"))
    wt.observe(applied("b", 5.0, [("a", 2)], "payload"))
    wt.observe(applied("b", 7.0, [("a", 1)], "payload"))
    assert w.arrivals == {"a": 1.0, "b": 5.0} and wt.get(("a", 2)) is w


def test_other_kinds_and_empty_applies_are_ignored():
    wt = WriteTracker()
    assert wt.observe({"kind": "sent", "t": 1.0, "node": "a"}) is None
    assert wt.observe(applied("a", 1.0, [], "local")) is None
    assert len(wt) == 0 and wt.recent() == []


def test_keep_bounds_the_recent_writes_and_forgets_their_dots():
    wt = WriteTracker(keep=3)
    for i in range(1, 6):
        wt.observe(applied("a", float(i), [("a", i)], "local"))
    assert [w.id for w in wt.recent()] == ["a:3", "a:4", "a:5"] and len(wt) == 3
    assert wt.get(("a", 1)) is None and wt.get(("a", 2)) is None
    wt.observe(applied("b", 9.0, [("a", 1)], "payload"))  # a late arrival of a forgotten write
    assert all("b" not in w.arrivals for w in wt)
    assert wt.latest("a").id == "a:5" and wt.latest("zz") is None


def test_latest_per_origin_keeps_each_origins_latest_however_old():
    wt = WriteTracker(keep=1, latest_per_origin=True)
    wa = wt.observe(applied("a", 1.0, [("a", 1)], "local"))
    wb = wt.observe(applied("b", 2.0, [("b", 1)], "local"))
    assert wt.recent() == [wb] and wt.latest("a") is wa  # out of the window, still a's latest
    wt.observe(applied("c", 3.0, [("a", 1)], "payload"))
    assert wa.arrivals == {"a": 1.0, "c": 3.0}
    wa2 = wt.observe(applied("a", 4.0, [("a", 2)], "local"))  # replaces a's latest: a:1 is forgotten
    assert wt.latest("a") is wa2 and wt.get(("a", 1)) is None
    # kept in the window, replaced as the latest: stays until the window lets it go
    one = WriteTracker(keep=2, latest_per_origin=True)
    x1 = one.observe(applied("x", 1.0, [("x", 1)], "local"))
    x2 = one.observe(applied("x", 2.0, [("x", 2)], "local"))
    assert one.recent() == [x1, x2] and one.get(("x", 1)) is x1 and one.latest("x") is x2


def test_timed_counts_the_first_timing_of_the_latest_write_only():
    wt = WriteTracker(keep=0, latest_per_origin=True)
    wt.observe(applied("a", 10.0, [("a", 1)], "local"))
    wt.timed("a", 10.0, 12.5)
    wt.timed("a", 10.0, 99.0)
    wt.timed("a", 11.0, 1.0)  # another instant: not this write
    wt.timed("b", 10.0, 1.0)  # no write there
    assert wt.latest("a").local_us == 12.5 and wt.latest("b") is None


def test_start_follows_a_write_before_it_happens_and_its_local_apply_is_its_first_arrival():
    wt = WriteTracker(everywhere=2)
    w = wt.start("a", 5.0, [Dot("a", 1)])
    assert wt.start("a", 6.0, [Dot("a", 1)]) is w  # already followed
    assert w.arrivals == {} and wt.completed == 0
    assert wt.applied("a", 5.0, [Dot("a", 1)], "local") is None
    assert w.arrivals == {"a": 5.0} and w.t == 5.0 and wt.completed == 0
    wt.applied("b", 8.0, [Dot("a", 1)], "payload")
    assert wt.completed == 1 and not w.repaired()
    wt.applied("c", 9.0, [Dot("a", 1)], "ae")  # more replicas than expected: counted once
    assert wt.completed == 1
    with pytest.raises(ValueError):
        wt.start("a", 1.0, [])
    with pytest.raises(ValueError):
        WriteTracker(keep=-1)


def test_on_a_simulated_cluster_every_write_reaches_every_replica_and_the_ids_are_the_streams():
    """Fed by a real run's events (as `bench propagation` feeds it): the dot a replica is about to
    use is the write's id, and every replica's arrival comes no earlier than the write."""
    placements = place_replicas(select_pops("lhr,jfk,syd,nrt"))
    wt = WriteTracker(everywhere=len(placements))

    def sink(ev):
        if ev.kind == "applied":
            wt.applied(ev.node, ev.t, ev.data["dots"], ev.data["via"])

    cluster = SimCluster(placements, seed=3, sink=sink)
    sim = cluster.sim
    sim.run_for(2000)
    expected = []
    for i, origin in enumerate(["lhr", "syd", "lhr", "nrt"]):
        node = sim.nodes[origin]
        expected.append(write_id(node.replica.store.ctx.next_dot(node.replica.actor)))
        sim.write(origin, "kv", f"k{i}", {"value": i})
        sim.run_for(30)
    assert sim.run_until_condition(lambda: wt.completed == 4, max_ms=10_000)
    assert [w.id for w in wt.recent()] == expected
    for w in wt:
        assert set(w.arrivals) == set(cluster.ids) and w.via[w.origin] == "local"
        assert all(t >= w.t for t in w.arrivals.values())
