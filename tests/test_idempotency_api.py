"""`Idempotency-Key` on the simulated server's writes: applied once per key and replica, the
first answer replayed byte for byte, the same error codes as a real replica (which
tests/test_runner.py and tests/test_honest_answers.py cover with its disk)."""

from __future__ import annotations

import pytest
from live_helpers import FakeClock, is_error, make_client, make_live, ok, snapshot

import app.dashboard.simulated
from replication.idempotency import Ledger

KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def live(clock):
    return make_live(clock=clock)


@pytest.fixture
def client(live):
    with make_client(live) as c:
        yield c


def counter(client, rid: str = "lhr", key: str = "c") -> int:
    return ok(client.get(f"/api/replicas/{rid}/counters/{key}"))["value"]


def add(client, n: int, idem: str | None, rid: str = "lhr", key: str = "c"):
    return client.post(f"/api/replicas/{rid}/counters/{key}", json={"add": n}, headers={KEY: idem} if idem else {})


WRITES = [
    ("PUT", "/api/replicas/lhr/kv/k", {"value": {"n": 1}}),
    ("POST", "/api/replicas/lhr/counters/k", {"add": 2}),
    ("POST", "/api/replicas/lhr/sets/k", {"add": ["a"]}),
    ("DELETE", "/api/replicas/lhr/kv/k", None),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES, ids=[f"{m} {p.split('/')[4]}" for m, p, _b in WRITES])
def test_every_write_is_applied_once_and_its_retries_get_the_first_answer(client, live, method, path, body):
    first = client.request(method, path, json=body, headers={KEY: "try-1"})
    assert first.status_code == 200 and REPLAYED not in first.headers
    state = snapshot(live)
    for _ in range(3):
        again = client.request(method, path, json=body, headers={KEY: "try-1"})
        assert again.status_code == 200 and again.headers[REPLAYED] == "true"
        assert again.content == first.content and again.headers["content-type"] == "application/json"
    assert snapshot(live) == state  # nothing applied again


def test_a_counter_retried_with_its_key_counts_once_and_without_a_key_counts_again(client):
    assert ok(add(client, 5, "k1"))["value"] == 5
    assert ok(add(client, 5, "k1"))["value"] == 5
    assert ok(add(client, 5, None))["value"] == 10
    assert counter(client) == 10
    # the replayed answer is the first one, not the counter now
    assert ok(add(client, 5, "k1"))["value"] == 5


def test_the_same_key_for_another_request_is_refused_and_changes_nothing(client, live):
    ok(add(client, 1, "k1"))
    state = snapshot(live)
    for other in (
        lambda: add(client, 2, "k1"),  # another body
        lambda: add(client, 1, "k1", key="d"),  # another path
        lambda: client.put("/api/replicas/lhr/counters/c", json={"add": 1}, headers={KEY: "k1"}),  # another method (405)
        lambda: client.request("DELETE", "/api/replicas/lhr/kv/c", headers={KEY: "k1"}),
    ):
        r = other()
        if r.status_code != 405:
            is_error(r, 422, "idempotency_key_reused")
    assert snapshot(live) == state
    # per replica: the same key at another one is another write
    assert ok(add(client, 1, "k1", rid="syd"))["value"] == 1


def test_a_body_that_means_the_same_is_the_same_request(client):
    first = client.post("/api/replicas/lhr/sets/s", content=b'{"add": [1, 2]}',
                        headers={KEY: "k", "content-type": "application/json"})
    again = client.post("/api/replicas/lhr/sets/s", content=b'{ "add":[1,2] }',
                        headers={KEY: "k", "content-type": "application/json"})
    assert again.headers[REPLAYED] == "true" and again.content == first.content
    ctx = ok(client.put("/api/replicas/lhr/kv/x", json={"value": 1}))["context"]
    gone = client.delete(f"/api/replicas/lhr/kv/x?context={ctx}", headers={KEY: "del-x"})
    assert ok(gone)["values"] == []
    # the context in the body instead of the query: the same delete
    again = client.request("DELETE", "/api/replicas/lhr/kv/x", json={"context": ctx}, headers={KEY: "del-x"})
    assert again.headers[REPLAYED] == "true"


@pytest.mark.parametrize("bad", ["", "x" * 256, "tab\there", "caf\xe9", "new\x7fline"],
                         ids=["empty", "256 chars", "tab", "latin-1", "DEL"])
def test_a_bad_key_is_refused_before_anything_changes(client, live, bad):
    state = snapshot(live)
    r = client.post("/api/replicas/lhr/counters/c", json={"add": 1}, headers=[(KEY.encode(), bad.encode("latin-1"))])
    is_error(r, 400, "invalid_idempotency_key")
    assert snapshot(live) == state


def test_keys_of_255_printable_characters_are_fine(client):
    for key in ("x" * 255, "a key with spaces ~!@#", "0"):
        assert ok(add(client, 1, key))["value"] >= 1
        assert add(client, 1, key).headers[REPLAYED] == "true"


def test_a_write_answered_with_an_error_leaves_no_record(client, live):
    client.post("/api/replicas/lhr/crash")
    is_error(add(client, 1, "k1"), 503, "replica_down")
    client.post("/api/replicas/lhr/recover")
    is_error(client.put("/api/replicas/lhr/kv/v", json={"value": "x" * 70_000}, headers={KEY: "k2"}),
             413, "value_too_large")
    assert ok(add(client, 1, "k1"))["value"] == 1
    r = add(client, 1, "k1")
    assert r.headers[REPLAYED] == "true"
    # after an error, the key is free for the request the client meant
    assert ok(client.put("/api/replicas/lhr/kv/v", json={"value": "small"}, headers={KEY: "k2"}))["values"] == ["small"]
    assert counter(client) == 1


def test_records_live_with_the_replica_state(client):
    ok(add(client, 1, "k1"))
    client.post("/api/replicas/lhr/crash")
    is_error(add(client, 1, "k1"), 503, "replica_down")  # a crashed replica answers nothing, replays neither
    client.post("/api/replicas/lhr/recover")
    assert add(client, 1, "k1").headers[REPLAYED] == "true"  # state intact, records intact
    client.post("/api/replicas/lhr/crash", json={"lose_state": True})
    client.post("/api/replicas/lhr/recover")
    r = add(client, 1, "k1")  # state lost, records lost: as with a real replica's data directory
    assert r.status_code == 200 and REPLAYED not in r.headers


def test_records_expire_after_ten_minutes_and_not_before(client, clock):
    ok(add(client, 1, "k1"))
    clock.advance(599)
    assert add(client, 1, "k1").headers[REPLAYED] == "true"
    clock.advance(2)
    r = add(client, 1, "k1")
    assert r.status_code == 200 and REPLAYED not in r.headers
    assert counter(client) == 2


def test_at_the_bound_keyed_writes_are_refused_with_retry_after(monkeypatch, clock):
    monkeypatch.setattr(app.dashboard.simulated, "Ledger", lambda: Ledger(max_records=2))
    live = make_live(clock=clock)
    with make_client(live) as client:
        ok(add(client, 1, "a"))
        clock.advance(100)
        ok(add(client, 1, "b"))
        state = snapshot(live)
        r = add(client, 1, "c")
        is_error(r, 429, "idempotency_table_full")
        assert r.headers["Retry-After"] == "500"  # until the oldest record may go
        assert snapshot(live) == state
        assert add(client, 1, "a").headers[REPLAYED] == "true"  # retries still answered
        assert ok(add(client, 1, None))["value"] == 3  # writes without a key still taken
        clock.advance(501)
        assert ok(add(client, 1, "c"))["value"] == 4


def test_the_openapi_schema_documents_the_header_on_every_write(client):
    paths = client.get("/openapi.json").json()["paths"]
    writes = {("put", "/api/replicas/{replica_id}/kv/{key}"), ("delete", "/api/replicas/{replica_id}/kv/{key}"),
              ("post", "/api/replicas/{replica_id}/counters/{key}"), ("post", "/api/replicas/{replica_id}/sets/{key}"),
              ("post", "/api/replicas/{replica_id}/maps/{key}")}
    for method, path in writes:
        [header] = [p for p in paths[path][method]["parameters"] if p["in"] == "header"]
        assert header["name"] == KEY and not header.get("required")
        assert header["schema"] == {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$",
                                    "title": KEY, "description": header["description"]}
        assert "idempotency_key_reused" in header["description"]
    for method in ("get",):
        assert not [p for p in paths["/api/replicas/{replica_id}/counters/{key}"][method].get("parameters", [])
                    if p["in"] == "header"]
