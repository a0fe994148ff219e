"""`edgestate bench writes`: the longest event-loop stall one large valid write causes in `serve`.

Runs the simulated dashboard server (uvicorn, in a thread with its own event loop) with a
heartbeat task beside it on that loop: every 5 ms it wakes, and how late it woke is how long
something held the loop. One client, in this thread, sends each write below in turn and waits
for the cluster to spread it (the pump delivers it to the other replicas over simulated WAN
latency); the stall charged to a write is the longest heartbeat delay from its request until
then. Two rounds in one run, side by side:

- `before`: the bounds lifted (`replication.bounds.lifted`) and every delta joined over whole
  keys (`store.SMALL_CTX_DOTS = -1`), which is how writes were handled before the bounds and
  entry-by-entry joins (the key hash kept dot by dot stays on: that change cannot be lifted);
- `no-steward`: as shipped but without the garbage-collector steward (`web.gc_steward`), to
  show what it saves;
- `after`: as shipped.

The writes: a set add of 130,000 members (the issue's request: refused with 413 after); a set
add of the most members a request may carry to a fresh key; that key filled to its bound, then a
one-member add to it (before: a one-member add to the 130,000-member key); a map set of the most
fields a request may carry. Figures, not pass/fail; the target is no stall over 50 ms after.

`--pops default` runs the dashboard's default 22 POPs, where a write's delta is joined at 21
replicas. Beside each stall: the longest garbage collection in the same window (`worst_gc_ms`,
from `gc.callbacks`): a full collection scans every tracked object of the process (a set member's
dots at every replica among them), so on a big keyspace it can hold the loop longer than any
request does, whichever request happens to be running.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import threading
import time

from replication import bounds
from replication import store as store_mod
from replication.bench.report import finish, table

from ..processes.supervisor import free_port

HEARTBEAT_S = 0.005
SPREAD_S = 1.5  # wall time for a write to reach every replica (the farthest is ~300 ms away)


def add_parser(which) -> argparse.ArgumentParser:
    p = which.add_parser("writes", help="event-loop stalls from large valid writes, before vs after the bounds")
    p.add_argument("--pops", default="lhr,syd,jfk",
                   help="the simulated replicas: default (22 POPs), all, or ids (default: lhr,syd,jfk)")
    p.add_argument("--big", type=int, default=130_000, help="members of the oversized set add (default: 130000)")
    p.add_argument("--rounds", default="before,after",
                   help="which rounds to run, of before, no-steward, after (default: %(default)s)")
    p.add_argument("--json", default=None, help="write the figures to this file")
    return p


class _Server:
    """The dashboard over a simulated cluster, served in a thread; `lags` collects heartbeat delays."""

    def __init__(self, pops: str, steward: bool = True) -> None:
        import uvicorn

        from replication.geo import place_replicas, select_pops

        from ..dashboard.server import create_app
        from ..dashboard.simulated import build_live

        placements = place_replicas(select_pops(pops))
        self.first = placements[0].id
        live = build_live(placements, seed=1)
        self.app = create_app(live, run_clock=True, gc_steward=steward)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.lags: list[tuple[float, float]] = []  # (when, how late)
        self.gcs: list[tuple[float, float]] = []  # (when it ended, how long it took)
        self._gc_start = 0.0
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        beat = asyncio.create_task(self._heartbeat())
        try:
            await self.server.serve()
        finally:
            beat.cancel()

    async def _heartbeat(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(HEARTBEAT_S)
            now = time.perf_counter()
            self.lags.append((now, now - t - HEARTBEAT_S))

    def _on_gc(self, phase: str, info: dict) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_start = now
        else:
            self.gcs.append((now, now - self._gc_start))

    def __enter__(self) -> _Server:
        gc.callbacks.append(self._on_gc)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        gc.callbacks.remove(self._on_gc)

    def worst_since(self, t0: float) -> float:
        return max((lag for when, lag in self.lags if when >= t0), default=0.0)

    def worst_gc_since(self, t0: float) -> float:
        return max((took for when, took in self.gcs if when >= t0), default=0.0)


def _round(pops: str, big: int, label: str, steward: bool = True) -> list[dict]:
    import httpx

    rows = []
    with _Server(pops, steward) as srv, httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=600) as c:
        rid = srv.first

        def measure(what: str, method: str, path: str, body: dict) -> int:
            # Encoded before the clock starts: this client shares the server's process, and encoding
            # 130,000 members holds the GIL (and so the server's loop) for tens of milliseconds.
            raw = json.dumps(body).encode()
            time.sleep(0.3)  # a quiet loop before
            t0 = time.perf_counter()
            r = c.request(method, f"/api/replicas/{rid}/{path}", content=raw,
                          headers={"content-type": "application/json"})
            took = time.perf_counter() - t0
            time.sleep(SPREAD_S)
            rows.append({"round": label, "write": what, "status": r.status_code, "request_ms": took * 1000,
                         "worst_stall_ms": srv.worst_since(t0) * 1000, "worst_gc_ms": srv.worst_gc_since(t0) * 1000})
            return r.status_code

        n_req, n_key = bounds.MAX_SET_REQUEST_MEMBERS, bounds.MAX_SET_MEMBERS
        if label == "before":  # the bounds are lifted: report them as they are after
            n_req, n_key = 1_000, 10_000
        status = measure(f"set add of {big:,} members", "POST", "sets/huge", {"add": list(range(big))})
        measure(f"set add of {n_req:,} members", "POST", "sets/full", {"add": list(range(n_req))})
        for i in range(n_req, n_key, n_req):  # fill to one below the bound, unmeasured
            c.post(f"/api/replicas/{rid}/sets/full", json={"add": list(range(i, min(i + n_req, n_key - 1)))})
        time.sleep(SPREAD_S)  # the fill spreads before the next measure
        measure(f"1-member add to a set of {n_key - 1:,}", "POST", "sets/full", {"add": [-1]})
        if status == 200:
            measure(f"1-member add to a set of {big:,}", "POST", "sets/huge", {"add": [-1]})
        n_fields = 250 if label == "before" else bounds.MAX_MAP_REQUEST_FIELDS
        measure(f"map set of {n_fields:,} fields", "POST", "maps/wide", {"set": {f"f{i}": i for i in range(n_fields)}})
    return rows


def run(args: argparse.Namespace) -> int:
    def measure() -> dict:
        rounds = {r.strip() for r in args.rounds.split(",")}
        before: list[dict] = []
        after: list[dict] = []
        if "before" in rounds:
            saved = store_mod.SMALL_CTX_DOTS
            try:
                store_mod.SMALL_CTX_DOTS = -1
                with bounds.lifted():
                    before = _round(args.pops, args.big, "before")
            finally:
                store_mod.SMALL_CTX_DOTS = saved
        if "no-steward" in rounds:
            before += _round(args.pops, args.big, "no-steward", steward=False)
        if "after" in rounds:
            after = _round(args.pops, args.big, "after")
        return {"rows": before + after, "target_ms": 50.0,
                "worst_after_ms": max((r["worst_stall_ms"] for r in after if r["status"] == 200), default=0.0)}

    def render(result: dict) -> str:
        cols = ["round", "write", "status", "request_ms", "worst_stall_ms", "worst_gc_ms"]
        return (table(result["rows"], cols) + f"\nlongest stall from an accepted write after: "
                f"{result['worst_after_ms']:.1f} ms (target: under {result['target_ms']:.0f} ms)")

    return finish("writes", measure, render, args.json)
