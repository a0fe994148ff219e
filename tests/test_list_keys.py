"""Listing keys over the HTTP API (`GET /api/replicas/{id}/{type}?prefix=&limit=&cursor=`):
pages, the cursor, what is listed while writes go on, and every bad input answered in the error
shape without changing anything."""

from __future__ import annotations

import random

import pytest
from fastapi.testclient import TestClient

from app.dashboard.server import create_app
from app.dashboard.simulated import LiveCluster
from replication import listing
from replication.errors import InvalidCursor
from replication.geo import place_replicas, select_pops
from replication.sim.cluster import SimCluster


@pytest.fixture
def live() -> LiveCluster:
    return LiveCluster(SimCluster(place_replicas(select_pops("lhr,jfk")), seed=1, epoch_ms=1.7e12))


@pytest.fixture
def client(live) -> TestClient:
    return TestClient(create_app(live))


def list_all(client, replica="lhr", ns="kv", **params) -> tuple[list[str], list[dict]]:
    keys, pages, cursor = [], [], None
    while True:
        q = dict(params, **({"cursor": cursor} if cursor else {}))
        r = client.get(f"/api/replicas/{replica}/{ns}", params=q)
        assert r.status_code == 200, r.text
        page = r.json()
        pages.append(page)
        keys += page["keys"]
        assert page["list_complete"] == (page["cursor"] is None)
        if page["list_complete"]:
            return keys, pages
        cursor = page["cursor"]
        assert len(pages) < 100


def test_2500_keys_come_in_pages_of_at_most_1000_each_key_once_in_order(live, client):
    names = [f"user/{i:05d}" for i in range(2500)]
    for i, k in enumerate(random.Random(7).sample(names, len(names))):
        live.write("lhr", "kv", k, {"value": i})
    keys, pages = list_all(client)
    assert keys == sorted(names)
    assert [len(p["keys"]) for p in pages] == [1000, 1000, 500]
    assert all(p["replica"] == "lhr" and p["type"] == "kv" for p in pages)
    small, small_pages = list_all(client, limit=7, prefix="user/0001")
    assert small == [k for k in sorted(names) if k.startswith("user/0001")]
    assert all(len(p["keys"]) <= 7 for p in small_pages) and len(small_pages) == 2  # 10 keys: 7 and 3


def test_a_page_that_ends_exactly_at_the_last_key_is_complete(live, client):
    for k in "abc":
        live.write("lhr", "counters", k, {"add": 1})
    page = client.get("/api/replicas/lhr/counters", params={"limit": 3}).json()
    assert page == {"replica": "lhr", "type": "counters", "keys": ["a", "b", "c"], "list_complete": True,
                    "cursor": None}


def test_keys_present_throughout_are_listed_once_whatever_is_written_meanwhile(live, client):
    for i in range(0, 300, 2):
        live.write("lhr", "sets", f"s{i:03d}", {"add": [i]})
    steady = {f"s{i:03d}" for i in range(0, 300, 2)}
    seen, cursor, rng, added = [], None, random.Random(3), 0
    while True:
        r = client.get("/api/replicas/lhr/sets", params={"limit": 40, **({"cursor": cursor} if cursor else {})})
        page = r.json()
        seen += page["keys"]
        # between pages: new keys on both sides of the cursor, and one removed (its set emptied)
        for _ in range(5):
            live.write("lhr", "sets", f"s{rng.randrange(1, 300, 2):03d}", {"add": ["new"]})
            added += 1
        if page["list_complete"]:
            break
        cursor = page["cursor"]
    assert len(seen) == len(set(seen)), "a key was listed twice"
    assert steady <= set(seen)
    assert seen == sorted(seen)


def test_keys_without_a_value_are_not_listed(live, client):
    live.write("lhr", "kv", "gone", {"value": 1, "context": None})
    live.write("lhr", "kv", "kept", {"value": 2, "context": None})
    live.write("lhr", "kv", "gone", {"delete": True, "context": None})
    live.write("lhr", "sets", "emptied", {"add": [1]})
    live.write("lhr", "sets", "emptied", {"remove": [1]})
    assert client.get("/api/replicas/lhr/kv").json()["keys"] == ["kept"]
    assert client.get("/api/replicas/lhr/sets").json()["keys"] == []


def test_each_replica_lists_what_it_holds():
    # slow enough that nothing crosses to Sydney while the test runs, however busy the machine
    live = LiveCluster(SimCluster(place_replicas(select_pops("lhr,syd")), seed=1, epoch_ms=1.7e12), speed=1e-6)
    client = TestClient(create_app(live))
    live.write("lhr", "maps", "cart", {"set": {"a": 1}})
    assert client.get("/api/replicas/lhr/maps").json()["keys"] == ["cart"]
    assert client.get("/api/replicas/syd/maps").json()["keys"] == []  # not arrived yet: a replica's own view
    assert live.settle()
    assert client.get("/api/replicas/syd/maps").json()["keys"] == ["cart"]


@pytest.mark.parametrize("params, status, code", [
    ({"limit": 0}, 422, "invalid_limit"),
    ({"limit": 1001}, 422, "invalid_limit"),
    ({"limit": -5}, 422, "invalid_limit"),
    ({"limit": "ten"}, 422, None),
    ({"cursor": "nope"}, 400, "invalid_cursor"),
    ({"cursor": listing.encode_cursor("a")[:-2] + "!!"}, 400, "invalid_cursor"),
    ({"cursor": "x" * 600}, 422, None),
    ({"prefix": "p" * 300}, 422, None),
    ({"prefix": "\ud800"}, None, None),  # a lone surrogate cannot even be sent as UTF-8
])
def test_bad_listing_parameters_get_the_error_shape(live, client, params, status, code):
    live.write("lhr", "kv", "k", {"value": 1})
    live.pause()  # nothing moves but what the request might change
    before = live.convergence()["digests"]
    try:
        r = client.get("/api/replicas/lhr/kv", params=params)
    except UnicodeEncodeError:
        assert status is None
        return
    if status is None:
        assert r.status_code in (400, 422), r.text
    else:
        assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"code", "message"}
    if code:
        assert err["code"] == code
    assert live.convergence()["digests"] == before


def test_a_cursor_of_another_text_decodes_to_a_position_not_an_error(live, client):
    for k in ("a", "b", "c"):
        live.write("lhr", "kv", k, {"value": 1})
    r = client.get("/api/replicas/lhr/kv", params={"cursor": listing.encode_cursor("b")})
    assert r.json()["keys"] == ["c"]
    r = client.get("/api/replicas/lhr/counters", params={"cursor": listing.encode_cursor("b")})
    assert r.status_code == 200 and r.json()["keys"] == []


def test_unknown_and_crashed_replicas_and_unknown_types(live, client):
    assert client.get("/api/replicas/nowhere/kv").json()["error"]["code"] == "unknown_replica"
    r = client.get("/api/replicas/lhr/widgets")
    assert r.status_code == 404
    live.cluster.sim.crash("jfk")
    r = client.get("/api/replicas/jfk/kv")
    assert r.status_code == 503 and r.json()["error"]["code"] == "replica_down"


def test_the_cursor_is_opaque_and_round_trips_every_key():
    for key in ("a", "user/ü/1", "x" * 256, "🎉", "a?b&c=d"):
        assert listing.decode_cursor(listing.encode_cursor(key)) == key
    for bad in ("", "a", "====", listing.encode_cursor("k")[3:]):
        with pytest.raises(InvalidCursor):
            listing.decode_cursor(bad)
