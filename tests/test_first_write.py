"""A clean first write (issue 14): plumtree starts from the latency model's spanning tree, so
the very first write of every root follows a tree instead of flooding the overlay, and the
tree still repairs itself when links fail. Virtual time throughout: deterministic per seed."""

from __future__ import annotations

import itertools
import random

import pytest

from replication.bench.propagation import Params, first_writes
from replication.dissemination.seedtree import SeedTree
from replication.geo import LatencyModel, place_replicas, select_pops
from replication.sim.cluster import SimCluster

pytestmark = pytest.mark.timeout(300)

TREE = 1.2  # payloads per receiver: at most this for a root's first write (1.0 is a tree; the flood was ~9.6)


def _worst(per_root: dict[str, float]) -> str:
    return ", ".join(f"{r}: {v:.2f}" for r, v in sorted(per_root.items(), key=lambda kv: -kv[1])[:5])


# -- the tree itself ---------------------------------------------------------------------------


def _model(pops: str):
    placements = place_replicas(select_pops(pops))
    pop_of = {p.id: p.pop for p in placements}
    m = LatencyModel()
    return [p.id for p in placements], lambda a, b: m.one_way_ms(pop_of[a], pop_of[b])


def _kruskal_total(ids, ms) -> float:
    """The minimum spanning tree's weight, computed another way (Kruskal, union-find)."""
    boss = {i: i for i in ids}

    def find(i):
        while boss[i] != i:
            boss[i] = boss[boss[i]]
            i = boss[i]
        return i

    total = 0.0
    for a, b in sorted(itertools.combinations(ids, 2), key=lambda e: ms(*e)):
        ra, rb = find(a), find(b)
        if ra != rb:
            boss[ra] = rb
            total += ms(a, b)
    return total


@pytest.mark.parametrize("pops", ["default", "all"])
def test_seed_tree_is_the_minimum_spanning_tree_and_the_same_whatever_the_order(pops):
    ids, ms = _model(pops)
    tree = SeedTree(ids, ms)
    edges = tree.edges()
    assert len(edges) == len(ids) - 1
    assert all(tree.path_ms(ids[0], i) is not None for i in ids), "not spanning: some member unreachable"
    assert tree.total_ms() == pytest.approx(_kruskal_total(ids, ms))
    shuffled = list(ids)
    random.Random(5).shuffle(shuffled)
    assert SeedTree(shuffled, ms).edges() == edges  # every node computes the same tree on its own
    a, b = edges[0]
    assert tree.path_ms(a, b) == pytest.approx(ms(a, b)) and tree.path_ms(a, a) == 0.0
    assert tree.path_ms("nowhere", a) is None and tree.neighbours("nowhere") == []


def test_seed_tree_ties_between_co_located_replicas_are_broken_by_id():
    placements = place_replicas(select_pops("lhr,fra"), 6)  # three replicas at each POP
    pop_of = {p.id: p.pop for p in placements}
    m = LatencyModel()
    ids = [p.id for p in placements]
    trees = {tuple(SeedTree(order, lambda a, b: m.one_way_ms(pop_of[a], pop_of[b])).edges())
             for order in (ids, ids[::-1], sorted(ids))}
    assert len(trees) == 1


# -- the first write of every root ---------------------------------------------------------------


@pytest.mark.parametrize("pops", ["default", "all"])
def test_every_roots_first_write_is_a_tree(pops):
    """Every root writes once on a fresh cluster, one at a time: each write's payloads per
    receiver stay within 1.2 (before the seed tree: the first ~9.6, later roots 1.5 to 3)."""
    per_root = first_writes(Params(pops=pops, seed=1), "plumtree")
    assert len(per_root) == len(select_pops(pops))
    assert max(per_root.values()) <= TREE, f"first writes flood: {_worst(per_root)}"
    assert min(per_root.values()) >= 1.0  # everyone got it by dissemination


@pytest.mark.parametrize("pops", ["default", "all"])
def test_first_write_after_switching_strategy_back_to_plumtree_is_a_tree(pops):
    per_root = first_writes(Params(pops=pops, seed=2), "plumtree", switch_from="gossip")
    assert max(per_root.values()) <= TREE, f"after switching back: {_worst(per_root)}"


def test_first_write_on_a_fresh_cluster_at_each_root():
    """The opener on a fresh server, wherever it is written: a tree (the flood sent 205 payloads)."""
    placements = place_replicas(select_pops("default"))
    for root in [p.id for p in placements]:
        c = SimCluster(placements, seed=3, traffic_events=False)
        c.sim.run_for(2000)
        p0 = c.sim.stats["payloads_delivered"]
        c.write(root, "kv", "hello", {"value": "world"})
        assert c.settle(max_ms=3000)
        payloads = c.sim.stats["payloads_delivered"] - p0
        assert payloads <= TREE * (len(placements) - 1), f"first write at {root}: {payloads} payloads"


def test_first_writes_are_deterministic():
    p = Params(pops="default", seed=4)
    assert first_writes(p, "plumtree") == first_writes(p, "plumtree")


# -- repair and adaptation still work -------------------------------------------------------------


def _hub(c: SimCluster) -> str:
    """A member with the most tree links: its crash cuts the tree in three or more pieces."""
    return max(c.ids, key=lambda i: (len(c.seed_tree.neighbours(i)), i))


@pytest.mark.parametrize("detected", [False, True], ids=["before-detection", "after-detection"])
def test_a_tree_hub_down_first_writes_still_reach_everyone_by_dissemination(detected):
    """Crash a node the tree runs through: the cut-off parts get IHAVEs over lazy links and
    graft themselves back (not left to anti-entropy), before and after the crash is detected."""
    placements = place_replicas(select_pops("default"))
    events = []
    c = SimCluster(placements, seed=5, sink=events.append, traffic_events=False)
    sim = c.sim
    sim.run_for(2000)
    hub = _hub(c)
    assert len(c.seed_tree.neighbours(hub)) >= 3
    sim.crash(hub)
    sim.run_for(15_000 if detected else 10)
    live = [i for i in c.ids if i != hub]
    grafts0 = sim.stats["sent"].get("graft", 0)
    writes = []
    for root in live:
        n0 = len(events)
        c.write(root, "kv", "k", {"value": root})
        dots = [d for e in events[n0:] if e.kind == "applied" and e.node == root for d in e.data["dots"]]
        writes.append((root, dots[0]))
        sim.run_for(1500)
    got = {}
    for e in events:
        if e.kind == "applied" and e.node != hub:
            for d in e.data["dots"]:
                got.setdefault(d, {})[e.node] = e.data["via"]
    for root, dot in writes:
        vias = got.get(dot, {})
        assert set(vias) == set(live), f"write at {root}: missing at {sorted(set(live) - set(vias))}"
        late = {n: v for n, v in vias.items() if v not in ("local", "payload")}
        assert late == {}, f"write at {root} needed anti-entropy at {late}"
    assert sim.stats["sent"].get("graft", 0) > grafts0  # repaired by grafts over lazy links


def test_each_roots_tree_still_relaxes_towards_its_fastest_paths():
    """The seed tree is the shortest in total, not per root: its paths can be long. After a few
    writes from a root, the latency optimisation has moved that root's tree to faster paths."""
    placements = place_replicas(select_pops("default"))
    c = SimCluster(placements, seed=6, traffic_events=False)
    sim = c.sim
    sim.run_for(2000)
    root = "nrt"
    times = []
    for i in range(6):
        node = sim.nodes[root]
        dot = node.replica.store.ctx.next_dot(node.replica.actor)
        t0 = sim.now
        c.write(root, "kv", "k", {"value": i})
        assert sim.run_until_condition(lambda: all(sim.nodes[n].have(dot) for n in c.ids), max_ms=3000)
        times.append(sim.now - t0)
        sim.run_for(1500)
    farthest = max(c.one_way_ms(root, n) for n in c.ids if n != root)
    assert times[0] > 1.5 * farthest  # the first write follows the spanning tree: slow from nrt
    assert times[-1] <= 1.5 * farthest, f"time to all per write: {[round(t) for t in times]}, direct {farthest:.0f}"


def test_a_real_replica_with_injected_latency_starts_from_the_same_tree_as_the_simulator(tmp_path):
    """`edgestate replica --inject-latency` knows every member is a POP: it builds the simulator's
    spanning tree and starts with exactly its tree links eager."""
    from live_helpers import run_async

    from app.processes.supervisor import free_port
    from replication.dissemination.plumtree import SHARED
    from app.replica.cli import _latency
    from replication.geo import LatencyModel, all_pops
    from replication.io.runner import ReplicaRunner

    ids = ["lhr", "fra", "jfk", "sin", "syd", "nrt"]
    delay_ms, tree = _latency("lhr", ids[1:])
    pops = {p.id: p for p in all_pops()}
    model = LatencyModel()
    assert sorted(tree.neighbours("lhr")) == sorted(
        SeedTree(ids, lambda a, b: model.one_way_ms(pops[a], pops[b])).neighbours("lhr"))
    assert delay_ms("syd") == model.one_way_ms(pops["lhr"], pops["syd"])

    async def main():
        r = ReplicaRunner("lhr", {p: ("127.0.0.1", 1) for p in ids[1:]}, data_dir=tmp_path / "lhr",
                          secret=b"0123456789abcdef0123", seed_tree=tree, fresh_actor="lhr~1")
        await r.start("127.0.0.1", free_port())
        try:
            return r.node.seed_tree, set(r.node.strategy.eager[SHARED])
        finally:
            await r.stop()

    node_tree, eager = run_async(main())
    assert node_tree is tree
    assert eager == set(tree.neighbours("lhr")), "exactly the tree links start eager"
