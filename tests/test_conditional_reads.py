"""Conditional reads: every data GET carries an ETag of its answer; If-None-Match with it is 304
without a body until the key changes at that replica; HEAD answers the same headers."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.dashboard.server import create_app
from app.dashboard.simulated import LiveCluster
from replication.geo import place_replicas, select_pops
from replication.sim.cluster import SimCluster

WRITES = {
    "kv": ("PUT", {"value": 1}, {"value": 2}),
    "counters": ("POST", {"add": 1}, {"add": 1}),
    "sets": ("POST", {"add": [1]}, {"add": [2]}),
    "maps": ("POST", {"set": {"a": 1}}, {"set": {"a": 2}}),
}


@pytest.fixture
def client() -> TestClient:
    live = LiveCluster(SimCluster(place_replicas(select_pops("lhr,jfk")), seed=1, epoch_ms=1.7e12), speed=1e-6)
    return TestClient(create_app(live))


@pytest.mark.parametrize("ns", sorted(WRITES))
def test_a_read_is_304_until_the_key_changes(client, ns):
    method, first, second = WRITES[ns]
    path = f"/api/replicas/lhr/{ns}/k"
    assert client.request(method, path, json=first).status_code == 200
    r = client.get(path)
    tag = r.headers["etag"]
    assert r.status_code == 200 and tag.startswith('"') and tag.endswith('"') and len(tag) > 10
    assert client.get(path).headers["etag"] == tag  # the same state, the same tag
    again = client.get(path, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    assert client.get(path, headers={"If-None-Match": f'"other", W/{tag}'}).status_code == 304  # weak, in a list
    assert client.get(path, headers={"If-None-Match": "*"}).status_code == 304
    assert client.get(path, headers={"If-None-Match": '"stale"'}).status_code == 200
    head = client.head(path, headers={"If-None-Match": '"stale"'})
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == tag
    assert client.request(method, path, json=second).status_code == 200
    changed = client.get(path, headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag and changed.json()["key"] == "k"


def test_each_replica_tags_its_own_answer(client):
    client.put("/api/replicas/lhr/kv/k", json={"value": 1})
    client.put("/api/replicas/jfk/kv/k", json={"value": 1})
    a, b = client.get("/api/replicas/lhr/kv/k"), client.get("/api/replicas/jfk/kv/k")
    assert a.headers["etag"] != b.headers["etag"]  # the answers differ (replica, dots): so must the tags


def test_errors_have_no_etag_and_never_304(client):
    r = client.get("/api/replicas/lhr/kv/none", headers={"If-None-Match": "*"})
    assert r.status_code == 404 and "etag" not in r.headers
    r = client.get("/api/replicas/nowhere/counters/k", headers={"If-None-Match": "*"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_replica"
