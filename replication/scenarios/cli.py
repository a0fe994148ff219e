"""`edgestate scenario list` and `edgestate scenario run NAME|FILE`: on a fresh simulated
cluster, as fast as the simulator goes, printing each step at its virtual time.

Exit status: 0 when the claim holds, 1 when it does not (or a step could not be carried out),
2 for a file that cannot run (its message names the file and the line).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..dissemination import STRATEGIES
from .drivers import run_fast
from .spec import ScenarioError, builtin_names, load_builtin, load_file

EXIT_PASSED, EXIT_FAILED, EXIT_BAD_FILE = 0, 1, 2


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("scenario", help="run a named, scripted scenario on a simulated cluster",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_subparsers(dest="scenario_command", metavar="list|run", required=True)
    which.add_parser("list", help="the built-in scenarios")
    run = which.add_parser("run", help="run a built-in scenario by name, or a scenario file")
    run.add_argument("scenario", metavar="NAME|FILE",
                     help="a built-in scenario's name (see `edgestate scenario list`) or a scenario YAML file")
    run.add_argument("--pops", default=None, metavar="all|default|ID,...",
                     help="POPs of the cluster (default: the scenario's own, else the default set)")
    run.add_argument("--seed", type=int, default=0, help="simulation seed (default: %(default)s)")
    run.add_argument("--strategy", choices=list(STRATEGIES), default="plumtree",
                     help="how writes spread (default: %(default)s)")
    run.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE")
    return p


def resolve(arg: str):
    """A built-in by name, else a file. Raises ScenarioError."""
    if arg in builtin_names():
        return load_builtin(arg)
    if Path(arg).exists() or any(sep in arg for sep in ("/", ".")):
        return load_file(arg)
    raise ScenarioError(arg, None, f"no built-in scenario by that name (built-in: {', '.join(builtin_names())}) "
                                   "and no such file")


def _printer(out):
    state = {"start": None}

    def on_event(ev: dict) -> None:
        if state["start"] is None:
            state["start"] = ev["t"]
        t = ev["t"] - state["start"]
        if ev["status"] in ("passed", "failed"):
            return  # the verdict is printed from the report, with every check
        step = f"{ev['step']:>2}/{ev['of']}" if ev["step"] else "    "
        figs = ev.get("figures")
        tail = ""
        if figs and not ev.get("check"):
            tail = "  " + json.dumps(_short(figs), ensure_ascii=False)
        elif ev.get("check"):
            tail = "  " + json.dumps(_short(ev["check"]["figures"]), ensure_ascii=False)
        print(f"[{t:9.1f} ms] {step} {ev['caption']}{tail}", file=out)

    return on_event


def _short(figs: dict) -> dict:
    """Figures as printed on one line: long lists cut short (the JSON report has them whole)."""
    out = {}
    for k, v in figs.items():
        if k == "observed" and isinstance(v, list):
            v = [{"value": o["value"], "at": o["at"] if len(o["at"]) <= 4 else f"{len(o['at'])} POPs"} for o in v]
        elif isinstance(v, list) and len(v) > 6:
            v = f"{len(v)} items"
        out[k] = v
    return out


def run(args, out=None, err=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if args.scenario_command == "list":
        for name in builtin_names():
            s = load_builtin(name)
            print(f"{name:<20} {s.title}: {s.description}", file=out)
        return EXIT_PASSED
    try:
        scenario = resolve(args.scenario)
        print(f"scenario {scenario.name}: {scenario.title}", file=out)
        print(f"claim: {scenario.claim}", file=out)
        report = run_fast(scenario, pops=args.pops, seed=args.seed, strategy=args.strategy, on_event=_printer(out))
    except ScenarioError as e:
        print(f"edgestate scenario: error: {e}", file=err)
        return EXIT_BAD_FILE
    checks = report["checks"]
    failed = [c for c in checks if not c["passed"]]
    print(f"checks: {len(checks) - len(failed)} of {len(checks)} passed", file=out)
    for c in failed:
        print(f"  ✗ {c['label']}  (line {c['line']}: {json.dumps(_short(c['figures']), ensure_ascii=False)})", file=out)
    if report["error"]:
        print(f"error: {report['error']}", file=out)
    verdict = "PASSED ✓" if report["passed"] else "FAILED ✗"
    print(f"{verdict} {scenario.claim}  ({report['duration_ms']:.1f} virtual ms, seed {args.seed}, "
          f"{len(report['replicas'])} POPs)", file=out)
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2, ensure_ascii=False)
                f.write("\n")
        except OSError as e:
            print(f"edgestate scenario: error: cannot write {args.json}: {e.strerror or e}", file=err)
            return EXIT_BAD_FILE
    return EXIT_PASSED if report["passed"] else EXIT_FAILED
