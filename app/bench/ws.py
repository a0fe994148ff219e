"""`edgestate bench ws`: fan-out of the live stream to many WebSocket clients.

Starts `edgestate serve` in its own process (or uses `--url`), connects N clients to `/ws`
on loopback, drives writes over HTTP at a steady rate, and measures, over a window after a
warm-up:

- events delivered per second, in total and per client, and WebSocket messages per client
  per second (the server batches a frame's events into one message, at most 20 a second);
- lag from event to client: every event carries the server's wall clock when the hub saw it
  (`"w"`, Unix ms); the client subtracts it from its own clock on receipt (same host, same
  clock). A message's first event is its oldest, so its lag is an upper bound for every event
  in the message; each event is counted at that bound (p50, p90, p99, max over all events all
  clients received), which keeps the Python clients' own cost per message constant. The
  clients' garbage collector is paused while measuring (the harness, not the server);
- beside them, the cluster's own event rate (every event on the bus, of which the hub forwards
  the animated kinds and state changes), read from the stream's `counters`;
- clients dropped by the server for falling behind (close code 1013), and CPU used by the
  server process and by this one (on a 2-core machine the clients compete with the server).

Figures, not pass/fail; the target is 200 clients at 10 or more updates per second each with
p99 lag under 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass

from replication.bench.report import finish
from replication.cliargs import non_negative, positive, positive_int
from replication.dissemination import STRATEGIES

from ..processes.supervisor import free_port
from . import runloop

TARGET_CLIENTS = 200
TARGET_UPDATES_PER_S = 10.0
TARGET_P99_MS = 250.0


@dataclass
class Params:
    clients: int = 200
    duration: float = 10.0
    warmup: float = 3.0
    writes: float = 10.0  # writes per wall second, over HTTP, at random POPs
    pops: str = "default"
    speed: float = 1.0
    strategy: str = "plumtree"
    seed: int = 0
    deflate: bool = False
    url: str | None = None
    extra: tuple[str, ...] = ()  # more `serve` options (the hostile campaign's --audience)





def _add_arguments(p: argparse.ArgumentParser) -> None:
    d = Params()
    p.add_argument("--clients", type=positive_int, default=d.clients, metavar="N",
                   help="concurrent WebSocket clients (default: %(default)s)")
    p.add_argument("--duration", type=positive, default=d.duration, metavar="S",
                   help="measured wall seconds (default: %(default)s)")
    p.add_argument("--warmup", type=non_negative, default=d.warmup, metavar="S",
                   help="wall seconds of load before measuring (default: %(default)s)")
    p.add_argument("--writes", type=positive, default=d.writes, metavar="R",
                   help="writes per wall second, at random POPs (default: %(default)s)")
    p.add_argument("--pops", default=d.pops, metavar="all|default|ID,...", help="POPs of the server (default: %(default)s)")
    p.add_argument("--speed", type=positive, default=d.speed,
                   help="the server's --speed: virtual per wall time (default: %(default)s)")
    p.add_argument("--strategy", choices=list(STRATEGIES), default=d.strategy,
                   help="dissemination strategy (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the server's network and of the writes")
    p.add_argument("--deflate", action="store_true",
                   help="let clients negotiate permessage-deflate, as browsers do (default: off)")
    p.add_argument("--url", default=None, metavar="http://HOST:PORT",
                   help="measure a server that is already running instead of starting one")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def add_parser(which) -> argparse.ArgumentParser:
    """Add `ws` to the subparsers of `edgestate bench` (the object `add_subparsers` returned)."""
    p = which.add_parser(
        "ws", help="fan-out of the live WebSocket stream to many clients",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgestate bench ws", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    return p


# -- the server ---------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, ValueError, IndexError):
        return None


class _Server:
    def __init__(self, params: Params, log) -> None:
        self.params = params
        self.proc: subprocess.Popen | None = None
        self.logfile = None
        self.log = log

    def start(self) -> str:
        p = self.params
        if p.url:
            return p.url.rstrip("/")
        import httpx

        port = free_port()
        cmd = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--pops", p.pops,
               "--speed", repr(p.speed), "--strategy", p.strategy, "--seed", str(p.seed), *p.extra]
        # the server's log goes to a file: a pipe nobody reads would fill up and stall the server
        self.logfile = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=self.logfile, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"edgestate serve exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(base + "/healthz", timeout=1.0).status_code == 200:
                    return base
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("edgestate serve did not answer /healthz within 30 s")
            time.sleep(0.05)  # polling interval

    def log_tail(self, n: int = 2000) -> str:
        if self.logfile is None:
            return ""
        self.logfile.seek(0)
        return self.logfile.read().decode(errors="replace")[-n:]

    def cpu(self) -> float | None:
        return _cpu_seconds(self.proc.pid) if self.proc is not None else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if self.logfile is not None:
            self.logfile.close()
            self.logfile = None


# -- the clients --------------------------------------------------------------------------------


class _Stats:
    def __init__(self) -> None:
        self.measuring = False
        self.events = 0
        self.messages = 0
        self.lags: list[float] = []
        self.connected = 0
        self.dropped = 0
        self.closed_codes: dict[str, int] = {}
        self.counters: list[tuple[float, int, int]] = []  # (w, bus events, forwarded) seen by client 0
        self.ids: list[str] = []
        self.checked = 0
        self.connect_errors = 0
        self.first_error: str | None = None


_EVENT = b'{"kind":'
_W = b'"w":'


def scan(msg: bytes | str) -> tuple[int, float]:
    """(events in a message, the first event's "w"), without parsing the JSON.

    Every event object starts with `{"kind":` (a string value cannot hold that unescaped), and
    every event carries "w"; a match preceded by a backslash is inside a string, skipped.
    """
    if isinstance(msg, str):
        msg = msg.encode()
    k = msg.count(_EVENT)
    i = msg.find(_W)
    while i > 0 and msg[i - 1] == 0x5C:  # backslash
        i = msg.find(_W, i + 1)
    if not k or i < 0:
        return 0, 0.0
    j = i + 4
    end = j
    while end < len(msg) and msg[end] not in b",}":
        end += 1
    return k, float(msg[j:end])


async def _client(n: int, url: str, stats: _Stats, params: Params, ready: asyncio.Event, stop: asyncio.Event) -> None:
    import orjson
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    try:
        conn = await connect(url, max_size=None, compression="deflate" if params.deflate else None,
                             open_timeout=60, ping_interval=None, close_timeout=2)
    except Exception as e:  # noqa: BLE001 - counted and reported
        stats.connect_errors += 1
        stats.first_error = stats.first_error or f"{type(e).__name__}: {e}"
        if stats.connected + stats.connect_errors == params.clients:
            ready.set()
        return
    stats.connected += 1
    if stats.connected + stats.connect_errors == params.clients:
        ready.set()
    loads, now = orjson.loads, time.time
    lags = stats.lags
    try:
        while not stop.is_set():
            try:
                msg = await conn.recv()
            except ConnectionClosed:
                code = conn.close_code
                stats.closed_codes[str(code)] = stats.closed_codes.get(str(code), 0) + 1
                if code == 1013:
                    stats.dropped += 1
                return
            t = now() * 1000.0
            if not stats.ids:
                batch = loads(msg)
                if batch and batch[0].get("kind") == "snapshot":
                    stats.ids = [r["id"] for r in batch[0]["topology"]["replicas"]]
            if not stats.measuring:
                continue
            # A message's first event is its oldest (frames in order, then the coalesced slots,
            # stamped at flush time): its lag bounds every event in the message from above.
            # Counting it for all k events, found by scanning the bytes, keeps the clients' own
            # cost per message small: this harness shares the machine with the server.
            k, w = scan(msg)
            if not k:
                continue
            if stats.checked < 20:  # the scan agrees with a full parse
                full = loads(msg)
                assert (len(full), full[0]["w"]) == (k, w), (len(full), full[0].get("w"), k, w)
                stats.checked += 1
            stats.messages += 1
            stats.events += k
            lags.append((t - w, k))
            if n == 0 and b'{"kind":"counters"' in msg:
                for e in loads(msg):
                    if e.get("kind") == "counters":
                        stats.counters.append((e["w"], e["events"], e["forwarded"]))
    finally:
        await conn.close()


def _writer(base: str, stats: _Stats, params: Params, stop: threading.Event, done: list) -> None:
    """Writes at a steady rate, from its own thread: the clients' event loop cannot starve it."""
    import httpx

    rng = random.Random(params.seed)
    interval = 1.0 / params.writes
    nxt = time.monotonic()
    with httpx.Client(base_url=base, timeout=10.0) as http:
        while not stop.is_set():
            ids = stats.ids or ["lhr"]
            rid = rng.choice(ids)
            key = f"bench-{rng.randrange(100)}"
            try:
                r = http.put(f"/api/replicas/{rid}/kv/{key}", json={"value": rng.randrange(1 << 30)})
                if r.status_code == 200:
                    done[0] += 1
            except httpx.TransportError:
                pass
            nxt += interval
            delay = nxt - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            else:
                nxt = time.monotonic()  # behind: do not try to catch up in a burst


def _percentile(weighted: list[tuple[float, int]], q: float) -> float | None:
    """The q-quantile of values given with weights, sorted by value."""
    total = sum(w for _, w in weighted)
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for v, w in weighted:
        seen += w
        if seen >= rank:
            return v
    return weighted[-1][0]


async def _measure(params: Params, base: str, server: _Server, progress) -> dict:
    ws_url = base.replace("http://", "ws://").replace("https://", "wss://") + "/ws"
    stats = _Stats()
    stop = asyncio.Event()
    ready = asyncio.Event()
    progress(f"connecting {params.clients} clients to {ws_url} ...")
    sem = asyncio.Semaphore(50)

    async def start_client(n: int):
        async with sem:
            return asyncio.create_task(_client(n, ws_url, stats, params, ready, stop))

    t_connect = time.monotonic()
    tasks = await asyncio.gather(*(start_client(n) for n in range(params.clients)))
    try:
        await asyncio.wait_for(ready.wait(), 120)
    except TimeoutError:
        pass
    connect_s = time.monotonic() - t_connect
    progress(f"{stats.connected} connected in {connect_s:.1f} s; writing {params.writes:g}/s, warm-up {params.warmup:g} s")
    writes = [0]
    stop_writer = threading.Event()
    writer = threading.Thread(target=_writer, args=(base, stats, params, stop_writer, writes), daemon=True)
    writer.start()
    await asyncio.sleep(params.warmup)
    # this process is only the measuring harness: keep the collector's pauses out of the figures
    gc.collect()
    gc.disable()
    stats.measuring = True
    w0, cpu0, me0 = writes[0], server.cpu(), time.process_time()
    t0 = time.monotonic()
    await asyncio.sleep(params.duration)
    stats.measuring = False
    gc.enable()
    elapsed = time.monotonic() - t0
    w1, cpu1, me1 = writes[0], server.cpu(), time.process_time()
    stop.set()
    stop_writer.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.to_thread(writer.join, 15)

    lags = sorted(stats.lags)
    cluster_rate = forwarded_rate = None
    if len(stats.counters) >= 2:
        (wa, ea, fa), (wb, eb, fb) = stats.counters[0], stats.counters[-1]
        if wb > wa:
            cluster_rate = (eb - ea) * 1000.0 / (wb - wa)
            forwarded_rate = (fb - fa) * 1000.0 / (wb - wa)
    n = max(1, stats.connected)
    return {
        "clients": params.clients,
        "clients_connected": stats.connected,
        "clients_dropped": stats.dropped,
        "connect_errors": stats.connect_errors,
        "first_connect_error": stats.first_error,
        "closed_codes": stats.closed_codes,
        "connect_s": round(connect_s, 2),
        "duration_s": round(elapsed, 2),
        "writes_per_s": round((w1 - w0) / elapsed, 2),
        "cluster_events_per_s": None if cluster_rate is None else round(cluster_rate, 1),
        "forwarded_events_per_s": None if forwarded_rate is None else round(forwarded_rate, 1),
        "events_delivered_per_s": round(stats.events / elapsed, 1),
        "events_per_client_per_s": round(stats.events / elapsed / n, 1),
        "messages_per_client_per_s": round(stats.messages / elapsed / n, 2),
        "lag_ms": {
            "p50": _round(_percentile(lags, 0.50)), "p90": _round(_percentile(lags, 0.90)),
            "p99": _round(_percentile(lags, 0.99)), "max": _round(lags[-1][0] if lags else None),
            "messages": len(lags), "events": sum(k for _, k in lags),
        },
        "server_cpu_percent": None if cpu0 is None or cpu1 is None else round(100 * (cpu1 - cpu0) / elapsed, 1),
        "bench_cpu_percent": round(100 * (me1 - me0) / elapsed, 1),
        "cpus": os.cpu_count(),
        "params": asdict(params),
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def measure(params: Params, progress=None) -> dict:
    progress = progress or (lambda msg: None)
    server = _Server(params, progress)
    base = server.start()
    try:
        result = runloop.run(_measure(params, base, server, progress))
    finally:
        server.stop()
    lag = result["lag_ms"]["p99"]
    result["target"] = {
        "clients": TARGET_CLIENTS, "updates_per_client_per_s": TARGET_UPDATES_PER_S, "p99_lag_ms": TARGET_P99_MS,
        "met": bool(
            result["clients_connected"] >= TARGET_CLIENTS and result["clients_dropped"] == 0
            and result["messages_per_client_per_s"] >= TARGET_UPDATES_PER_S and lag is not None and lag < TARGET_P99_MS
        ),
    }
    return result


def _params(args: argparse.Namespace) -> Params:
    return Params(
        clients=args.clients, duration=args.duration, warmup=args.warmup, writes=args.writes, pops=args.pops,
        speed=args.speed, strategy=args.strategy, seed=args.seed, deflate=args.deflate, url=args.url,
    )


def report(r: dict) -> str:
    lag = r["lag_ms"]
    lines = [
        f"clients            {r['clients_connected']}/{r['clients']} connected, {r['clients_dropped']} dropped (too slow)"
        + (f", {r['connect_errors']} failed to connect ({r['first_connect_error']})" if r["connect_errors"] else ""),
        f"writes             {r['writes_per_s']}/s over HTTP",
        f"cluster events     {r['cluster_events_per_s']}/s on the bus, {r['forwarded_events_per_s']}/s forwarded to each client",
        f"delivered          {r['events_delivered_per_s']:,.0f} events/s in total; per client "
        f"{r['events_per_client_per_s']} events/s in {r['messages_per_client_per_s']} messages/s",
        f"lag event->client  p50 {lag['p50']} ms, p90 {lag['p90']} ms, p99 {lag['p99']} ms, max {lag['max']} ms "
        f"(upper bounds: each event counted at its message's oldest; {lag['events']:,} events)",
        f"cpu                server {r['server_cpu_percent']}%, bench clients {r['bench_cpu_percent']}% ({r['cpus']} cpus)",
        f"target             {TARGET_CLIENTS} clients, >= {TARGET_UPDATES_PER_S:g} updates/s each, p99 < {TARGET_P99_MS:g} ms: "
        + ("met" if r["target"]["met"] else "NOT met"),
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    params = _params(args)
    if not args.url:
        from replication.geo import select_pops

        try:
            select_pops(params.pops)
        except ValueError as e:
            print(f"edgestate bench ws: error: --pops {params.pops!r}: {e}", file=sys.stderr)
            return 2
    progress = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    return finish("ws", lambda: measure(params, progress), report, args.json)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
