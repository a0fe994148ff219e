"""Scenarios over HTTP, run live on the app's cluster: list, start (202), progress and result,
404/409/422, the admin token, and the "scenario" events on the bus and on /ws.

The cluster runs on the real monotonic clock at the top speed (100x), so a scenario of a few
virtual seconds takes a few dozen wall milliseconds; tests wait for the run's status with a
deadline, never a fixed sleep.
"""

from __future__ import annotations

import time

import orjson
import pytest
from fastapi.testclient import TestClient

from app.dashboard.simulated import MAX_SPEED, build_live
from app.dashboard.server import create_app
from app.web.security import Settings
from live_helpers import is_error
from replication.geo import place_replicas, select_pops

pytestmark = pytest.mark.timeout(120)

DEADLINE_S = 30.0
TOKEN = "write-token-0123456789"
ADMIN = "admin-token-9876543210"


def make(pops: str = "default", settings: Settings | None = None):
    live = build_live(place_replicas(select_pops(pops)), seed=4, speed=MAX_SPEED, epoch_ms=1.7e12,
                      secret=b"scenario api test secret", clock=time.monotonic)
    return live, TestClient(create_app(live, settings=settings))


def wait_run(client, run_id: str) -> dict:
    end = time.monotonic() + DEADLINE_S
    while True:
        r = client.get(f"/api/scenarios/runs/{run_id}")
        assert r.status_code == 200, r.text
        run = r.json()
        if run["status"] != "running":
            return run
        assert time.monotonic() < end, f"run {run_id} still running: {run['caption']}"
        time.sleep(0.01)  # polling interval


def test_the_builtins_are_listed():
    _, client = make()
    with client:
        body = client.get("/api/scenarios").json()
    names = [s["name"] for s in body["scenarios"]]
    assert {"hello-world", "parallel-universes", "audience-counter", "atlantic-cut", "pop-dies",
            "coordination-tax"} <= set(names)
    assert all(s["title"] and s["description"] and s["claim"] for s in body["scenarios"])
    assert body["running"] is None


def test_a_scenario_runs_live_and_reports_its_claim():
    live, client = make()
    seen: list[dict] = []
    live.bus.subscribe(lambda ev: seen.append(ev) if ev["kind"] == "scenario" else None)
    with client:
        r = client.post("/api/scenarios/hello-world")
        assert r.status_code == 202, r.text
        started = r.json()
        assert started["status"] == "running" and started["url"] == f"/api/scenarios/runs/{started['run']}"
        assert r.headers["Location"] == started["url"]  # the 202's Location: where to follow it
        run = wait_run(client, started["run"])
    assert run["status"] == "passed", run
    assert run["report"]["passed"] is True and all(c["passed"] for c in run["report"]["checks"])
    assert run["caption"] == "✓ " + run["claim"]
    # progress went out on the bus, step by step, ending with the verdict
    assert [e["step"] for e in seen][:3] == [0, 1, 2]
    assert seen[-1]["status"] == "passed" and seen == run["events"]
    # the write really happened on this cluster, under the run's own key
    assert live.read("syd", "kv", f"hello-{started['run']}").values == ["hello, world"]


def test_a_second_run_uses_fresh_keys_and_passes_again():
    _, client = make("lhr,syd,jfk")
    with client:
        first = wait_run(client, client.post("/api/scenarios/hello-world").json()["run"])
        second = wait_run(client, client.post("/api/scenarios/hello-world").json()["run"])
    assert first["status"] == second["status"] == "passed"
    assert first["run"] != second["run"]


def test_one_at_a_time_409_while_running():
    live, client = make()
    with client:
        assert client.post("/api/sim/pause").status_code == 200  # virtual time stands still: the run waits
        r = client.post("/api/scenarios/parallel-universes")
        assert r.status_code == 202, r.text
        run_id = r.json()["run"]
        err = is_error(client.post("/api/scenarios/hello-world"), 409, "scenario_running")
        assert "parallel-universes" in err["message"] and run_id in err["message"]
        assert client.get("/api/scenarios").json()["running"] == run_id
        progress = client.get(f"/api/scenarios/runs/{run_id}").json()
        assert progress["status"] == "running" and progress["caption"] == "wait 600 ms"
        assert client.post("/api/sim/resume").status_code == 200
        run = wait_run(client, run_id)
        assert run["status"] == "passed", run["report"]["checks"]
        assert client.get("/api/scenarios").json()["running"] is None


def test_unknown_names_are_404():
    _, client = make()
    with client:
        err = is_error(client.post("/api/scenarios/no-such-thing"), 404, "unknown_scenario")
        assert "hello-world" in err["message"]
        is_error(client.get("/api/scenarios/runs/999"), 404, "unknown_run")
        assert client.get("/api/scenarios").json()["running"] is None


def test_a_scenario_for_other_pops_is_refused_with_its_line():
    live, client = make("lhr,syd,jfk")
    before = live.convergence()["digests"]
    with client:
        err = is_error(client.post("/api/scenarios/parallel-universes"), 422, "invalid_scenario")
    assert err["message"].startswith("parallel-universes.yaml:")
    assert "no replica 'iad'" in err["message"]
    assert live.convergence()["digests"] == before and not live.sim.partitioned


def test_a_crashing_run_fails_visibly_and_the_server_carries_on(monkeypatch):
    from app.dashboard import scenario_api

    async def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(scenario_api, "run_live", broken)
    _, client = make("lhr,syd,jfk")
    with client:
        run = wait_run(client, client.post("/api/scenarios/hello-world").json()["run"])
        assert run["status"] == "failed" and run["caption"].startswith("✗ ")
        assert client.get("/healthz").status_code == 200
        assert client.get("/api/scenarios").json()["running"] is None


# -- access control ----------------------------------------------------------------------------------


def test_starting_a_scenario_needs_the_admin_token():
    live, client = make("lhr,syd,jfk", Settings(token=TOKEN, admin_token=ADMIN))
    with client:
        assert client.get("/api/scenarios").status_code == 200  # reading the list is open
        for headers in (None, {"Authorization": f"Bearer {TOKEN}"}):
            r = client.post("/api/scenarios/hello-world", headers=headers)
            is_error(r, 401, "unauthorized")
        assert client.get("/api/scenarios").json()["running"] is None
        r = client.post("/api/scenarios/hello-world", headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 202, r.text
        assert wait_run(client, r.json()["run"])["status"] == "passed"


def test_with_only_a_write_token_scenarios_are_off():
    _, client = make("lhr,syd,jfk", Settings(token=TOKEN))
    with client:
        err = is_error(client.post("/api/scenarios/hello-world", headers={"Authorization": f"Bearer {TOKEN}"}),
                       403, "admin_disabled")
    assert "--admin-token" in err["message"]


# -- the live stream ---------------------------------------------------------------------------------


def test_scenario_events_reach_the_websocket():
    _, client = make("lhr,syd,jfk")
    with client, client.websocket_connect("/ws") as ws:
        assert orjson.loads(ws.receive_bytes())[0]["kind"] == "snapshot"
        assert client.post("/api/scenarios/hello-world").status_code == 202
        scenario: list[dict] = []
        for _ in range(2000):
            scenario += [e for e in orjson.loads(ws.receive_bytes()) if e["kind"] == "scenario"]
            if scenario and scenario[-1]["status"] != "running":
                break
    assert scenario[-1]["status"] == "passed" and scenario[-1]["caption"].startswith("✓ ")
    first = scenario[0]
    assert {"name", "run", "step", "of", "caption", "status", "t"} <= set(first)
    assert first["name"] == "hello-world"
    checks = [e["check"] for e in scenario if "check" in e]
    assert checks and all(c["passed"] for c in checks)


# -- the presenter's own files ---------------------------------------------------------------------


MINE = """\
name: my-talk
title: My talk
claim: Sydney counts to 3
steps:
  - write: {at: syd, counter: "c-{run}", add: 3}
  - settle: 2000
  - expect: {counter: "c-{run}", value: 3}
"""


def test_a_presenters_file_is_listed_and_runs(tmp_path):
    from replication.scenarios import Catalogue

    f = tmp_path / "mine.yaml"
    f.write_text(MINE)
    live = build_live(place_replicas(select_pops("lhr,syd,jfk")), seed=4, speed=MAX_SPEED, epoch_ms=1.7e12,
                      secret=b"scenario api test secret", clock=time.monotonic)
    client = TestClient(create_app(live, scenarios=Catalogue.with_files([f], live.ids)))
    with client:
        listed = {s["name"]: s for s in client.get("/api/scenarios").json()["scenarios"]}
        assert listed["my-talk"]["title"] == "My talk" and "hello-world" in listed
        run = wait_run(client, client.post("/api/scenarios/my-talk").json()["run"])
    assert run["status"] == "passed" and run["caption"] == "✓ Sydney counts to 3"


def test_serve_refuses_a_malformed_scenario_file_naming_its_line(tmp_path):
    import subprocess

    from serving import REPO, edgestate_cmd

    f = tmp_path / "mine.yaml"
    f.write_text(MINE.replace("add: 3}", "add: three}"))
    p = subprocess.run(edgestate_cmd("serve", "--port", "0", "--scenario", str(f)), cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2
    assert f"{f}:5: step 1 (write)" in p.stderr and "whole number" in p.stderr
    f.write_text(MINE)
    p = subprocess.run(edgestate_cmd("serve", "--port", "0", "--pops", "lhr,jfk", "--scenario", str(f)), cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and f"{f}:5:" in p.stderr and "no replica 'syd'" in p.stderr


def test_a_running_scenario_can_be_stopped():
    _, client = make("default")
    with client:
        client.post("/api/sim/pause")
        run_id = client.post("/api/scenarios/pop-dies").json()["run"]
        r = client.delete(f"/api/scenarios/runs/{run_id}")
        assert r.status_code == 200, r.text
        run = r.json()
        assert run["status"] == "cancelled" and run["report"] is None
        assert run["events"][-1]["status"] == "cancelled" and run["caption"].startswith("stopped before checking")
        assert client.get("/api/scenarios").json()["running"] is None
        assert client.delete(f"/api/scenarios/runs/{run_id}").json()["status"] == "cancelled"  # idempotent
        is_error(client.delete("/api/scenarios/runs/77"), 404, "unknown_run")
        # and the next one runs
        client.post("/api/sim/resume")
        assert wait_run(client, client.post("/api/scenarios/hello-world").json()["run"])["status"] == "passed"
