"""Scenarios told to a hall (issue 15): a `say` that waits for the presenter's → (bounded), the
hold between map changes, and the running total of the counter or set a scenario is about.

Live runs use the top speed on the real monotonic clock; tests wait for a run's state with a
deadline (`waiting.wait_for`), never a fixed sleep. The bound on the presenter's wait is a
lower bound on a wall time: a slow machine only makes the run wait longer, never shorter.
"""

from __future__ import annotations

import textwrap
import time

import pytest
from fastapi.testclient import TestClient

from app.dashboard.server import create_app
from app.dashboard.simulated import MAX_SPEED, build_live
from app.web.security import Settings
from live_helpers import is_error
from replication.geo import place_replicas, select_pops
from replication.scenarios import Catalogue, ScenarioError, load_builtin, parse, run_fast
from waiting import wait_for

pytestmark = pytest.mark.timeout(120)

MAP_HOLD_MS = 500.0  # what the README promises between two changes of the map (virtual ms)
ADMIN = "admin-token-9876543210"
TOKEN = "write-token-0123456789"

PRESENTED = """\
name: presented
title: Presented
claim: Sydney counts to 3
steps:
  - say: {{text: "Sydney adds 3. Press → when the hall is ready.", wait: presenter{extra}}}
  - write: {{at: syd, counter: "c-{{run}}", add: 3}}
  - settle: 2000
  - expect: {{counter: "c-{{run}}", value: 3}}
"""


def client_for(text: str, settings: Settings | None = None):
    live = build_live(place_replicas(select_pops("lhr,syd,jfk")), seed=4, speed=MAX_SPEED, epoch_ms=1.7e12,
                      secret=b"presenting test secret", clock=time.monotonic)
    s = parse(text, "presented.yaml")
    cat = Catalogue.builtin()
    cat.scenarios[s.name] = s
    return live, TestClient(create_app(live, settings=settings, scenarios=cat))


def run_of(client, run_id: str, headers=None) -> dict:
    r = client.get(f"/api/scenarios/runs/{run_id}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def ended(client, run_id: str) -> dict:
    return wait_for(f"run {run_id} to end", lambda: (lambda r: r if r["status"] != "running" else None)(
        run_of(client, run_id)), deadline_s=30)


# -- the presenter's → -------------------------------------------------------------------------------


def test_a_say_that_waits_for_the_presenter_goes_on_at_next_and_only_then():
    live, client = client_for(PRESENTED.format(extra=""))
    with client:
        run_id = client.post("/api/scenarios/presented").json()["run"]
        waiting = wait_for("the run to wait for the presenter", lambda: (lambda r: r if r["waiting"] else None)(
            run_of(client, run_id)), deadline_s=30)
        assert waiting["status"] == "running" and waiting["caption"].startswith("Sydney adds 3")
        assert waiting["events"][-1]["waiting"] == "presenter" and waiting["events"][-1]["say"] is True
        # the run holds there: asked again and again, it still waits and the next step has not happened
        for _ in range(5):
            assert run_of(client, run_id)["waiting"] == "presenter"
        assert live.read("syd", "counters", f"c-{run_id}") == 0
        r = client.post(f"/api/scenarios/runs/{run_id}/next")
        assert r.status_code == 200, r.text
        run = ended(client, run_id)
        assert run["status"] == "passed", run
        assert run["report"]["steps"][0]["presenter"] == "next"
        assert any(e.get("waited") == "next" for e in run["events"])
        # once it went on there is nothing to advance: a clear 409, nothing changes
        is_error(client.post(f"/api/scenarios/runs/{run_id}/next"), 409, "not_waiting")
        is_error(client.post("/api/scenarios/runs/999/next"), 404, "unknown_run")


def test_the_presenters_wait_is_bounded_the_run_goes_on_by_itself():
    _, client = client_for(PRESENTED.format(extra=", max_wait_s: 0.3"))
    with client:
        started = time.monotonic()
        run_id = client.post("/api/scenarios/presented").json()["run"]
        run = ended(client, run_id)
        took = time.monotonic() - started
    assert run["status"] == "passed", run
    assert run["report"]["steps"][0]["presenter"] == "timeout"
    assert any(e.get("waited") == "timeout" and "no → from the presenter in 0.3 s" in e["caption"]
               for e in run["events"])
    assert took >= 0.3, f"the run went on after {took:.2f} s, before its max_wait_s"  # a lower bound: not flaky


def test_a_run_waiting_for_the_presenter_can_be_stopped():
    _, client = client_for(PRESENTED.format(extra=""))
    with client:
        run_id = client.post("/api/scenarios/presented").json()["run"]
        wait_for("the wait", lambda: run_of(client, run_id)["waiting"], deadline_s=30)
        r = client.delete(f"/api/scenarios/runs/{run_id}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["waiting"] is None
        assert client.get("/api/scenarios").json()["running"] is None


def test_next_needs_the_admin_token():
    _, client = client_for(PRESENTED.format(extra=""), Settings(token=TOKEN, admin_token=ADMIN))
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with client:
        run_id = client.post("/api/scenarios/presented", headers=admin).json()["run"]
        wait_for("the wait", lambda: run_of(client, run_id)["waiting"], deadline_s=30)
        for headers in (None, {"Authorization": f"Bearer {TOKEN}"}):
            is_error(client.post(f"/api/scenarios/runs/{run_id}/next", headers=headers), 401, "unauthorized")
        assert run_of(client, run_id)["waiting"] == "presenter"
        assert client.post(f"/api/scenarios/runs/{run_id}/next", headers=admin).status_code == 200
        assert ended(client, run_id)["status"] == "passed"


def test_a_fast_run_never_waits_for_a_presenter():
    report = run_fast(parse(PRESENTED.format(extra=""), "presented.yaml"))
    assert report["passed"] and report["steps"][0]["presenter"] == "none"


@pytest.mark.parametrize("say, line, fragment", [
    ('{text: hi, wait: forever}', 4, "field 'wait' must be one of presenter, got 'forever'"),
    ('{text: hi, max_wait_s: 5}', 4, "'max_wait_s' bounds a `wait: presenter`"),
    ('{text: hi, wait: presenter, max_wait_s: 7200}', 4, "must be at most 1800"),
    ('{text: hi, wait: presenter, max_wait_s: 0}', 4, "a positive number"),
])
def test_a_bad_presenter_wait_is_refused_at_its_line(say, line, fragment):
    text = textwrap.dedent(f"""\
        name: x
        claim: y
        steps:
          - say: {say}
          - expect: {{converged: true}}
        """)
    with pytest.raises(ScenarioError) as info:
        parse(text, "my.yaml")
    assert info.value.line == line and fragment in str(info.value), str(info.value)


# -- every state of the map is seen --------------------------------------------------------------------


def _events(name: str) -> list[dict]:
    events: list[dict] = []
    report = run_fast(load_builtin(name), seed=0, on_event=events.append)
    assert report["passed"], report["checks"]
    return events


def test_the_americas_cut_stays_on_the_map_before_the_heal():
    events = _events("coordination-tax")
    cut = next(e for e in events if e["op"] == "partition")
    heal = [e for e in events if e["op"] == "heal" and e["t"] > cut["t"] - 1e-9 and e["step"] > cut["step"]][0]
    assert heal["t"] - cut["t"] >= MAP_HOLD_MS, (cut["t"], heal["t"])


@pytest.mark.parametrize("name", ["parallel-universes", "pop-dies", "atlantic-cut", "coordination-tax"])
def test_map_changes_are_at_least_the_hold_apart_and_the_opening_heal_costs_nothing(name):
    events = _events(name)
    first = next(e for e in events if e["step"])
    start = events[0]["t"]
    assert first["t"] == start  # a heal with nothing cut changes nothing: no hold before the story starts
    changes = []
    for e in events:
        if e["op"] in ("partition", "heal", "crash", "recover") and e["status"] == "running" and e["step"] not in [
                c["step"] for c in changes]:
            changes.append(e)
    visible = [c for c in changes if c["t"] > start or c["op"] == "partition"]
    for a, b in zip(visible, visible[1:]):
        assert b["t"] - a["t"] >= MAP_HOLD_MS - 1e-6, (a, b)


# -- the running total ----------------------------------------------------------------------------------


def test_every_event_of_a_counter_scenario_carries_its_running_total():
    events = _events("audience-counter")
    tallies = [e["tally"] for e in events]
    assert all(t["type"] == "counter" and t["key"] == "votes-1" for t in tallies)
    last = tallies[-1]
    assert last == {"type": "counter", "key": "votes-1", "pops": 22, "min": 120, "max": 120, "agree": True}
    assert tallies[0]["max"] == 0


def test_a_set_scenarios_total_counts_its_members():
    last = _events("atlantic-cut")[-1]["tally"]
    assert last["type"] == "set" and last["min"] == last["max"] == 2 and last["agree"]
    assert sorted(last["members"]) == ["Ashburn", "London"] and last["more"] == 0


def test_a_register_scenario_has_no_total():
    assert all("tally" not in e for e in _events("hello-world"))


LOADED = """\
name: loaded
claim: 20 votes counted
steps:
  - load: {writes: 20, counter: "v-{run}", rate_per_s: 10, as: votes}
  - settle: {within_ms: 5000, as: counted}
  - expect: {counter: "v-{run}", value: 20}
"""


def test_a_live_run_sends_its_total_as_the_counter_converges():
    live, client = client_for(LOADED)
    seen: list[dict] = []
    live.bus.subscribe(lambda ev: seen.append(ev) if ev["kind"] == "scenario" else None)
    with client:
        assert client.put("/api/sim/speed", json={"speed": 1}).status_code == 200  # two wall seconds of load
        run_id = client.post("/api/scenarios/loaded").json()["run"]
        run = ended(client, run_id)
    assert run["status"] == "passed", run
    ticks = [e["tally"] for e in seen if e.get("tally_only")]
    assert len({t["max"] for t in ticks}) >= 2, f"the total did not follow the load: {ticks}"
    assert all(t["key"] == f"v-{run_id}" for t in ticks)
    assert [t["max"] for t in ticks] == sorted(t["max"] for t in ticks)  # a counter only grows here
    assert seen[-1]["tally"] == {"type": "counter", "key": f"v-{run_id}", "pops": 3, "min": 20, "max": 20,
                                 "agree": True}
    assert not any(e.get("tally_only") for e in run["events"])  # totals go to the stream, not the run's record
