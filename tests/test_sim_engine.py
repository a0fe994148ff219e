"""The per-message shortcuts of the node and the simulator (issue 17) change no outcome: young
arrivals age by time without a timer, a strategy-only wake-up runs only the strategy, the stable
point is the pointwise minimum it always was."""

from __future__ import annotations

import random

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
