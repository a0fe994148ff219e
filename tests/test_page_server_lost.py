"""The page when its server goes away and another comes back on the same address: the loss is
plain (a banner across the page within 2 s of a kill, the badge says disconnected, the clock
stops, the timeline says so), and the restarted server's clock and events are not mixed with the
old one's. A server that hangs (SIGSTOP: the socket stays open) is noticed by its silence."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import LiveServer
from serving import serving

from app.processes.supervisor import free_port

pytestmark = pytest.mark.timeout(240)

DEADLINE_MS = 30_000
POPS = "lhr,jfk,syd"


def test_a_lost_server_is_plain_and_a_restarted_one_starts_afresh(browser, tmp_path):
    from playwright.sync_api import expect

    port = free_port()
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, service_workers="block")
    errors: list[str] = []
    try:
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        badge, conn = page.locator("[data-testid=convergence]"), page.locator("#conn")
        banner = page.locator("[data-testid=stream-banner]")
        mode, log = page.locator("[data-testid=timeline-mode]"), page.locator("#log")
        with serving(tmp_path / "first.log", "--pops", POPS, "--speed", "1", port=port, cls=LiveServer) as first:
            page.goto(first.base_url + "/")
            expect(conn).to_have_text("live", timeout=DEADLINE_MS)
            first.api("PUT", "/api/replicas/lhr/kv/before-the-loss", json={"value": 1})
            expect(log).to_contain_text("before-the-loss", timeout=DEADLINE_MS)
            expect(badge).to_have_text("converged", timeout=DEADLINE_MS)
            server = page.evaluate("window.__edgestate.server")
            assert isinstance(server, str) and server
            expect(banner).to_be_hidden()
            first.proc.kill()  # SIGKILL: no goodbye
            first.proc.wait(timeout=15)
            gone = time.monotonic()
            # the server is gone: a closed socket is noticed at once, the banner says so within 2 s
            expect(banner).to_be_visible(timeout=2000)
            print(f"banner {1000 * (time.monotonic() - gone):.0f} ms after the kill")
            expect(banner).to_contain_text("Disconnected from the server")
        expect(conn).to_contain_text("server lost", timeout=DEADLINE_MS)
        expect(badge).to_have_text("disconnected")
        expect(mode).to_have_text("Disconnected")
        assert page.evaluate("window.__edgestate.clock.paused"), "the clock kept running without a server"
        frozen = page.evaluate("window.__edgestate.clock.now()")
        page.wait_for_function("t => performance.now() > t + 300", arg=page.evaluate("performance.now()"))
        assert page.evaluate("window.__edgestate.clock.now()") == frozen
        # another server on the same address: the page reconnects by itself and starts afresh
        with serving(tmp_path / "second.log", "--pops", POPS, "--speed", "1", port=port):
            expect(conn).to_have_text("live", timeout=DEADLINE_MS)
            expect(badge).to_have_text("converged", timeout=DEADLINE_MS)
            expect(mode).to_have_text("Live")
            expect(log).to_contain_text("restarted server", timeout=DEADLINE_MS)
            expect(banner).to_contain_text("Reconnected to a restarted server")
            expect(log).not_to_contain_text("before-the-loss")  # the old server's events are gone
            assert page.evaluate("window.__edgestate.server") not in (None, server)
            assert not page.evaluate("window.__edgestate.clock.paused")
        assert errors == [], errors
    finally:
        ctx.close()


def test_a_hung_server_is_noticed_by_its_silence_and_the_same_run_is_said_when_it_wakes(browser, tmp_path):
    from playwright.sync_api import expect

    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, service_workers="block")
    try:
        page = ctx.new_page()
        conn, badge = page.locator("#conn"), page.locator("[data-testid=convergence]")
        banner = page.locator("[data-testid=stream-banner]")
        with serving(tmp_path / "hung.log", "--pops", POPS, "--speed", "1", cls=LiveServer) as srv:
            page.goto(srv.base_url + "/")
            expect(conn).to_have_text("live", timeout=DEADLINE_MS)
            page.wait_for_function("window.__edgestate.server", timeout=DEADLINE_MS)  # the snapshot is in
            server = page.evaluate("window.__edgestate.server")
            os.kill(srv.proc.pid, signal.SIGSTOP)  # the socket stays open; nothing more is sent
            try:
                expect(banner).to_contain_text("stopped answering", timeout=DEADLINE_MS)
                expect(badge).to_have_text("disconnected")
            finally:
                os.kill(srv.proc.pid, signal.SIGCONT)
            expect(conn).to_have_text("live", timeout=DEADLINE_MS)
            expect(banner).to_contain_text("Reconnected: the same server run", timeout=DEADLINE_MS)
            assert page.evaluate("window.__edgestate.server") == server
            expect(badge).not_to_have_text("disconnected", timeout=DEADLINE_MS)
    finally:
        ctx.close()
