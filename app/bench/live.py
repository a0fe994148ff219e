"""`edgestate bench live`: does the live show hold under load, with the CPU taken by other work?

Each round starts `edgestate serve` in its own process (by default all 54 POPs, `--speed 1`),
optionally K CPU hogs beside it (`--cpu-hog K`: pure-Python spin loops, each its own process,
killed at the end of the round; `--cpu-hog 0,2` runs a round without and one with two, side by
side), connects `--clients N` WebSocket clients to `/ws` (in a process of their own, so their
work does not delay the HTTP load's clock), and drives `--writes` writes and `--reads` reads per
second over the HTTP API (kv, counters, sets and maps at random POPs, a bounded set of keys).
After a warm-up it measures, over the window:

- the server's event loop: its longest stall and p99, from the server's own probe
  (`/metrics`: `edgestate_event_loop_lag_seconds`, a histogram diffed between the window's ends,
  so the p99 is a bucket's upper bound; and `edgestate_event_loop_lag_recent_max_seconds`,
  polled every second, for the longest);
- API write and read latency (p50, p99, max; from this process: request sent to answer read)
  and the answers by status class (any 5xx is a failure whatever the load);
- WebSocket lag: every event carries the server's wall clock when the hub saw it; a client
  subtracts it from its own clock on receipt (same host, same clock; each message counted at
  its oldest event, an upper bound: see `bench ws`), p50/p99/max over all clients;
- clients dropped by the server for falling behind (close code 1013) or that failed to connect;
- the simulation's effective speed beside the requested one (`GET /api/sim`, every second:
  below the requested speed when simulating costs more CPU than there is, time dilates).

Targets (issue 14; on a 2-core machine with 2 hog processes): loop stall p99 < 20 ms and max
< 100 ms, API p99 < 50 ms, no WebSocket client dropped at 100 clients. Exit 1 when a round
misses one, unless `--no-check`. `--short`: 10 clients, 3 s warm-up and 7 s measured.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import multiprocessing
import random
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace

from replication.bench.report import finish, table
from replication.cliargs import non_negative, positive, positive_int
from replication.dissemination import STRATEGIES

from . import hogs
from . import ws as bench_ws
from . import runloop

TARGET_LOOP_P99_MS = 20.0
TARGET_LOOP_MAX_MS = 100.0
TARGET_API_P99_MS = 50.0
TARGET_CLIENTS = 100
KEYS = 50  # per type: the keyspace stays small, so the figures are about load, not growth
SAMPLE_S = 1.0  # how often /metrics and /api/sim are polled during the window
LAG_HIST = "edgestate_event_loop_lag_seconds"
LAG_RECENT = "edgestate_event_loop_lag_recent_max_seconds"


@dataclass
class Params:
    pops: str = "all"
    speed: float = 1.0
    strategy: str = "plumtree"
    seed: int = 0
    writes: float = 10.0
    reads: float = 20.0
    clients: int = 100
    duration: float = 30.0
    warmup: float = 6.0  # more than the probe's recent-max window: the clients' connecting stays out
    cpu_hogs: int = 0


SHORT = {"clients": 10, "warmup": 3.0, "duration": 7.0}


def _hog_counts(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count or a comma-separated list of counts: {text!r}") from None
    if not ks or any(k < 0 or k > 64 for k in ks):
        raise argparse.ArgumentTypeError(f"hog counts must be in 0..64, got {text!r}")
    return ks


def add_parser(which) -> argparse.ArgumentParser:
    p = which.add_parser("live", help="the live server under load: loop stalls, API and WebSocket lag, CPU hogs",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Params()
    p.add_argument("--pops", default=d.pops, metavar="all|default|ID,...", help="POPs of the server (default: %(default)s)")
    p.add_argument("--speed", type=positive, default=d.speed, help="the server's --speed (default: %(default)s)")
    p.add_argument("--strategy", choices=list(STRATEGIES), default=d.strategy,
                   help="dissemination strategy (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the server's network and of the load")
    p.add_argument("--writes", type=positive, default=d.writes, metavar="R",
                   help="writes per second over HTTP, of every type (default: %(default)s)")
    p.add_argument("--reads", type=non_negative, default=d.reads, metavar="R",
                   help="reads per second over HTTP (default: %(default)s)")
    p.add_argument("--clients", type=positive_int, default=None, metavar="N",
                   help=f"WebSocket clients reading /ws (default: {d.clients}; --short: {SHORT['clients']})")
    p.add_argument("--duration", type=positive, default=None, metavar="S",
                   help=f"measured wall seconds (default: {d.duration:g}; --short: {SHORT['duration']:g})")
    p.add_argument("--warmup", type=non_negative, default=None, metavar="S",
                   help=f"wall seconds of load before measuring (default: {d.warmup:g}; --short: {SHORT['warmup']:g})")
    p.add_argument("--cpu-hog", type=_hog_counts, default=[0], metavar="K[,K...]",
                   help="busy processes spinning beside the server; a list runs one round per count, side by side "
                        "(default: 0)")
    p.add_argument("--short", action="store_true", help="a quick run: fewer clients, 10 s in all")
    p.add_argument("--no-check", action="store_true", help="exit 0 even when a target is missed")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


# -- the WebSocket clients, in a process of their own -------------------------------------------------


def _clients_main(url: str, n: int, seed: int, conn) -> None:
    """Child process: connect `n` clients, report, then measure between the parent's "measure" and "stop"."""
    runloop.run(_clients(url, n, seed, conn))


async def _clients(url: str, n: int, seed: int, conn) -> None:
    stats = bench_ws._Stats()
    stop, ready = asyncio.Event(), asyncio.Event()
    params = bench_ws.Params(clients=n, seed=seed)
    sem = asyncio.Semaphore(50)

    async def start(i: int):
        async with sem:
            return asyncio.create_task(bench_ws._client(i, url, stats, params, ready, stop))

    t0 = time.monotonic()
    tasks = await asyncio.gather(*(start(i) for i in range(n)))
    try:
        await asyncio.wait_for(ready.wait(), 120)
    except TimeoutError:
        pass
    conn.send(("ready", stats.connected, stats.connect_errors, stats.first_error, time.monotonic() - t0))
    assert await asyncio.to_thread(conn.recv) == "measure"
    gc.collect()
    gc.disable()  # this process only measures: the collector's pauses are not the server's lag
    stats.measuring = True
    assert await asyncio.to_thread(conn.recv) == "stop"
    stats.measuring = False
    gc.enable()
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lags = sorted(stats.lags)
    conn.send({
        "connected": stats.connected, "connect_errors": stats.connect_errors, "first_error": stats.first_error,
        "dropped": stats.dropped, "closed_codes": stats.closed_codes, "messages": stats.messages,
        "events": stats.events,
        "lag_ms": {"p50": _r(bench_ws._percentile(lags, 0.5)), "p99": _r(bench_ws._percentile(lags, 0.99)),
                   "max": _r(lags[-1][0] if lags else None), "events": sum(k for _, k in lags)},
    })


# -- the HTTP load ---------------------------------------------------------------------------------------


def _write(rng: random.Random, rid: str) -> tuple[str, str, dict]:
    kind = rng.randrange(4)
    if kind == 0:
        return "PUT", f"/api/replicas/{rid}/kv/live-{rng.randrange(KEYS)}", {"value": rng.randrange(1 << 30)}
    if kind == 1:
        return "POST", f"/api/replicas/{rid}/counters/live-{rng.randrange(KEYS)}", {"add": rng.randrange(1, 10)}
    if kind == 2:  # members from a bounded range: each set stays small
        return "POST", f"/api/replicas/{rid}/sets/live-{rng.randrange(KEYS)}", {"add": [rng.randrange(200)]}
    return "POST", f"/api/replicas/{rid}/maps/live-{rng.randrange(KEYS)}", {"set": {f"f{rng.randrange(20)}": rng.random()}}


def _read(rng: random.Random, rid: str) -> tuple[str, str, None]:
    ns = ("kv", "counters", "sets", "maps")[rng.randrange(4)]
    return "GET", f"/api/replicas/{rid}/{ns}/live-{rng.randrange(KEYS)}", None


class _Load:
    """Requests at a steady rate from a thread; each answer's latency kept while `measuring`."""

    def __init__(self, base: str, ids: list[str], rate: float, make, seed: int) -> None:
        self.base, self.ids, self.rate, self.make = base, ids, rate, make
        self.rng = random.Random(seed)
        self.measuring = False
        self.latencies: list[float] = []  # ms, measured window only
        self.statuses: dict[str, int] = {}  # "2xx", "4xx", "5xx", "error": measured window only
        self.first_5xx: str | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        if self.rate > 0:
            self.thread.start()

    def _run(self) -> None:
        import httpx

        interval = 1.0 / self.rate
        nxt = time.monotonic()
        with httpx.Client(base_url=self.base, timeout=10.0) as http:
            while not self.stop.is_set():
                method, path, body = self.make(self.rng, self.rng.choice(self.ids))
                measuring = self.measuring
                t0 = time.perf_counter()
                try:
                    r = http.request(method, path, json=body)
                    ms = (time.perf_counter() - t0) * 1000.0
                    cls = f"{r.status_code // 100}xx"
                    if r.status_code >= 500 and self.first_5xx is None:
                        self.first_5xx = f"{method} {path}: {r.status_code} {r.text[:200]}"
                except httpx.TransportError as e:
                    ms, cls = (time.perf_counter() - t0) * 1000.0, "error"
                    if self.first_5xx is None:
                        self.first_5xx = f"{method} {path}: {type(e).__name__}: {e}"
                if measuring:
                    self.latencies.append(ms)
                    self.statuses[cls] = self.statuses.get(cls, 0) + 1
                nxt += interval
                delay = nxt - time.monotonic()
                if delay > 0:
                    self.stop.wait(delay)
                else:
                    nxt = time.monotonic()  # behind: no burst to catch up

    def finish(self) -> dict:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=15)
        xs = sorted(self.latencies)
        return {"count": len(xs), "p50_ms": _r(_pct(xs, 0.5)), "p99_ms": _r(_pct(xs, 0.99)),
                "max_ms": _r(xs[-1] if xs else None), "statuses": dict(self.statuses), "first_failure": self.first_5xx}


# -- the server's own figures ------------------------------------------------------------------------------


def _scrape(http) -> dict:
    """The loop-lag histogram's cumulative buckets ({le: count}) and the recent-max gauge from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    recent = None
    for fam in text_string_to_metric_families(http.get("/metrics").text):
        if fam.name == LAG_HIST:
            for s in fam.samples:
                if s.name == LAG_HIST + "_bucket":
                    buckets[float(s.labels["le"])] = s.value
        elif fam.name == LAG_RECENT:
            recent = fam.samples[0].value
    if not buckets or recent is None:
        raise RuntimeError("the server's /metrics has no event-loop probe (edgestate_event_loop_lag_*)")
    return {"buckets": buckets, "recent_max": recent}


def loop_p99_bound(before: dict[float, float], after: dict[float, float], q: float = 0.99) -> tuple[float | None, int]:
    """(the upper bound of the bucket holding the q-quantile of the wakes between two scrapes, in
    seconds (inf: beyond the last bucket), the number of wakes)."""
    les = sorted(after)
    cum = [after[le] - before.get(le, 0.0) for le in les]
    total = cum[-1] if cum else 0
    if not total:
        return None, 0
    rank = math.ceil(q * total)
    for le, c in zip(les, cum):
        if c >= rank:
            return le, int(total)
    return math.inf, int(total)


class _Sampler:
    """Every SAMPLE_S: the loop's recent max (/metrics) and the effective speed (/api/sim)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.recent: list[float] = []
        self.effective: list[float] = []
        self.requested: float | None = None
        self.errors = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import httpx

        with httpx.Client(base_url=self.base, timeout=10.0) as http:
            while not self.stop.wait(SAMPLE_S):
                try:
                    self.recent.append(_scrape(http)["recent_max"])
                    sim = http.get("/api/sim").json()
                    self.effective.append(sim["effective_speed"])
                    self.requested = sim["speed"]
                except (httpx.HTTPError, KeyError, ValueError):
                    self.errors += 1

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)


# -- a round ---------------------------------------------------------------------------------------------


def _round(params: Params, progress) -> dict:
    import httpx

    with hogs.running(params.cpu_hogs):
        server = bench_ws._Server(bench_ws.Params(pops=params.pops, speed=params.speed, strategy=params.strategy,
                                                  seed=params.seed), progress)
        base = server.start()
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        clients = ctx.Process(target=_clients_main, args=(base.replace("http://", "ws://") + "/ws", params.clients,
                                                          params.seed, child), daemon=True)
        loads: list[_Load] = []
        sampler = None
        try:
            http = httpx.Client(base_url=base, timeout=10.0)
            ids = [r["id"] for r in http.get("/api/topology").json()["replicas"]]
            progress(f"{params.cpu_hogs} hog(s): {len(ids)} POPs at --speed {params.speed:g}; "
                     f"connecting {params.clients} clients ...")
            clients.start()
            if not parent.poll(180):
                raise RuntimeError("the WebSocket clients did not report within 180 s")
            _, connected, connect_errors, first_error, connect_s = parent.recv()
            progress(f"{connected} connected in {connect_s:.1f} s; {params.writes:g} writes/s and {params.reads:g} "
                     f"reads/s, warm-up {params.warmup:g} s, then {params.duration:g} s measured")
            loads = [_Load(base, ids, params.writes, _write, params.seed),
                     _Load(base, ids, params.reads, _read, params.seed + 1)]
            for ld in loads:
                ld.start()
            time.sleep(params.warmup)  # the load runs meanwhile: the window starts in its steady state
            sampler = _Sampler(base)
            before = _scrape(http)
            parent.send("measure")
            for ld in loads:
                ld.measuring = True
            t0 = time.monotonic()
            cpu0 = server.cpu()
            sampler.thread.start()
            time.sleep(params.duration)  # the measured window
            for ld in loads:
                ld.measuring = False
            elapsed = time.monotonic() - t0
            cpu1 = server.cpu()
            after = _scrape(http)
            sampler.finish()
            parent.send("stop")
            if not parent.poll(60):
                raise RuntimeError("the WebSocket clients did not report their figures within 60 s")
            ws = parent.recv()
            sim = http.get("/api/sim").json()
            http.close()
        finally:
            for ld in loads:
                ld.stop.set()
            if sampler is not None:
                sampler.stop.set()
            if clients.is_alive():
                clients.join(timeout=10)
            if clients.is_alive():
                clients.kill()
                clients.join(timeout=10)
            server.stop()
    writes, reads = (ld.finish() for ld in loads)
    p99, wakes = loop_p99_bound(before["buckets"], after["buckets"])
    recent = sampler.recent + [after["recent_max"]]
    eff = sampler.effective
    return {
        "cpu_hogs": params.cpu_hogs,
        "pops": len(ids),
        "window_s": round(elapsed, 1),
        "loop": {"p99_ms_at_most": None if p99 is None else p99 * 1000.0, "max_ms": _r(max(recent) * 1000.0),
                 "wakes": wakes, "samples": len(recent)},
        "api_write": writes,
        "api_read": reads,
        "ws": {"clients": params.clients, "connected": connected, "connect_errors": connect_errors,
               "first_connect_error": first_error, "connect_s": round(connect_s, 1), "dropped": ws["dropped"],
               "closed_codes": ws["closed_codes"], "lag_ms": ws["lag_ms"],
               "messages_per_client_per_s": round(ws["messages"] / max(1, ws["connected"]) / elapsed, 1)},
        "speed": {"requested": sim["speed"], "effective_median": _r(statistics.median(eff), 4) if eff else None,
                  "effective_min": _r(min(eff), 4) if eff else None, "effective_end": sim["effective_speed"]},
        "server_cpu_percent": None if cpu0 is None or cpu1 is None else round(100 * (cpu1 - cpu0) / elapsed, 1),
        "sampler_errors": sampler.errors,
    }


def missed(r: dict) -> list[str]:
    """The targets a round missed, each said in words (empty: all met)."""
    out = []
    p99, mx = r["loop"]["p99_ms_at_most"], r["loop"]["max_ms"]
    if p99 is None or p99 > TARGET_LOOP_P99_MS:
        out.append(f"loop stall p99 {_ms(p99)} (target < {TARGET_LOOP_P99_MS:g} ms)")
    if mx is None or mx >= TARGET_LOOP_MAX_MS:
        out.append(f"loop stall max {_ms(mx)} (target < {TARGET_LOOP_MAX_MS:g} ms)")
    for name in ("api_write", "api_read"):
        a = r[name]
        if a["count"] and (a["p99_ms"] is None or a["p99_ms"] >= TARGET_API_P99_MS):
            out.append(f"{name} p99 {_ms(a['p99_ms'])} (target < {TARGET_API_P99_MS:g} ms)")
        if a["statuses"].get("5xx") or a["statuses"].get("error"):
            out.append(f"{name}: {a['statuses']} ({a['first_failure']})")
    w = r["ws"]
    if w["dropped"] or w["connect_errors"] or w["connected"] < w["clients"]:
        out.append(f"WebSocket clients: {w['connected']}/{w['clients']} connected, {w['dropped']} dropped")
    return out


def measure(params: Params, hog_rounds: list[int], progress=None) -> dict:
    progress = progress or (lambda msg: None)
    rounds = []
    for k in hog_rounds:
        r = _round(replace(params, cpu_hogs=k), progress)
        r["missed"] = missed(r)
        rounds.append(r)
    return {"params": asdict(params), "rounds": rounds,
            "targets": {"loop_p99_ms": TARGET_LOOP_P99_MS, "loop_max_ms": TARGET_LOOP_MAX_MS,
                        "api_p99_ms": TARGET_API_P99_MS, "clients": TARGET_CLIENTS, "clients_dropped": 0}}


def report(result: dict) -> str:
    p = result["params"]
    rows = []
    for r in result["rounds"]:
        lp, w, rd, ws, sp = r["loop"], r["api_write"], r["api_read"], r["ws"], r["speed"]
        rows.append({
            "hogs": r["cpu_hogs"],
            "loop_p99_ms": f"<={_num(lp['p99_ms_at_most'])}", "loop_max_ms": lp["max_ms"],
            "write_p99_ms": w["p99_ms"], "read_p99_ms": rd["p99_ms"],
            "ws_lag_p99_ms": ws["lag_ms"]["p99"], "ws_msgs/s": ws["messages_per_client_per_s"],
            "clients": f"{ws['connected']}/{ws['clients']}", "dropped": ws["dropped"],
            "5xx": w["statuses"].get("5xx", 0) + rd["statuses"].get("5xx", 0),
            "speed_eff/req": f"{_num(sp['effective_median'])}/{_num(sp['requested'])}",
            "server_cpu%": r["server_cpu_percent"],
        })
    cols = list(rows[0]) if rows else []
    lines = [f"{result['rounds'][0]['pops'] if result['rounds'] else '?'} POPs at --speed {p['speed']:g}, "
             f"{p['writes']:g} writes/s + {p['reads']:g} reads/s over HTTP, {p['clients']} WebSocket clients, "
             f"{p['duration']:g} s measured after {p['warmup']:g} s",
             table(rows, cols),
             f"targets: loop p99 < {TARGET_LOOP_P99_MS:g} ms and max < {TARGET_LOOP_MAX_MS:g} ms, API p99 < "
             f"{TARGET_API_P99_MS:g} ms, no WebSocket client dropped (at {TARGET_CLIENTS} clients)"]
    for r in result["rounds"]:
        lines.append(f"  {r['cpu_hogs']} hog(s): " + ("met" if not r["missed"] else "NOT met: " + "; ".join(r["missed"])))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    short = SHORT if args.short else {}
    d = Params()
    params = Params(pops=args.pops, speed=args.speed, strategy=args.strategy, seed=args.seed, writes=args.writes,
                    reads=args.reads,
                    clients=args.clients or short.get("clients", d.clients),
                    duration=args.duration or short.get("duration", d.duration),
                    warmup=args.warmup if args.warmup is not None else short.get("warmup", d.warmup))
    from replication.geo import select_pops

    try:
        select_pops(params.pops)
    except ValueError as e:
        print(f"edgestate bench live: error: --pops {params.pops!r}: {e}", file=sys.stderr)
        return 2
    progress = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    got: list[dict] = []

    def go() -> dict:
        got.append(measure(params, args.cpu_hog, progress))
        return got[0]

    code = finish("live", go, report, args.json)
    if code == 0 and not args.no_check and any(r["missed"] for r in got[0]["rounds"]):
        return 1
    return code


# -- helpers ------------------------------------------------------------------------------------------------


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def _r(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(v, nd)


def _num(v) -> str:
    return "-" if v is None else f"{v:g}"


def _ms(v) -> str:
    return "none" if v is None else f"{v:g} ms"
