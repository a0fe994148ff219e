"""The space-time diagram (static/js/spacetime.js, key D) in a real browser: the
parallel-universes scenario shows two writes on both sides of a cut, each branching into two
siblings at the POPs once the cut heals (a fork with count 2), and Sydney's write with the
read's context merging them (a merge dot, then arrivals that leave one value). Asserted on the
diagram's model (`window.__spacetime.model()`), not on pixels; a screenshot goes to the
artifacts. Replay: scrubbing back before the scenario shows none of it, and scrubbing back to
the end shows the same dots again. Waits are conditions with deadlines."""

from __future__ import annotations

import json

import pytest

from test_timeline_page import DEADLINE_MS, expect, live_now, open_dashboard, scrub_to

pytestmark = pytest.mark.timeout(180)

RUN_DEADLINE_S = 60


def scenario_dots(page, key_prefix: str) -> list[dict]:
    return page.evaluate("p => window.__spacetime.model().dots.filter(d => d.key.startsWith(p))", key_prefix)


def run_parallel_universes(page) -> str:
    srv = page.server
    started = srv.api("POST", "/api/scenarios/parallel-universes").json()
    key = f"greeting-{started['run']}"
    # the diagram saw: both writes, forks of 2, and the merge write whose arrivals leave 1 value
    page.wait_for_function(
        """k => { const m = window.__spacetime.model();
                  const dots = m.dots.filter(d => d.key === k);
                  const ids = new Set(dots.map(d => d.id));
                  const lines = m.lines.filter(l => ids.has(l.id));
                  const merge = dots.find(d => d.merge);
                  return dots.length === 3 && lines.some(l => l.fork && l.sib === 2) && merge
                    && lines.filter(l => l.id === merge.id && l.sib === 1).length >= 5; }""",
        arg=key, timeout=RUN_DEADLINE_S * 1000)
    return key


def test_the_diagram_shows_two_siblings_branching_and_merging(make_page, artifacts):
    page = open_dashboard(make_page)
    page.keyboard.press("d")
    expect()(page.locator("[data-testid=spacetime]")).to_be_visible()
    key = run_parallel_universes(page)

    m = page.evaluate("window.__spacetime.model()")
    dots = [d for d in m["dots"] if d["key"] == key]
    by_node = {d["node"]: d for d in dots}
    assert set(by_node) == {"lhr", "iad", "syd"}, dots
    # both sides wrote alone: one value each where it was written
    assert by_node["lhr"]["sib"] == 1 and by_node["iad"]["sib"] == 1 and not by_node["lhr"]["merge"]
    lhr, iad, syd = by_node["lhr"]["id"], by_node["iad"]["id"], by_node["syd"]["id"]
    lines = [ln for ln in m["lines"] if ln["id"] in (lhr, iad, syd)]
    # the other side's write arrives after the heal and branches the register: 2 siblings there
    forks = [ln for ln in lines if ln["fork"]]
    assert any(ln["id"] == iad and ln["to"] == "lhr" and ln["sib"] == 2 for ln in forks), forks
    assert any(ln["id"] == lhr and ln["to"] == "iad" and ln["sib"] == 2 for ln in forks), forks
    # Sydney's write with the read's context: a merge, and everywhere it lands one value is left
    assert by_node["syd"]["merge"] is True and by_node["syd"]["sib"] == 1
    assert by_node["syd"]["t"] >= max(ln["t1"] for ln in forks)  # it read both: no earlier than the last fork
    assert all(ln["sib"] == 1 and not ln["fork"] for ln in lines if ln["id"] == syd)
    # the partition was a band, closed by the heal, around both first writes
    bands = [b for b in m["bands"] if b["t0"] <= by_node["lhr"]["t"] and b["t1"] is not None and b["t1"] > by_node["iad"]["t"]]
    assert bands, m["bands"]

    page.evaluate("window.__spacetime.toggle(true)")
    lanes = page.evaluate("window.__spacetime.lanes()")
    assert {"lhr", "iad", "syd"} <= set(lanes) and len(lanes) <= 8
    page.wait_for_function("window.__spacetime.drawn().dots >= 3", timeout=DEADLINE_MS)
    page.locator("[data-testid=spacetime]").screenshot(path=str(artifacts / "spacetime-parallel-universes.png"))

    # lanes chosen by hand: only those are drawn
    page.locator("[data-testid=spacetime-lanes]").fill("syd, lhr, nowhere")
    page.locator("[data-testid=spacetime-lanes]").press("Enter")
    page.wait_for_function("window.__spacetime.lanes().join() === 'lhr,syd'", timeout=DEADLINE_MS)

    page.evaluate("document.activeElement.blur()")  # in the lanes field, D is a letter typed
    page.keyboard.press("d")
    expect()(page.locator("[data-testid=spacetime]")).to_be_hidden()
    frames = page.evaluate("window.__spacetime.drawn().frames")
    page.wait_for_function(f"window.__edgestate.timeline.rec.liveNow() > {live_now(page) + 500}", timeout=DEADLINE_MS)
    assert page.evaluate("window.__spacetime.drawn().frames") == frames  # hidden: not drawn at all
    assert page.errors == []


def test_the_replayed_diagram_shows_the_same_dots(make_page):
    page = open_dashboard(make_page)
    t_before = live_now(page)
    key = run_parallel_universes(page)
    live = scenario_dots(page, key)
    assert len(live) == 3
    # freeze the view, go back to before the scenario: none of its writes yet
    page.keyboard.press(" ")
    expect()(page.locator("[data-testid=timeline-mode]")).to_have_text("Replay", timeout=DEADLINE_MS)
    scrub_to(page, t_before)
    page.wait_for_function(f"window.__spacetime.model().dots.filter(d => d.key === {json.dumps(key)}).length === 0",
                           timeout=DEADLINE_MS)
    assert page.evaluate("window.__edgestate.clock.now()") < min(d["t"] for d in live)
    # ...and forward again to the end of the recording: the same dots, merge and all
    end = page.evaluate("window.__edgestate.timeline.rec.liveNow()")
    scrub_to(page, end)
    try:
        page.wait_for_function(f"window.__spacetime.model().dots.filter(d => d.key === {json.dumps(key)}).length === 3",
                               timeout=DEADLINE_MS)
    except Exception as e:
        raise AssertionError(f"replayed to {end}: {scenario_dots(page, key)} vs live {live}; "
                             f"view at {page.evaluate('window.__edgestate.clock.now()')}") from e
    replayed = scenario_dots(page, key)
    strip = lambda ds: sorted((d["id"], d["node"], round(d["t"], 3)) for d in ds)  # noqa: E731
    assert strip(replayed) == strip(live)
    assert [d["node"] for d in replayed if d["merge"]] == ["syd"]


def test_a_page_that_joins_during_a_cut_draws_it_from_when_it_began(make_page):
    """A page that connects (or reconnects after a drop) while a cut is in force draws the band
    from the cut's start, so writes made under the cut sit inside it (it once began at the
    page's arrival, after them)."""
    srv = make_page().server
    r = srv.api("POST", "/api/faults/partition", json={"groups": [["lhr"], ["iad", "syd"]]})
    assert r.status_code == 200, r.text
    try:
        key = f"under-the-cut-{srv.api('GET', '/api/sim').json()['now_ms']:.0f}"
        assert srv.api("PUT", f"/api/replicas/lhr/kv/{key}", json={"value": 1}).status_code == 200
        page = open_dashboard(make_page)  # joins after the cut and the write
        page.keyboard.press("d")
        expect()(page.locator("[data-testid=spacetime]")).to_be_visible()
        page.wait_for_function(
            """k => { const m = window.__spacetime.model();
                      return m.dots.some(d => d.key === k) && m.bands.some(b => b.t1 === null); }""",
            arg=key, timeout=DEADLINE_MS)
        m = page.evaluate("window.__spacetime.model()")
        [dot] = [d for d in m["dots"] if d["key"] == key]
        [band] = [b for b in m["bands"] if b["t1"] is None]
        assert band["t0"] <= dot["t"], (band, dot)
    finally:
        assert srv.api("DELETE", "/api/faults/partition").status_code == 200
