"""Command-line front of the benchmarks: `edgestate bench propagation ...`."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ..cliargs import positive_int, probability
from ..geo import select_pops
from ..node import LARGE_CLUSTER
from ..sim import collector
from . import coordination_cost as coordination
from . import propagation
from . import simspeed
from .report import table

COLUMNS = [
    "strategy", "replicas", "writes", "ratio_p50", "ratio_p99", "payloads_per_receiver",
    "max_sends_per_node", "delivered_before_antientropy", "delivered_everywhere", "heal_converge_ms",
    "first_write_max", "first_write_p50", "switched_back_max",
]
CRASH_COLUMNS = [
    "strategy", "replicas", "crashed", "writes", "reliability", "complete_share", "delivered_before_antientropy",
    "ratio_p50", "ratio_p99", "recovery_s",
]




def _strategies(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in propagation.STRATEGIES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown strategy {', '.join(bad) or '(none)'}; choose from {','.join(propagation.STRATEGIES)}"
        )
    return list(dict.fromkeys(names))


def add_parser(sub):
    """Add `bench` and its `propagation` benchmark; returns the benchmarks' subparsers so
    benchmarks that need the web stack (`bench ws`) can be added by the app."""
    bench = sub.add_parser("bench", help="run a benchmark", description="Benchmarks; figures, not pass/fail.")
    which = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
    p = which.add_parser(
        "propagation",
        help="how writes spread: plumtree vs gossip vs direct on the simulated WAN",
        description=propagation.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = propagation.Params()
    p.add_argument("--pops", default=d.pops, metavar="all|default|ID,...", help="POPs (default: %(default)s)")
    p.add_argument("--replicas", type=positive_int, default=None, metavar="N",
                   help="place N replicas round-robin over the POPs (default: one per POP)")
    p.add_argument("--writes", type=positive_int, default=d.writes, metavar="K", help="measured writes (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=None, metavar="W",
                   help=f"writes before measuring, while trees form (default: {d.warmup}; "
                        f"{propagation.WARMUP_LARGE} beyond {LARGE_CLUSTER:,} replicas, where every root has "
                        "its model tree from its first write)")
    p.add_argument("--rate", type=float, default=d.rate, help="writes per virtual second (default: %(default)s)")
    p.add_argument("--loss", type=probability, default=d.loss, metavar="P", help="message loss probability (default: %(default)s)")
    p.add_argument("--strategy", type=_strategies, default=",".join(d.strategies), metavar="LIST",
                   help="comma-separated strategies (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="simulation seed (default: %(default)s)")
    p.add_argument("--crash-fraction", type=probability, default=d.crash_fraction, metavar="F",
                   help="after the warm-up crash this share of the replicas at once and measure the writes "
                        "after it: reliability and recovery time (default: no crash)")
    p.add_argument("--scrub", action=argparse.BooleanOptionalAction, default=None,
                   help=f"whether nodes scrub their stores (default: up to {LARGE_CLUSTER:,} replicas; the bench "
                        "never changes memory behind a store's back, so every figure is the same without it)")
    p.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                   help="run each strategy's measured run, first writes and switched-back writes side by side on N "
                        "processes, each forked from its strategy's settled cluster, built once (every figure the "
                        f"same; about 3.5 GB per process at 10,000 replicas) (default: 1; over {LARGE_CLUSTER:,} "
                        "replicas, one per CPU, as many as the available memory holds)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--plot", metavar="FILE.html",
                   help="also draw each strategy's convergence CDF against the physical limit into FILE.html "
                        "(self-contained: plotly.js inlined, opens offline)")
    coordination.add_parser(which)
    simspeed.add_parser(which)
    return which


def run(args: argparse.Namespace) -> int:
    with collector.batch():  # the simulator as a batch job: full collections rare
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.bench == "coordination":
        return coordination.run(args)
    if args.bench == "simspeed":
        return simspeed.main(args)
    if args.bench != "propagation":
        print(f"edgestate bench: unknown benchmark {args.bench!r}", file=sys.stderr)
        return 2
    try:
        select_pops(args.pops)
    except ValueError as e:
        print(f"edgestate bench propagation: error: --pops {args.pops!r}: {e}", file=sys.stderr)
        return 2
    if (args.warmup is not None and args.warmup < 0) or not (args.rate > 0 and math.isfinite(args.rate)):
        print("edgestate bench propagation: error: --warmup must be >= 0 and --rate > 0", file=sys.stderr)
        return 2
    if args.plot and not Path(args.plot).resolve().parent.is_dir():  # before a run that may take minutes
        print(f"edgestate bench propagation: error: --plot {args.plot}: no such directory", file=sys.stderr)
        return 2
    strategies = args.strategy if isinstance(args.strategy, list) else _strategies(args.strategy)
    warmup = args.warmup
    if warmup is None:
        warmup = propagation.default_warmup(len(propagation.placements(propagation.Params(args.pops, args.replicas))))
    params = propagation.Params(
        pops=args.pops, replicas=args.replicas, writes=args.writes, warmup=warmup, rate=args.rate,
        loss=args.loss, strategies=strategies, seed=args.seed, crash_fraction=args.crash_fraction,
        scrub=args.scrub,
    )
    n = len(propagation.placements(params))
    if params.crash_fraction and n - round(params.crash_fraction * n) < 2:
        print("edgestate bench propagation: error: --crash-fraction must leave at least two replicas up", file=sys.stderr)
        return 2
    jobs = args.jobs if args.jobs is not None else propagation.default_jobs(n)
    result = propagation.run(params, progress=not args.quiet, jobs=jobs)
    rows = [{"strategy": s, **r} for s, r in result["strategies"].items()]
    print(table(rows, CRASH_COLUMNS if params.crash_fraction else COLUMNS))
    if "sim_msgs_per_s" in result:
        print(f"simulator: {result['sim_msgs_per_s']:,.0f} delivered messages per wall-clock second (plumtree, "
              f"{propagation.throughput_writes(params)} writes on a fresh cluster, uninstrumented; "
              "per-strategy instrumented figures in --json)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2, default=_json_default)
            f.write("\n")
    if args.plot:
        from .plot import write_html

        try:
            write_html(result, args.plot)
        except OSError as e:
            print(f"edgestate bench propagation: error: --plot {args.plot}: {e.strerror}", file=sys.stderr)
            return 1
    return 0


def _json_default(v):
    raise TypeError(f"not JSON: {v!r}")
