"""`POST /api/reset`: a fresh cluster with the same replicas, over HTTP and on /ws.

Most tests move the cluster's clock by hand (`FakeClock`), so what a reset clears is checked at
every replica without waiting. The scenario test runs on the monotonic clock at the top speed
and pauses virtual time so the run is still going when the reset comes.
"""

from __future__ import annotations

import gc
import time
import weakref

import orjson
import pytest
from fastapi.testclient import TestClient

from app.dashboard.server import create_app
from app.dashboard.simulated import MAX_SPEED, build_live
from app.web.gc_steward import GcSteward
from app.web.security import Settings
from live_helpers import FakeClock, is_error, make_client, make_live, ok, snapshot
from replication.errors import NotWithProcesses
from replication.geo import place_replicas, select_pops

pytestmark = pytest.mark.timeout(120)

IDS = ["lhr", "syd", "jfk"]
TOKEN = "write-token-0123456789"
ADMIN = "admin-token-9876543210"


def kv(replica: str, key: str) -> str:
    return f"/api/replicas/{replica}/kv/{key}"


def test_reset_empties_the_keyspace_at_every_replica():
    clock = FakeClock()
    live = make_live(",".join(IDS), clock=clock)
    with make_client(live) as client:
        ok(client.put(kv("lhr", "greeting"), json={"value": "hello"}))
        assert live.settle()
        for rid in IDS:
            assert ok(client.get(kv(rid, "greeting")))["values"] == ["hello"]
        r = ok(client.post("/api/reset"))
        assert r["stopped_run"] is None
        for rid in IDS:
            is_error(client.get(kv(rid, "greeting")), 404, "not_found")
        states = ok(client.get("/api/replicas"))["replicas"]
        assert [s["id"] for s in states] == IDS
        assert all(s["status"] == "up" and s["version_vector"] == {} and s["incarnation"] == 0 for s in states)
        assert len({s["digest"] for s in states}) == 1
        assert ok(client.get("/api/sim"))["now_ms"] == 0.0
        # nothing written before comes back once the new cluster runs
        clock.advance(2.0)
        for rid in IDS:
            is_error(client.get(kv(rid, "greeting")), 404, "not_found")
        assert live.last_writes.report("lhr", IDS) is None  # the coordination panel's last write went too
        assert ok(client.get("/api/coordination"))  # and the panel still answers
        # the fresh cluster takes writes as the first one did
        ok(client.put(kv("syd", "greeting"), json={"value": "again"}))
        assert live.settle()
        assert ok(client.get(kv("jfk", "greeting")))["values"] == ["again"]


def test_reset_clears_faults_and_puts_the_settings_back():
    live = make_live(",".join(IDS), clock=FakeClock())
    with make_client(live) as client:
        start = ok(client.get("/api/sim"))
        ok(client.post("/api/faults/partition", json={"groups": [["lhr"], ["syd"]]}))
        ok(client.post("/api/replicas/jfk/crash", json={"lose_state": True}))
        ok(client.put("/api/sim/strategy", json={"strategy": "gossip"}))
        ok(client.put("/api/sim/loss", json={"loss": 0.3}))
        ok(client.put("/api/sim/speed", json={"speed": 5.0}))
        ok(client.post("/api/sim/pause"))
        assert live.partition_groups() and live.down() == ["jfk"]

        sim = ok(client.post("/api/reset"))["sim"]
        assert live.partition_groups() is None and live.down() == []
        assert {k: sim[k] for k in ("strategy", "loss", "speed", "paused")} == \
               {k: start[k] for k in ("strategy", "loss", "speed", "paused")}
        assert ok(client.get("/api/convergence"))["converged"] is True
        assert all(s["status"] == "up" for s in ok(client.get("/api/replicas"))["replicas"])


def test_reset_needs_the_admin_token():
    live = make_live(",".join(IDS), clock=FakeClock())
    with make_client(live, Settings(token=TOKEN, admin_token=ADMIN)) as client:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        ok(client.put(kv("lhr", "k"), json={"value": 1}, headers=auth))
        before = snapshot(live)
        is_error(client.post("/api/reset"), 401, "unauthorized")
        is_error(client.post("/api/reset", headers=auth), 401, "unauthorized")
        assert snapshot(live) == before
        ok(client.post("/api/reset", headers={"Authorization": f"Bearer {ADMIN}"}))
        is_error(client.get(kv("lhr", "k")), 404, "not_found")


def test_with_only_a_write_token_reset_is_off():
    live = make_live(",".join(IDS), clock=FakeClock())
    with make_client(live, Settings(token=TOKEN)) as client:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        ok(client.put(kv("lhr", "k"), json={"value": 1}, headers=auth))
        is_error(client.post("/api/reset", headers=auth), 403, "admin_disabled")
        assert ok(client.get(kv("lhr", "k")))["values"] == [1]


def test_a_cluster_that_refuses_answers_409_and_changes_nothing(monkeypatch):
    """What ProcessLive answers (its refusal is held by tests/test_contract.py)."""
    live = make_live(",".join(IDS), clock=FakeClock())

    async def refuse():
        raise NotWithProcesses("reset is a control of the simulator; these replicas are real processes")

    monkeypatch.setattr(live, "reset", refuse)
    with make_client(live) as client:
        ok(client.put(kv("lhr", "k"), json={"value": 1}))
        before = snapshot(live)
        is_error(client.post("/api/reset"), 409, "not_supported_with_processes")
        assert snapshot(live) == before


def test_a_running_scenario_is_stopped_first():
    live = build_live(place_replicas(select_pops("default")), seed=4, speed=MAX_SPEED, epoch_ms=1.7e12,
                      secret=b"reset test secret", clock=time.monotonic)
    with make_client(live) as client:
        ok(client.post("/api/sim/pause"))  # virtual time stands still: the run waits at its first wait
        r = client.post("/api/scenarios/parallel-universes")
        assert r.status_code == 202, r.text
        run_id = r.json()["run"]
        end = time.monotonic() + 30.0
        while live.partition_groups() is None:  # its cut is in force: the run waits after it
            assert time.monotonic() < end, "the scenario never cut the network"
            time.sleep(0.01)  # polling interval
        assert client.get("/api/scenarios").json()["running"] == run_id
        out = ok(client.post("/api/reset"))
        assert out["stopped_run"] == run_id and out["sim"]["paused"] is False
        assert client.get("/api/scenarios").json()["running"] is None
        assert ok(client.get(f"/api/scenarios/runs/{run_id}"))["status"] == "cancelled"
        assert live.partition_groups() is None
        # nothing it wrote survives, and the next run starts on the fresh cluster and passes
        assert all(s["version_vector"] == {} for s in ok(client.get("/api/replicas"))["replicas"])
        r = client.post("/api/scenarios/hello-world")
        assert r.status_code == 202, r.text
        end = time.monotonic() + 30.0
        while (run := ok(client.get(f"/api/scenarios/runs/{r.json()['run']}")))["status"] == "running":
            assert time.monotonic() < end, run["caption"]
            time.sleep(0.01)  # polling interval
        assert run["status"] == "passed", run["report"]["checks"]


def test_websocket_clients_get_a_fresh_snapshot_with_a_new_server_id():
    live = make_live(",".join(IDS), clock=FakeClock())
    client = make_client(live)
    with client, client.websocket_connect("/ws") as ws:
        first = orjson.loads(ws.receive_bytes())[0]
        assert first["kind"] == "snapshot" and "reset" not in first
        ok(client.put(kv("lhr", "k"), json={"value": 1}))
        ok(client.post("/api/faults/partition", json={"groups": [["lhr"]]}))
        ok(client.post("/api/reset"))
        for _ in range(200):
            batch = orjson.loads(ws.receive_bytes())
            snaps = [e for e in batch if e["kind"] == "snapshot"]
            if snaps:
                break
        else:
            raise AssertionError("no snapshot after the reset")
        snap = snaps[-1]
        with client.websocket_connect("/ws") as ws2:  # a page that connects after the reset: the new id too
            assert orjson.loads(ws2.receive_bytes())[0]["server"] == snap["server"]
        assert snap["reset"] is True and snap["server"] != first["server"]
        assert snap["writes"] == [] and snap["groups"] is None and snap["in_flight"] == []
        assert all(r["version_vector"] == {} for r in snap["replicas"])
        # nothing of the old cluster follows the snapshot in its batch
        after = batch[batch.index(snap) + 1:]
        assert not [e for e in after if e["kind"] in ("write", "partition", "sent")], after


def test_the_old_cluster_is_freed_at_the_stewards_next_period():
    """The steward froze the old cluster out of collection; it holds cycles, so without a reclaim it
    would stay in memory until the next scheduled one (15 minutes): ~150 MB per reset measured with
    40 sets of 500 members on 22 POPs."""
    gc.unfreeze()
    try:
        live = make_live(",".join(IDS), clock=FakeClock())
        app = create_app(live)
        with TestClient(app) as client:
            # as `run_clock` would start it (the lifespan sets this slot: after it, then)
            steward = app.state.gc_steward = GcSteward(period_s=3600, reclaim_s=3600)
            ok(client.post("/api/replicas/lhr/sets/big", json={"add": [f"m{i}" for i in range(100)]}))
            steward.step()  # a period: the cluster's state is frozen
            old = weakref.ref(live.cluster)
            ok(client.post("/api/reset"))
            steward.step()  # the next period
            assert old() is None, "the old cluster is still in memory"
            assert steward.stats.reclaims == 1
    finally:
        gc.unfreeze()
