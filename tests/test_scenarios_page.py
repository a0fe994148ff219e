"""Scenarios from the page, in a real browser: pick one, run it, watch its captions, see ✓ and the claim.

Waits are Playwright conditions with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import time

import pytest

from test_page import DEADLINE_MS, expect, open_dashboard, select_pop

pytestmark = pytest.mark.timeout(180)


def test_the_page_runs_hello_world_and_shows_its_claim_checked(make_page, artifacts):
    page = open_dashboard(make_page)
    scenarios = page.server.api("GET", "/api/scenarios").json()["scenarios"]
    hello = next(s for s in scenarios if s["name"] == "hello-world")
    select = page.locator("[data-testid=scenario-select]")
    # the picker is filled from the API, one option per scenario
    expect()(select.locator("option")).to_have_count(len(scenarios), timeout=DEADLINE_MS)
    select.select_option("hello-world")
    page.click("[data-testid=scenario-run]")
    status = page.locator("[data-testid=scenario-status]")
    expect()(status).to_be_visible(timeout=DEADLINE_MS)
    expect()(status).to_have_text("✓ " + hello["claim"], timeout=DEADLINE_MS)
    expect()(page.locator("[data-testid=scenario-run]")).to_have_text("Run", timeout=DEADLINE_MS)
    # the steps went by in the event log, with the check that proved the claim
    log = page.locator("[data-testid=log]")
    expect()(log).to_contain_text("Hello, world: lhr writes", timeout=DEADLINE_MS)
    expect()(log).to_contain_text("✓ every POP has it within 500 ms", timeout=DEADLINE_MS)
    page.locator(".map-card").screenshot(path=str(artifacts / "scenario-hello-world.png"))
    page.locator("#toolbar").screenshot(path=str(artifacts / "scenario-toolbar.png"))
    assert page.errors == []
    assert page.foreign == []


def test_stop_ends_a_running_scenario(make_page):
    page = open_dashboard(make_page)
    page.server.api("POST", "/api/sim/pause")  # virtual time stands still: the run waits at its first wait
    page.locator("[data-testid=scenario-select]").select_option("pop-dies")
    button = page.locator("[data-testid=scenario-run]")
    button.click()
    status = page.locator("[data-testid=scenario-status]")
    expect()(status).to_contain_text("wait 500 ms", timeout=DEADLINE_MS)
    expect()(button).to_have_text("Stop")
    button.click()
    expect()(status).to_contain_text("stopped before checking", timeout=DEADLINE_MS)
    expect()(button).to_have_text("Run", timeout=DEADLINE_MS)
    assert page.server.api("GET", "/api/scenarios").json()["running"] is None
    assert page.errors == []


def test_a_scenario_started_elsewhere_shows_on_the_page(make_page):
    page = open_dashboard(make_page)
    started = page.server.api("POST", "/api/scenarios/audience-counter").json()
    claim = next(s["claim"] for s in page.server.api("GET", "/api/scenarios").json()["scenarios"]
                 if s["name"] == "audience-counter")
    status = page.locator("[data-testid=scenario-status]")
    expect()(status).to_have_text("✓ " + claim, timeout=DEADLINE_MS)
    run = page.server.api("GET", started["url"]).json()
    assert run["status"] == "passed"
    assert page.errors == []


def test_the_picker_defaults_to_hello_world_and_follows_a_run_started_over_http(make_page):
    page = open_dashboard(make_page)
    select = page.locator("[data-testid=scenario-select]")
    expect()(select).to_have_value("hello-world", timeout=DEADLINE_MS)
    page.server.api("POST", "/api/sim/pause")  # the run waits at its first wait: the picker shows it meanwhile
    run = page.server.api("POST", "/api/scenarios/pop-dies").json()
    expect()(select).to_have_value("pop-dies", timeout=DEADLINE_MS)
    page.server.api("DELETE", run["url"])
    assert page.errors == []


def test_reset_empties_the_keyspace_shown_in_the_panel(make_page):
    page = open_dashboard(make_page)
    select_pop(page, "lhr")
    key = f"before-reset-{time.monotonic_ns()}"
    page.server.api("PUT", f"/api/replicas/lhr/kv/{key}", json={"value": "old"})
    page.server.api("POST", "/api/faults/partition", json={"groups": [["lhr"]]})
    row = page.locator("[data-testid=kv-row]", has_text=key)
    expect()(row).to_be_visible(timeout=DEADLINE_MS)
    expect()(page.locator("[data-testid=log]")).to_contain_text(key, timeout=DEADLINE_MS)
    expect()(page.locator("#partition-banner")).to_be_visible(timeout=DEADLINE_MS)
    asked: list[str] = []
    page.on("dialog", lambda d: (asked.append(d.message), d.accept()))
    page.click("[data-testid=reset]")
    expect()(row).to_have_count(0, timeout=DEADLINE_MS)
    assert asked and "Reset" in asked[0]
    log = page.locator("[data-testid=log]")
    expect()(log).to_contain_text("the cluster was reset", timeout=DEADLINE_MS)
    expect()(log).not_to_contain_text(key)
    expect()(page.locator("#partition-banner")).to_be_hidden(timeout=DEADLINE_MS)
    assert page.errors == []
