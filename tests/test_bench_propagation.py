"""`edgestate bench propagation`: runs, reports the documented JSON shape, and its figures hold
up to what the physics says (checked on virtual time, never wall-clock)."""

import json
import math
import re
from collections import Counter

import pytest

from app.cli import main
from replication.bench.propagation import Params, run_strategy

KEYS = {"ratio_p50", "ratio_p99", "payloads_per_receiver", "max_sends_per_node",
        "delivered_before_antientropy", "heal_converge_ms"}


def test_cli_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = main(["bench", "propagation", "--pops", "lhr,jfk,syd,nrt,gru,jnb", "--writes", "20", "--warmup", "10",
               "--strategy", "plumtree,direct", "--seed", "3", "--quiet", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data["strategies"]) == {"plumtree", "direct"}
    for r in data["strategies"].values():
        assert KEYS <= set(r)
        assert r["delivered_everywhere"] == 1.0
        assert r["payloads_per_receiver"] >= 1.0
    assert data["sim_msgs_per_s"] > 0
    table = capsys.readouterr().out
    assert "plumtree" in table and "ratio" in table and "p99" in table  # long names wrap at "_" (report.table)


def test_direct_is_the_physical_limit_and_plumtree_stays_close():
    p = Params(pops="default", writes=60, warmup=150, seed=2)  # ~7 writes per root: trees have relaxed
    direct = run_strategy(p, "direct", progress=False)
    assert direct["ratio_p50"] == pytest.approx(1.0) and direct["ratio_p99"] == pytest.approx(1.0)
    assert direct["payloads_per_receiver"] == pytest.approx(1.0)
    assert direct["max_sends_per_node"] == direct["replicas"] - 1  # the origin sends to everyone
    tree = run_strategy(p, "plumtree", progress=False)
    assert 1.0 <= tree["ratio_p50"] <= tree["ratio_p99"] < 1.5
    assert tree["payloads_per_receiver"] < 1.15
    assert tree["max_sends_per_node"] < direct["max_sends_per_node"]
    assert math.isfinite(tree["heal_converge_ms"]) and tree["heal_converge_ms"] > 0


@pytest.mark.parametrize("argv", [
    ["--strategy", "flood"], ["--loss", "1.5"], ["--writes", "0"], ["--pops", "nope"], ["--rate", "0"],
])
def test_bad_options_exit_2_with_a_message(argv, capsys):
    with pytest.raises(SystemExit) as e:
        rc = main(["bench", "propagation", "--quiet", *argv])
        raise SystemExit(rc)
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_a_large_cluster_warms_up_with_fewer_writes_unless_told(monkeypatch, tmp_path):
    """Beyond node.LARGE_CLUSTER (here from 40 members) every root's tree is its model tree from
    its first write: the default warm-up is WARMUP_LARGE writes, and --warmup still decides."""
    from replication import node as node_module
    from replication.bench import propagation
    from replication.sim import cluster as cluster_module

    assert propagation.default_warmup(54) == propagation.WARMUP == Params().warmup
    for module in (node_module, cluster_module, propagation):
        monkeypatch.setattr(module, "LARGE_CLUSTER", 40)
    assert propagation.default_warmup(41) == propagation.WARMUP_LARGE < propagation.WARMUP
    for extra, warmup in (([], propagation.WARMUP_LARGE), (["--warmup", "7"], 7)):
        out = tmp_path / "b.json"
        rc = main(["bench", "propagation", "--pops", "default", "--replicas", "44", "--writes", "3",
                   "--strategy", "direct", "--quiet", "--json", str(out), *extra])
        assert rc == 0
        data = json.loads(out.read_text())
        assert data["params"]["warmup"] == warmup
        assert data["strategies"]["direct"]["delivered_everywhere"] == 1.0


def test_the_phases_after_the_measured_writes_say_what_they_do(capsys):
    """The bar ends with the measured writes; the phases after it (minutes at 10,000 replicas) each
    say what they do on stderr, in order, and --quiet silences them."""
    args = ["bench", "propagation", "--pops", "lhr,jfk,syd", "--writes", "3", "--warmup", "2",
            "--strategy", "plumtree", "--seed", "3"]
    assert main(args) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if not re.search(r": \d+/\d+ \(", line)]  # not the bar's
    assert [line.split(": ", 1)[0] for line in said] == ["plumtree", "plumtree", "plumtree", "simulator"], err
    assert "healed" in said[0] and "fresh cluster" in said[1] and "switch to gossip and back" in said[2]
    assert "3 writes" not in said[3] and "5 writes" in said[3]  # the run's warm-up and measured writes
    assert main([*args, "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_without_the_scrub_every_figure_is_the_same_and_no_node_scrubs():
    """The scrub looks only for memory changed behind a store's back, which the bench never does:
    turning it off (the default in a large cluster, where it was most of an idle second's wall
    time) must leave every virtual-time figure as it was, and must really stop the scrubbing."""
    from replication.bench import propagation
    from replication.sim.cluster import SimCluster

    base = Params(pops="lhr,jfk,syd,nrt,gru,fra", writes=40, warmup=20, seed=5)
    runs = [run_strategy(Params(**{**base.__dict__, "scrub": on}), "plumtree", progress=False) for on in (True, False)]
    figures = [{k: v for k, v in r.items() if "wall" not in k and "per_s" not in k} for r in runs]
    assert figures[0] == figures[1]
    assert figures[0]["delivered_everywhere"] == 1.0

    assert propagation.scrubs(Params()) and propagation.scrubs(Params(replicas=propagation.LARGE_CLUSTER))
    assert not propagation.scrubs(Params(replicas=propagation.LARGE_CLUSTER + 1))
    assert propagation.scrubs(Params(replicas=propagation.LARGE_CLUSTER + 1, scrub=True))
    placed = propagation.placements(base)
    for on in (True, False):
        c = SimCluster(placed, seed=1, scrub=on)
        c.write(c.ids[0], "kv", "k", {"value": 1})
        c.sim.run_for(3000)
        scrubbed = sum(n.replica.store.integrity.scrubbed for n in c.sim.nodes.values())
        assert (scrubbed > 0) == on, (on, scrubbed)


@pytest.mark.parametrize("crash", [[], ["--crash-fraction", "0.5"]])
def test_strategies_side_by_side_give_the_same_figures(tmp_path, crash):
    """--jobs runs each strategy's run, its first writes and its switched-back writes as tasks in
    forked processes: every virtual-time figure must be the one the same strategy gives when run
    alone, one after another (the mass-failure runs too)."""
    figures = []
    for jobs in ("1", "2"):
        out = tmp_path / f"j{jobs}.json"
        assert main(["bench", "propagation", "--pops", "lhr,jfk,syd,nrt,gru,fra", "--writes", "15", "--warmup", "10",
                     "--strategy", "plumtree,gossip,direct", "--seed", "4", "--quiet", "--jobs", jobs,
                     "--json", str(out), *crash]) == 0
        data = json.loads(out.read_text())
        figures.append({s: {k: v for k, v in r.items() if "wall" not in k and "per_s" not in k}
                        for s, r in data["strategies"].items()})
    assert list(figures[1]) == ["plumtree", "gossip", "direct"]
    assert figures[0] == figures[1]
    assert crash or all("first_write_per_root" in r for r in figures[1].values())


@pytest.mark.parametrize("strategy", ["plumtree", "gossip", "direct"])
def test_a_sink_and_wrapper_attached_after_settling_see_what_they_would_have_from_the_start(strategy):
    """`bench propagation` settles one cluster and attaches its counters afterwards (SimCluster.attach):
    from then on the nodes must do exactly what nodes built with the sink and wrapper do, and the
    sink must hear the same events."""
    from replication.bench import propagation
    from replication.sim.cluster import SimCluster

    placed = propagation.placements(Params(pops="lhr,jfk,syd,nrt,gru,fra", replicas=12))
    seen: list[list] = [[], []]
    wrapped: list[set] = [set(), set()]

    class Wrap:
        def __init__(self, i):
            self.i = i

        def __call__(self, node):
            wrapped[self.i].add(node.id)
            return propagation._Counting(node, {}, Counter())

    def sink(i):
        return lambda ev: seen[i].append((ev.t, ev.kind, ev.node, repr(ev.data)))

    built = SimCluster(placed, strategy=strategy, seed=3, sink=sink(0), wrap=Wrap(0), traffic_events=False)
    later = SimCluster(placed, strategy=strategy, seed=3, traffic_events=False)
    for c in (built, later):
        c.sim.run_for(2000)
    seen[0].clear()
    later.attach(sink=sink(1), wrap=Wrap(1), traffic_events=False)
    assert wrapped[1] == set(later.ids)
    for c in (built, later):
        for i in range(20):
            c.write(c.ids[i % len(c.ids)], "kv", f"k{i % 4}", {"value": i})
            c.sim.run_for(40)
        c.crash(c.ids[1], lose_state=True)
        c.sim.run_for(500)
        c.recover(c.ids[1])  # a node built after attach is wrapped too
        c.sim.run_for(3000)
    assert any(kind == "applied" for _, kind, _, _ in seen[1])
    assert seen[0] == seen[1]
    assert built.sim.delivered_count == later.sim.delivered_count
    assert built.sim.digests() == later.sim.digests()
    assert isinstance(later.sim.nodes[later.ids[1]], propagation._Counting)


def test_a_large_cluster_runs_on_every_cpu_unless_told(monkeypatch):
    """Beyond node.LARGE_CLUSTER (here from 40 members) the bench forks its tasks on one process per
    CPU it may use unless --jobs says; a smaller cluster runs them one after another."""
    from replication.bench import propagation

    monkeypatch.setattr(propagation, "LARGE_CLUSTER", 40)
    monkeypatch.setattr(propagation.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    monkeypatch.setattr(propagation, "available_memory", lambda: None)
    seen = []

    def fake_run(params, progress, jobs):
        seen.append(jobs)
        return {"params": {}, "strategies": {}}

    monkeypatch.setattr(propagation, "run", fake_run)
    for replicas, extra in ((40, []), (44, []), (44, ["--jobs", "1"]), (40, ["--jobs", "2"])):
        assert main(["bench", "propagation", "--pops", "default", "--replicas", str(replicas), "--writes", "3",
                     "--quiet", *extra]) == 0
    assert seen == [1, 3, 1, 2]


def test_the_default_processes_fit_in_the_available_memory(monkeypatch):
    from replication.bench import propagation

    real = propagation.available_memory()
    assert real is None or real > 0  # Linux: MemAvailable
    monkeypatch.setattr(propagation.os, "sched_getaffinity", lambda pid: set(range(64)))
    per_task = 10_000 * propagation.TASK_BYTES_PER_REPLICA
    for avail, want in ((None, 64), (10 * per_task, 10), (2 * per_task + 1, 2), (per_task // 2, 1)):
        monkeypatch.setattr(propagation, "available_memory", lambda: avail)
        assert propagation.default_jobs(10_000) == want, avail
    assert propagation.default_jobs(propagation.LARGE_CLUSTER) == 1
