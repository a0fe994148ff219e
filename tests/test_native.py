"""The compiled build (`replication/native.py`, mypyc) runs the same simulation as the package as
it is: the same seed gives, after every step, the same digest at every replica and the same message
counts, under loss, duplication, reordering, partitions, crashes with and without state, and writes
of every type; the library's own tests pass against it (annotations are checked at run time there);
and an edited source names another build, so a stale one never runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from replication import native

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(900)  # the first build compiles for about half a minute (more on a busy machine)

# One seeded run of faults and writes; every step's digests and the final counters as JSON.
CHILD = r"""
import json, random, sys
import replication.store
from replication.errors import ReplicaDown
from replication.geo import place_replicas, select_pops
from replication.sim.cluster import SimCluster

seed = int(sys.argv[1])
c = SimCluster(place_replicas(select_pops("lhr,syd,jfk,gru,nrt,fra,sin,iad"), 16), strategy="plumtree",
               seed=seed, loss=0.05, duplicate=0.02, reorder=0.05)
rng = random.Random(f"native:{seed}")
ids, trace, answers = c.ids, [], []
for step in range(150):
    r, who = rng.random(), rng.choice(ids)
    down = c.down()
    if r < 0.04:
        c.partition([ids[: len(ids) // 2]])
    elif r < 0.08:
        c.heal()
    elif r < 0.12 and len(down) < 4 and who not in down:
        c.crash(who, lose_state=rng.random() < 0.5)
    elif r < 0.18 and down:
        c.recover(rng.choice(down))
    else:
        ns = rng.choice(["kv", "counters", "sets", "maps"])
        op = {"kv": {"value": step}, "counters": {"add": rng.randint(-3, 5)},
              "sets": {"add": [rng.randrange(9)]} if rng.random() < 0.7 else {"remove": [rng.randrange(9)]},
              "maps": {"set": {"colour": rng.choice(["red", "blue"])}}}[ns]
        try:
            c.write(who, ns, f"k{rng.randrange(6)}", op)
            answers.append("ok")
        except ReplicaDown:
            answers.append("down")
    c.sim.run_for(rng.uniform(0.0, 250.0))
    trace.append(sorted(c.sim.digests().items()))
c.heal()
for r in c.down():
    c.recover(r)
settled = c.settle()
print(json.dumps({"native": not replication.store.__file__.endswith(".py"), "trace": trace, "answers": answers,
                  "settled": settled, "stats": c.sim.stats, "digests": sorted(set(c.sim.digests().values()))}))
"""


# Over LARGE_CLUSTER members, where nodes share one member tuple and watch partial views.
LARGE = r"""
import json, random, sys
import replication.store
from replication.geo import place_replicas, select_pops
from replication.node import LARGE_CLUSTER
from replication.sim.cluster import SimCluster

c = SimCluster(place_replicas(select_pops("all"), LARGE_CLUSTER + 52), strategy="plumtree", seed=int(sys.argv[1]),
               scrub=False)
rng, trace = random.Random(1), []
for i in range(6):
    c.write(rng.choice(c.ids), "kv" if i % 2 else "counters", f"k{i}", {"value": i} if i % 2 else {"add": i})
    c.sim.run_for(300)
    trace.append(sorted(c.sim.digests().items()))
c.crash(c.ids[5])
c.sim.run_for(500)
c.recover(c.ids[5])
c.sim.run_for(1500)
trace.append(sorted(c.sim.digests().items()))
print(json.dumps({"native": not replication.store.__file__.endswith(".py"), "trace": trace, "stats": c.sim.stats}))
"""


# A damaged value at one replica, found by the scrub and fetched back while writes go on: the
# store's repair path (its refetch context), which the fault run above never reaches.
REPAIR = r"""
import json, random, sys
import replication.store
from replication.geo import place_replicas, select_pops
from replication.sim.cluster import SimCluster

c = SimCluster(place_replicas(select_pops("lhr,iad,nrt")), seed=int(sys.argv[1]))
rng, trace = random.Random(2), []
for i in range(8):
    c.write(rng.choice(c.ids), "kv", f"k{i % 4}", {"value": i})
    c.sim.run_for(400)
c.write("lhr", "kv", "mine", {"value": "lhr's newest dot"})  # damaged, a newest dot is fetched back
assert c.settle()
store = c.sim.nodes["lhr"].replica.store
[(dot, (_v, ts))] = store.data["kv"]["mine"].items()
store.data["kv"]["mine"] = {dot: (b'"damaged"', ts)}
refetching = False
for step in range(40):
    if step % 5 == 0:
        c.write(rng.choice(c.ids), "kv", f"k{step % 3 + 4}", {"value": step})
    c.sim.run_for(200)
    refetching = refetching or bool(store._refetch)
    trace.append(sorted(c.sim.digests().items()))
print(json.dumps({"native": not replication.store.__file__.endswith(".py"), "trace": trace, "stats": c.sim.stats,
                  "refetching": refetching, "read": c.read("lhr", "kv", "mine").values,
                  "digests": sorted(set(c.sim.digests().values()))}))
"""


def _run(tree: Path, seed: int, child: str = CHILD) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}  # as bench simspeed runs a tree
    r = subprocess.run([sys.executable, "-c", child, str(seed)], check=False, cwd=tree, env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def build() -> Path:
    reason = native.unavailable()
    if reason is not None:
        pytest.skip(f"no compiled build here: {reason}")
    return native.build()


@pytest.mark.parametrize("seed", [1, 2])
def test_the_compiled_build_runs_the_same_simulation_step_by_step(build, seed):
    compiled, interpreted = _run(build, seed), _run(REPO, seed)
    assert compiled["native"] and not interpreted["native"]  # each ran what it says
    assert compiled["answers"] == interpreted["answers"]
    for step, (a, b) in enumerate(zip(compiled["trace"], interpreted["trace"])):
        assert a == b, f"step {step}: the replicas' digests differ"
    assert len(compiled["trace"]) == len(interpreted["trace"]) == 150
    assert compiled["stats"] == interpreted["stats"]
    assert compiled["settled"] and interpreted["settled"] and len(compiled["digests"]) == 1
    assert compiled["stats"]["dropped_by_reason"].get("loss", 0) > 0  # the faults did happen
    assert "down" in compiled["answers"] and compiled["stats"]["dropped_by_reason"].get("partition", 0) > 0


def test_the_compiled_build_runs_a_large_cluster_the_same(build):
    compiled, interpreted = _run(build, 1, LARGE), _run(REPO, 1, LARGE)
    assert compiled["native"] and not interpreted["native"]
    assert compiled["trace"] == interpreted["trace"]
    assert compiled["stats"] == interpreted["stats"] and compiled["stats"]["messages_delivered"] > 0


def test_the_compiled_build_repairs_a_damaged_value_the_same(build):
    compiled, interpreted = _run(build, 1, REPAIR), _run(REPO, 1, REPAIR)
    assert compiled["native"] and not interpreted["native"]
    assert compiled["refetching"]  # the repair path ran
    assert compiled["trace"] == interpreted["trace"] and compiled["stats"] == interpreted["stats"]
    assert compiled["read"] == interpreted["read"] == ["lhr's newest dot"] and len(compiled["digests"]) == 1


# The library's own tests, run again against the build: mypyc checks annotations at run time, so
# an annotation that lies fails there and only there (an envelope declared to carry node messages
# that also carries the transport's hello and fragments and the consensus baseline's messages;
# `Replica.write_kv(7, ...)` refused with a TypeError instead of InvalidKey, and
# `add_counter("c", True)` counting 1 where it must refuse; the simulator taking traffic_limit=True).
# The step-by-step comparisons above reach the simulator's paths; these reach the stores, CRDTs,
# wire and protocols directly, and two tests start real replica processes (peer hellos, fragments,
# /metrics), which inherit the build.
UNDER_BUILD = (
    "tests/test_ae_against.py", "tests/test_bad_input.py", "tests/test_causal_deltas.py", "tests/test_clocks.py",
    "tests/test_consensus.py", "tests/test_content_ae.py", "tests/test_convergence.py", "tests/test_crdt_laws.py",
    "tests/test_digest_incremental.py", "tests/test_dissemination.py", "tests/test_fragments.py",
    "tests/test_membership.py", "tests/test_metadata.py", "tests/test_orset_entry_join.py",
    "tests/test_replica_semantics.py", "tests/test_roottrees.py", "tests/test_scrub_budget.py",
    "tests/test_sim_engine.py", "tests/test_sim_traffic_sample.py", "tests/test_storage.py", "tests/test_wire.py",
    "tests/test_write_tracker.py",
    "tests/test_replica_process.py::test_bad_frames_are_counted_and_dropped_and_the_replica_carries_on",
    "tests/test_replica_process.py::test_a_map_survives_sigkill_and_its_replica_carries_on_counting_in_it",
)
# Tests whose instruments compiled code does not allow (tests/test_sim.py's toy nodes gossip tuples
# as deltas, so it stays out whole): an interpreted subclass of a compiled class, a method patched
# on a compiled class or instance (compiled callers bind it directly; the fault oracle watches a
# store so), a module function patched to count calls.
NOT_UNDER_BUILD = (
    "tests/test_causal_deltas.py::test_every_step_of_any_delivery_order_keeps_the_invariants",  # the oracle
    "tests/test_membership.py::test_fault_campaign_seeds_that_left_replicas_dead_after_the_heal",  # the oracle
    "tests/test_content_ae.py::test_a_content_exchange_crosses_the_wire_codec",  # a subclass
    "tests/test_wire.py::test_a_cluster_converges_over_the_wire_codec",  # a subclass
    "tests/test_wire.py::test_wire_size_over_real_traffic_is_close_in_the_median",  # a subclass
    "tests/test_scrub_budget.py::test_no_scrub_call_checks_more_seals_than_its_budget_and_a_sweep_covers_the_big_key",
    "tests/test_sim_engine.py::test_a_strategy_wake_up_leaves_membership_and_anti_entropy_alone",
    "tests/test_sim_engine.py::test_stable_point_is_the_pointwise_minimum_over_every_member",
    "tests/test_storage.py::test_a_logged_delta_the_store_refuses_on_replay_is_skipped_not_fatal",
)


def _build_env(build: Path) -> dict[str, str]:
    # PYTHONSAFEPATH: `python -m` would put the working directory (the tree) first on the path,
    # ahead of the build, and the tests would run the interpreted modules
    return {**os.environ, "PYTHONPATH": str(build), "PYTHONSAFEPATH": "1"}


def test_the_librarys_tests_pass_against_the_compiled_build(build):
    env = _build_env(build)
    probe = subprocess.run([sys.executable, "-c", "import replication.store as s; print(s.__file__)"], cwd=REPO,
                           env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip().startswith(str(build)) and probe.stdout.strip().endswith(".so"), probe.stdout
    deselect = [f"--deselect={t}" for t in NOT_UNDER_BUILD]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *deselect, *UNDER_BUILD],
                       cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert " passed" in r.stdout.splitlines()[-1] and " failed" not in r.stdout.splitlines()[-1]


def test_a_build_is_named_by_the_sources_so_an_edited_tree_never_runs_a_stale_one(build, tmp_path):
    assert build.name == native.source_hash() and (build / native.BUILT).exists()
    for m in native.MODULES:  # every listed module was compiled, beside its source
        assert list((build / "replication" / m).parent.glob(f"{Path(m).stem}.*.so")), m
    copy = tmp_path / "replication"
    shutil.copytree(native.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    assert native.source_hash(copy) == native.source_hash()
    (copy / "clocks.py").write_text((copy / "clocks.py").read_text() + "\n# an edit\n")
    assert native.source_hash(copy) != native.source_hash()
    os.remove(copy / "seals.py")
    assert native.source_hash(copy) != native.source_hash()


def test_without_mypyc_or_a_compiler_the_reason_is_said_and_nothing_is_built(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGESTATE_NATIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_mypyc_version", lambda: None)
    assert "mypyc is not installed" in native.unavailable()
    with pytest.raises(native.NativeUnavailable, match="mypyc is not installed"):
        native.build()
    monkeypatch.undo()
    monkeypatch.setenv("EDGESTATE_NATIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    assert "no C compiler" in native.unavailable()
    with pytest.raises(native.NativeUnavailable, match="no C compiler"):
        native.build()
    monkeypatch.undo()
    monkeypatch.setenv("EDGESTATE_NATIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(native.sysconfig, "get_paths", lambda: {"include": str(tmp_path / "no-headers")})
    assert "no Python headers" in native.unavailable()
    with pytest.raises(native.NativeUnavailable, match="no Python headers"):
        native.build()
    assert not (tmp_path / "cache").exists()


def test_old_builds_are_pruned_to_the_newest_few(tmp_path):
    """Every edit of the sources makes a new build: after one, only the newest KEEP stay (the one
    just made always), and a build abandoned mid-way an hour ago goes too."""
    root = tmp_path / "cache"
    current = root / "current"
    for i, d in enumerate([current] + [root / f"old{i}" for i in range(native.KEEP + 2)]):
        d.mkdir(parents=True)
        (d / native.BUILT).write_text("x")
        os.utime(d / native.BUILT, (1_000_000 + i, 1_000_000 + i))  # current is the oldest by time
    abandoned, running = root / "deadbeef.a1", root / "deadbeef.b2"
    abandoned.mkdir()
    running.mkdir()
    os.utime(abandoned, (1_000_000, 1_000_000))
    native._prune(root, current)
    newest = [f"old{i}" for i in range(native.KEEP + 2)][-(native.KEEP - 1):]
    assert sorted(d.name for d in root.iterdir()) == sorted(["current", "deadbeef.b2", *newest])
