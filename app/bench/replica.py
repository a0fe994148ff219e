"""`edgestate bench replica`: real replica processes, durable writes over HTTP, real sockets.

0. The disk's floor (`fsync_floor`): SQLite commits of a 100-byte row with the replica's own
   settings (WAL, synchronous=FULL), one after another, in the replica's data directory, half
   before the write runs and half after: p50/p99 and commits/s. The write targets are ratios to
   it, measured in the same run (absolute figures differ between disks and between runs).
1. Write latency: one client writes `--writes` keys one after another (keep-alive HTTP/1.1)
   to one replica process; each answer comes after its write is durable (fsync). p50/p99.
   Target: p50 <= 2x the floor's p50.
2. Throughput: 4, then `--clients`, concurrent connections write `--writes` keys as fast as
   the replica answers: durable writes per second, and the latency under that load. Group commit
   shares each fsync between the writes that arrived while the last one ran (writes per flush,
   from the replica's /metrics; and the replica process's CPU time per write). Target at 16
   clients: >= 5x the floor's sequential commits/s, with p99 <= 4x the floor's p99 + 10 ms.
   With `--baseline REV`, only steps 0-2, in `--rounds` alternating rounds: the replica as it was
   at git revision REV (its tree, extracted; the same bench drives it) and as it is now, side by
   side, medians of the rounds: a change measured against what it changed, in one run.
   Otherwise, before the second half of the floor, the stack's own floor (`http_floor`): the
   same client and loads against a bare ASGI app on the same server that commits each body off
   the loop, as the replica does, and nothing else. Its ratios to the disk's floor are what no
   replica in this stack can beat; the replica's ratios to it are the part of a write that is ours.
3. Propagation: a 5-process loopback cluster with injected geographic latency (lhr, fra, jfk,
   sin, syd, plumtree); `--propagation-writes` writes at random replicas, paced. For each, the
   time from its durable apply at the origin until every other replica has applied it (the
   replicas report applies with this host's wall clock). Side by side: the same writes, same
   origins and same spacing in the simulator. The ratio is what the real network, the disk
   and Python add to the model.
4. Peer TLS beside secret-only frames: a 3-process loopback cluster (lhr, fra, jfk, no injected
   latency, so the transport's own cost shows) started with mutual TLS and without, in
   alternating rounds (`--tls-rounds` of each; which mode goes first alternates too, so a
   machine that slows down during the run does not favour one). Each round: durable writes per
   second at lhr over `--clients` connections, every write replicated to both peers; then
   `--tls-propagation-writes` paced writes at random replicas, each timed from its apply at the
   origin to its apply at the last peer. Reported: the median over rounds of writes/s, and the
   propagation p50/p99 over every round's writes, for each mode, and TLS's cost (target: under
   20 % of durable write throughput).

`--short` is the small form the tests run (explicit flags still win).

The client runs on this machine too, so on a 2-core host it takes CPU from the replica:
the figures are a floor for what one replica process does, not a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from replication.bench import revision
from replication.bench.report import finish, table
from replication.cliargs import positive_int

from ..processes.http_client import Conn
from . import fsync_floor, http_floor
from ..processes.supervisor import ProcessCluster
from ..replica.events import TOKEN_ENV, EventCollector
from . import runloop

PROPAGATION_POPS = ["lhr", "fra", "jfk", "sin", "syd"]


@dataclass
class Params:
    writes: int = 3000
    clients: int = 16
    propagation_writes: int = 200
    rate: float = 20.0  # propagation writes per second
    seed: int = 1
    tls_rounds: int = 3  # of each mode
    tls_propagation_writes: int = 100


SHORT = Params(writes=200, clients=4, propagation_writes=20, tls_rounds=1, tls_propagation_writes=20)
TLS_POPS = ["lhr", "fra", "jfk"]
TLS_RATE = 50.0  # propagation writes per second in the TLS rounds (no injected latency: they arrive fast)
TLS_COST_TARGET_PCT = 20.0


def _add_arguments(p: argparse.ArgumentParser) -> None:
    # None: not given, so --short or the full run's default applies
    p.add_argument("--writes", type=positive_int, default=None,
                   help=f"writes for the latency and the throughput runs, and each TLS round (default: {Params.writes}; "
                        f"--short: {SHORT.writes})")
    p.add_argument("--clients", type=positive_int, default=None,
                   help=f"concurrent connections for the throughput runs (default: {Params.clients}; "
                        f"--short: {SHORT.clients})")
    p.add_argument("--propagation-writes", type=positive_int, default=None,
                   help=f"writes for the 5-process propagation run (default: {Params.propagation_writes}; "
                        f"--short: {SHORT.propagation_writes})")
    p.add_argument("--tls-rounds", type=positive_int, default=None,
                   help=f"rounds of each mode, TLS and secret-only, alternating (default: {Params.tls_rounds}; "
                        f"--short: {SHORT.tls_rounds})")
    p.add_argument("--tls-propagation-writes", type=positive_int, default=None,
                   help=f"paced writes per TLS round for propagation (default: {Params.tls_propagation_writes}; "
                        f"--short: {SHORT.tls_propagation_writes})")
    p.add_argument("--short", action="store_true", help="the small form the tests run")
    p.add_argument("--baseline", metavar="REV", default=None,
                   help="the write path only, side by side with the replica at git revision REV, in --rounds "
                        "alternating rounds")
    p.add_argument("--rounds", type=positive_int, default=3,
                   help="rounds of each side with --baseline (default: %(default)s)")
    p.add_argument("--writes-only", action="store_true",
                   help="only the disk's floor and the durable write latency and throughput (no propagation, no TLS)")
    p.add_argument("--seed", type=int, default=Params.seed, help="seed for origins and values (default: %(default)s)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def add_parser(which) -> argparse.ArgumentParser:
    p = which.add_parser("replica", help="durable write latency, throughput and propagation of real replica processes",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    return p


_pct = fsync_floor.pct  # the floor's own: the targets compare the two


async def _write_load(host: str, port: int, keys: list[str], clients: int) -> tuple[list[float], float]:
    """Write every key once over `clients` connections. Returns (latencies in ms, elapsed s)."""
    todo = iter(keys)
    lat: list[float] = []

    async def worker():
        c = Conn(host, port)
        await c.open()
        try:
            for key in todo:
                body = json.dumps({"value": {"k": key}}).encode()
                t0 = time.perf_counter()
                status, resp = await c.request("PUT", f"/api/replicas/lhr/kv/{key}", body)
                lat.append((time.perf_counter() - t0) * 1000.0)
                if status != 200:
                    raise RuntimeError(f"write answered {status}: {resp[:200]!r}")
        finally:
            c.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return lat, time.perf_counter() - t0


LIGHT_CLIENTS = 4  # a lighter load beside --clients: where the latency target is met, and at what rate
TARGET_SINGLE_P50 = 2.0  # one client's p50, at most this many times the floor's p50
TARGET_LOADED_RATE = 5.0  # --clients' writes/s, at least this many times the floor's commits/s...
TARGET_LOADED_P99 = (4.0, 10.0)  # ...with p99 at most 4x the floor's p99 + 10 ms
P99_RULE = f"{TARGET_LOADED_P99[0]:g}x the floor's p99 + {TARGET_LOADED_P99[1]:g} ms"  # as the reports say it


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_COUNTERS = {"edgestate_storage_flushes_total": "flushes", "edgestate_storage_flush_seconds_sum": "flush_s",
             "edgestate_storage_checkpoints_total": "checkpoints"}


async def _counters(port: int) -> dict[str, float]:
    """The replica's group commits so far, the seconds they took, and its checkpoints (its /metrics)."""
    c = Conn("127.0.0.1", port)
    await c.open()
    try:
        _status, body = await c.request("GET", "/metrics")
    finally:
        c.close()
    found = {}
    for line in body.decode().splitlines():
        for name, short in _COUNTERS.items():
            if line.startswith((name + "{", name + " ")):
                found[short] = float(line.rsplit(" ", 1)[1])
    return found


def _load_run(port: int, pid: int, keys: list[str], clients: int) -> tuple[list[float], float, dict]:
    """`_write_load`, and what it cost the replica: CPU ms per write, writes per group commit,
    the mean time of one group commit (in its thread: compare with the floor's p50), and how
    many checkpoints the replica wrote meanwhile (each a stall on the write path)."""
    cpu0, m0 = _cpu_s(pid), runloop.run(_counters(port))
    lat, elapsed = runloop.run(_write_load("127.0.0.1", port, keys, clients))
    cpu1, m1 = _cpu_s(pid), runloop.run(_counters(port))
    cost = {}
    if cpu0 is not None and cpu1 is not None:
        cost["cpu_ms_per_write"] = (cpu1 - cpu0) * 1000.0 / len(keys)
    if "flushes" in m0 and "flush_s" in m0 and m1.get("flushes", 0) > m0["flushes"]:
        n = m1["flushes"] - m0["flushes"]
        cost["writes_per_flush"] = len(keys) / n
        cost["flush_ms"] = (m1["flush_s"] - m0["flush_s"]) * 1000.0 / n
    if "checkpoints" in m0 and "checkpoints" in m1:
        cost["checkpoints"] = int(m1["checkpoints"] - m0["checkpoints"])
    return lat, elapsed, cost


def _single(params: Params, root: str, progress, env: dict[str, str] | None = None, skeleton_too: bool = True) -> dict:
    """`env`: the replica process's environment (a baseline's PYTHONPATH). `skeleton_too`: also
    measure `http_floor`'s skeleton with the same loads, before the second half of the floor."""
    with ProcessCluster(["lhr"], os.path.join(root, "single"), inject_latency=False, env=env) as c:
        c.start()
        r = c.replicas["lhr"]
        assert r.proc is not None  # started
        port, pid = r.http_port, r.proc.pid
        floor_commits = max(2, params.writes // 2)
        progress(f"floor: {floor_commits} SQLite commits (synchronous=FULL) in the replica's data directory")
        floors = [fsync_floor.measure(r.data_dir, floor_commits)]
        progress(f"latency: {params.writes} sequential durable writes")
        lat, elapsed, cost = _load_run(port, pid, [f"seq-{i}" for i in range(params.writes)], 1)
        load = []
        for n in sorted({min(LIGHT_CLIENTS, params.clients), params.clients}):
            progress(f"throughput: {params.writes} writes over {n} connections")
            lat_c, elapsed_c, cost_c = _load_run(port, pid, [f"par{n}-{i}" for i in range(params.writes)], n)
            load.append({"clients": n, "writes_per_s": params.writes / elapsed_c,
                         "loaded_p50_ms": statistics.median(lat_c), "loaded_p99_ms": _pct(lat_c, 99),
                         "loaded_max_ms": max(lat_c), **cost_c})
        skeleton = _skeleton(params, os.path.join(r.data_dir, "skeleton"), progress) if skeleton_too else None
        progress(f"floor: {floor_commits} more commits, after the writes")
        floors.append(fsync_floor.measure(r.data_dir, floor_commits))
    floor = fsync_floor.combine(floors)
    single = {
        "write_p50_ms": statistics.median(lat), "write_p99_ms": _pct(lat, 99), "write_max_ms": max(lat),
        "sequential_writes_per_s": params.writes / elapsed, **{f"sequential_{k}": v for k, v in cost.items()},
        **load[-1], "load": load, "floor": floor,
    }
    single["targets"] = _targets(single, floor)
    if skeleton is not None:
        single["skeleton"] = skeleton
        single["targets"].update(_skeleton_ratios(single, skeleton, floor))
    return single


def _skeleton(params: Params, directory: str, progress) -> dict:
    """The same client and loads against `http_floor`'s skeleton, in the replica's data directory."""
    with http_floor.Skeleton(directory) as sk:
        progress(f"skeleton: {params.writes} sequential writes to a bare ASGI app committing each body (http_floor)")
        lat, elapsed = runloop.run(_write_load("127.0.0.1", sk.port, [f"sk-{i}" for i in range(params.writes)], 1))
        progress(f"skeleton: {params.writes} writes over {params.clients} connections")
        cpu0 = _cpu_s(sk.pid)
        lat_c, elapsed_c = runloop.run(_write_load("127.0.0.1", sk.port, [f"skp-{i}" for i in range(params.writes)],
                                                   params.clients))
        cpu1 = _cpu_s(sk.pid)
    out = {"write_p50_ms": statistics.median(lat), "write_p99_ms": _pct(lat, 99),
           "sequential_writes_per_s": params.writes / elapsed, "clients": params.clients,
           "writes_per_s": params.writes / elapsed_c, "loaded_p99_ms": _pct(lat_c, 99)}
    if cpu0 is not None and cpu1 is not None:
        out["cpu_ms_per_write"] = (cpu1 - cpu0) * 1000.0 / params.writes
    return out


def _skeleton_ratios(s: dict, sk: dict, floor: dict) -> dict:
    """Where the targets stand against the stack itself: the skeleton's own ratios to the floor
    (what no replica in this stack can beat), and the replica's to the skeleton (what is ours)."""
    return {
        "skeleton_p50_x_floor": sk["write_p50_ms"] / floor["floor_p50_ms"],
        "skeleton_rate_x_floor": sk["writes_per_s"] / floor["floor_commits_per_s"],
        "single_p50_x_skeleton": s["write_p50_ms"] / sk["write_p50_ms"],
        "loaded_rate_x_skeleton": s["writes_per_s"] / sk["writes_per_s"],
    }


def _targets(s: dict, floor: dict) -> dict:
    """The write path's targets, each a ratio to the floor measured in the same run."""
    p99_budget = TARGET_LOADED_P99[0] * floor["floor_p99_ms"] + TARGET_LOADED_P99[1]
    single_ratio = s["write_p50_ms"] / floor["floor_p50_ms"]
    rate_ratio = s["writes_per_s"] / floor["floor_commits_per_s"]
    return {
        "single_p50_x_floor": single_ratio, "single_p50_target_x": TARGET_SINGLE_P50,
        "single_p50_met": single_ratio <= TARGET_SINGLE_P50,
        "loaded_clients": s["clients"],
        "loaded_rate_x_floor": rate_ratio, "loaded_rate_target_x": TARGET_LOADED_RATE,
        "loaded_rate_met": rate_ratio >= TARGET_LOADED_RATE,
        "loaded_p99_ms": s["loaded_p99_ms"], "loaded_p99_budget_ms": p99_budget,
        "loaded_p99_met": s["loaded_p99_ms"] <= p99_budget,
    }


# -- the write path beside a baseline revision ---------------------------------------------------

SIDE_FIGURES = ["floor_p50_ms", "floor_p99_ms", "floor_commits_per_s", "write_p50_ms", "write_p99_ms",
                "writes_per_s", "loaded_p50_ms", "loaded_p99_ms", "loaded_max_ms", "checkpoints", "writes_per_flush",
                "flush_ms", "cpu_ms_per_write", "single_p50_x_floor", "loaded_rate_x_floor", "loaded_p99_budget_ms"]


def _extract(rev: str, into: str) -> str:
    """The tree of git revision `rev` of this repository, extracted under `into`/baseline; its full id."""
    try:
        full = revision.resolve(rev)
    except ValueError as e:
        raise RuntimeError(str(e)) from None  # the bench's "could not run" (report.finish)
    revision.export(full, Path(into) / "baseline")
    return full


def _flat(single: dict) -> dict:
    """One round's figures, flat: the floor, the latency, the --clients load, the ratios."""
    out = {**single["floor"], **single["targets"], **single}
    return {k: out[k] for k in SIDE_FIGURES if isinstance(out.get(k), (int, float))}


def _side(label: str, rounds: list[dict]) -> dict:
    flat = [_flat(r) for r in rounds]
    side: dict = {"side": label}
    for k in SIDE_FIGURES:
        values = [f[k] for f in flat if k in f]
        if values:
            side[k] = statistics.median(values)
    for k in ("single_p50_met", "loaded_rate_met", "loaded_p99_met"):
        side[k.replace("_met", "_rounds_met")] = sum(r["targets"][k] for r in rounds)
    return side


def _beside_baseline(params: Params, rev: str, rounds: int, root: str, progress) -> dict:
    full = _extract(rev, root)
    env = {"PYTHONPATH": os.path.join(root, "baseline")}
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for n in range(rounds):
        order = [("before", env), ("after", None)]
        for label, side_env in (order if n % 2 == 0 else order[::-1]):  # alternate which goes first
            progress(f"round {n + 1}/{rounds}: {label} ({full[:10] if side_env else 'this tree'})")
            runs[label].append(_single(params, os.path.join(root, f"{label}-{n}"), progress, side_env, skeleton_too=False))
    return {"revision": full, "rounds": rounds, "clients": params.clients, "writes": params.writes,
            "before": _side("before", runs["before"]), "after": _side("after", runs["after"]),
            "runs": runs}


def _report_baseline(b: dict) -> str:
    cols = ["side", "floor_p50_ms", "floor_commits_per_s", "write_p50_ms", "single_p50_x_floor", "writes_per_s",
            "loaded_rate_x_floor", "loaded_p99_ms", "loaded_p99_budget_ms", "loaded_max_ms"]
    cost = ["side", "writes_per_flush", "flush_ms", "cpu_ms_per_write", "checkpoints", "single_p50_rounds_met",
            "loaded_rate_rounds_met", "loaded_p99_rounds_met"]
    rows = [b["before"], b["after"]]
    return "\n".join([
        f"durable writes beside revision {b['revision'][:10]} (before) in {b['rounds']} alternating round(s) each, "
        f"{b['writes']} writes per load; medians (the load: {b['clients']} clients)",
        table(rows, cols), "", table(rows, cost),
        f"targets: one client p50 <= {TARGET_SINGLE_P50:g}x the floor's; {b['clients']} clients >= "
        f"{TARGET_LOADED_RATE:g}x the floor's commits/s, p99 <= {P99_RULE} (rounds met, of {b['rounds']})",
    ])


# -- propagation: real processes, then the same writes in the simulator -------------------------


def _plan(params: Params) -> list[tuple[str, float]]:
    rng = random.Random(params.seed)
    return [(rng.choice(PROPAGATION_POPS), i / params.rate) for i in range(params.propagation_writes)]


async def _with_events(pops: list[str], root: str, body, *, inject_latency: bool, tls: bool = True):
    """Start a cluster of `pops` streaming their applies here, run `body(c, applied)`, stop it.
    `applied[(replica, counter)][rid]`: when replica `rid` applied that dot (this host's clock)."""
    applied: dict[tuple[str, int], dict[str, float]] = {}

    def on_event(ev: dict) -> None:
        if ev.get("type") == "applied":
            for r, n in ev["dots"]:
                applied.setdefault((r, n), {}).setdefault(ev["replica"], ev["t"])

    token = secrets.token_hex(16)
    collector = EventCollector(on_event, token=token)
    port = await collector.start()
    c = ProcessCluster(pops, root, inject_latency=inject_latency, events=("127.0.0.1", port), env={TOKEN_ENV: token},
                       tls=tls)
    try:
        await asyncio.to_thread(c.start)
        return await body(c, applied)
    finally:
        await collector.close()
        await asyncio.to_thread(c.close)


async def _propagate(c: ProcessCluster, applied: dict, plan: list[tuple[str, float]], prefix: str) -> list[float]:
    """Write `plan` (origin, seconds from start) paced; for each write, ms from its apply at the
    origin until the last other replica applied it."""
    pops = c.ids
    conns = {}
    for rid in pops:
        conns[rid] = Conn("127.0.0.1", c.replicas[rid].http_port)
        await conns[rid].open()
    try:
        dots = []
        t_start = time.perf_counter()
        for i, (origin, at) in enumerate(plan):
            delay = t_start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the load, not waiting for readiness
            status, body = await conns[origin].request("PUT", f"/api/replicas/{origin}/kv/{prefix}{i}",
                                                       json.dumps({"value": i}).encode())
            if status != 200:
                raise RuntimeError(f"write at {origin} answered {status}")
            sib = json.loads(body)["siblings"][0]
            dots.append((sib["replica"], sib["counter"]))
        deadline = time.monotonic() + 30
        while any(len(applied.get(d, {})) < len(pops) for d in dots):
            if time.monotonic() > deadline:
                missing = sum(len(applied.get(d, {})) < len(pops) for d in dots)
                raise RuntimeError(f"{missing} writes did not reach every replica within 30 s")
            await asyncio.sleep(0.05)
    finally:
        for conn in conns.values():
            conn.close()
    out = []
    for d in dots:
        at = applied[d]
        origin = d[0].split("~")[0]
        out.append(max(t for r, t in at.items() if r != origin) - at[origin])
    return out


async def _real_propagation(params: Params, root: str, progress) -> list[float]:
    async def body(c: ProcessCluster, applied: dict) -> list[float]:
        await asyncio.sleep(1.5)  # settle: overlay views and membership probes, as the simulator's warm-up
        progress(f"propagation: {params.propagation_writes} writes on 5 processes at {params.rate:g}/s")
        return await _propagate(c, applied, _plan(params), "p")

    return await _with_events(PROPAGATION_POPS, os.path.join(root, "five"), body, inject_latency=True)


# -- peer TLS beside secret-only frames ----------------------------------------------------------


async def _tls_round(params: Params, root: str, tls: bool, n: int, progress) -> tuple[float, list[float]]:
    """One round in one mode: (durable writes/s at lhr while replicating to 2 peers, propagation ms)."""
    mode = "tls" if tls else "plain"
    rng = random.Random(params.seed * 1000 + n)
    plan = [(rng.choice(TLS_POPS), i / TLS_RATE) for i in range(params.tls_propagation_writes)]

    async def body(c: ProcessCluster, applied: dict) -> tuple[float, list[float]]:
        progress(f"tls: round {n + 1}/{params.tls_rounds}, {mode}: {params.writes} writes over "
                 f"{params.clients} connections, then {len(plan)} paced")
        _lat, elapsed = await _write_load("127.0.0.1", c.replicas["lhr"].http_port,
                                          [f"t{i}" for i in range(params.writes)], params.clients)
        return params.writes / elapsed, await _propagate(c, applied, plan, "tp")

    return await _with_events(TLS_POPS, os.path.join(root, f"tls-{mode}-{n}"), body, inject_latency=False, tls=tls)


def _tls_vs_plain(params: Params, root: str, progress) -> dict:
    runs: dict[str, dict[str, list]] = {m: {"writes_per_s": [], "propagation": []} for m in ("tls", "plain")}
    for n in range(params.tls_rounds):
        for tls in ((True, False) if n % 2 == 0 else (False, True)):  # alternate which goes first
            wps, prop = runloop.run(_tls_round(params, root, tls, n, progress))
            runs["tls" if tls else "plain"]["writes_per_s"].append(wps)
            runs["tls" if tls else "plain"]["propagation"].extend(prop)
    modes = {m: {"mode": m, "writes_per_s": statistics.median(r["writes_per_s"]), "rounds_writes_per_s": r["writes_per_s"],
                 "propagation_p50_ms": statistics.median(r["propagation"]),
                 "propagation_p99_ms": _pct(r["propagation"], 99)}
             for m, r in runs.items()}
    ratio = modes["tls"]["writes_per_s"] / modes["plain"]["writes_per_s"]
    return {"pops": TLS_POPS, "rounds": params.tls_rounds, "clients": params.clients, "writes": params.writes,
            "propagation_writes": params.tls_propagation_writes, **modes,
            "throughput_ratio": ratio, "tls_cost_pct": (1 - ratio) * 100,
            "propagation_p50_ratio": modes["tls"]["propagation_p50_ms"] / modes["plain"]["propagation_p50_ms"],
            "target_cost_pct": TLS_COST_TARGET_PCT}


def _sim_propagation(params: Params) -> list[float]:
    from replication.sim.cluster import SimCluster
    from replication.geo import place_replicas, select_pops

    times: dict = {}

    def sink(ev) -> None:
        if ev.kind == "applied":
            for d in ev.data["dots"]:
                times.setdefault(d, {}).setdefault(ev.node, ev.t)

    cluster = SimCluster(place_replicas(select_pops(",".join(PROPAGATION_POPS))), strategy="plumtree",
                         seed=params.seed, sink=sink)
    cluster.sim.run_until(1500.0)
    t0 = cluster.sim.now
    dots = []
    for i, (origin, at) in enumerate(_plan(params)):
        cluster.sim.run_until(t0 + at * 1000.0)
        view = cluster.write(origin, "kv", f"p{i}", {"value": i})
        s = view.siblings[0]
        dots.append((s.replica, s.counter, origin))
    cluster.settle()
    out = []
    for r, n, origin in dots:
        at = times[(r, n)]
        out.append(max(t for node, t in at.items() if node != origin) - at[origin])
    return out


def measure(params: Params, progress, writes_only: bool = False, baseline: str | None = None,
            rounds: int = 3) -> dict:
    with tempfile.TemporaryDirectory(prefix="edgestate-bench-") as root:
        if baseline is not None:
            return {"params": asdict(params), "baseline": _beside_baseline(params, baseline, rounds, root, progress)}
        single = _single(params, root, progress)
        if writes_only:
            return {"params": asdict(params), "single": single}
        real = runloop.run(_real_propagation(params, root, progress))
        tls = _tls_vs_plain(params, root, progress)
    sim = _sim_propagation(params)
    ratios = [r / s for r, s in zip(real, sim) if s > 0]
    return {
        "params": asdict(params),
        "single": single,
        "propagation": {
            "pops": PROPAGATION_POPS,
            "real_p50_ms": statistics.median(real), "real_p99_ms": _pct(real, 99),
            "sim_p50_ms": statistics.median(sim), "sim_p99_ms": _pct(sim, 99),
            "median_ratio": statistics.median(real) / statistics.median(sim),
            "ratio_p50": statistics.median(ratios), "ratio_p99": _pct(ratios, 99),
        },
        "tls": tls,
    }


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def report(result: dict) -> str:
    if "baseline" in result:
        return _report_baseline(result["baseline"])
    s = result["single"]
    f, t = s["floor"], s["targets"]
    lines = [
        "the disk's floor: 100-byte SQLite commits (WAL, synchronous=FULL) one after another, in the data dir",
        table([f], ["floor_p50_ms", "floor_p99_ms", "floor_commits_per_s"]),
        "",
        "durable writes over HTTP, one replica process",
        table([s], ["write_p50_ms", "write_p99_ms", "write_max_ms", "sequential_writes_per_s"]),
        "",
        table(s["load"], ["clients", "writes_per_s", "loaded_p50_ms", "loaded_p99_ms", "writes_per_flush",
                          "flush_ms", "cpu_ms_per_write"]),
        "",
        table(s["load"], ["clients", "loaded_max_ms", "checkpoints"]),
        "",
        f"one client: p50 {t['single_p50_x_floor']:.2f}x the floor's p50 (target: <= {t['single_p50_target_x']:g}x): "
        f"{_verdict(t['single_p50_met'])}",
        f"{t['loaded_clients']} clients: {t['loaded_rate_x_floor']:.2f}x the floor's commits/s (target: >= "
        f"{t['loaded_rate_target_x']:g}x): {_verdict(t['loaded_rate_met'])}; p99 {t['loaded_p99_ms']:.1f} ms "
        f"(target: <= {P99_RULE} = {t['loaded_p99_budget_ms']:.1f} ms): {_verdict(t['loaded_p99_met'])}",
    ]
    sk = s.get("skeleton")
    if sk is not None:
        lines += [
            "",
            "the stack's own floor: a bare ASGI app on the same server committing each body off the loop, "
            "same client and loads (http_floor)",
            table([sk], ["write_p50_ms", "write_p99_ms", "clients", "writes_per_s", "loaded_p99_ms", "cpu_ms_per_write"]),
            f"skeleton: one client p50 {t['skeleton_p50_x_floor']:.2f}x the floor's, {sk['clients']} clients "
            f"{t['skeleton_rate_x_floor']:.2f}x the floor's commits/s; the replica: p50 "
            f"{t['single_p50_x_skeleton']:.2f}x the skeleton's, {t['loaded_rate_x_skeleton']:.2f}x its writes/s",
        ]
    p = result.get("propagation")
    if p is None:
        return "\n".join(lines)
    lines += [
        "",
        f"propagation to every replica, 5 processes ({', '.join(p['pops'])}) vs the simulator",
        table([p], ["real_p50_ms", "sim_p50_ms", "real_p99_ms", "sim_p99_ms", "median_ratio", "ratio_p50",
                    "ratio_p99"]),
    ]
    t = result.get("tls")
    if t:
        lines += [
            "",
            f"peer TLS beside secret-only frames, {len(t['pops'])} processes ({', '.join(t['pops'])}), no injected "
            f"latency; medians of {t['rounds']} alternating round(s) each",
            table([t["tls"], t["plain"]], ["mode", "writes_per_s", "propagation_p50_ms", "propagation_p99_ms"]),
            f"TLS keeps {t['throughput_ratio']:.1%} of durable write throughput: costs {t['tls_cost_pct']:.1f} % "
            f"(target: under {t['target_cost_pct']:g} %); propagation p50 x{t['propagation_p50_ratio']:.2f}",
        ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    base = SHORT if args.short else Params()
    given = {k: getattr(args, k) for k in ("writes", "clients", "propagation_writes", "tls_rounds",
                                           "tls_propagation_writes") if getattr(args, k) is not None}
    params = replace(base, seed=args.seed, **given)
    progress = lambda msg: print(msg, file=sys.stderr, flush=True)
    return finish("replica", lambda: measure(params, progress, args.writes_only, args.baseline, args.rounds),
                  report, args.json)
