"""The coordination panel in a real browser: the selected POP's write (local µs, everywhere ms)
against a global leader's commit, and who can still write while the Atlantic is cut.

Waits are conditions with deadlines (Playwright's `expect`), never fixed sleeps. The figures
the page shows are checked against what `/api/coordination` answers.
"""

from __future__ import annotations

import re
import time

import pytest
from test_page import DEADLINE_MS, N_POPS, expect, open_dashboard, select_pop

pytestmark = pytest.mark.timeout(180)


def fmt_ms(ms: float) -> str:
    """As the page's fmtMs shows a figure under a second."""
    return f"{int(ms + 0.5)} ms"


def fmt_us(us: float) -> str:
    """As the panel shows microseconds."""
    return f"{us:.1f} µs" if us < 10 else f"{int(us + 0.5):,} µs"


def wait_for_write(page, pop: str, old_id: str | None) -> dict:
    """The POP's figures once a write newer than `old_id` has reached every replica."""
    seen: list = []

    def newer():
        c = coordination(page)
        p = c["pops"][pop]
        seen[:] = [p["last_write"], c["down"], c["groups"]]
        return p if p["last_write"] and p["last_write"]["id"] != old_id and p["everywhere_ms"] is not None else None

    try:
        return page.wait_server(f"a new write at {pop} to reach every replica", newer, DEADLINE_MS / 1000)
    except AssertionError as e:
        problems = [ln for ln in page.server.output().splitlines() if "Traceback" in ln or "failed" in ln]
        raise AssertionError(f"{e}; last seen (last_write, down, groups): {seen}; server: {problems[-5:]}") from None


def coordination(page) -> dict:
    return page.server.api("GET", "/api/coordination").json()


def test_the_panel_compares_a_write_with_a_global_leader_and_shows_who_can_write_under_a_cut(make_page, artifacts):
    page = open_dashboard(make_page)
    panel = page.locator("[data-testid=coordination]")
    select_pop(page, "syd")
    before = coordination(page)
    leader, z = before["leader"], before["pops"]["syd"]["consensus_commit_ms"]
    assert leader != "syd" and z > 200.0
    expect()(panel.locator("[data-testid=coord-leader]")).to_contain_text(
        f", {leader}): {fmt_ms(z)}", timeout=DEADLINE_MS)
    avail = panel.locator("[data-testid=coord-avail]")
    expect()(avail).to_have_text(f"CRDT: {N_POPS}/{N_POPS} can write · leader-based: {N_POPS}/{N_POPS}")

    # a write through the page's own form, at Sydney (the session's server may hold an older one)
    old = (before["pops"]["syd"]["last_write"] or {}).get("id")
    page.select_option("#write-type", "kv")
    page.fill("#write-key", f"coordination-{time.monotonic_ns()}")
    page.fill("#write-value", "g'day")
    page.click("#write-submit")
    # the form says what the write's answer was (an error too): a failed write fails here, saying why
    expect()(page.locator("#write-result")).to_contain_text("syd answered at once", timeout=DEADLINE_MS)
    got = wait_for_write(page, "syd", old)
    assert got["local_us"] > 0
    crdt = panel.locator("[data-testid=coord-crdt]")
    # the page shows the server's figures for this write
    expect()(crdt).to_have_text(
        f"your write at syd: local in {fmt_us(got['local_us'])}, everywhere in {fmt_ms(got['everywhere_ms'])}",
        timeout=DEADLINE_MS)
    ratio = panel.locator("[data-testid=coord-ratio]")
    expect()(ratio).to_have_text(re.compile(r"^[\d,.]+× slower to answer than the local write$"))
    shown = float(ratio.inner_text().split("×")[0].replace(",", ""))
    assert shown == pytest.approx(z * 1000.0 / got["local_us"], rel=0.01)
    page.locator("#panel").screenshot(path=str(artifacts / "coordination.png"))

    # cut the Atlantic: every POP still writes as CRDTs; a leader needs a majority on its side
    page.click("[data-testid=cut-atlantic]")
    expect()(avail).not_to_have_text(re.compile(rf"leader-based: {N_POPS}/{N_POPS}$"), timeout=DEADLINE_MS)
    cut = coordination(page)
    assert cut["partitioned"]
    n_cons = len(cut["writers"]["consensus"])
    expect()(avail).to_have_text(f"CRDT: {N_POPS}/{N_POPS} can write · leader-based: {n_cons}/{N_POPS}")
    side = next(g for g in cut["groups"] if leader in g)
    if len(side) < cut["quorum"]:
        assert n_cons == 0
        expect()(panel.locator("[data-testid=coord-blocked]")).to_contain_text("short of a majority")
    else:
        expect()(panel.locator("[data-testid=coord-consensus-writers]")).to_have_text(" ".join(side))
    can = "can write" if "syd" in cut["writers"]["consensus"] else "cannot write"
    expect()(panel.locator("[data-testid=coord-selected-can]")).to_have_text(
        re.compile(rf", syd: CRDT can write · leader-based {can}$"))
    page.locator("#panel").screenshot(path=str(artifacts / "coordination-partitioned.png"))

    page.click("[data-testid=heal]")
    expect()(avail).to_have_text(f"CRDT: {N_POPS}/{N_POPS} can write · leader-based: {N_POPS}/{N_POPS}",
                                 timeout=DEADLINE_MS)
    assert page.errors == []
    assert page.foreign == []


def test_the_panel_asks_for_a_pop_before_one_is_picked_and_lets_the_presenter_move_the_leader(make_page):
    page = open_dashboard(make_page)
    panel = page.locator("[data-testid=coordination]")
    expect()(panel).to_contain_text("pick a POP", timeout=DEADLINE_MS)
    expect()(panel.locator("[data-testid=coord-crdt]")).to_have_count(0)
    select_pop(page, "lhr")
    expect()(panel.locator("[data-testid=coord-leader]")).to_contain_text("with a global leader", timeout=DEADLINE_MS)
    # the presenter moves the leader to Sydney: London's writes now pay for the trip
    page.select_option("[data-testid=coord-leader-select]", "syd")
    want = page.server.api("GET", "/api/coordination?leader=syd").json()["pops"]["lhr"]["consensus_commit_ms"]
    expect()(panel.locator("[data-testid=coord-leader]")).to_contain_text(
        f"with a global leader (Sydney, syd): {fmt_ms(want)}", timeout=DEADLINE_MS)
    assert want > 200.0
    assert page.errors == []


def test_at_stage_speed_the_panel_follows_the_write_across_the_world(make_page):
    """Slowed down, a write takes seconds of wall time to reach every POP: the panel counts the
    arrivals as they come (no polling: each arrival on the stream asks again), then shows Y."""
    page = open_dashboard(make_page)
    select_pop(page, "syd")
    panel = page.locator("[data-testid=coordination]")
    expect()(panel.locator("[data-testid=coord-leader]")).to_be_visible(timeout=DEADLINE_MS)
    old = (coordination(page)["pops"]["syd"]["last_write"] or {}).get("id")
    page.server.api("PUT", "/api/sim/speed", json={"speed": 0.05})  # ~110 virtual ms: ~2 s on the wall
    page.server.api("PUT", f"/api/replicas/syd/kv/slow-{time.monotonic_ns()}", json={"value": "slowly"})
    crdt = panel.locator("[data-testid=coord-crdt]")
    expect()(crdt).to_have_text(re.compile(r"everywhere: ([1-9]|1\d|2[01])/22 so far"), timeout=DEADLINE_MS)
    got = wait_for_write(page, "syd", old)
    expect()(crdt).to_have_text(
        f"your write at syd: local in {fmt_us(got['local_us'])}, everywhere in {fmt_ms(got['everywhere_ms'])}",
        timeout=DEADLINE_MS)
    assert page.errors == []
