"""`edgestate bench writecost [--baseline REV]`: what one write costs, in CPU instructions counted
by valgrind, for this tree and (with `--baseline`) a git revision, side by side.

Wall-clock figures on a shared machine move by ±20 % for the same work from one run to the next;
an instruction count moves by well under 1 % (`--repeat 2` shows it), so a change of a few per
cent is visible in one run. It is not a time: a cache miss costs more than an instruction, and the
server's own share of the CPU is another matter (`bench audience`, `bench live`). It is the
figure to decide whether a change to the write path made it cheaper.

The workload is the audience's (22 POPs, plumtree, a seeded mix of 60 % counter +1, 20 % set
add, 20 % register write, Poisson at `--rate` writes per virtual second), in two modes:

- `sim`: the simulated cluster alone (`SimCluster`, no event sink);
- `live`: the cluster as `edgestate serve` runs it (`build_live`), with the dashboard's observers
  of its events attached (`create_app`: the page's stream model, the write trackers, the metrics,
  the join stream), on a clock that never moves (no pacing: only the simulation's work).

Each figure is (instructions of a run with N writes − instructions of the same run with none) / N,
from `valgrind --tool=cachegrind --cache-sim=no`, each run a fresh Python process with
PYTHONHASHSEED=0 after `gc.freeze()` (as the server does once it has started). Every run also
reports how many messages were delivered: the baseline and this tree must deliver the same
unless a protocol change is the point.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from replication.bench import revision

REPO = revision.REPO
MODES = ("sim", "live")

_CHILD = r"""
import gc, json, random, sys
mode, pops, writes, rate, seed = json.loads(sys.argv[1])
from replication.geo import place_replicas, select_pops
placements = place_replicas(select_pops(pops))
if mode == "sim":
    from replication.sim.cluster import SimCluster
    c = SimCluster(placements, strategy="plumtree", seed=seed, secret=b"writecost")
    sim, ids, write = c.sim, c.ids, c.write
else:
    from app.dashboard.simulated import build_live
    from app.dashboard.server import create_app
    class Clock:
        def __call__(self):
            return 0.0
    live = build_live(placements, strategy="plumtree", seed=seed, epoch_ms=1.7e12, clock=Clock(), secret=b"writecost")
    app = create_app(live)
    sim, ids, write = live.sim, live.ids, live.cluster.write
rng = random.Random(f"writecost:{seed}")
sim.run_for(2000)
gc.collect()
gc.freeze()
for i in range(writes):
    r = rng.random()
    if r < 0.6:
        write(rng.choice(ids), "counters", "votes", {"add": 1})
    elif r < 0.8:
        write(rng.choice(ids), "sets", "emoji", {"add": [rng.choice("abcdefghij")]})
    else:
        write(rng.choice(ids), "kv", "word", {"value": "w%d" % i})
    sim.run_for(rng.expovariate(rate) * 1000.0)
sim.run_for(1000)
print(json.dumps({"delivered": sim.delivered_count, "digest": sorted(set(sim.digests().values()))[0]}))
"""

_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


@dataclass
class Params:
    baseline: str = ""
    writes: int = 200
    modes: tuple[str, ...] = MODES
    pops: str = "default"
    rate: float = 330.0
    seed: int = 1
    repeat: int = 1
    valgrind: str = field(default="valgrind", repr=False)


def instructions(stderr: str) -> int:
    """The total instruction count a cachegrind run printed."""
    m = _REFS.search(stderr)
    if m is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{stderr.strip()[-1500:]}")
    return int(m.group(1).replace(",", ""))


def _count(tree: Path, p: Params, mode: str, writes: int) -> tuple[int, dict]:
    args = json.dumps([mode, p.pops, writes, p.rate, p.seed])
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    cmd = [p.valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
           sys.executable, "-c", _CHILD, args]
    r = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"the {mode} workload failed in {tree}:\n{r.stderr.strip()[-2000:]}")
    return instructions(r.stderr), json.loads(r.stdout.strip().splitlines()[-1])


def per_write(tree: Path, p: Params, mode: str) -> dict:
    """Instructions per write in `tree` for `mode`, and what the run with writes delivered."""
    loaded, out = _count(tree, p, mode, p.writes)
    idle, _ = _count(tree, p, mode, 0)
    return {"per_write": (loaded - idle) / p.writes, "delivered": out["delivered"], "digest": out["digest"]}


def run(p: Params, progress: bool = True) -> dict:
    trees: dict[str, Path] = {"current": REPO}
    results: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory(prefix="edgestate-writecost-") as tmp:
        if p.baseline:
            rev = revision.resolve(p.baseline)
            revision.export(rev, Path(tmp), "replication", "app")
            trees = {"baseline": Path(tmp), "current": REPO}
        for which, tree in trees.items():
            for mode in p.modes:
                for i in range(p.repeat):
                    r = per_write(tree, p, mode)
                    results.setdefault(mode, {}).setdefault(which, []).append(r)
                    if progress:
                        print(f"{which:8} {mode:4} run {i + 1}/{p.repeat}: {r['per_write'] / 1e6:8.3f} M instructions "
                              f"a write ({r['delivered']:,} delivered)", file=sys.stderr, flush=True)
    rows = []
    for mode in p.modes:
        by = results[mode]
        row = {"mode": mode, **{k: min(x["per_write"] for x in v) for k, v in by.items()},
               "delivered": {k: sorted({x["delivered"] for x in v}) for k, v in by.items()}}
        if "baseline" in by:
            row["ratio"] = row["current"] / row["baseline"]
            row["same_work"] = row["delivered"]["baseline"] == row["delivered"]["current"]
        rows.append(row)
    return {"params": {k: v for k, v in p.__dict__.items() if k != "valgrind"}, "rows": rows}


def table(result: dict) -> str:
    rows = result["rows"]
    base = "baseline" in rows[0]
    head = f"{'mode':6}" + (f"{'baseline':>14}" if base else "") + f"{'this tree':>14}" + (f"{'ratio':>8}" if base else "")
    lines = [head + "   (M instructions per write)"]
    for r in rows:
        line = f"{r['mode']:6}" + (f"{r['baseline'] / 1e6:14.3f}" if base else "") + f"{r['current'] / 1e6:14.3f}"
        if base:
            line += f"{r['ratio']:8.3f}" + ("" if r["same_work"] else "   (different work: the runs delivered "
                                           f"{r['delivered']['baseline']} and {r['delivered']['current']} messages)")
        lines.append(line)
    return "\n".join(lines)


def _modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in modes if m not in MODES]
    if not modes or bad:
        raise argparse.ArgumentTypeError(f"modes are a comma-separated list of {', '.join(MODES)}")
    return modes


def add_parser(which) -> argparse.ArgumentParser:
    from replication.cliargs import positive_int

    p = which.add_parser("writecost", help="CPU instructions per write (valgrind): this tree against a git revision",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Params()
    p.add_argument("--baseline", metavar="REV", help="git revision to compare against (e.g. HEAD~3)")
    p.add_argument("--writes", type=positive_int, default=d.writes, metavar="N", help="writes per run (default: %(default)s)")
    p.add_argument("--modes", type=_modes, default=d.modes, metavar="sim,live", help="what to measure (default: sim,live)")
    p.add_argument("--pops", default=d.pops, metavar="default|all|ID,...", help="POPs (default: %(default)s)")
    p.add_argument("--repeat", type=positive_int, default=d.repeat, metavar="K",
                   help="runs of each, the least kept (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="simulation seed (default: %(default)s)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--quiet", action="store_true", help="no per-run output")
    return p


def main(args) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("edgestate bench writecost: error: valgrind is not installed (Debian: apt-get install valgrind)",
              file=sys.stderr)
        return 2
    p = Params(baseline=args.baseline or "", writes=args.writes, modes=args.modes, pops=args.pops, seed=args.seed,
               repeat=args.repeat, valgrind=valgrind)
    try:
        result = run(p, progress=not args.quiet)
    except ValueError as e:
        print(f"edgestate bench writecost: error: {e}", file=sys.stderr)
        return 2
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0
