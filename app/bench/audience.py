"""`edgestate bench audience`: a hall of phones on `/join`.

Starts `edgestate serve --audience` in its own process (or uses `--url`) and simulates
`--phones` phones. Each phone holds the light stream `/ws/join` and taps every `--every`
seconds (jittered; within the audience rate limit of 5 writes/s per address): `POST
/api/join/{pop}` (+1 mostly, sometimes an emoji or a word), then asks the stream to follow the
write (`{"watch": id}`).

The rate limit counts writes per client address, and every phone here is on one machine. Each
phone therefore connects from its own loopback address, 127.1.X.Y (Linux routes all of 127/8
to `lo`), for its HTTP connection and its stream alike: the server sees 1000 addresses, as it
would see 1000 phones behind a hall's Wi-Fi (with no NAT). Nothing in the server knows it is
being benchmarked.

Measured over the window after every phone is connected:

- write latency: from sending a tap to its answer (a kept-alive connection per phone);
- stream lag: every message carries the server's wall clock (`"w"`); the phone subtracts it
  from its own on receipt (same host, same clock);
- journeys: taps whose "everywhere" came back on the stream, and how long that took;
- phones dropped (a stream closed by the server, or a write refused: 429 counts as a miss);
- the big screen: `--screens` dashboards (default one, the presenter's) on the full stream `/ws`,
  which carries every tap's arrivals at every POP: their lag (as the phones'), the events they
  got, and whether the server dropped one (a client that falls behind is cut off);
- the server's memory (RSS) before the phones connect, with all of them connected, and at the
  end: the cost of a phone is the difference over the count.

Targets on a 2-core machine: write p99 < 100 ms, stream lag p99 < 500 ms (the phones' and the
big screen's), no phone or screen dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass

from replication.bench.report import finish
from replication.cliargs import non_negative_int, positive, positive_int

from . import ws as ws_bench
from . import runloop

TARGET_WRITE_P99_MS = 100.0
TARGET_LAG_P99_MS = 500.0
SPEED_EVERY_S = 2.0  # how often the server's effective speed is read while measuring
IDLE_REUSE_S = 4.0  # reuse a kept-alive connection only if used this recently (uvicorn closes at 5 s)
WORDS = ("edge", "crdt", "hello", "merge", "latency", "dots", "vv", "delta")


@dataclass
class Params:
    phones: int = 1000
    every: float = 3.0  # seconds between a phone's taps (jittered +-50%)
    duration: float = 30.0
    pops: str = "default"
    speed: float = 1.0
    seed: int = 0
    url: str | None = None
    screens: int = 1


def _add_arguments(p: argparse.ArgumentParser) -> None:
    d = Params()
    p.add_argument("--phones", type=positive_int, default=d.phones, help="phones in the hall (default: %(default)s)")
    p.add_argument("--every", type=positive, default=d.every, metavar="S",
                   help="seconds between a phone's taps, jittered (default: %(default)s)")
    p.add_argument("--duration", type=positive, default=d.duration, metavar="S",
                   help="seconds measured once every phone is connected (default: %(default)s)")
    p.add_argument("--screens", type=non_negative_int, default=d.screens, metavar="N",
                   help="dashboards on the full stream /ws: the big screen (default: %(default)s)")
    p.add_argument("--pops", default=d.pops, metavar="all|default|ID,...", help="POPs of the server")
    p.add_argument("--speed", type=positive, default=d.speed, help="the server's --speed (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the server's network and of the taps")
    p.add_argument("--short", action="store_true", help="50 phones for 10 s (the test's form)")
    p.add_argument("--url", help="measure a server already running with --audience instead of starting one")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def add_parser(which) -> argparse.ArgumentParser:
    p = which.add_parser("audience", help="a hall of phones on /join: writes, the light stream, memory",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    return p


def _rss_kib(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def phone_address(i: int) -> str:
    """Phone i's own loopback address: 127.1.X.Y (Y in 1..250)."""
    return f"127.1.{i // 250}.{i % 250 + 1}"


class _Stats:
    def __init__(self) -> None:
        self.measuring = False
        self.write_ms: list[float] = []
        self.lag_ms: list[float] = []
        self.everywhere_ms: list[float] = []
        self.journeys_done = 0
        self.taps = 0
        self.refused: dict[str, int] = {}
        self.dropped = 0
        self.connected = 0
        self.messages = 0
        self.first_error: str | None = None
        self.screens = 0  # connected to /ws
        self.screens_dropped = 0
        self.screen_lag_ms: list[float] = []
        self.screen_events = 0


class _Http:
    """One phone's kept-alive HTTP/1.1 connection, from its own address (small: 1000 of them
    share this process with their streams)."""

    def __init__(self, host: str, port: int, local: str) -> None:
        self.host, self.port, self.local = host, port, local
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0.0

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        # A connection idle for longer than the server keeps one open (uvicorn: 5 s) is closed by
        # now, and a request written into it gets no answer: open a fresh one, as a browser does.
        if self.writer is not None and time.monotonic() - self.used > IDLE_REUSE_S:
            self.close()
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, local_addr=(self.local, 0))
        self.used = time.monotonic()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"connection" and value.strip().lower() == b"close":
                close = True
        data = await self.reader.readexactly(length)
        self.used = time.monotonic()
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = self.reader = None


async def _phone(i: int, base: str, pops: list[str], p: Params, stats: _Stats, ready: asyncio.Event,
                 stop: asyncio.Event, connected: asyncio.Event) -> None:
    import websockets

    rng = random.Random(p.seed * 100_003 + i)
    host, port = base.split("://", 1)[1].rsplit(":", 1)
    local = phone_address(i)
    http = _Http(host, int(port), local)
    pop = pops[i % len(pops)]
    sent: dict[str, float] = {}  # write id -> perf time the tap was answered
    try:
        async with websockets.connect(f"ws://{host}:{port}/ws/join", local_addr=(local, 0), compression=None,
                                      open_timeout=60, ping_interval=None, max_size=1 << 20) as ws:
            stats.connected += 1
            connected.set()

            async def read():
                async for msg in ws:
                    now_ms = time.time() * 1000.0
                    m = json.loads(msg)
                    if stats.measuring:
                        stats.messages += 1
                        stats.lag_ms.append(now_ms - m["w"])
                    for j in m.get("journeys", ()):
                        if "everywhere_ms" in j and j["id"] in sent:
                            t = sent.pop(j["id"])
                            if stats.measuring:
                                stats.journeys_done += 1
                                stats.everywhere_ms.append((time.perf_counter() - t) * 1000.0)

            reader = asyncio.create_task(read())
            await ready.wait()
            await asyncio.sleep(rng.uniform(0, p.every))  # phones do not all tap at once
            while not stop.is_set():
                r = rng.random()
                body = ({"action": "vote"} if r < 0.7 else
                        {"action": "emoji", "value": rng.choice(("👍", "🎉", "🚀", "🔥"))} if r < 0.9 else
                        {"action": "word", "value": rng.choice(WORDS)})
                t0 = time.perf_counter()
                status, data = await http.post(f"/api/join/{pop}", json.dumps(body).encode())
                t1 = time.perf_counter()
                if stats.measuring:
                    stats.taps += 1
                    stats.write_ms.append((t1 - t0) * 1000.0)
                if status == 200:
                    wid = json.loads(data)["id"]
                    if wid:
                        sent[wid] = t1
                        await ws.send(json.dumps({"watch": wid}))
                else:
                    code = str(status)
                    stats.refused[code] = stats.refused.get(code, 0) + 1
                    stats.first_error = stats.first_error or f"{status} {data[:200]!r}"
                if len(sent) > 64:  # journeys that never came back: forget the oldest
                    sent.pop(next(iter(sent)))
                try:
                    await asyncio.wait_for(stop.wait(), rng.uniform(0.5 * p.every, 1.5 * p.every))
                except asyncio.TimeoutError:
                    pass
                if reader.done():
                    break
            if reader.done() and not stop.is_set():
                stats.dropped += 1
            reader.cancel()
    except Exception as e:  # a phone that could not connect or was cut off
        if not stop.is_set():
            stats.dropped += 1
            stats.first_error = stats.first_error or f"phone {i}: {type(e).__name__}: {e}"
    finally:
        http.close()


async def _screen(base: str, stats: _Stats, stop: asyncio.Event) -> None:
    """The presenter's dashboard: the full stream, read as fast as it comes (the page draws a
    frame at a time; what it cannot keep up with, the server cuts off)."""
    import websockets

    host = base.split("://", 1)[1]
    try:
        async with websockets.connect(f"ws://{host}/ws", compression=None, open_timeout=60, ping_interval=None,
                                      max_size=1 << 24) as ws:
            stats.screens += 1
            async for msg in ws:
                k, w = ws_bench.scan(msg)
                if stats.measuring and k:
                    stats.screen_events += k
                    stats.screen_lag_ms.append(time.time() * 1000.0 - w)
    except Exception as e:
        if not stop.is_set():
            stats.first_error = stats.first_error or f"screen: {type(e).__name__}: {e}"
    if not stop.is_set():
        stats.screens_dropped += 1


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1)


def _dist(xs: list[float]) -> dict:
    return {"p50": _pct(xs, 0.5), "p99": _pct(xs, 0.99), "max": _pct(xs, 1.0), "n": len(xs)}


async def _watch_speed(base: str, speeds: list[float]) -> None:
    """The server's effective speed every SPEED_EVERY_S (`GET /api/sim`): below the requested one,
    the simulation fell behind the taps and virtual time dilates (journeys come back late)."""
    import httpx

    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            await asyncio.sleep(SPEED_EVERY_S)
            try:
                speeds.append((await client.get(base + "/api/sim")).json()["effective_speed"])
            except (httpx.HTTPError, ValueError, KeyError):
                pass  # a slow answer is the server's load showing; the taps measure it


async def _measure(p: Params, base: str, pid: int | None, progress) -> dict:
    import httpx

    async with httpx.AsyncClient(timeout=10) as client:
        pops = [r["id"] for r in (await client.get(base + "/api/replicas")).json()["replicas"]]
    stats = _Stats()
    ready, stop = asyncio.Event(), asyncio.Event()
    rss_before = _rss_kib(pid)
    screens = [asyncio.create_task(_screen(base, stats, stop)) for _ in range(p.screens)]
    tasks = []
    progress(f"connecting {p.phones} phones from their own loopback addresses...")
    for i in range(p.phones):
        connected = asyncio.Event()
        tasks.append(asyncio.create_task(_phone(i, base, pops, p, stats, ready, stop, connected)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # a ramp, not a SYN flood
    deadline = time.monotonic() + 120
    while stats.connected + stats.dropped < p.phones and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    rss_connected = _rss_kib(pid)
    ready.set()
    await asyncio.sleep(min(3.0, p.every))  # the first taps spread out
    gc.disable()  # the harness's collector, not the server's, while measuring
    stats.measuring = True
    progress(f"{stats.connected} phones connected; measuring {p.duration:g} s...")
    t0 = time.monotonic()
    speeds: list[float] = []
    watcher = asyncio.create_task(_watch_speed(base, speeds))
    await asyncio.sleep(p.duration)
    elapsed = time.monotonic() - t0
    watcher.cancel()
    stats.measuring = False
    gc.enable()
    rss_end = _rss_kib(pid)
    stop.set()
    for t in screens:
        t.cancel()
    await asyncio.wait(tasks + screens, timeout=30)
    per_phone = None
    if rss_before is not None and rss_connected is not None and stats.connected:
        per_phone = round((max(rss_connected, rss_end or 0) - rss_before) / stats.connected, 1)
    return {
        "phones": p.phones, "connected": stats.connected, "dropped": stats.dropped, "every_s": p.every,
        "duration_s": round(elapsed, 1), "taps": stats.taps, "taps_per_s": round(stats.taps / elapsed, 1),
        "refused": stats.refused, "first_error": stats.first_error,
        "write_ms": _dist(stats.write_ms), "stream_lag_ms": _dist(stats.lag_ms),
        "messages_per_phone_per_s": round(stats.messages / elapsed / max(1, stats.connected), 2),
        "screens": p.screens, "screens_connected": stats.screens, "screens_dropped": stats.screens_dropped,
        "screen_lag_ms": _dist(stats.screen_lag_ms), "screen_events_per_s": round(stats.screen_events / elapsed, 1),
        "journeys_everywhere": stats.journeys_done, "everywhere_after_answer_ms": _dist(stats.everywhere_ms),
        "effective_speed": {"p50": statistics.median(speeds) if speeds else None,
                            "min": min(speeds) if speeds else None, "requested": p.speed},
        "server_rss_kib": {"before": rss_before, "connected": rss_connected, "end": rss_end},
        "kib_per_phone": per_phone,
    }


def measure(p: Params, progress=None) -> dict:
    progress = progress or (lambda msg: None)
    server = ws_bench._Server(ws_bench.Params(pops=p.pops, speed=p.speed, seed=p.seed, url=p.url,
                                              extra=("--audience",)), progress)
    base = server.start()
    try:
        r = runloop.run(_measure(p, base, server.proc.pid if server.proc else None, progress))
    finally:
        server.stop()
    r["target"] = {
        "write_p99_ms": TARGET_WRITE_P99_MS, "stream_lag_p99_ms": TARGET_LAG_P99_MS,
        "met": bool(r["dropped"] == 0 and r["connected"] == p.phones and not r["refused"]
                    and r["screens_dropped"] == 0 and r["screens_connected"] == p.screens
                    and (not p.screens or (r["screen_lag_ms"]["p99"] is not None
                                           and r["screen_lag_ms"]["p99"] < TARGET_LAG_P99_MS))
                    and r["write_ms"]["p99"] is not None and r["write_ms"]["p99"] < TARGET_WRITE_P99_MS
                    and r["stream_lag_ms"]["p99"] is not None and r["stream_lag_ms"]["p99"] < TARGET_LAG_P99_MS),
    }
    return r


def _speed(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def report(r: dict) -> str:
    w, lag, ev, rss = r["write_ms"], r["stream_lag_ms"], r["everywhere_after_answer_ms"], r["server_rss_kib"]
    return "\n".join([
        f"phones             {r['connected']}/{r['phones']} connected, {r['dropped']} dropped"
        + (f" (first error: {r['first_error']})" if r["first_error"] else ""),
        f"taps               {r['taps']} in {r['duration_s']} s ({r['taps_per_s']}/s, one per ~{r['every_s']:g} s per phone)"
        + (f", refused {r['refused']}" if r["refused"] else ""),
        f"write latency      p50 {w['p50']} ms, p99 {w['p99']} ms, max {w['max']} ms",
        f"stream lag         p50 {lag['p50']} ms, p99 {lag['p99']} ms, max {lag['max']} ms "
        f"({r['messages_per_phone_per_s']} messages/s per phone)",
        f"big screen         {r['screens_connected']}/{r['screens']} on /ws, {r['screens_dropped']} dropped, "
        f"lag p50 {r['screen_lag_ms']['p50']} ms, p99 {r['screen_lag_ms']['p99']} ms "
        f"({r['screen_events_per_s']} events/s)",
        f"everywhere         {r['journeys_everywhere']} journeys back; answer -> 'everywhere' on the phone "
        f"p50 {ev['p50']} ms, p99 {ev['p99']} ms",
        f"simulation         effective speed p50 {_speed(r['effective_speed']['p50'])}, lowest "
        f"{_speed(r['effective_speed']['min'])} (requested {r['effective_speed']['requested']:g}; below it the "
        "simulation fell behind the taps)",
        f"server RSS         {rss['before']} KiB before, {rss['connected']} KiB connected, {rss['end']} KiB at the end: "
        f"{r['kib_per_phone']} KiB per phone",
        f"target             write p99 < {TARGET_WRITE_P99_MS:g} ms, stream lag p99 < {TARGET_LAG_P99_MS:g} ms, "
        "no phone or screen dropped: " + ("met" if r["target"]["met"] else "NOT met"),
    ])


def run(args: argparse.Namespace) -> int:
    p = Params(phones=args.phones, every=args.every, duration=args.duration, pops=args.pops, speed=args.speed,
               seed=args.seed, url=args.url, screens=args.screens)
    if args.short:
        p.phones, p.duration = min(p.phones, 50), 10.0
    progress = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    return finish("audience", lambda: measure(p, progress), report, args.json)
