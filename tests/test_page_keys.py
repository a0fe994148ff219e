"""The page's keyboard (app/dashboard/static/js/keys.js) in a real browser.

Space freezes the view and never re-fires the focused button; keys are text while typing; `?`
lists the keys, Esc closes the list; A cuts the Atlantic and H heals.

"Nothing was sent" is checked against every request the page made, in order: after the key, the
page fetches a sentinel URL, and once the sentinel is seen every request made before it is too.
Waits are conditions with deadlines (`expect`, `wait_for_function`), never fixed sleeps.
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.timeout(180)

DEADLINE_MS = 20_000
N_POPS = 22


def expect():
    from playwright.sync_api import expect as _expect

    return _expect


def open_dashboard(make_page, session: str | None = None):
    page = make_page()
    if session is not None:
        page.route("**/api/session", lambda route: route.fulfill(status=200, content_type="application/json", body=session))
    sent: list[tuple[str, str]] = []  # (method, path) of every request the page makes, in order
    page.on("request", lambda r: sent.append((r.method, r.url.split(page.server.host, 1)[-1])))
    page.sent = sent
    page.goto(page.server.base_url + "/")
    page.wait_for_function(
        "n => document.querySelectorAll('.scattergeo .point').length === n", arg=N_POPS, timeout=DEADLINE_MS)
    expect()(page.locator("#conn")).to_have_text("live", timeout=DEADLINE_MS)
    expect()(page.locator("[data-testid=timeline-mode]")).to_have_text("Live", timeout=DEADLINE_MS)
    return page


def settle(page) -> list[tuple[str, str]]:
    """Every request the page made so far: a sentinel fetched now arrives after all of them."""
    tag = f"/healthz?sentinel={time.monotonic_ns()}"
    with page.expect_request(lambda r: tag in r.url, timeout=DEADLINE_MS):
        page.evaluate("u => fetch(u).then(r => r.status)", tag)
    return list(page.sent)


def count(sent, method: str, part: str) -> int:
    return sum(1 for m, p in sent if m == method and part in p)


def view_frozen(page) -> None:
    expect()(page.locator("[data-testid=timeline-mode]")).to_have_text("Replay", timeout=DEADLINE_MS)
    expect()(page.locator("[data-testid=timeline-play]")).to_have_text("▶ Play")


def test_space_on_a_focused_heal_button_freezes_the_view_and_heals_nothing(make_page):
    page = open_dashboard(make_page)
    play = page.locator("[data-testid=timeline-play]")
    expect()(play).to_have_text("❚❚ Freeze view")  # the view's, told apart from the simulation's
    expect()(page.locator("[data-testid=pause]")).to_have_text("Pause simulation")
    page.click("[data-testid=cut-atlantic]")
    expect()(page.locator("#partition-banner")).to_be_visible(timeout=DEADLINE_MS)
    page.click("[data-testid=heal]")  # the presenter heals; the focus stays on Heal
    expect()(page.locator("#partition-banner")).to_be_hidden(timeout=DEADLINE_MS)
    assert page.evaluate("document.activeElement.dataset.testid") == "heal"
    assert count(settle(page), "DELETE", "/api/faults/partition") == 1
    page.keyboard.press("Space")
    view_frozen(page)
    sent = settle(page)
    assert count(sent, "DELETE", "/api/faults/partition") == 1, f"space re-fired Heal: {sent}"
    assert [r for r in sent if r[0] != "GET"] == [("POST", "/api/faults/partition"), ("DELETE", "/api/faults/partition")]
    # space again plays the view on (a replay at the recorded pace); Live jumps to the cluster
    page.keyboard.press("Space")
    expect()(play).to_have_text("❚❚ Freeze view", timeout=DEADLINE_MS)
    assert page.evaluate("window.__edgestate.timeline.playing") is True
    page.click("[data-testid=timeline-live]")
    expect()(page.locator("[data-testid=timeline-mode]")).to_have_text("Live", timeout=DEADLINE_MS)
    assert page.server.api("GET", "/api/sim").json()["paused"] is False  # the view's pause, never the cluster's
    assert page.errors == []


def test_space_after_write_writes_nothing_and_types_a_space_in_the_form(make_page):
    page = open_dashboard(make_page)
    page.select_option("#pop-select", "lhr")
    expect()(page.locator("#pop-title")).to_contain_text("lhr", timeout=DEADLINE_MS)
    key = f"keys-{time.monotonic_ns()}"
    page.fill("#write-key", key)
    page.fill("#write-value", "hello")
    page.click("#write-submit")
    expect()(page.locator("#write-result")).not_to_be_empty(timeout=DEADLINE_MS)
    assert count(settle(page), "PUT", "/kv/") == 1
    page.keyboard.press("Space")  # the focus is on Write
    view_frozen(page)
    assert count(settle(page), "PUT", "/kv/") == 1, "space re-fired Write"
    # typing in the value field: a space is a space, and the view stays as it is
    page.click("[data-testid=timeline-live]")  # back to live
    expect()(page.locator("[data-testid=timeline-mode]")).to_have_text("Live", timeout=DEADLINE_MS)
    page.focus("#write-value")
    page.keyboard.press("End")
    page.keyboard.type(" world")
    expect()(page.locator("#write-value")).to_have_value("hello world")
    # letters and ? in the key field are text too: no cut, no heal, no overlay
    page.focus("#write-key")
    page.keyboard.type(" ah?")
    expect()(page.locator("#write-key")).to_have_value(key + " ah?")
    assert page.evaluate("window.__edgestate.timeline.mode") == "live"  # the spaces typed froze nothing
    expect()(page.locator("[data-testid=keys-overlay]")).to_be_hidden()
    assert count(settle(page), "POST", "/api/faults/partition") == 0
    assert count(page.sent, "DELETE", "/api/faults/partition") == 0
    assert page.errors == []


def test_keys_cut_heal_and_the_overlay_lists_them(make_page, artifacts):
    page = open_dashboard(make_page)
    page.evaluate("document.activeElement && document.activeElement.blur()")
    overlay = page.locator("[data-testid=keys-overlay]")
    expect()(overlay).to_be_hidden()
    page.keyboard.press("?")
    expect()(overlay).to_be_visible()
    text = page.locator("[data-testid=keys-list]").inner_text()
    for want in ("Space", "freeze the view", "A", "cut the Atlantic", "P", "cut the Pacific", "H", "heal", "Esc"):
        assert want in text, f"{want!r} not in the overlay: {text!r}"
    assert "reset: a fresh cluster" in text  # the simulated server has POST /api/reset: R is offered
    page.screenshot(path=str(artifacts / "keys-overlay.png"))
    page.keyboard.press("Escape")
    expect()(overlay).to_be_hidden()
    # with Ctrl held a letter is the browser's: nothing is cut
    page.keyboard.press("Control+a")
    assert count(settle(page), "POST", "/api/faults/partition") == 0
    # A: the Atlantic cut, the same groups as the server's own
    page.keyboard.press("a")
    expect()(page.locator("#partition-banner")).to_be_visible(timeout=DEADLINE_MS)
    same = page.wait_for_function("""() => { const S = window.__edgestate, norm = (gs) => JSON.stringify(
        gs.map((g) => [...g].sort()).filter((g) => g.length).sort());
        return S.groups && norm(S.groups) === norm(S.cuts.named.atlantic); }""", timeout=DEADLINE_MS)
    assert same
    # H heals
    page.keyboard.press("h")
    expect()(page.locator("#partition-banner")).to_be_hidden(timeout=DEADLINE_MS)
    expect()(page.locator("[data-testid=convergence]")).to_have_text("converged", timeout=DEADLINE_MS)
    sent = settle(page)
    assert count(sent, "POST", "/api/faults/partition") == 1 and count(sent, "DELETE", "/api/faults/partition") == 1
    assert page.errors == []


def test_without_admin_rights_the_fault_keys_do_nothing(make_page):
    page = open_dashboard(make_page, session='{"can_write": true, "can_admin": false, "audience": true}')
    expect()(page.locator("#toolbar")).to_be_hidden(timeout=DEADLINE_MS)
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press("?")
    text = page.locator("[data-testid=keys-list]").inner_text()
    assert "Space" in text and "cut the" not in text and "heal" not in text, text
    page.keyboard.press("Escape")
    page.keyboard.press("a")
    page.keyboard.press("h")
    sent = settle(page)
    assert count(sent, "POST", "/api/faults/partition") == 0 and count(sent, "DELETE", "/api/faults/partition") == 0
    # space still freezes this page's view: that is the viewer's own
    page.keyboard.press("Space")
    view_frozen(page)
    assert page.errors == []
