"""Presenter mode and the scenario captions in a real browser (issue 15).

Presenter mode (`?presenter=1` or the F key) at 1280×720 and 1920×1080: the map and the
convergence chart both inside the viewport, no vertical scroll, captions ≥ 28 px, POP labels
≥ 16 px, the selected POP's siblings visible and large. Captions: a `say` line stays up ≥ 2 s
(measured on the page with a MutationObserver: a lower bound, which a slow machine only makes
longer); the → key advances a scenario that waits for the presenter; the verdict is large.

Waits are conditions with deadlines (`expect`, `wait_for_function`, `wait_for`), never fixed sleeps.
Screenshots go to tests/artifacts/ (ignored by git).
"""

from __future__ import annotations

import time

import httpx
import pytest

from conftest import LiveServer, Page, SERVER_SPEED, serving
from test_page import DEADLINE_MS, N_POPS, expect, open_dashboard, select_pop

pytestmark = pytest.mark.timeout(240)

MIN_CAPTION_PX = 28
MIN_LABEL_PX = 16
MIN_HOLD_MS = 2000


def px(page, selector: str) -> float:
    return page.locator(selector).first.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")


def inside_viewport(page, selector: str) -> dict:
    return page.evaluate(
        """s => { const r = document.querySelector(s).getBoundingClientRect();
                  return {top: r.top, left: r.left, bottom: r.bottom, right: r.right, width: r.width,
                          height: r.height, vw: innerWidth, vh: innerHeight}; }""", selector)


def assert_inside(page, selector: str) -> None:
    b = inside_viewport(page, selector)
    assert b["width"] > 100 and b["height"] > 100, (selector, b)
    assert b["top"] >= 0 and b["left"] >= 0 and b["bottom"] <= b["vh"] + 0.5 and b["right"] <= b["vw"] + 0.5, (selector, b)


def label_px(page) -> float:
    return page.evaluate(
        "() => Math.min(...[...document.querySelectorAll('.scattergeo text')]"
        ".map(t => parseFloat(getComputedStyle(t).fontSize)))")


def make_siblings(srv, key: str) -> None:
    """London and Ashburn write the same key on two sides of a cut; the heal makes two siblings."""
    srv.api("POST", "/api/faults/partition", json={"groups": [["lhr", "fra", "mad"]]})
    srv.api("PUT", f"/api/replicas/lhr/kv/{key}", json={"value": "hello from London"})
    srv.api("PUT", f"/api/replicas/iad/kv/{key}", json={"value": "hello from Ashburn"})
    srv.api("DELETE", "/api/faults/partition")
    srv.wait_converged()


@pytest.mark.parametrize("width, height, scenario", [(1280, 720, "hello-world"), (1920, 1080, "audience-counter")])
def test_presenter_mode_fits_the_projector(make_page, artifacts, width, height, scenario):
    page = open_dashboard(make_page, width, height, path="/?presenter=1")
    assert page.evaluate("document.body.classList.contains('presenter')")
    expect()(page.locator("#toolbar")).to_be_hidden()
    key = f"presented-{time.monotonic_ns()}"
    make_siblings(page.server, key)
    select_pop(page, "lhr")
    row = page.locator("[data-testid=kv-row]", has_text=key)
    expect()(row.locator(".sibling")).to_have_count(2, timeout=DEADLINE_MS)
    # the map and the chart both on screen, nothing below the fold
    page.wait_for_function("document.getElementById('conv-chart').querySelector('.main-svg')", timeout=DEADLINE_MS)
    assert_inside(page, "#map")
    assert_inside(page, "#conv-chart")
    assert page.evaluate("document.documentElement.scrollHeight <= innerHeight"), page.evaluate(
        "[document.documentElement.scrollHeight, innerHeight]")
    # POP labels large enough for the back of the hall
    page.wait_for_function("n => [...document.querySelectorAll('.scattergeo text')].length === n",
                           arg=N_POPS, timeout=DEADLINE_MS)
    assert label_px(page) >= MIN_LABEL_PX
    # the siblings: visible, on screen, large
    for i in range(2):
        sib = row.locator(".sib-value").nth(i)
        expect()(sib).to_be_in_viewport()
        assert sib.evaluate("e => parseFloat(getComputedStyle(e).fontSize)") >= 20
    # a scenario's caption as a lower-third, ≥ 28 px; the verdict larger still
    claim = next(s["claim"] for s in page.server.api("GET", "/api/scenarios").json()["scenarios"]
                 if s["name"] == scenario)
    page.server.api("POST", f"/api/scenarios/{scenario}")
    say = page.locator("[data-testid=caption-say]")
    expect()(say).to_be_visible(timeout=DEADLINE_MS)
    assert px(page, "[data-testid=caption-say]") >= MIN_CAPTION_PX
    expect()(say).to_be_in_viewport()
    page.screenshot(path=str(artifacts / f"presenter-{width}x{height}.png"))
    verdict = page.locator("[data-testid=caption-verdict]")
    expect()(verdict).to_have_text("✓ " + claim, timeout=DEADLINE_MS)
    assert px(page, "[data-testid=caption-verdict]") >= px(page, "[data-testid=caption-say]") >= MIN_CAPTION_PX
    expect()(verdict).to_be_in_viewport()
    if scenario == "audience-counter":  # the votes, a big running total on the map, all POPs agreeing
        total = page.locator("[data-testid=tally-value]")
        expect()(total).to_have_text("120", timeout=DEADLINE_MS)
        expect()(total).to_be_in_viewport()
        assert px(page, "[data-testid=tally-value]") >= 56
        expect()(page.locator("[data-testid=tally-note]")).to_have_text("at all 22 POPs")
    assert page.evaluate("document.documentElement.scrollHeight <= innerHeight")
    page.screenshot(path=str(artifacts / f"presenter-{width}x{height}-verdict.png"))
    assert page.errors == []


def test_f_turns_presenter_mode_on_and_off_and_it_survives_a_reconnect(make_page):
    page = open_dashboard(make_page, 1280, 720)
    assert label_px(page) < MIN_LABEL_PX  # the ordinary page: small labels, the toolbar
    expect()(page.locator("#toolbar")).to_be_visible()
    page.locator("body").press("f")
    page.wait_for_function("document.body.classList.contains('presenter')", timeout=DEADLINE_MS)
    expect()(page.locator("#toolbar")).to_be_hidden()
    assert "presenter=1" in page.url
    page.wait_for_function(  # Plotly drew the labels again, larger
        f"() => Math.min(...[...document.querySelectorAll('.scattergeo text')]"
        f".map(t => parseFloat(getComputedStyle(t).fontSize))) >= {MIN_LABEL_PX}", timeout=DEADLINE_MS)
    assert_inside(page, "#conv-chart")
    # the stream drops and the page dials again: still presenting
    page.evaluate("window.__edgestate.ws.close()")
    expect()(page.locator("#conn")).to_have_text("live", timeout=DEADLINE_MS)
    assert page.evaluate("document.body.classList.contains('presenter')")
    assert label_px(page) >= MIN_LABEL_PX
    # `?` lists F and →
    page.locator("body").press("?")
    keys = page.locator("[data-testid=keys-list]")
    expect()(keys).to_contain_text("presenter mode")
    expect()(keys).to_contain_text("→")
    page.keyboard.press("Escape")
    page.locator("body").press("f")
    page.wait_for_function("!document.body.classList.contains('presenter')", timeout=DEADLINE_MS)
    expect()(page.locator("#toolbar")).to_be_visible()
    page.wait_for_function(
        f"() => Math.min(...[...document.querySelectorAll('.scattergeo text')]"
        f".map(t => parseFloat(getComputedStyle(t).fontSize))) < {MIN_LABEL_PX}", timeout=DEADLINE_MS)
    assert "presenter" not in page.url
    assert page.errors == []


RECORD_CAPTIONS = """() => {
  const el = document.querySelector('[data-testid=caption-say]');
  const seen = window.__captionsSeen = [];
  const note = () => seen.push({text: el.hidden ? '' : el.textContent, t: performance.now()});
  new MutationObserver(note).observe(el, {childList: true, characterData: true, subtree: true, attributes: true});
  const v = document.querySelector('[data-testid=caption-verdict]');
  new MutationObserver(() => seen.push({verdict: v.textContent, t: performance.now()}))
    .observe(v, {childList: true, characterData: true, subtree: true});
}"""


def test_a_say_line_stays_on_screen_for_at_least_two_seconds(make_page):
    """hello-world's two `say` lines come within the same virtual instant (a write and a check
    between them take no time): each must still be up ≥ 2 s, and the verdict waits its turn."""
    page = open_dashboard(make_page)
    page.evaluate(RECORD_CAPTIONS)
    page.server.api("POST", "/api/scenarios/hello-world")
    expect()(page.locator("[data-testid=caption-verdict]")).to_contain_text("✓", timeout=DEADLINE_MS)
    seen = page.evaluate("window.__captionsSeen")
    says = [s for s in seen if "text" in s]
    first = [s for s in says if s["text"].startswith("London writes")]
    second = [s for s in says if s["text"].startswith("Now watch it")]
    assert first and second, seen
    shown = first[0]["t"]
    replaced = second[0]["t"]
    assert replaced - shown >= MIN_HOLD_MS, f"the first line was up {replaced - shown:.0f} ms: {seen}"
    verdict_at = next(s["t"] for s in seen if s.get("verdict", "").startswith("✓"))
    assert verdict_at - replaced >= MIN_HOLD_MS, f"the last line was up {verdict_at - replaced:.0f} ms"
    assert page.errors == []


# -- a scenario that waits for the presenter: its own server, with the presenter's own file ----------

PRESENTED = """\
name: presented
title: Presented
claim: Sydney counts to 3
steps:
  - say: {text: "Sydney adds 3 when you press the arrow.", wait: presenter, max_wait_s: 600}
  - write: {at: syd, counter: "c-{run}", add: 3}
  - settle: 3000
  - expect: {counter: "c-{run}", value: 3}
"""


@pytest.fixture(scope="module")
def presenting_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("presenting")
    f = d / "presented.yaml"
    f.write_text(PRESENTED)
    with serving(d / "serve.log", "--pops", "default", "--speed", str(SERVER_SPEED), "--scenario", str(f),
                 cls=LiveServer) as srv:
        yield srv


def test_the_right_arrow_advances_a_scenario_waiting_for_the_presenter(browser, presenting_server, artifacts):
    srv = presenting_server
    ctx = browser.new_context(viewport={"width": 1280, "height": 720}, service_workers="block")
    try:
        page = Page(ctx.new_page(), srv)
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.goto(srv.base_url + "/?presenter=1")
        page.wait_for_function("n => document.querySelectorAll('.scattergeo .point').length === n", arg=N_POPS,
                               timeout=DEADLINE_MS)
        expect()(page.locator("#conn")).to_have_text("live", timeout=DEADLINE_MS)
        run = srv.api("POST", "/api/scenarios/presented").json()
        say = page.locator("[data-testid=caption-say]")
        expect()(say).to_have_text("Sydney adds 3 when you press the arrow.", timeout=DEADLINE_MS)
        expect()(page.locator("[data-testid=scenario-status]")).to_have_class(
            "scenario-status lower-third lt-waiting", timeout=DEADLINE_MS)
        assert srv.api("GET", run["url"]).json()["waiting"] == "presenter"
        page.screenshot(path=str(artifacts / "presenter-waiting-for-next.png"))
        # it waits: the write has not happened, however often we look
        for _ in range(3):
            assert httpx.get(f"{srv.base_url}/api/replicas/syd/counters/c-{run['run']}").json()["value"] == 0
            assert srv.api("GET", run["url"]).json()["waiting"] == "presenter"
        # a reload while the run waits: the page asks the server, shows the line and → still works
        page.reload()
        page.wait_for_function("n => document.querySelectorAll('.scattergeo .point').length === n", arg=N_POPS,
                               timeout=DEADLINE_MS)
        expect()(say).to_have_text("Sydney adds 3 when you press the arrow.", timeout=DEADLINE_MS)
        assert page.evaluate("document.body.classList.contains('presenter')")
        page.locator("body").press("ArrowRight")
        done = page.wait_server("the run to end", lambda: (lambda r: r if r["status"] != "running" else None)(
            srv.api("GET", run["url"]).json()), deadline_s=DEADLINE_MS / 1000)
        assert done["status"] == "passed" and done["report"]["steps"][0]["presenter"] == "next"
        expect()(page.locator("[data-testid=caption-verdict]")).to_have_text("✓ Sydney counts to 3",
                                                                            timeout=DEADLINE_MS)
        expect()(page.locator("[data-testid=tally-value]")).to_have_text("3", timeout=DEADLINE_MS)
        assert page.errors == []
    finally:
        ctx.close()
