"""The coordinated baseline (replication/baseline/consensus.py) and `bench coordination`: commit needs a
majority, followers forward, commit latency is what the latency model says it must be, and the
benchmark reports the documented shape. Virtual time only; nothing here sleeps."""

import argparse
import json
import math

import pytest

from replication.bench import coordination_cost as coordination
from replication.baseline.consensus import (
    ConsensusCluster,
    RaftAck,
    RaftAppend,
    RaftCommit,
    RaftForward,
    majority,
    quorum_rtt_ms,
)
from replication.crdts import types
from replication.errors import InvalidOperation, UnknownType
from replication.geo import LatencyModel, place_replicas, select_pops
from replication.messages import Envelope

POPS = "lhr,fra,iad,sjc,gru,jnb,sin,syd,nrt"  # 9 replicas: quorum 5


def cluster(leader="lhr", **kw):
    return ConsensusCluster(place_replicas(select_pops(POPS)), leader=leader, **kw)


def test_messages_are_envelope_compatible_with_kinds():
    kinds = {RaftAppend.kind, RaftAck.kind, RaftCommit.kind, RaftForward.kind}
    assert kinds == {"raft_append", "raft_ack", "raft_commit", "raft_forward"}
    env = Envelope("a", "b", RaftCommit(1, 3))
    assert env.kind == "raft_commit" and env.payloads == 0


def test_a_leader_write_commits_after_its_majority_round_trip():
    c = cluster()
    t = c.write("lhr", "kv", "x", {"value": 1})
    assert not c.committed(t)  # blocks: nothing is committed at submission
    assert c.run_until_committed([t], max_ms=5000)
    q = quorum_rtt_ms("lhr", c.ids, lambda a, b: 2 * c.one_way_ms(a, b))
    assert q > 0
    assert c.latency_ms(t) == pytest.approx(q)
    c.sim.run_for(1000)
    assert c.sim.converged()
    assert all(c.sim.read(i, "kv", "x") == 1 for i in c.ids)


def test_a_follower_write_is_forwarded_and_committed():
    c = cluster()
    t = c.write("syd", "kv", "x", {"value": "from syd"})
    assert c.run_until_committed([t], max_ms=5000)
    st = c.sim.stats
    assert st["delivered"]["raft_forward"] == 1
    leader = c.sim.nodes["lhr"]
    assert [(e.origin, e.req) for e in leader.log] == [("syd", t.req)]
    # forward + majority round trip + commit back: never less than the physics allows
    rtt_leader = 2 * c.one_way_ms("syd", "lhr")
    expected = rtt_leader + quorum_rtt_ms("lhr", c.ids, lambda a, b: 2 * c.one_way_ms(a, b))
    assert c.latency_ms(t) == pytest.approx(expected)
    assert c.latency_ms(t) >= rtt_leader
    c.sim.run_for(1000)
    assert all(c.sim.read(i, "kv", "x") == "from syd" for i in c.ids)


def test_every_registered_type_commits_by_its_sequential_specification():
    c = cluster()
    tickets = {t.NAME: c.write("syd", t.NAME, "k", t.EXAMPLES[0]) for t in types()}
    assert c.run_until_committed(list(tickets.values()), max_ms=5000)
    c.sim.run_for(1000)
    for t in types():
        want = t.sequential(None, t.EXAMPLES[0])
        assert want is not None and all(c.sim.read(i, t.NAME, "k") == want for i in c.ids), t.NAME


@pytest.mark.parametrize("ns, op, error", [
    ("maps", {"add": {"n": 1.5}}, InvalidOperation),
    ("counters", {"add": "1"}, InvalidOperation),
    ("nowhere", {"value": 1}, UnknownType),
])
def test_a_bad_operation_is_refused_before_it_enters_the_log(ns, op, error):
    c = cluster()
    for at in ("lhr", "syd"):  # the leader, and a follower that would forward it
        with pytest.raises(error):
            c.write(at, ns, "k", op)
    c.sim.run_for(1000)
    assert all(c.sim.nodes[i].log == [] for i in c.ids)


def test_commit_latency_is_deterministic_per_seed_even_with_jitter():
    def run(seed):
        c = cluster(seed=seed, model=LatencyModel(jitter_ms=5.0))
        ts = [c.write(w, "counters", "n", {"add": 1}) for w in ("syd", "gru", "lhr", "nrt")]
        assert c.run_until_committed(ts, max_ms=5000)
        c.sim.run_for(2000)
        return [c.latency_ms(t) for t in ts], c.sim.read("iad", "counters", "n")

    a, b = run(7), run(7)
    assert a == b
    assert a[1] == 4
    c = cluster()
    for w, lat in zip(("syd", "gru", "lhr", "nrt"), a[0]):
        assert lat >= c.expected_commit_ms(w) - 1e-9  # jitter only adds


def test_a_leader_cut_off_from_a_majority_commits_nothing_until_heal():
    c = cluster()
    minority = ["lhr", "fra", "iad", "sjc"]  # 4 of 9: the leader's side has no majority
    c.sim.partition([minority])
    tickets = [c.write(w, "kv", f"k{w}", {"value": w}) for w in ("lhr", "fra", "syd", "nrt")]
    assert not c.run_until_committed(tickets, max_ms=10_000)
    assert not any(c.committed(t) for t in tickets)
    assert all(c.sim.nodes[i].commit == 0 for i in c.ids)
    assert c.sim.nodes["syd"].pending() == [tickets[2].req]
    c.sim.heal()
    t_heal = c.sim.now
    assert c.run_until_committed(tickets, max_ms=10_000)  # pending writes commit after heal, none lost
    assert c.sim.now - t_heal <= 2 * c.retry_ms + 1000
    c.sim.run_for(2000)
    assert c.sim.converged()
    assert len(c.sim.nodes["lhr"].log) == 4  # forwards retried during the partition were deduplicated


def test_the_leaders_majority_side_keeps_writing():
    c = cluster()
    c.sim.partition([["lhr", "fra", "iad", "sjc", "jnb"]])  # 5 of 9 with the leader
    inside = [c.write(w, "kv", "k", {"value": w}) for w in ("fra", "jnb", "lhr")]
    outside = [c.write(w, "kv", "k", {"value": w}) for w in ("syd", "sin")]
    assert c.run_until_committed(inside, max_ms=5000)
    c.sim.run_for(5000)
    assert not any(c.committed(t) for t in outside)


def test_default_leader_is_central_and_majority_counts_the_leader():
    assert majority(9) == 5 and majority(54) == 28 and majority(1) == 1
    c = ConsensusCluster(place_replicas(select_pops(POPS)))
    mean = lambda leader: sum(
        ConsensusCluster(c.placements, leader=leader).expected_commit_ms(w) for w in c.ids) / len(c.ids)
    assert mean(c.leader) == min(mean(x) for x in c.ids)
    with pytest.raises(ValueError):
        ConsensusCluster(c.placements, leader="xxx")


def test_a_single_replica_commits_at_once():
    c = ConsensusCluster(place_replicas(select_pops("lhr")))
    t = c.write("lhr", "kv", "x", {"value": 1})
    assert c.committed(t) and c.latency_ms(t) == 0.0


def test_bench_reports_the_documented_shape(tmp_path, capsys):
    ap = argparse.ArgumentParser()
    which = ap.add_subparsers(dest="bench")
    coordination.add_parser(which)
    out = tmp_path / "c.json"
    args = ap.parse_args(["coordination", "--pops", "lhr,fra,iad,sjc,syd,nrt,jnb", "--leader", "lhr",
                          "--warmup", "2", "--writes", "1", "--local-calls", "50", "--quiet", "--json", str(out)])
    assert coordination.run(args) == 0
    data = json.loads(out.read_text())
    assert set(data) >= {"pops", "summary", "availability"}
    assert set(data["pops"]) == {"lhr", "fra", "iad", "sjc", "syd", "nrt", "jnb"}
    c = ConsensusCluster(place_replicas(select_pops("lhr,fra,iad,sjc,syd,nrt,jnb")), leader="lhr")
    for pop, r in data["pops"].items():
        assert {"crdt_local_us", "crdt_everywhere_ms", "consensus_commit_ms"} <= set(r)
        assert 0 < r["crdt_local_us"] < 1000.0  # local work: well under a millisecond
        assert 0 < r["crdt_everywhere_ms"] < math.inf
        if pop != "lhr":  # at least the round trip to the leader
            assert r["consensus_commit_ms"] >= 2 * c.one_way_ms(pop, "lhr")
        assert r["consensus_commit_ms"] == pytest.approx(c.expected_commit_ms(pop))
    s = data["summary"]
    assert s["leader"] == "lhr" and s["quorum"] == 4
    assert s["consensus_commit_ms_median"] * 1000 > s["crdt_local_us_median"]
    a = data["availability"]
    assert a["partition"] == "americas"
    assert a["crdt"] == 1.0
    assert a["consensus"] == pytest.approx(5 / 7)  # the leader's side: 5 of 7, a majority
    assert set(a["consensus_writers"]) == {"lhr", "fra", "syd", "nrt", "jnb"}
    assert a["consensus_committed_after_heal"] == 1.0
    assert "median" in capsys.readouterr().out


def test_availability_is_zero_when_the_leader_is_in_the_minority():
    p = coordination.Params(pops="lhr,fra,iad,sjc,syd", leader="iad", partition="americas", deadline_ms=3000)
    a = coordination.availability(p, place_replicas(select_pops(p.pops)), "iad")
    assert a["crdt"] == 1.0 and a["consensus"] == 0.0
    assert a["consensus_committed_after_heal"] == 1.0


def test_cli_bench_coordination_writes_json_and_refuses_a_bad_leader(tmp_path, capsys):
    import json

    from app.cli import main

    out = tmp_path / "c.json"
    assert main(["bench", "coordination", "--pops", "lhr,jfk,syd,nrt,fra", "--quiet", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["pops"]) == {"lhr", "jfk", "syd", "nrt", "fra"}
    assert {"summary", "availability"} <= set(data)
    assert "consensus" in capsys.readouterr().out
    assert main(["bench", "coordination", "--pops", "lhr,jfk,syd", "--leader", "nope", "--quiet"]) == 2
