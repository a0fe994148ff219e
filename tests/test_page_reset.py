"""Reset from the page (issue 15): the button asks first; confirmed, the cluster starts again with
the same POPs and no keys, and the page follows the new run. Dismissed, nothing happens."""

from __future__ import annotations

import pytest

from test_page_keys import DEADLINE_MS, expect, open_dashboard

pytestmark = pytest.mark.timeout(180)


def test_the_reset_button_asks_then_empties_the_keyspace(make_page):
    page = open_dashboard(make_page)
    srv = page.server
    for i in range(3):
        assert srv.api("POST", f"/api/replicas/lhr/counters/reset-{i}", json={"add": 1}).status_code == 200
    page.select_option("#pop-select", "lhr")
    expect()(page.locator("#pop-meta")).to_contain_text("3 keys", timeout=DEADLINE_MS)

    page.once("dialog", lambda d: d.dismiss())  # asked, and the presenter says no
    page.click("[data-testid=reset]")
    assert srv.api("GET", "/api/replicas/lhr/counters").json()["keys"] == [f"reset-{i}" for i in range(3)]

    asked = []
    page.once("dialog", lambda d: (asked.append(d.message), d.accept()))
    page.click("[data-testid=reset]")
    expect()(page.locator("#pop-meta")).to_contain_text("0 keys", timeout=DEADLINE_MS)
    assert asked and "Reset the cluster" in asked[0]
    for rid in ("lhr", "syd"):
        assert srv.api("GET", f"/api/replicas/{rid}/counters").json()["keys"] == []
    expect()(page.locator("#log")).to_contain_text("the cluster was reset", timeout=DEADLINE_MS)
