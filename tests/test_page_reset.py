"""Reset from the page (issue 15): the button asks first; confirmed, the cluster starts again with
the same POPs and no keys, and the page follows the new run. Dismissed, nothing happens."""

from __future__ import annotations

import pytest

from test_page_keys import DEADLINE_MS, expect, open_dashboard

pytestmark = pytest.mark.timeout(180)


def key_count(srv, rid: str) -> int:
    return sum(len(srv.api("GET", f"/api/replicas/{rid}/{ns}").json()["keys"]) for ns in ("kv", "counters", "sets", "maps"))


def test_the_reset_button_asks_then_empties_the_keyspace(make_page):
    page = open_dashboard(make_page)
    srv = page.server  # shared with other page tests: it may hold their keys too
    ours = [f"reset-{i}" for i in range(3)]
    for k in ours:
        assert srv.api("POST", f"/api/replicas/lhr/counters/{k}", json={"add": 1}).status_code == 200
    page.select_option("#pop-select", "lhr")
    n = key_count(srv, "lhr")
    assert n >= 3
    expect()(page.locator("#pop-meta")).to_contain_text(f"{n} keys", timeout=DEADLINE_MS)

    page.once("dialog", lambda d: d.dismiss())  # asked, and the presenter says no
    page.click("[data-testid=reset]")
    assert set(ours) <= set(srv.api("GET", "/api/replicas/lhr/counters").json()["keys"])

    asked = []
    page.once("dialog", lambda d: (asked.append(d.message), d.accept()))
    page.click("[data-testid=reset]")
    expect()(page.locator("#pop-meta")).to_contain_text("0 keys", timeout=DEADLINE_MS)
    assert asked and "Reset the cluster" in asked[0]
    for rid in ("lhr", "syd"):
        assert srv.api("GET", f"/api/replicas/{rid}/counters").json()["keys"] == []
    expect()(page.locator("#log")).to_contain_text("the cluster was reset", timeout=DEADLINE_MS)
