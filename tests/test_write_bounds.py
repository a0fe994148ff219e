"""Bounds on local writes (`replication.bounds`): refused with the documented status and code,
naming the bound and its value, and changing nothing; remote deltas over a bound still join."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.dashboard.server import create_app
from replication import Replica, bounds
from replication.delta import Delta
from replication.errors import MapTooLarge, SetTooLarge, TooManyFields, TooManyMembers
from test_api import InstantCluster, aset


def state(r: Replica):
    return r.digest(), r.hlc.last, r.version_vector


@pytest.fixture
def small(monkeypatch):
    """Small per-key bounds, so that filling a key takes a few requests."""
    monkeypatch.setattr(bounds, "MAX_SET_MEMBERS", 5)
    monkeypatch.setattr(bounds, "MAX_MAP_FIELDS", 4)


def test_the_request_bounds_hold_at_the_replica_and_change_nothing():
    r = Replica("a")
    r.write("sets", "s", {"add": [0]}, now=1)
    before = state(r)
    n = bounds.MAX_SET_REQUEST_MEMBERS
    with pytest.raises(TooManyMembers) as e:
        r.write("sets", "s", {"add": list(range(n + 1))}, now=2)
    assert (e.value.limit, e.value.value) == ("max_set_request_members", n)
    with pytest.raises(TooManyMembers):
        r.write("sets", "s", {"remove": list(range(n + 1))}, now=2)
    with pytest.raises(TooManyFields) as e:
        r.write("maps", "m", {"set": {f"f{i}": i for i in range(bounds.MAX_MAP_REQUEST_FIELDS + 1)}}, now=2)
    assert (e.value.limit, e.value.value) == ("max_map_request_fields", bounds.MAX_MAP_REQUEST_FIELDS)
    with pytest.raises(TooManyFields):
        r.write("maps", "m", {"remove": [f"f{i}" for i in range(bounds.MAX_MAP_REQUEST_FIELDS + 1)]}, now=2)
    assert state(r) == before
    r.write("sets", "s", {"add": list(range(n))}, now=3)  # at the bound: taken
    assert len(r.read("sets", "s")) == n


def test_a_set_key_at_its_real_bound_refuses_a_new_member_and_takes_the_rest():
    r = Replica("a")
    m = bounds.MAX_SET_MEMBERS
    step = bounds.MAX_SET_REQUEST_MEMBERS
    for i in range(0, m, step):
        r.write("sets", "s", {"add": list(range(i, i + step))}, now=i)
    before = state(r)
    with pytest.raises(SetTooLarge) as e:
        r.write("sets", "s", {"add": [0, m]}, now=m)
    assert (e.value.limit, e.value.value) == ("max_set_members", m)
    assert state(r) == before
    r.write("sets", "s", {"add": [0, 1]}, now=m + 1)  # members it holds: no growth
    r.write("sets", "s", {"remove": [0]}, now=m + 2)
    r.write("sets", "s", {"add": [m]}, now=m + 3)  # room again
    assert len(r.read("sets", "s")) == m


def test_a_map_key_at_its_bound_refuses_a_new_field(small):
    r = Replica("a")
    r.write("maps", "m", {"set": {"a": 1, "b": 2}}, now=1)
    r.write("maps", "m", {"add": {"c": 1, "d": 1}}, now=2)
    before = state(r)
    with pytest.raises(MapTooLarge) as e:
        r.write("maps", "m", {"set": {"e": 1}}, now=3)
    assert (e.value.limit, e.value.value) == ("max_map_fields", 4)
    with pytest.raises(MapTooLarge):
        r.write("maps", "m", {"add": {"e": 1}}, now=3)
    assert state(r) == before
    r.write("maps", "m", {"set": {"a": 5}, }, now=4)  # fields it holds
    r.write("maps", "m", {"add": {"c": 2, "e": 0}}, now=5)  # a zero change makes no field
    r.write("maps", "m", {"remove": ["c"]}, now=6)  # a counter's reset keeps its field: still 4
    with pytest.raises(MapTooLarge):
        r.write("maps", "m", {"set": {"e": 1}}, now=7)
    r.write("maps", "m", {"remove": ["a"]}, now=8)  # a register's field goes
    r.write("maps", "m", {"set": {"e": 1}}, now=9)


def test_remote_deltas_over_a_bound_still_join_and_converge(small):
    """Bounds are on local operations: two replicas filling one key concurrently end with more
    than the bound everywhere; adds that grow it are then refused, removals go through."""
    a, b = Replica("a", members=["a", "b"]), Replica("b", members=["a", "b"])
    _, da = a.write("sets", "s", {"add": [1, 2, 3, 4]}, now=1)
    _, db = b.write("sets", "s", {"add": [5, 6, 7]}, now=1)
    a.apply(Delta.from_wire(db.to_wire()))
    b.apply(Delta.from_wire(da.to_wire()))
    assert a.digest() == b.digest() and len(a.read("sets", "s")) == 7
    with pytest.raises(SetTooLarge):
        a.write("sets", "s", {"add": [8]}, now=2)
    _, dr = a.write("sets", "s", {"remove": [1, 2, 3]}, now=3)
    b.apply(dr)
    assert a.digest() == b.digest() and len(b.read("sets", "s")) == 4
    b.write("sets", "s", {"add": [8]}, now=4)


def test_http_answers_a_bound_with_its_status_code_and_value(small):
    cluster = InstantCluster("lhr,syd")
    client = TestClient(create_app(cluster))
    digests = cluster.digests()
    n = bounds.MAX_SET_REQUEST_MEMBERS
    r = client.post(aset("lhr", "big"), json={"add": list(range(n + 1))})
    assert r.status_code == 413
    err = r.json()["error"]
    assert err["code"] == "too_many_members" and err["limit"] == {"name": "max_set_request_members", "value": n}
    assert str(n) in err["message"]
    assert cluster.digests() == digests  # nothing changed
    assert client.post(aset("lhr", "big"), json={"add": [1, 2, 3, 4, 5]}).status_code == 200
    digests = cluster.digests()
    r = client.post(aset("syd", "big"), json={"add": [6]})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "set_too_large"
    assert r.json()["error"]["limit"] == {"name": "max_set_members", "value": 5}
    assert cluster.digests() == digests
    r = client.post("/api/replicas/lhr/maps/m", json={"set": {f"f{i}": i for i in range(5)}})
    assert r.status_code == 422 and r.json()["error"]["limit"] == {"name": "max_map_fields", "value": 4}
    r = client.post("/api/replicas/lhr/maps/m", json={"add": {f"f{i}": 1 for i in range(n + 1)}})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_fields"
    assert cluster.digests() == digests
