"""`edgestate bench simspeed --baseline REV`: the simulator's own speed, this tree against a git
revision, side by side in one run. Without `--baseline`, this tree alone: wall time and messages per
write (the README's cost-growth table, with `--replicas N`).

Absolute speeds differ between machines and with the load beside the run, so the only figure
that means something is a ratio measured on one machine at one time. Each round runs the same
workload once with the code at REV (exported with `git archive` into a temporary directory) and
once with this tree, each in a fresh Python process, alternating which goes first; the medians
of the rounds and their ratio are reported.

The workload is what `bench propagation` calls `sim_msgs_per_s`: plumtree on the chosen POPs,
seeded Poisson writes, no bookkeeping; the figure is delivered messages per wall-clock second of
the run (the cluster's construction and its first 2 s excluded). Every round also reports how
many messages were delivered: the same seed must deliver the same messages at both revisions
unless a protocol change is the point, and a difference is printed, since then the two speeds
are of different work.

`--native`: this tree runs compiled (`replication/native.py`: its hot modules built with mypyc,
once per source tree, about half a minute, not counted), the baseline as it was. The child
reports which it ran (`native`), so a build that did not load is seen, not mistaken for speed.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import revision

REPO = revision.REPO

# Run in a child process with the revision's tree first on sys.path; it uses only what every
# revision since the simulator began has (SimCluster, place_replicas, select_pops).
_CHILD = r"""
import json, random, sys, time
from replication.geo import place_replicas, select_pops
from replication.sim.cluster import SimCluster
try:  # the tree's own collector policy for batch runs, where it has one
    from replication.sim.collector import batch
    batch().__enter__()
except ImportError:
    pass
pops, replicas, writes, rate, seed = json.loads(sys.argv[1])
t_build = time.perf_counter()
cluster = SimCluster(place_replicas(select_pops(pops), replicas), strategy="plumtree", seed=seed)
sim, ids = cluster.sim, cluster.ids
rng = random.Random(f"throughput:{seed}")
sim.run_for(2000)
t0, d0 = time.perf_counter(), sim.delivered_count
for i in range(writes):
    sim.write(rng.choice(ids), "kv", f"key{rng.randrange(1000)}", {"value": i})
    sim.run_for(rng.expovariate(rate) * 1000.0)
sim.run_for(3000)
wall = time.perf_counter() - t0
n = sim.delivered_count - d0
import replication.store
print(json.dumps({"delivered": n, "wall_s": wall, "msgs_per_s": n / wall, "build_s": t0 - t_build,
                  "digests": sorted(set(sim.digests().values()))[:1],
                  "native": not replication.store.__file__.endswith(".py")}))
"""


@dataclass
class Params:
    baseline: str
    rounds: int = 5
    pops: str = "all"
    replicas: int | None = None
    writes: int = 300
    rate: float = 20.0
    seed: int = 1
    native: bool = False


def _once(tree: Path, p: Params, native: bool = False) -> dict:
    args = json.dumps([p.pops, p.replicas, p.writes, p.rate, p.seed])
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    r = subprocess.run([sys.executable, "-c", _CHILD, args], cwd=tree, env=env, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"the workload failed in {tree}:\n{r.stderr.strip()[-2000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if native and not out["native"]:
        raise RuntimeError(f"the compiled build in {tree} ran interpreted: its extensions did not load")
    return out


def _current(p: Params, progress: bool) -> Path:
    """The tree "current" runs from: this one, or its compiled build (`--native`)."""
    if not p.native:
        return REPO
    from .. import native

    say = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else None
    return native.build(say)


def run_here(p: Params, progress: bool = True) -> dict:
    """Without a baseline: this tree alone, for the cost-growth table (wall time and messages per write)."""
    runs = []
    tree = _current(p, progress)
    for i in range(p.rounds):
        r = _once(tree, p, p.native)
        runs.append(r)
        if progress:
            print(f"round {i + 1}/{p.rounds}: {r['msgs_per_s']:>10,.0f} msgs/s ({r['delivered']:,} delivered in "
                  f"{r['wall_s']:.2f} s, cluster built in {r['build_s']:.1f} s)", file=sys.stderr, flush=True)
    wall = statistics.median(x["wall_s"] for x in runs)
    n = runs[0]["delivered"]
    return {"params": p.__dict__, "msgs_per_s": statistics.median(x["msgs_per_s"] for x in runs),
            "wall_s": wall, "wall_s_per_write": wall / p.writes, "msgs_per_write": n / p.writes,
            "build_s": statistics.median(x["build_s"] for x in runs), "runs": runs}


def run(p: Params, progress: bool = True) -> dict:
    rev = revision.resolve(p.baseline)
    runs: dict[str, list[dict]] = {"baseline": [], "current": []}
    with tempfile.TemporaryDirectory(prefix="edgestate-simspeed-") as tmp:
        base = Path(tmp)
        revision.export(rev, base, "replication")  # the simulator is all the workload runs
        trees = {"baseline": base, "current": _current(p, progress)}
        for i in range(p.rounds):
            order = ["baseline", "current"] if i % 2 == 0 else ["current", "baseline"]
            for which in order:
                r = _once(trees[which], p, p.native and which == "current")
                runs[which].append(r)
                if progress:
                    print(f"round {i + 1}/{p.rounds} {which:8}: {r['msgs_per_s']:>10,.0f} msgs/s "
                          f"({r['delivered']:,} delivered in {r['wall_s']:.2f} s)", file=sys.stderr, flush=True)
    med = {k: statistics.median(x["msgs_per_s"] for x in v) for k, v in runs.items()}
    delivered = {k: sorted({x["delivered"] for x in v}) for k, v in runs.items()}
    return {
        "params": {**p.__dict__, "baseline": rev},
        "baseline_msgs_per_s": med["baseline"],
        "current_msgs_per_s": med["current"],
        "ratio": med["current"] / med["baseline"],
        "delivered": delivered,
        "same_work": delivered["baseline"] == delivered["current"],
        "runs": runs,
    }


def add_parser(which) -> None:
    from ..cliargs import positive_int

    p = which.add_parser("simspeed", help="the simulator's speed: this tree against a git revision, side by side",
                         description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    d = Params(baseline="")
    p.add_argument("--baseline", metavar="REV",
                   help="git revision to compare against (e.g. HEAD~3); without it, this tree alone (cost per write)")
    p.add_argument("--rounds", type=positive_int, default=d.rounds, help="rounds, each running both (default: %(default)s)")
    p.add_argument("--pops", default=d.pops, metavar="all|default|ID,...", help="POPs (default: %(default)s)")
    p.add_argument("--replicas", type=positive_int, default=None, metavar="N", help="replicas (default: one per POP)")
    p.add_argument("--writes", type=positive_int, default=d.writes, metavar="K", help="writes per run (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="simulation seed (default: %(default)s)")
    p.add_argument("--native", action="store_true",
                   help="run this tree compiled with mypyc (replication/native.py; built once, not timed)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--quiet", action="store_true", help="no per-round output")


def main(args) -> int:
    from ..native import NativeUnavailable

    p = Params(baseline=args.baseline or "", rounds=args.rounds, pops=args.pops, replicas=args.replicas,
               writes=args.writes, seed=args.seed, native=args.native)
    if not args.baseline:
        try:
            result = run_here(p, progress=not args.quiet)
        except (RuntimeError, NativeUnavailable) as e:
            print(f"edgestate bench simspeed: error: {e}", file=sys.stderr)
            return 2
        print(f"this tree: {result['msgs_per_s']:,.0f} delivered msgs/s; per write {result['wall_s_per_write']:.3f} s "
              f"wall and {result['msgs_per_write']:,.0f} messages (median of {p.rounds}; cluster built in "
              f"{result['build_s']:.1f} s, not counted)")
        _dump(args.json, result)
        return 0
    try:
        result = run(p, progress=not args.quiet)
    except (ValueError, RuntimeError, NativeUnavailable) as e:
        print(f"edgestate bench simspeed: error: {e}", file=sys.stderr)
        return 2
    print(f"baseline {result['params']['baseline'][:10]}: {result['baseline_msgs_per_s']:,.0f} delivered msgs/s (median of {p.rounds})")
    print(f"current  (this tree{', compiled' if p.native else ''}): {result['current_msgs_per_s']:,.0f} delivered msgs/s (median of {p.rounds})")
    print(f"ratio current/baseline: {result['ratio']:.2f}x")
    if not result["same_work"]:
        print(f"note: delivered messages differ (baseline {result['delivered']['baseline']}, "
              f"current {result['delivered']['current']}): the two runs did different work", file=sys.stderr)
    _dump(args.json, result)
    return 0


def _dump(path: str | None, result: dict) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
