"""Shared fixtures: a real `edgestate serve` on a loopback port, and a Chromium driven by Playwright.

The server runs at a high --speed so that a write crosses the world, and anti-entropy repairs a
healed partition, in a fraction of a wall second: tests wait on conditions with deadlines, never
on fixed sleeps.

`--cpu-hogs K` runs K pure-Python spin processes (`app.bench.hogs`) beside the whole session, to
check that the tests hold on a busy machine: `./dev test --cpu-hogs 2 tests/test_scenarios_api.py`.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from serving import REPO, ServerProcess, edgestate_cmd, free_port, serving  # noqa: F401 (re-exported)
from waiting import wait_for

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync",
]
SERVER_SPEED = 5.0


def pytest_addoption(parser):
    parser.addoption("--cpu-hogs", type=int, default=0, metavar="K",
                     help="run K busy processes (pure-Python spin loops) beside the session, stopped at its end: "
                          "the tests must hold on a loaded machine")


def pytest_configure(config):
    k = config.getoption("--cpu-hogs")
    if k < 0:
        raise pytest.UsageError(f"--cpu-hogs must be >= 0, got {k}")
    from app.bench import hogs

    config._edgestate_hogs = hogs.start(k)


def pytest_unconfigure(config):
    from app.bench import hogs

    hogs.stop(getattr(config, "_edgestate_hogs", []))


def pytest_report_header(config):
    procs = getattr(config, "_edgestate_hogs", [])
    if procs:
        return f"cpu hogs: {len(procs)} spinning beside the session (pids {', '.join(str(p.pid) for p in procs)})"
    return None


class LiveServer(ServerProcess):
    def api(self, method: str, path: str, **kw) -> httpx.Response:
        r = httpx.request(method, self.base_url + path, timeout=10.0, **kw)
        assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text}"
        return r

    def reset(self) -> None:
        """Undo what a test may have left: a scenario still running, partition, crashes, settings.
        The scenario goes first: left running, its next step could partition the next test's cluster."""
        running = self.api("GET", "/api/scenarios").json()["running"]
        if running is not None:
            self.api("DELETE", f"/api/scenarios/runs/{running}")
        self.api("DELETE", "/api/faults/partition")
        for r in self.api("GET", "/api/replicas").json()["replicas"]:
            if r["status"] != "up":
                self.api("POST", f"/api/replicas/{r['id']}/recover")
        sim = self.api("GET", "/api/sim").json()
        if sim["paused"]:
            self.api("POST", "/api/sim/resume")
        if sim["speed"] != SERVER_SPEED:
            self.api("PUT", "/api/sim/speed", json={"speed": SERVER_SPEED})
        if sim["loss"]:
            self.api("PUT", "/api/sim/loss", json={"loss": 0.0})
        if sim["strategy"] != "plumtree":
            self.api("PUT", "/api/sim/strategy", json={"strategy": "plumtree"})

    def wait_converged(self, deadline_s: float = 20.0) -> None:
        end = time.monotonic() + deadline_s
        while not self.api("GET", "/api/convergence").json()["converged"]:
            assert time.monotonic() < end, "the cluster did not converge"
            time.sleep(0.05)  # polling interval


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """`edgestate serve` with the default POPs, at --speed 5, for the whole session."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serving(log, "--pops", "default", "--speed", str(SERVER_SPEED), cls=LiveServer) as srv:
        yield srv


@pytest.fixture
def edge_server(live_server):
    """The session's server, put back to a known state before and after the test."""
    live_server.reset()
    yield live_server
    live_server.reset()


EXPECT_DEADLINE_MS = 20_000


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import expect, sync_playwright

    # Playwright's assertions wait 5 s by default: on a busy machine (CI, or the suite beside CPU
    # hogs) a page that is right gets there later. An assertion that holds returns at once, so a
    # longer deadline costs nothing until something is wrong.
    expect.set_options(timeout=EXPECT_DEADLINE_MS)
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


class Page:
    """A browser page that may talk to the server only: any other host is recorded and refused."""

    def __init__(self, page, server: LiveServer) -> None:
        self.page = page
        self.server = server
        self.foreign: list[str] = []
        self.requests: list[str] = []
        self.errors: list[str] = []

    def __getattr__(self, name):
        return getattr(self.page, name)

    def wait_server(self, what: str, cond, deadline_s: float, poll_s: float = 0.05):
        """`wait_for` a condition the test reads from the server itself, after a page action:
        polled between Playwright waits, so that the route handler goes on passing the page's
        own requests (the one that makes the condition true among them)."""
        return wait_for(what, cond, deadline_s, poll_s, pause=lambda s: self.page.wait_for_timeout(s * 1000))


@pytest.fixture
def make_page(browser, edge_server):
    contexts = []

    def make(width: int = 1440, height: int = 900):
        ctx = browser.new_context(viewport={"width": width, "height": height}, service_workers="block")
        contexts.append(ctx)
        pg = ctx.new_page()
        wrapped = Page(pg, edge_server)

        def route(route):
            url = route.request.url
            wrapped.requests.append(url)
            host = url.split("/")[2] if "://" in url else ""
            if host == edge_server.host:
                route.continue_()
            else:
                wrapped.foreign.append(url)
                route.abort()

        ctx.route("**/*", route)
        pg.on("websocket", lambda ws: None if ws.url.split("/")[2] == edge_server.host else wrapped.foreign.append(ws.url))
        pg.on("pageerror", lambda e: wrapped.errors.append(str(e)))
        pg.on("console", lambda m: wrapped.errors.append(m.text) if m.type == "error" else None)
        return wrapped

    yield make
    for ctx in contexts:
        ctx.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
