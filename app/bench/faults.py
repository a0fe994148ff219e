"""`edgestate bench faults`: fault campaigns that end in pass or fail, with the figures.

    edgestate bench faults [--seeds N] [--first-seed S] [--pops ID,...] [--replicas N] [--json FILE]
        random fault schedules on the simulator (replication/bench/faults.py), invariants at
        every step; a failing seed is printed with its first broken invariant
    edgestate bench faults --seed S
        replay one seed and say what happened
    edgestate bench faults --processes [--duration S] [--runs R] [--json FILE]
        real replica processes under SIGKILL churn and a SIGSTOP (app/bench/churn.py)
    edgestate bench faults --disk [db-flip,wal-flip,value-edit] [--trials N] [--json FILE]
        damage a data directory's files and start it: every damage must be detected or
        harmless, never silent (replication/bench/disk_faults.py)

Exit status 0 when every seed or run passed, 1 otherwise: the campaign is a check, not only a
measurement (CI runs a short one).
"""

from __future__ import annotations

import argparse
import json
import sys

from replication.bench import disk_faults, faults
from replication.bench.report import fmt, table
from replication.cliargs import non_negative, positive, positive_int
from replication.geo import select_pops


def add_parser(which) -> argparse.ArgumentParser:
    p = which.add_parser("faults", help="random fault campaigns (simulator, or real processes with --processes)",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = faults.Params()
    p.add_argument("--seeds", type=positive_int, default=d.seeds, metavar="N",
                   help="simulator: how many seeds (default: %(default)s)")
    p.add_argument("--first-seed", type=int, default=d.first_seed, metavar="S",
                   help="simulator: the first seed (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="simulator: replay this one seed")
    p.add_argument("--pops", default=d.pops, metavar="ID,...", help="simulator: replicas (default: %(default)s)")
    p.add_argument("--replicas", type=positive_int, default=None, metavar="N",
                   help="simulator: N replicas dealt round-robin over the POPs (default: one per POP); with "
                        "several per POP, plumtree's model trees and their repairs are under test")
    p.add_argument("--duration-ms", type=positive, default=d.duration_ms, metavar="MS",
                   help="simulator: virtual ms of faults and writes per seed (default: %(default)s)")
    p.add_argument("--coalesce-ms", type=non_negative, default=0.0, metavar="MS",
                   help="simulator: hold a key's writes this long after its last send and send them as one "
                        "delta, as the dashboard's cluster does (default: 0, off)")
    p.add_argument("--processes", action="store_true", help="real replica processes under churn instead")
    p.add_argument("--duration", type=positive, default=60.0, metavar="S",
                   help="processes: seconds of load and churn per run (default: %(default)s)")
    p.add_argument("--runs", type=positive_int, default=1, metavar="R",
                   help="processes: runs, one after another (default: %(default)s)")
    p.add_argument("--disk", nargs="?", const=",".join(disk_faults.KINDS), default=None, metavar="KINDS",
                   help=f"disk damage instead, comma-separated kinds (default: all of {','.join(disk_faults.KINDS)})")
    p.add_argument("--trials", type=positive_int, default=50, metavar="N",
                   help="disk: trials per kind (default: %(default)s)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def run(args: argparse.Namespace) -> int:
    if args.processes:
        return _processes(args)
    if args.disk is not None:
        return _disk(args)
    try:
        select_pops(args.pops)
    except ValueError as e:
        print(f"edgestate bench faults: error: --pops {args.pops!r}: {e}", file=sys.stderr)
        return 2
    if args.seed is not None:
        params = faults.Params(seeds=1, first_seed=args.seed, pops=args.pops, replicas=args.replicas,
                               duration_ms=args.duration_ms, coalesce_ms=args.coalesce_ms)
    else:
        params = faults.Params(seeds=args.seeds, first_seed=args.first_seed, pops=args.pops, replicas=args.replicas,
                               duration_ms=args.duration_ms, coalesce_ms=args.coalesce_ms)
    result = faults.run(params, progress=not args.quiet)
    for f in result["failed"]:
        print(f"FAILED seed {f['seed']} at t={fmt(f['at_ms'])} ms: {f['failure']}")
        more = f" --replicas {params.replicas}" if params.replicas else ""
        more += f" --coalesce-ms {params.coalesce_ms:g}" if params.coalesce_ms else ""
        print(f"  replay: edgestate bench faults --seed {f['seed']} --pops {params.pops}{more}")
    cols = ["seeds", "failed", "acked_writes", *(["held_writes"] if params.coalesce_ms else []), "faults", "checks", "converge_ms_p50", "converge_ms_p99",
            "converge_ms_max", "membership_ms_p50", "membership_ms_p99", "wall_s"]
    print(table([{**result, "failed": len(result["failed"])}], cols))
    _dump(args.json, result)
    return 1 if result["failed"] else 0


def _processes(args: argparse.Namespace) -> int:
    from .churn import ChurnParams, as_dict, run_churn

    log = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    runs = []
    for i in range(args.runs):
        r = run_churn(ChurnParams(duration_s=args.duration, seed=i), log=log)
        runs.append(as_dict(r))
        for f in r.failures:
            print(f"FAILED run {i}: {f}")
    cols = ["run", "ok", "acked", "refused", "indeterminate", "kills", "stops", "converge_s", "kv_checked", "wall_s"]
    print(table([{"run": i, **r} for i, r in enumerate(runs)], cols))
    _dump(args.json, {"runs": runs})
    return 0 if all(r["ok"] for r in runs) else 1


def _disk(args: argparse.Namespace) -> int:
    kinds = [k.strip() for k in args.disk.split(",") if k.strip()]
    bad = [k for k in kinds if k not in disk_faults.KINDS]
    if bad or not kinds:
        print(f"edgestate bench faults: error: --disk {args.disk!r}: kinds are {', '.join(disk_faults.KINDS)}",
              file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else args.first_seed
    reports = []
    for kind in kinds:
        r = disk_faults.run(args.trials, seed, kind)
        reports.append(r)
        print(r.line())
        for t in r.failures:
            print(f"  {t.outcome.upper()} trial {t.n}: {t.damage}: {t.message}")
        for t in r.examples[:1]:
            print(f"  e.g. trial {t.n}: {t.damage}\n       -> {t.message}")
    _dump(args.json, {"disk": [r.to_dict() for r in reports]})
    return 0 if all(r.ok for r in reports) else 1


def _dump(path: str | None, result: dict) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
