"""`GET /api/coordination`: the live cluster's writes against a global leader, and who can write
under a partition. Numbers are checked against the latency model, never against wall time
(except that a measured local write must be a positive number of microseconds)."""

from __future__ import annotations

import pytest
from live_helpers import FakeClock, is_error, make_client, make_live, ok, run_async, snapshot

import app.dashboard.coordination_panel as coordination_app
from app.processes.cluster import ProcessLive
from replication.baseline.consensus import majority
from replication.baseline.costs import LastWrites, who_can_write
from replication.geo import place_replicas, select_pops

N = 22  # the default POPs


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def live(clock):
    return make_live("default", clock=clock)


@pytest.fixture
def client(live):
    return make_client(live)


def atlantic(topology: dict) -> list[list[str]]:
    """The page's "Cut the Atlantic": Europe, Africa and the Middle East against the rest."""
    east = [r["id"] for r in topology["replicas"] if -30 <= r["lon"] < 65]
    return [east, [r["id"] for r in topology["replicas"] if r["id"] not in east]]


# -- the shape and the numbers ---------------------------------------------------------------


def test_every_pop_gets_a_commit_latency_that_the_latency_model_allows(client):
    got = ok(client.get("/api/coordination"))
    rtt = ok(client.get("/api/topology"))["rtt_ms"]
    ids = [r["id"] for r in ok(client.get("/api/topology"))["replicas"]]
    assert got["replicas"] == N and got["quorum"] == majority(N) == 12
    assert got["leader"] == got["default_leader"] in ids
    assert list(got["pops"]) == ids
    assert got["partitioned"] is False and got["groups"] is None and got["down"] == []
    assert got["writers"]["crdt"] == ids and got["writers"]["consensus"] == ids
    assert got["writers"]["consensus_blocked"] is None
    assert got["local_writes_timed"] is True
    leader = got["leader"]
    # the leader's majority round trip: to the (quorum-1)-th nearest follower and back
    quorum_rtt = sorted(rtt[leader][f] for f in ids if f != leader)[got["quorum"] - 2]
    for i, p in got["pops"].items():
        c = p["consensus_commit_ms"]
        assert c is not None
        assert c >= quorum_rtt - 0.2, (i, c, quorum_rtt)  # rtt_ms is rounded to 0.1 ms
        if i == leader:
            assert c == pytest.approx(quorum_rtt, abs=0.2)
            assert p["rtt_to_leader_ms"] == 0.0
        else:
            # forward to the leader, its majority round trip, the commit back: no faults, no queue
            assert c == pytest.approx(rtt[i][leader] + quorum_rtt, abs=0.3), i
            assert p["rtt_to_leader_ms"] == pytest.approx(rtt[i][leader], abs=0.1)
        assert p["local_us"] is None and p["everywhere_ms"] is None and p["last_write"] is None
        assert p["can_write_crdt"] and p["can_write_consensus"]
    # a far POP pays for the distance to the leader: tens to hundreds of ms
    assert got["pops"]["syd"]["consensus_commit_ms"] > 200.0


def test_a_write_reports_its_local_microseconds_then_its_time_to_reach_every_replica(client, live, clock):
    assert ok(client.put("/api/replicas/syd/kv/panel", json={"value": "g'day"}))["values"] == ["g'day"]
    p = ok(client.get("/api/coordination"))["pops"]["syd"]
    assert isinstance(p["local_us"], float) and 0 < p["local_us"] < 1e6
    assert p["everywhere_ms"] is None  # virtual time has not moved: it is only at Sydney
    assert p["last_write"]["reached"] == 1 and p["last_write"]["of"] == N
    assert p["last_write"]["id"].startswith("syd:")
    assert ok(client.get("/api/coordination"))["pops"]["lhr"]["local_us"] is None  # only the writer
    clock.advance(2.0)  # two virtual seconds at speed 1
    p = ok(client.get("/api/coordination"))["pops"]["syd"]
    assert p["last_write"]["reached"] == N
    rtt = ok(client.get("/api/topology"))["rtt_ms"]["syd"]
    limit = max(rtt.values()) / 2  # one direct hop to the farthest replica: the physical limit
    assert limit - 0.1 <= p["everywhere_ms"] < 2000.0
    # still orders of magnitude below a global leader's commit... of the local work, that is
    assert p["local_us"] / 1000.0 < p["consensus_commit_ms"]


def test_the_latest_write_replaces_the_previous_one(client, live, clock):
    ok(client.put("/api/replicas/lhr/kv/a", json={"value": 1}))
    clock.advance(2.0)
    first = ok(client.get("/api/coordination"))["pops"]["lhr"]["last_write"]
    ok(client.post("/api/replicas/lhr/counters/b", json={"add": 1}))
    second = ok(client.get("/api/coordination"))["pops"]["lhr"]
    assert second["last_write"]["id"] != first["id"] and second["last_write"]["reached"] == 1
    assert second["everywhere_ms"] is None and second["local_us"] > 0


# -- partitions and crashes ------------------------------------------------------------------


def test_cutting_the_atlantic_leaves_crdt_writers_everywhere_and_a_leader_only_with_a_majority(client):
    topo = ok(client.get("/api/topology"))
    groups = atlantic(topo)
    ok(client.post("/api/faults/partition", json={"groups": groups}))
    got = ok(client.get("/api/coordination"))
    leader = got["leader"]
    side = next(g for g in groups if leader in g)
    assert got["partitioned"] and sorted(map(sorted, got["groups"])) == sorted(map(sorted, groups))
    assert len(got["writers"]["crdt"]) == N
    assert got["writers"]["leader_side"] == side
    if len(side) >= got["quorum"]:
        assert got["writers"]["consensus"] == side and got["writers"]["consensus_blocked"] is None
    else:
        assert got["writers"]["consensus"] == []
        assert "majority" in got["writers"]["consensus_blocked"]
    # the same answer for either leader: try one on the other side
    other = next(g for g in groups if leader not in g)[0]
    got2 = ok(client.get(f"/api/coordination?leader={other}"))
    side2 = next(g for g in groups if other in g)
    assert got2["leader"] == other
    assert got2["writers"]["consensus"] == (side2 if len(side2) >= got2["quorum"] else [])
    # exactly one side can hold a majority: together the two leaders' answers are never both yes
    assert not (got["writers"]["consensus"] and got2["writers"]["consensus"])
    for i, p in got["pops"].items():
        assert p["can_write_crdt"] is True
        assert p["can_write_consensus"] == (i in got["writers"]["consensus"])
    ok(client.delete("/api/faults/partition"))
    healed = ok(client.get("/api/coordination"))
    assert healed["partitioned"] is False and len(healed["writers"]["consensus"]) == N


def test_isolating_a_small_region_stops_only_that_region_under_consensus(client):
    got = ok(client.get("/api/coordination"))
    topo = ok(client.get("/api/topology"))
    leader_region = next(r["region"] for r in topo["replicas"] if r["id"] == got["leader"])
    small = [r["id"] for r in topo["replicas"] if r["region"] == "Oceania"]
    assert leader_region != "Oceania" and small
    ok(client.post("/api/faults/partition", json={"groups": [small]}))
    got = ok(client.get("/api/coordination"))
    rest = [i for i in got["pops"] if i not in small]
    assert got["writers"]["consensus"] == rest
    assert len(got["writers"]["crdt"]) == N
    assert all(not got["pops"][i]["can_write_consensus"] for i in small)


def test_a_crashed_leader_stops_every_write_under_consensus_and_none_under_crdts(client):
    leader = ok(client.get("/api/coordination"))["leader"]
    ok(client.post(f"/api/replicas/{leader}/crash"))
    got = ok(client.get("/api/coordination"))
    assert got["down"] == [leader]
    assert got["writers"]["consensus"] == [] and leader in got["writers"]["consensus_blocked"]
    assert len(got["writers"]["crdt"]) == N - 1 and leader not in got["writers"]["crdt"]
    ok(client.post(f"/api/replicas/{leader}/recover"))
    assert len(ok(client.get("/api/coordination"))["writers"]["consensus"]) == N


# -- choosing the leader -----------------------------------------------------------------------


def test_another_leader_can_be_asked_for(client):
    default = ok(client.get("/api/coordination"))
    syd = ok(client.get("/api/coordination?leader=syd"))
    assert syd["leader"] == "syd" and syd["default_leader"] == default["leader"] != "syd"
    assert syd["pops"]["syd"]["rtt_to_leader_ms"] == 0.0
    # the default is the most central leader: on average no worse than Sydney
    mean = lambda d: sum(p["consensus_commit_ms"] for p in d["pops"].values()) / N  # noqa: E731
    assert mean(default) <= mean(syd)
    assert ok(client.get("/api/coordination"))["leader"] == default["leader"]  # nothing stuck


@pytest.mark.parametrize("query", ["?leader=nowhere", "?leader=", "?leader=LHR", "?leader=lhr%00"])
def test_an_unknown_leader_is_refused_and_changes_nothing(client, live, query):
    before = snapshot(live)
    err = is_error(client.get("/api/coordination" + query), 422, "unknown_leader")
    assert "known: lhr" in err["message"]
    assert snapshot(live) == before
    assert ok(client.get("/api/coordination"))["leader"] == ok(client.get("/api/coordination"))["default_leader"]


def test_the_baseline_runs_once_per_leader(client, monkeypatch):
    calls = []
    real = coordination_app.commit_baseline

    def counting(*args, **kw):
        calls.append(args[2] if len(args) > 2 else None)
        return real(*args, **kw)

    monkeypatch.setattr(coordination_app, "commit_baseline", counting)
    for _ in range(3):
        ok(client.get("/api/coordination"))
        ok(client.get("/api/coordination?leader=syd"))
    assert calls == [None, "syd"]


def test_only_get_is_allowed(client):
    is_error(client.post("/api/coordination", json={}), 405, "method_not_allowed")


# -- the pure parts --------------------------------------------------------------------------


def test_who_can_write_counts_only_up_replicas_towards_the_majority():
    ids = ["a", "b", "c", "d", "e"]
    assert who_can_write(ids, None, [], "a")["consensus"] == ids
    # a majority side with the leader
    w = who_can_write(ids, [["a", "b", "c"], ["d", "e"]], [], "a")
    assert w["consensus"] == ["a", "b", "c"] and w["crdt"] == ids
    # the same side with one replica down is no longer a majority of five
    w = who_can_write(ids, [["a", "b", "c"], ["d", "e"]], ["c"], "a")
    assert w["consensus"] == [] and "short of a majority of 3" in w["consensus_blocked"]
    assert w["crdt"] == ["a", "b", "d", "e"]
    # the leader on the minority side
    assert who_can_write(ids, [["a", "b", "c"], ["d", "e"]], [], "d")["consensus"] == []
    # the leader down, nothing partitioned
    w = who_can_write(ids, None, ["a"], "a")
    assert w["consensus"] == [] and "leader a is down" in w["consensus_blocked"]


def test_last_writes_tracks_one_write_per_origin_and_its_arrivals():
    lw = LastWrites()
    lw.observe({"kind": "applied", "t": 10.0, "node": "a", "dots": [["a", 1]], "keys": [], "via": "local"})
    lw.timed("a", 10.0, 12.5)
    lw.timed("a", 10.0, 99.0)  # only the first timing of a write counts
    lw.observe({"kind": "applied", "t": 30.0, "node": "b", "dots": [["a", 1]], "keys": [], "via": "payload"})
    r = lw.report("a", ["a", "b", "c"])
    assert r == {"id": "a:1", "t_ms": 10.0, "local_us": 12.5, "everywhere_ms": None, "reached": 2, "of": 3}
    assert lw.report("a", ["a", "b"])["everywhere_ms"] == 20.0  # c is down: it does not count
    lw.observe({"kind": "applied", "t": 40.0, "node": "c", "dots": [["a", 1]], "keys": [], "via": "ae"})
    assert lw.report("a", ["a", "b", "c"])["everywhere_ms"] == 30.0
    # a newer write replaces it; late arrivals of the old one are ignored
    lw.observe({"kind": "applied", "t": 50.0, "node": "a", "dots": [["a", 2]], "keys": [], "via": "local"})
    lw.observe({"kind": "applied", "t": 55.0, "node": "b", "dots": [["a", 1]], "keys": [], "via": "payload"})
    r = lw.report("a", ["a", "b", "c"])
    assert r["id"] == "a:2" and r["reached"] == 1 and r["local_us"] is None
    assert lw.report("b", ["a", "b"]) is None


# -- serve --processes ---------------------------------------------------------------------------


def test_with_processes_the_answer_uses_their_partition_and_says_local_writes_are_not_timed(tmp_path):
    """Without the app's lifespan no process starts: the replicas are reported up by hand."""
    placements = place_replicas(select_pops("lhr,fra,jfk,sin,syd"))
    pl = ProcessLive(placements, tmp_path)
    run_async(pl.partition([["sin", "syd"]]))  # every replica is down yet: none is told, only the record changes
    for rid in pl.ids:
        pl._on_event({"replica": rid, "type": "status", "actor": rid, "t": pl._t0})
    got = ok(make_client(pl).get("/api/coordination"))
    assert got["local_writes_timed"] is False
    assert got["groups"] == [["sin", "syd"], ["lhr", "fra", "jfk"]]
    assert got["writers"]["crdt"] == pl.ids
    side = next(g for g in got["groups"] if got["leader"] in g)
    assert got["writers"]["consensus"] == (side if len(side) >= 3 else [])
    assert all(p["consensus_commit_ms"] > 0 for p in got["pops"].values())


# -- what the simulator contributes ------------------------------------------------------------


def test_the_simulator_reports_its_groups_in_node_order_and_none_when_healed():
    from replication.sim.cluster import SimCluster

    c = SimCluster(place_replicas(select_pops("lhr,fra,jfk,sin,syd")), seed=3)
    assert c.partition_groups() is None
    c.partition([["syd", "lhr"]])
    assert c.partition_groups() == [["lhr", "syd"], ["fra", "jfk", "sin"]]
    c.crash("sin")
    assert c.down() == ["sin"]
    c.heal()
    assert c.partition_groups() is None


def test_timing_local_writes_changes_nothing_in_virtual_time():
    """The work clock is read around each local write only: the same seed gives the same run."""
    from replication.sim.cluster import SimCluster

    def run(work_clock) -> list:
        events: list = []
        c = SimCluster(place_replicas(select_pops("lhr,jfk,syd")), seed=7, sink=events.append)
        c.sim._work_clock = work_clock  # as the cluster would pass it, or not at all
        for i, origin in enumerate(["lhr", "syd", "jfk", "lhr"]):
            c.write(origin, "kv", f"k{i}", {"value": i})
            c.sim.run_for(150)
        return [(e.t, e.kind, e.node) for e in events], c.sim.digests()

    ticks = iter(range(0, 10**9, 1234))
    assert run(None) == run(lambda: next(ticks))
    c = SimCluster(place_replicas(select_pops("lhr,jfk")), seed=1)
    assert c.last_write_us() is None
    c.write("lhr", "counters", "n", {"add": 1})
    assert c.last_write_us() > 0
