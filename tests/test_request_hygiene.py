"""What a request must be before any route sees it (app/web/hygiene.py), on the dashboard's app:
keys that are not UTF-8, JSON bodies that repeat a member name, and HEAD wherever GET is.
The same over real HTTP, on `edgestate serve` and `edgestate replica`, is in test_hostile_http.py."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute

from app.web.hygiene import bad_path_segment, duplicate_member
from live_helpers import is_error, make_client, make_live, ok, snapshot

JSON = {"content-type": "application/json"}


@pytest.fixture
def live():
    return make_live("lhr,syd")


@pytest.fixture
def client(live):
    return make_client(live)


# -- keys that are not UTF-8 ------------------------------------------------------------------------

KEYED = [
    ("PUT", "kv", b'{"value": 1}'),
    ("GET", "kv", None),
    ("DELETE", "kv", None),
    ("POST", "counters", b'{"add": 1}'),
    ("GET", "counters", None),
    ("POST", "sets", b'{"add": [1]}'),
    ("GET", "sets", None),
    ("POST", "maps", b'{"set": {"f": 1}}'),
    ("GET", "maps", None),
]


@pytest.mark.parametrize("method, ns, body", KEYED, ids=[f"{m} {ns}" for m, ns, _ in KEYED])
@pytest.mark.parametrize("escape", ["%FE", "%FF", "%C3", "%ED%A0%80", "%C0%AF"],
                         ids=["FE", "FF", "truncated", "surrogate", "overlong"])
def test_a_key_that_is_not_utf8_is_422_invalid_key_and_changes_nothing(live, client, method, ns, body, escape):
    before = snapshot(live)
    r = client.request(method, f"/api/replicas/lhr/{ns}/coll{escape}x", content=body,
                       headers=JSON if body else None)
    err = is_error(r, 422, "invalid_key")
    assert "UTF-8" in err["message"], err
    assert snapshot(live) == before


def test_fe_and_ff_no_longer_share_one_slot(client):
    # before: both decoded to "coll\ufffdx", so the second read found the first write
    is_error(client.put("/api/replicas/lhr/kv/coll%FEx", json={"value": "fe"}), 422, "invalid_key")
    is_error(client.get("/api/replicas/lhr/kv/coll%FFx"), 422, "invalid_key")
    # U+FFFD itself, sent as its UTF-8 bytes, is a key like any other
    assert ok(client.put("/api/replicas/lhr/kv/coll%EF%BF%BDx", json={"value": "r"}))["key"] == "coll\ufffdx"


WRITES = [(m, ns, b) for m, ns, b in KEYED if b is not None]


@pytest.mark.parametrize("method, ns, body", WRITES, ids=[f"{m} {ns}" for m, ns, _ in WRITES])
@pytest.mark.parametrize("escape", ["%00", "%0A", "%1B", "%7F"], ids=["NUL", "LF", "ESC", "DEL"])
def test_a_write_to_a_key_with_a_control_character_is_422_and_changes_nothing(live, client, method, ns, body, escape):
    """A NUL or an escape sequence in a key would reach logs, terminals and the page as it is."""
    before = snapshot(live)
    r = client.request(method, f"/api/replicas/lhr/{ns}/a{escape}b", content=body, headers=JSON)
    err = is_error(r, 422, "invalid_key")
    assert "control characters" in err["message"], err
    assert snapshot(live) == before


def test_a_bad_byte_outside_the_key_is_invalid_path(client):
    is_error(client.get("/api/replicas/l%FFr/kv/k"), 422, "invalid_path")
    is_error(client.get("/api/nowhere%FF"), 422, "invalid_path")


@pytest.mark.parametrize("raw, bad", [
    (b"/api/replicas/lhr/kv/ok", None),
    (b"/api/replicas/lhr/kv/%E6%9D%B1%E4%BA%AC", None),
    (b"/api/replicas/lhr/kv/a%2Fb%FE", 5),
    (b"/api/replicas/lhr/kv/a/b/%FF", 7),
    (b"/%80", 1),
    (b"/api/replicas/lhr/kv/a%00b", 5),
    (b"/api/replicas/lhr/kv/a/%7F", 6),
])
def test_bad_path_segment(raw, bad):
    found = bad_path_segment(raw)
    assert (found[0] if found else None) == bad


# -- JSON bodies that repeat a member name ---------------------------------------------------------------

DUPLICATES = [
    ("counter add twice", "POST", "/api/replicas/lhr/counters/c", b'{"add": 1, "add": 100}', "add"),
    ("kv value twice", "PUT", "/api/replicas/lhr/kv/k", b'{"value": 1, "value": 2}', "value"),
    ("nested in a kv value", "PUT", "/api/replicas/lhr/kv/k", b'{"value": {"a": {"b": 1, "b": 2}}}', "b"),
    ("in a set element", "POST", "/api/replicas/lhr/sets/s", b'{"add": [{"x": 1, "x": 1}]}', "x"),
    ("in a list of objects", "POST", "/api/replicas/lhr/sets/s", b'{"add": [{}, {"y": 1, "z": 2, "y": 3}]}', "y"),
    ("kv delete context twice", "DELETE", "/api/replicas/lhr/kv/k", b'{"context": null, "context": null}', "context"),
    ("map op", "POST", "/api/replicas/lhr/maps/m", b'{"set": {"f": 1, "f": 2}}', "f"),
    ("admin body", "POST", "/api/faults/partition", b'{"groups": [["lhr"]], "groups": [["syd"]]}', "groups"),
    ("sim control", "PUT", "/api/sim/speed", b'{"speed": 1, "speed": 2}', "speed"),
]


@pytest.mark.parametrize("method, path, body, name", [d[1:] for d in DUPLICATES], ids=[d[0] for d in DUPLICATES])
def test_a_json_body_that_repeats_a_member_is_refused_and_changes_nothing(live, client, method, path, body, name):
    before = snapshot(live)
    err = is_error(client.request(method, path, content=body, headers=JSON), 400, "duplicate_member")
    assert repr(name) in err["message"], err
    assert snapshot(live) == before


def test_the_counter_gets_neither_amount(client):
    is_error(client.post("/api/replicas/lhr/counters/c", content=b'{"add":1,"add":100}', headers=JSON),
             400, "duplicate_member")
    assert ok(client.get("/api/replicas/lhr/counters/c"))["value"] == 0  # before: 100, the last one won


def test_application_plus_json_is_checked_too(client):
    is_error(client.post("/api/replicas/lhr/counters/c", content=b'{"add":1,"add":2}',
                         headers={"content-type": "application/merge-patch+json; charset=utf-8"}),
             400, "duplicate_member")


def test_the_same_name_in_two_objects_is_fine(client):
    r = ok(client.put("/api/replicas/lhr/kv/k", json={"value": [{"a": 1}, {"a": 2}], "context": None}))
    assert r["values"] == [[{"a": 1}, {"a": 2}]]


def test_bodies_that_are_not_json_are_answered_as_before(client):
    is_error(client.put("/api/replicas/lhr/kv/k", content=b"{value: 1", headers=JSON), 400, "invalid_json")
    is_error(client.post("/api/replicas/lhr/counters/c", content=b'{"add":1,"add":2}',
                         headers={"content-type": "text/plain"}), 415, "unsupported_media_type")


@pytest.mark.parametrize("method, path, body", [
    ("POST", "sets/s", b'{"add": [1, "x", {"a": [2]}]}'),
    ("POST", "maps/m", b'{"set": {"f": 1, "g": {"h": null}}}'),
    ("PUT", "kv/k", b'{"value": [1.5, true], "context": null}'),
    ("POST", "counters/c", b'{"add": 3}'),
])
def test_a_json_body_is_parsed_once_for_the_check_and_the_route(client, monkeypatch, method, path, body):
    """Each parse of a body holds the loop (~9 ms per MiB); the route takes the document the
    duplicate check built instead of parsing the bytes again, and answers the same."""
    import json

    real, parses = json.loads, []

    def counting(s, *a, **kw):
        if s == body:
            parses.append(s)
        return real(s, *a, **kw)

    monkeypatch.setattr(json, "loads", counting)
    r = ok(client.request(method, f"/api/replicas/lhr/{path}", content=body, headers=JSON))
    assert len(parses) == 1, f"{len(parses)} parses of one body"
    assert r == ok(client.get(f"/api/replicas/lhr/{path}"))  # the write was the one sent


@pytest.mark.parametrize("body, name", [
    (b'{"a": 1, "b": {"a": 2}}', None),
    (b'{"a": 1, "a": 1}', "a"),
    (b'[{"k": [{"k": 1, "k": 2}]}]', "k"),
    (b'{"\\u0061": 1, "a": 2}', "a"),  # the same name, escaped differently
    (b"not json", None),
    (b"[" * 100_000, None),  # too deep to parse: the route's parser answers it
])
def test_duplicate_member(body, name):
    assert duplicate_member(body) == name


# -- HEAD wherever GET is ---------------------------------------------------------------------------------


def api_routes(routes):
    """Every APIRoute, including those of included routers (none of which has a prefix here)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # FastAPI's include_router keeps the router as is
            yield from api_routes(route.original_router.routes)


def get_paths(app) -> list[str]:
    """A concrete path for every GET route of the app (an unknown run id is a 404 either way)."""
    return [re.sub(r"\{[^}]*\}", "x", route.path.replace("{replica_id}", "lhr").replace("{key:path}", "k"))
            for route in api_routes(app.routes) if "GET" in route.methods]


def test_head_is_answered_on_every_get_route_with_the_get_headers_and_no_body(client):
    client.put("/api/replicas/lhr/kv/k", json={"value": 1})
    paths = get_paths(client.app)
    assert "/healthz" in paths and "/api/replicas/lhr/kv/k" in paths and len(paths) > 10
    streams = [p for p in paths if p.endswith("/watch") or p == "/api/events"]
    assert streams, "the watch stream is a GET route too"
    for path in streams:  # a GET never ends; HEAD answers the head at once and ends
        head = client.head(path)
        assert head.status_code == 200 and head.content == b"", path
        assert head.headers["content-type"].startswith("text/event-stream"), path
    for path in paths:
        if path in streams:
            continue
        got = client.get(path)
        head = client.head(path)
        assert head.status_code == got.status_code, (path, head.status_code, got.text)
        assert head.content == b"", path
        assert head.headers.get("content-type") == got.headers.get("content-type"), path
        if path != "/metrics" and "content-length" in got.headers:  # /metrics changes between two asks
            assert head.headers["content-length"] == got.headers["content-length"], path


def test_head_is_in_allow_and_a_head_where_there_is_no_get_is_405(client):
    r = client.post("/api/replicas/lhr/kv/k", json={"value": 1})
    assert "HEAD" in r.headers["allow"].replace(" ", "").split(",")
    r = client.head("/api/faults/partition")  # DELETE and POST only
    assert r.status_code == 405 and "HEAD" not in r.headers["allow"]


def test_head_never_writes(live, client):
    before = snapshot(live)
    assert client.head("/api/replicas/lhr/counters/c").status_code == 200
    assert snapshot(live) == before
