"""`edgestate bench page`: does the dashboard page keep its frame rate under a write load?

Starts `edgestate serve` (22 POPs at the default --speed 0.1, so messages stay in flight long
enough to watch), writes at a steady rate over HTTP from a thread (random POPs, a bounded set of
keys), and opens the page in Chromium (Playwright). After a warm-up it samples the page about
once a second for the measured window and reports:

- frames: requestAnimationFrame callbacks per second (median, p10, min over the samples);
- long tasks (PerformanceObserver "longtask"): count, p50, max, and the main thread's total
  time blocked in them;
- the JS heap (`performance.memory`, precise, after a forced GC at the start and at the end):
  its growth over the window, and its peak;
- arcs: in each sample taken while the page holds messages in flight, whether the arc overlay
  shows anything (its pixels, read back at a small size: comparable for any version of the
  page), and what the map says it drew (`window.__edgestate.map.drawn`, where the page has it).

`--baseline REV` measures the page as it was at git revision REV first, in the same run, against
the same server and the same write load: every `/static/...` file is answered from `git show
REV:app/dashboard/static/...` (the template is the current one). The two rounds run one after
the other, never at once, so neither page competes with the other for the CPU.

Targets (issue 14): median >= 30 fps, no long task over 200 ms, heap growth under 30 MB, arcs
visible in every sample while messages are in flight. On a busy machine the frame rate and the
long tasks are figures to read, not a verdict; `robust_failures` names only what load cannot
excuse (arcs missing, the heap growing, the page's counts unbounded).
"""

from __future__ import annotations

import argparse
import mimetypes
import random
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from replication.bench.report import finish
from replication.cliargs import non_negative, positive

from .ws import Params as ServerParams
from .ws import _Server

REPO = Path(__file__).resolve().parents[2]
STATIC = "app/dashboard/static"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync", "--enable-precise-memory-info", "--js-flags=--expose-gc",
    # a page in a background or occluded window is throttled: measure it as if watched
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
TARGET_FPS = 30.0
TARGET_LONGTASK_MS = 200.0
TARGET_HEAP_MB = 30.0
MAX_ARCS = 240  # app/dashboard/static/js/map.js: drawn per frame, the rest counted
PAINTED_MIN = 20  # pixels of the downscaled overlay that must show something for "arcs visible"
KEYS = 64  # the writes cycle over this many keys: the cluster's state stays the same size


@dataclass
class Params:
    pops: str = "default"
    writes: float = 10.0
    duration: float = 30.0
    warmup: float = 3.0
    speed: float = 0.1
    seed: int = 0
    baseline: str | None = None
    chromium: str = CHROMIUM
    shots: str | None = None  # a directory: a screenshot of the map under load per round
    width: int = 1440
    height: int = 900


# Installed before the page's own scripts: counts frames, collects long tasks, and samples.
PROBE_JS = r"""
(() => {
  const B = window.__bench = { frames: 0, longtasks: [] };
  const tick = () => { B.frames++; requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) B.longtasks.push([e.startTime, e.duration]);
    }).observe({ type: "longtask", buffered: true });
  } catch (e) { B.noLongtasks = String(e); }
  B.sample = () => {
    const S = window.__edgestate, m = S && S.map;
    const c = document.getElementById("overlay");
    let painted = null;
    if (c && c.width > 1 && c.height > 1) {
      const s = B.small || (B.small = document.createElement("canvas"));
      s.width = 240; s.height = 120;
      const x = s.getContext("2d", { willReadFrequently: true });
      x.clearRect(0, 0, 240, 120);
      x.drawImage(c, 0, 0, 240, 120);
      const d = x.getImageData(0, 0, 240, 120).data;
      painted = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] > 8) painted++;
    }
    const drawn = m && m.drawn ? { ...m.drawn } : null;
    return {
      t: performance.now(), frames: B.frames, longtasks: B.longtasks.length,
      heap: performance.memory ? performance.memory.usedJSHeapSize : null,
      flights: m && m.flights ? m.flights.size : null, painted, drawn,
      log: document.querySelectorAll("#log > *").length, noLongtasks: B.noLongtasks || null,
    };
  };
  B.heapAfterGc = () => { if (window.gc) window.gc(); return performance.memory ? performance.memory.usedJSHeapSize : null; };
})();
"""


def add_parser(which) -> argparse.ArgumentParser:
    p = which.add_parser("page", help="the dashboard page's frame rate, long tasks, heap and arcs under a write load",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Params()
    p.add_argument("--pops", default=d.pops, metavar="all|default|ID,...", help="POPs of the server (default: %(default)s)")
    p.add_argument("--writes", type=positive, default=d.writes, metavar="R", help="writes per wall second (default: %(default)s)")
    p.add_argument("--duration", type=positive, default=d.duration, metavar="S", help="measured wall seconds (default: %(default)s)")
    p.add_argument("--warmup", type=non_negative, default=d.warmup, metavar="S", help="seconds of load before measuring (default: %(default)s)")
    p.add_argument("--speed", type=positive, default=d.speed, help="the server's --speed (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the server's network and of the writes")
    p.add_argument("--baseline", metavar="REV", default=None,
                   help="also measure the page as it was at this git revision, first, in the same run")
    p.add_argument("--chromium", default=d.chromium, metavar="PATH", help="the browser (default: %(default)s)")
    p.add_argument("--shots", metavar="DIR", default=None, help="save a screenshot of the map under load per round here")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


# -- the page as it was at a revision -------------------------------------------------------------


class _Baseline:
    """Answers /static/... from `git show REV:app/dashboard/static/...` (files REV lacks: as served)."""

    def __init__(self, rev: str) -> None:
        r = subprocess.run(["git", "rev-parse", "--verify", rev + "^{commit}"], cwd=REPO, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"--baseline {rev!r}: not a git revision here ({r.stderr.strip()})")
        self.rev = r.stdout.strip()
        self.cache: dict[str, bytes | None] = {}

    def file(self, rel: str) -> bytes | None:
        if rel not in self.cache:
            r = subprocess.run(["git", "show", f"{self.rev}:{STATIC}/{rel}"], cwd=REPO, capture_output=True)
            self.cache[rel] = r.stdout if r.returncode == 0 else None
        return self.cache[rel]

    def route(self, route) -> None:
        path = route.request.url.split("://", 1)[1].split("/", 1)[1].split("?", 1)[0]
        body = self.file(path.removeprefix("static/"))
        if body is None:
            route.continue_()
            return
        kind = "text/javascript" if path.endswith(".js") else (mimetypes.guess_type(path)[0] or "application/octet-stream")
        route.fulfill(status=200, body=body, headers={"content-type": kind, "cache-control": "no-store"})


# -- the load ---------------------------------------------------------------------------------------


def _writer(base: str, ids: list[str], params: Params, stop: threading.Event, done: list[int]) -> None:
    """Writes at a steady rate from its own thread, whatever the browser is doing."""
    import httpx

    rng = random.Random(params.seed)
    interval = 1.0 / params.writes
    nxt = time.monotonic()
    with httpx.Client(base_url=base, timeout=10.0) as http:
        while not stop.is_set():
            try:
                r = http.put(f"/api/replicas/{rng.choice(ids)}/kv/page-{rng.randrange(KEYS)}",
                             json={"value": rng.randrange(1 << 30)})
                done[0] += r.status_code == 200
            except httpx.TransportError:
                pass
            nxt += interval
            stop.wait(max(0.0, nxt - time.monotonic()))


# -- one round: a page, sampled -----------------------------------------------------------------------


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def _round(v, nd=1):
    return None if v is None else round(v, nd)


def _measure_page(browser, base: str, params: Params, label: str, baseline: _Baseline | None, progress) -> dict:
    ctx = browser.new_context(viewport={"width": params.width, "height": params.height}, service_workers="block")
    errors: list[str] = []
    try:
        ctx.add_init_script(PROBE_JS)
        if baseline is not None:
            ctx.route("**/static/**", baseline.route)
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base + "/")
        page.wait_for_function("document.querySelectorAll('.scattergeo .point').length > 0 && window.__edgestate"
                               " && window.__edgestate.map && window.__edgestate.map.ready", timeout=60_000)
        page.wait_for_function("document.getElementById('conn').textContent === 'live'", timeout=60_000)
        page.wait_for_timeout(params.warmup * 1000)  # load before measuring: the page's steady state
        heap0 = page.evaluate("window.__bench.heapAfterGc()")
        first = page.evaluate("window.__bench.sample()")
        samples = [first]
        shot_at = time.monotonic() + params.duration / 2
        shot = None
        end = time.monotonic() + params.duration
        while time.monotonic() < end:
            page.wait_for_timeout(1000)  # the sampling interval
            samples.append(page.evaluate("window.__bench.sample()"))
            if params.shots and shot is None and time.monotonic() >= shot_at:
                shot = str(Path(params.shots) / f"page-fps-{label}.png")
                page.locator(".map-card").screenshot(path=shot)
        last = samples[-1]
        heap1 = page.evaluate("window.__bench.heapAfterGc()")
        tasks = page.evaluate("([a, b]) => window.__bench.longtasks.filter(([s]) => s >= a && s <= b)",
                              [first["t"], last["t"]])
        peak = max((s["heap"] or 0) for s in samples)
    finally:
        ctx.close()
    fps = [(b["frames"] - a["frames"]) * 1000.0 / (b["t"] - a["t"]) for a, b in zip(samples, samples[1:]) if b["t"] > a["t"]]
    in_flight = [s for s in samples if s["flights"]]
    visible = [s for s in in_flight if s["painted"] is not None and s["painted"] >= PAINTED_MIN]
    durations = [d for _, d in tasks]
    window_s = (last["t"] - first["t"]) / 1000.0
    mb = 1 / (1024 * 1024)
    progress(f"{label}: {len(samples)} samples, median {_round(statistics.median(fps)) if fps else None} fps")
    return {
        "label": label,
        "baseline": baseline.rev if baseline else None,
        "window_s": _round(window_s),
        "samples": len(samples),
        "fps": {"median": _round(statistics.median(fps)) if fps else None, "p10": _round(_pct(fps, 0.1)),
                "min": _round(min(fps)) if fps else None},
        "long_tasks": {"count": len(durations), "p50_ms": _round(_pct(durations, 0.5)),
                       "max_ms": _round(max(durations)) if durations else 0.0,
                       "blocked_s": _round(sum(durations) / 1000.0, 2),
                       "over_target": sum(d > TARGET_LONGTASK_MS for d in durations)},
        "heap_mb": {"start": _round(heap0 * mb if heap0 else None), "end": _round(heap1 * mb if heap1 else None),
                    "growth": _round((heap1 - heap0) * mb if heap0 and heap1 else None),
                    "peak": _round(peak * mb)},
        "arcs": {"samples_in_flight": len(in_flight), "visible": len(visible),
                 "blank": len(in_flight) - len(visible),
                 "flights_max": max((s["flights"] or 0) for s in samples),
                 "drawn_max": max(((s["drawn"] or {}).get("arcs", 0) for s in samples), default=0),
                 "hidden_max": max(((s["drawn"] or {}).get("hidden", 0) for s in samples), default=0),
                 # frames whose count of undrawn messages is not what was on its way beyond the bound
                 "miscounted": sum(1 for s in samples if s["drawn"] and "alive" in s["drawn"]
                                   and s["drawn"]["hidden"] != max(0, s["drawn"]["alive"] - MAX_ARCS)),
                 "alive_max": max(((s["drawn"] or {}).get("alive", 0) for s in samples), default=0),
                 "hook": any(s["drawn"] is not None for s in samples)},
        "log_rows_max": max(s["log"] for s in samples),
        "screenshot": shot,
        "page_errors": errors[:5],
        "longtask_observer": last.get("noLongtasks") or "ok",
    }


def robust_failures(r: dict) -> list[str]:
    """What no amount of CPU contention excuses: arcs missing while messages fly, the heap
    growing by the target or more, page errors. (Frame rate and long tasks: see `targets_met`.)"""
    out = []
    a = r["arcs"]
    if a["samples_in_flight"] == 0:
        out.append("no sample saw messages in flight: the load did not reach the page")
    if a["blank"]:
        out.append(f"arcs blank in {a['blank']} of {a['samples_in_flight']} samples with messages in flight")
    if a.get("miscounted"):
        out.append(f"{a['miscounted']} frames did not count the messages beyond the {MAX_ARCS} drawn")
    g = r["heap_mb"]["growth"]
    if g is not None and g >= TARGET_HEAP_MB:
        out.append(f"heap grew {g} MB (target < {TARGET_HEAP_MB:g})")
    if r["page_errors"]:
        out.append(f"page errors: {r['page_errors']}")
    return out


def targets_met(r: dict) -> bool:
    fps = r["fps"]["median"]
    return (not robust_failures(r) and fps is not None and fps >= TARGET_FPS
            and r["long_tasks"]["max_ms"] <= TARGET_LONGTASK_MS)


def measure(params: Params, progress=None) -> dict:
    progress = progress or (lambda msg: None)
    if not Path(params.chromium).exists():
        raise RuntimeError(f"no browser at {params.chromium} (--chromium PATH)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        raise RuntimeError("playwright is not installed (pip install playwright)") from e
    baseline = _Baseline(params.baseline) if params.baseline else None
    if params.shots:
        Path(params.shots).mkdir(parents=True, exist_ok=True)
    server = _Server(ServerParams(pops=params.pops, speed=params.speed, seed=params.seed), progress)
    base = server.start()
    stop, done = threading.Event(), [0]
    writer = None
    try:
        import httpx

        ids = [r["id"] for r in httpx.get(base + "/api/topology", timeout=10).json()["replicas"]]
        writer = threading.Thread(target=_writer, args=(base, ids, params, stop, done), daemon=True)
        t0 = time.monotonic()
        writer.start()
        rounds = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=params.chromium, args=CHROMIUM_ARGS)
            try:
                if baseline is not None:
                    rounds.append(_measure_page(browser, base, params, "before", baseline, progress))
                rounds.append(_measure_page(browser, base, params, "after", None, progress))
            finally:
                browser.close()
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        if writer is not None:
            writer.join(timeout=15)
        server.stop()
    for r in rounds:
        r["robust_failures"] = robust_failures(r)
        r["targets_met"] = targets_met(r)
    return {"pops": len(ids), "writes_per_s": round(done[0] / elapsed, 1), "speed": params.speed, "rounds": rounds,
            "targets": {"median_fps": TARGET_FPS, "longtask_max_ms": TARGET_LONGTASK_MS, "heap_growth_mb": TARGET_HEAP_MB}}


def report(r: dict) -> str:
    lines = [f"{r['pops']} POPs, {r['writes_per_s']} writes/s over HTTP, --speed {r['speed']}"]
    for x in r["rounds"]:
        fps, lt, heap, arcs = x["fps"], x["long_tasks"], x["heap_mb"], x["arcs"]
        name = x["label"] + (f" ({x['baseline'][:10]})" if x["baseline"] else "")
        lines += [
            f"{name}: {x['samples']} samples over {x['window_s']} s",
            f"  frames      median {fps['median']} fps, p10 {fps['p10']}, min {fps['min']}",
            f"  long tasks  {lt['count']} (p50 {lt['p50_ms']} ms, max {lt['max_ms']} ms, {lt['over_target']} over "
            f"{TARGET_LONGTASK_MS:g} ms), main thread blocked {lt['blocked_s']} s",
            f"  JS heap     {heap['start']} -> {heap['end']} MB after GC (growth {heap['growth']} MB), peak {heap['peak']} MB",
            f"  arcs        visible in {arcs['visible']} of {arcs['samples_in_flight']} samples with messages in flight "
            f"(up to {arcs['flights_max']} in flight; drawn at most {arcs['drawn_max']}"
            + (f", +{arcs['hidden_max']} more not drawn" if arcs["hook"] else ", no hook on this page") + ")",
            f"  event log   at most {x['log_rows_max']} rows",
        ]
        if x["screenshot"]:
            lines.append(f"  screenshot  {x['screenshot']}")
        verdict = "met" if x["targets_met"] else "NOT met"
        lines.append(f"  targets     {verdict}" + (": " + "; ".join(x["robust_failures"]) if x["robust_failures"] else ""))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    params = Params(pops=args.pops, writes=args.writes, duration=args.duration, warmup=args.warmup, speed=args.speed,
                    seed=args.seed, baseline=args.baseline, chromium=args.chromium, shots=args.shots)
    progress = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    return finish("page", lambda: measure(params, progress), report, args.json)
