"""The per-message shortcuts of the node and the simulator (issue 17) change no outcome: young
arrivals age by time without a timer, a strategy-only wake-up runs only the strategy, the stable
point is the pointwise minimum it always was."""

from __future__ import annotations

import random

import pytest

from replication.clocks import CausalContext, Dot, VersionVector
from replication.geo import place_replicas, select_pops
from replication.messages import AeDigest, Envelope, Gossip
from replication.node import Node, NodeConfig
from replication.replica import Replica
from replication.sim.cluster import SimCluster


def _node(peers=("a", "b", "c")) -> Node:
    return Node("a", list(peers), seed=1, link_ms=lambda p: 10.0)


def test_an_applied_write_sets_no_timer_and_is_young_for_exactly_the_grace():
    node = _node()
    before = node.next_deadline()
    node.tick(now=0.0)  # the overlay announcement
    quiet = node.next_deadline()
    peer = Replica("b", members=["a", "b", "c"])
    _, delta = peer.write("kv", "k", {"value": 1}, now=5.0)
    node.deliver(Gossip(Dot("b", 1), "b", delta), 100.0, "payload")
    assert before == 0.0
    assert node.next_deadline() == quiet  # no wake-up for the arrival's grace to end
    dot = Dot("b", 1)
    grace = node.cfg.ae_grace_ms
    node._now = 100.0 + grace - 0.001
    assert node._young(dot)
    node._now = 100.0 + grace
    assert not node._young(dot)


def test_a_digest_after_the_grace_gets_the_write_without_any_tick_in_between():
    node = _node()
    node.tick(now=0.0)
    peer = Replica("b", members=["a", "b", "c"])
    _, delta = peer.write("kv", "k", {"value": 1}, now=5.0)
    node.deliver(Gossip(Dot("b", 1), "b", delta), 100.0, "payload")
    empty = Envelope("c", "a", AeDigest(CausalContext()))
    assert node.receive(empty, now=150.0) == []  # young: dissemination is still delivering it
    late = node.receive(empty, now=100.0 + node.cfg.ae_grace_ms + 1)
    assert [e.msg.kind for e in late] == ["ae_reply"]


def test_a_strategy_wake_up_leaves_membership_and_anti_entropy_alone(monkeypatch):
    node = _node()
    node.tick(now=0.0)
    fixed = node.next_deadline()
    node.next_deadline()  # caches the membership / anti-entropy / gc minimum
    called = []
    monkeypatch.setattr(node.membership, "tick", lambda now: called.append(now) or [])
    node.tick(now=fixed / 2)  # before anything of theirs is due
    assert called == []
    node.tick(now=max(fixed, node.ae.next_at, node.membership.next_deadline()))
    assert called  # due: they run


def test_stable_point_is_the_pointwise_minimum_over_every_member():
    rng = random.Random(3)
    members = [f"r{i}" for i in range(8)]
    for _ in range(50):
        r = Replica("r0", members=members)
        for m in members[1:]:
            r.observe_peer(m, VersionVector({a: rng.randrange(0, 5) for a in rng.sample(members, 4)}), forget=False)
        mine = VersionVector({a: rng.randrange(0, 5) for a in members})
        r.store.applied.vv = mine
        expected = mine
        for m in sorted(members[1:]):
            expected = expected.meet(r.peer_applied[m])
        seen = []
        r.store.forget_stable = lambda stable: seen.append(stable) or 0
        r.forget_stable()
        assert seen == [expected]


def test_same_seed_same_figures_twice():
    """Deterministic replay through every shortcut: two runs, identical counters and states."""

    def run():
        c = SimCluster(place_replicas(select_pops("default")), seed=7, config=NodeConfig())
        rng = random.Random(1)
        c.sim.run_for(2000)
        for i in range(30):
            c.write(rng.choice(c.ids), "kv", f"k{i % 4}", {"value": i})
            c.sim.run_for(rng.uniform(0, 100))
        c.settle()
        return c.sim.stats, sorted(c.sim.digests().items()), c.sim.now

    assert run() == run()


# -- large clusters: partial views ------------------------------------------------------------


@pytest.fixture
def large_at_40(monkeypatch):
    """Large-cluster mode from 40 members, so that a quick test exercises it."""
    from replication import node as node_module
    from replication.sim import cluster as cluster_module

    monkeypatch.setattr(node_module, "LARGE_CLUSTER", 40)
    monkeypatch.setattr(cluster_module, "LARGE_CLUSTER", 40)


def _large(n=120, seed=3) -> SimCluster:
    return SimCluster(place_replicas(select_pops("all"), n), seed=seed)


def test_a_large_cluster_watches_a_partial_view_and_still_delivers_everywhere(large_at_40):
    c = _large()
    sim = c.sim
    sim.run_for(3000)
    sizes = [len(n.membership.members) for n in sim.nodes.values()]
    assert max(sizes) < len(c.ids) / 2, sizes  # nobody watches everyone
    assert all(n.replica.members is c.sim.nodes[c.ids[0]].replica.members for n in sim.nodes.values())  # shared
    for i, origin in enumerate(c.ids[:10]):
        c.write(origin, "kv", f"k{i}", {"value": i})
        sim.run_for(50)
    assert c.settle(max_ms=20_000)
    assert all(sim.read(r, "kv", "k9") for r in c.ids)


def test_a_large_cluster_detects_a_crash_and_keeps_converging(large_at_40):
    c = _large()
    sim = c.sim
    sim.run_for(3000)
    victim = c.ids[7]
    watchers = [n for n in sim.nodes.values() if victim in n.membership.members]
    sim.crash(victim)
    sim.run_for(20_000)  # probes, suspicion (3 s), and the news spreading among its watchers
    assert watchers and all(n.membership.status(victim) == "dead" for n in watchers if n.id != victim)
    c.write(c.ids[0], "kv", "after", {"value": 1})
    assert c.settle(max_ms=20_000)


def test_a_large_cluster_seed_tree_spans_every_replica_with_a_small_fanout(large_at_40):
    c = _large(n=1000)  # 18 or 19 replicas per POP
    tree = c.seed_tree
    edges = tree.edges()
    assert len(edges) == len(c.ids) - 1
    reached = {tree.path_ms(c.ids[0], r) is not None for r in c.ids}
    assert reached == {True}  # connected: a spanning tree
    assert max(len(tree.neighbours(r)) for r in c.ids) <= 10  # Prim makes a star per POP: 18 and more


@pytest.mark.parametrize("k", [3, None])
def test_a_large_cluster_announces_a_modelled_write_to_a_few_lazy_links(large_at_40, k):
    """In a large cluster (here from 40 members) a node tells `model_lazy_large` of its lazy
    links of each write on a root's model tree, not every one: the tree needs IHAVEs only for
    repairs. Every write still reaches every replica by dissemination alone, and a crashed
    member's part of the tree is still repaired."""
    events = []
    c = SimCluster(place_replicas(select_pops("all"), 120), seed=3, sink=events.append)
    c.config.dissemination.model_lazy_large = k
    sim = c.sim
    assert c.root_trees is not None and all(n.large for n in sim.nodes.values())
    sim.run_for(3000)
    n0 = len(events)
    writes = 12
    for i, origin in enumerate(c.ids[:writes]):
        c.write(origin, "kv", f"k{i}", {"value": i})
        sim.run_for(300)
    assert all(sim.read(r, "kv", f"k{writes - 1}").values for r in c.ids)
    applied = [e for e in events[n0:] if e.kind == "applied"]
    assert all(e.data["via"] != "ae" for e in applied)
    told: dict[str, int] = {}
    for e in events[n0:]:
        if e.kind == "sent" and e.data["kind"] == "ihave":
            told[e.node] = told.get(e.node, 0) + 1
    most = max(told.values())
    if k is not None:
        assert most <= k * writes, most  # one IHAVE per write and lazy link at most (a flush may batch)
    else:
        assert most > 3 * writes, most  # every lazy link: more than the few
    # a member crashed before a write, not yet declared dead: its children still get the write
    victim = next(m for m in c.ids[writes:] if c.root_trees.children(c.ids[0], m))
    sim.crash(victim)
    c.write(c.ids[0], "kv", "after", {"value": 1})
    assert sim.run_until_condition(
        lambda: all(sim.read(r, "kv", "after").values for r in c.ids if r != victim), max_ms=10_000)


def _ihaves_and_reach(flush_ms: float) -> tuple[int, bool]:
    """IHAVE messages sent for 12 writes 20 ms apart, from 12 origins, in a large cluster whose
    lazy announcements flush every `flush_ms`; and whether every write reached every replica
    by dissemination alone."""
    events = []
    c = SimCluster(place_replicas(select_pops("all"), 120), seed=3, sink=events.append)
    c.config.dissemination.lazy_flush_large_ms = flush_ms
    sim = c.sim
    sim.run_for(3000)
    n0, sent0 = len(events), sim.stats["sent"].get("ihave", 0)
    for i, origin in enumerate(c.ids[:12]):
        c.write(origin, "kv", f"k{i}", {"value": i})
        sim.run_for(20)
    sim.run_for(1000)
    reached = all(sim.read(r, "kv", f"k{i}").values for r in c.ids for i in range(12))
    by_ae = any(e.kind == "applied" and e.data["via"] == "ae" for e in events[n0:])
    return sim.stats["sent"].get("ihave", 0) - sent0, reached and not by_ae


def test_a_large_cluster_batches_its_announcements_over_a_longer_flush(large_at_40):
    """In a large cluster IHAVEs wait `lazy_flush_large_ms` (200 ms) to go out together: at
    10,000 replicas they were most of the messages, a few writes' worth in each costs no more
    than one. The writes still reach everyone by dissemination alone."""
    from replication.dissemination import DisseminationConfig

    assert DisseminationConfig().lazy_flush_large_ms > DisseminationConfig().lazy_flush_ms
    batched, reached = _ihaves_and_reach(DisseminationConfig().lazy_flush_large_ms)
    assert reached
    each, reached_each = _ihaves_and_reach(DisseminationConfig().lazy_flush_ms)
    assert reached_each
    assert batched < 0.5 * each, (batched, each)
