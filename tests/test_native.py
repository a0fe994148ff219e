"""The compiled build (`replication/native.py`, mypyc) runs the same simulation as the package as
it is: the same seed gives, after every step, the same digest at every replica and the same message
counts, under loss, duplication, reordering, partitions, crashes with and without state, and writes
of every type; and an edited source names another build, so a stale one never runs."""

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
