"""`POST /api/replicas/{id}/batch`: up to 1,000 writes across types at one replica, applied in
order with nothing in between, answered together; refused whole when malformed; per-operation
errors for what only the state decides; Idempotency-Key like single writes."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.dashboard.server import create_app
from app.dashboard.simulated import LiveCluster
from app.web.security import Settings
from replication import batch
from replication.geo import place_replicas, select_pops
from replication.sim.cluster import SimCluster


def make_live() -> LiveCluster:
    return LiveCluster(SimCluster(place_replicas(select_pops("lhr,jfk")), seed=1, epoch_ms=1.7e12), speed=1e-6)


@pytest.fixture
def live() -> LiveCluster:
    return make_live()


@pytest.fixture
def client(live) -> TestClient:
    return TestClient(create_app(live))


URL = "/api/replicas/lhr/batch"


def test_one_batch_writes_every_type_and_answers_each_like_its_single_write(client):
    ops = [
        {"type": "kv", "key": "k", "value": {"a": 1}},
        {"type": "counter", "key": "c", "add": 2},
        {"type": "counters", "key": "c", "add": 3},
        {"type": "set", "key": "s", "add": ["x", "y"]},
        {"type": "sets", "key": "s", "remove": ["x"]},
        {"type": "map", "key": "m", "set": {"f": 1}},
    ]
    r = client.post(URL, json={"ops": ops})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["replica"] == "lhr" and len(out["results"]) == 6
    res = out["results"]
    assert all(x["status"] == 200 and "error" not in x for x in res)
    assert res[0]["type"] == "kv" and res[0]["values"] == [{"a": 1}] and res[0]["context"]
    assert (res[1]["value"], res[2]["value"]) == (2, 5)  # in order
    assert res[3]["members"] == ["x", "y"] and res[4]["members"] == ["y"]
    assert res[5]["fields"] == {"f": 1}
    single = client.get("/api/replicas/lhr/kv/k").json()
    assert {k: single[k] for k in ("values", "context")} == {k: res[0][k] for k in ("values", "context")}
    assert client.get("/api/replicas/lhr/counters/c").json()["value"] == 5
    # a kv delete in a batch takes the context like the DELETE route
    r = client.post(URL, json={"ops": [{"type": "kv", "key": "k", "delete": True, "context": res[0]["context"]}]})
    assert r.json()["results"][0]["values"] == []


def test_1000_operations_in_one_batch_and_not_one_more(client):
    ops = [{"type": "counter", "key": f"c{i % 10}", "add": 1} for i in range(batch.MAX_OPS)]
    r = client.post(URL, json={"ops": ops})
    assert r.status_code == 200 and len(r.json()["results"]) == 1000
    assert sum(client.get(f"/api/replicas/lhr/counters/c{i}").json()["value"] for i in range(10)) == 1000
    r = client.post(URL, json={"ops": ops + [ops[0]]})
    assert r.status_code == 422 and "at most 1000" in r.json()["error"]["message"]


@pytest.mark.parametrize("body, code", [
    ({"ops": []}, "invalid_operation"),
    ({"ops": "x"}, None),
    ({}, None),
    ({"ops": [{"type": "kv", "key": "k", "value": 1}], "extra": 1}, None),
    ({"ops": [{"type": "kv", "key": "k", "value": 1}, {"type": "widget", "key": "k", "value": 1}]},
     "invalid_operation"),
    ({"ops": [{"type": "kv", "key": "k", "value": 1}, {"type": "counter", "key": "c", "add": "1"}]},
     "invalid_operation"),
    ({"ops": [{"type": "kv", "key": "k", "value": 1}, {"type": "kv", "key": "", "value": 1}]}, "invalid_key"),
    ({"ops": [{"type": "kv", "key": "k", "value": 1}, {"type": "kv", "key": "a\x00b", "value": 1}]}, "invalid_key"),
    ({"ops": [{"type": "kv", "key": "k", "value": 1}, {"type": "set", "key": "s", "add": list(range(20000))}]},
     "too_many_members"),
    ({"ops": [{"type": "kv", "key": "k", "value": 1}, {"type": "kv", "key": "k", "delete": False}]},
     "invalid_operation"),
    ({"ops": [{"type": "kv", "key": "k", "value": 1}, "op"]}, "invalid_operation"),
])
def test_a_malformed_batch_is_refused_whole_and_changes_nothing(live, client, body, code):
    live.pause()
    before = live.convergence()["digests"]
    r = client.post(URL, json=body)
    assert 400 <= r.status_code < 500, r.text
    err = r.json()["error"]
    if code:
        assert err["code"] == code
        if len(body["ops"]) > 1:
            assert "operation 1" in err["message"]
    assert live.convergence()["digests"] == before
    assert client.get("/api/replicas/lhr/kv/k").status_code == 404


def test_what_only_the_state_decides_fails_that_operation_alone(live, client):
    client.post("/api/replicas/lhr/maps/m", json={"add": {"n": 1}})  # n holds a counter now
    r = client.post(URL, json={"ops": [
        {"type": "counter", "key": "c", "add": 1},
        {"type": "map", "key": "m", "set": {"n": 5}},  # a counter field refuses set
        {"type": "kv", "key": "k", "value": 1, "context": "bm90IGEgdG9rZW4"},  # a token that does not verify
        {"type": "counter", "key": "c", "add": 1},
    ]})
    assert r.status_code == 200
    res = r.json()["results"]
    assert [x["status"] for x in res] == [200, 422, 400, 200]
    assert res[1]["error"]["code"] == "invalid_operation" and res[2]["error"]["code"] == "bad_context"
    assert "value" not in res[1] and res[3]["value"] == 2
    assert client.get("/api/replicas/lhr/maps/m").json()["fields"] == {"n": 1}
    assert client.get("/api/replicas/lhr/kv/k").status_code == 404


def test_unknown_and_crashed_replicas_refuse_the_whole_batch(live, client):
    ops = {"ops": [{"type": "counter", "key": "c", "add": 1}]}
    assert client.post("/api/replicas/nowhere/batch", json=ops).json()["error"]["code"] == "unknown_replica"
    live.cluster.sim.crash("jfk")
    r = client.post("/api/replicas/jfk/batch", json=ops)
    assert r.status_code == 503 and r.json()["error"]["code"] == "replica_down"


def test_an_idempotency_key_applies_a_batch_once(client):
    ops = {"ops": [{"type": "counter", "key": "c", "add": 1}, {"type": "set", "key": "s", "add": [1]}]}
    h = {"Idempotency-Key": "batch-1"}
    first = client.post(URL, json=ops, headers=h)
    again = client.post(URL, json=ops, headers=h)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content and again.headers.get("idempotent-replayed") == "true"
    assert client.get("/api/replicas/lhr/counters/c").json()["value"] == 1
    other = client.post(URL, json={"ops": [{"type": "counter", "key": "c", "add": 2}]}, headers=h)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"


def test_in_audience_mode_a_batch_needs_the_admin_token():
    live = make_live()
    client = TestClient(create_app(live, settings=Settings(audience=True, admin_token="a" * 24)))
    ops = {"ops": [{"type": "counter", "key": "c", "add": 1}]}
    r = client.post(URL, json=ops)
    assert r.status_code == 403 and r.json()["error"]["code"] == "batch_needs_admin"
    assert client.get("/api/replicas/lhr/counters/c").json()["value"] == 0
    r = client.post(URL, json=ops, headers={"Authorization": "Bearer " + "a" * 24})
    assert r.status_code == 200 and r.json()["results"][0]["value"] == 1
