"""The HTTP API over an in-process cluster: the design's kv, counters and sets paths, and /healthz.
(Observation, faults and simulation control: test_admin.py; tokens and limits: test_security.py.)

Every request here goes through FastAPI's TestClient, which re-raises any exception that
reaches the app's last-resort 500 handler: a bad input that slipped through would fail the
test even before the status is checked.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from app.dashboard.simulated import LiveCluster
from app.dashboard.server import create_app
from replication.sim.cluster import SimCluster
from replication.geo import place_replicas, select_pops

IDS = ("lhr", "syd", "jfk")


class InstantCluster(LiveCluster):
    """The live simulated cluster, run forward after every write until all replicas agree:
    these tests are about the API's contract, not about waiting for the WAN."""

    def __init__(self, ids: str, secret: bytes | None = None) -> None:
        super().__init__(SimCluster(place_replicas(select_pops(ids)), seed=1, secret=secret, epoch_ms=1.7e12))
        assert self.settle()

    def write(self, *args):
        view = super().write(*args)
        assert self.settle()
        return view

    def converged(self) -> bool:
        return self.convergence()["converged"]

    def digests(self) -> dict:
        return self.convergence()["digests"]

    @property
    def replicas(self) -> dict:
        return {i: self.sim.nodes[i].replica for i in self.ids}


@pytest.fixture
def cluster() -> InstantCluster:
    return InstantCluster(",".join(IDS))


@pytest.fixture
def client(cluster) -> TestClient:
    return TestClient(create_app(cluster))


def kv(replica: str, key: str) -> str:
    return f"/api/replicas/{replica}/kv/{quote(key, safe='')}"


def counter(replica: str, key: str) -> str:
    return f"/api/replicas/{replica}/counters/{quote(key, safe='')}"


def aset(replica: str, key: str) -> str:
    return f"/api/replicas/{replica}/sets/{quote(key, safe='')}"


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def local_write(cluster: InstantCluster, replica: str, ns: str, key: str, op: dict, now: float):
    """A write at one replica only: its delta is returned, not handed to anyone."""
    view, delta = cluster.replicas[replica].write(ns, key, op, now=now)
    assert delta is not None
    return delta


def deliver(cluster: InstantCluster, delta, to: list[str]) -> None:
    for rid in to:
        cluster.replicas[rid].apply(delta)


# -- health -------------------------------------------------------------------------------


def test_healthz_counts_replicas(client):
    assert ok(client.get("/healthz")) == {"status": "ok", "replicas": 3}


def test_apps_do_not_share_state():
    a = TestClient(create_app(InstantCluster("lhr")))
    b = TestClient(create_app(InstantCluster("lhr,syd")))
    ok(a.put(kv("lhr", "k"), json={"value": 1}))
    assert b.get(kv("lhr", "k")).status_code == 404
    assert ok(b.get("/healthz"))["replicas"] == 2


def test_only_the_implemented_paths_exist(client):
    spec = ok(client.get("/openapi.json"))
    methods = {path: set(ops) for path, ops in spec["paths"].items()}
    assert methods == {
        "/healthz": {"get"},
        "/readyz": {"get"},
        "/api/replicas/{replica_id}/kv/{key}": {"get", "put", "delete"},
        "/api/replicas/{replica_id}/counters/{key}": {"get", "post"},
        "/api/replicas/{replica_id}/sets/{key}": {"get", "post"},
        "/api/replicas/{replica_id}/maps/{key}": {"get", "post"},
        "/api/replicas/{replica_id}/kv": {"get"},
        "/api/replicas/{replica_id}/counters": {"get"},
        "/api/replicas/{replica_id}/sets": {"get"},
        "/api/replicas/{replica_id}/maps": {"get"},
        "/api/replicas/{replica_id}/batch": {"post"},
        "/api/replicas/{replica_id}/watch": {"get"},
        "/api/topology": {"get"},
        "/api/replicas": {"get"},
        "/api/convergence": {"get"},
        "/api/faults/partition": {"post", "delete"},
        "/api/replicas/{replica_id}/crash": {"post"},
        "/api/replicas/{replica_id}/recover": {"post"},
        "/api/sim": {"get"},
        "/api/sim/strategy": {"put"},
        "/api/sim/speed": {"put"},
        "/api/sim/loss": {"put"},
        "/api/sim/pause": {"post"},
        "/api/sim/resume": {"post"},
        "/api/sim/step": {"post"},
        "/api/session": {"get", "post", "delete"},
        "/api/scenarios": {"get"},
        "/api/scenarios/{name}": {"post"},
        "/api/reset": {"post"},
        "/api/join/pops": {"get"},
        "/api/join/{replica_id}": {"post"},
        "/api/join/info": {"get"},
        "/api/scenarios/runs/{run_id}": {"get", "delete"},
        "/api/scenarios/runs/{run_id}/next": {"post"},
        "/api/coordination": {"get"},
        "/metrics": {"get"},
    }


def test_docs_page_is_served(client):
    r = client.get("/docs")
    assert r.status_code == 200 and "swagger" in r.text.lower()


# -- kv: multi-value register ------------------------------------------------------------


def test_write_at_london_read_at_sydney(client, cluster):
    w = ok(client.put(kv("lhr", "greeting"), json={"value": {"text": "hello", "n": [1, 2.5, None, True]}}))
    assert w["key"] == "greeting" and w["replica"] == "lhr"
    assert w["values"] == [{"text": "hello", "n": [1, 2.5, None, True]}]
    assert isinstance(w["context"], str) and w["context"]
    [sib] = w["siblings"]
    assert sib["replica"] == "lhr" and sib["counter"] == 1
    assert sib["value"] == {"text": "hello", "n": [1, 2.5, None, True]}
    assert len(sib["hlc"]) == 2 and all(type(x) is int for x in sib["hlc"]) and sib["hlc"][0] > 0

    r = ok(client.get(kv("syd", "greeting")))
    assert r["replica"] == "syd"
    assert r["values"] == w["values"]
    assert r["siblings"] == w["siblings"]
    assert cluster.converged()


def test_response_has_exactly_the_design_fields_plus_siblings(client):
    w = ok(client.put(kv("lhr", "k"), json={"value": 1}))
    assert set(w) == {"key", "replica", "values", "context", "siblings"}
    assert set(w["siblings"][0]) == {"value", "replica", "counter", "hlc"}


def test_json_null_is_a_value(client):
    assert ok(client.put(kv("lhr", "k"), json={"value": None}))["values"] == [None]
    assert ok(client.get(kv("jfk", "k")))["values"] == [None]


def test_read_of_missing_key_is_404(client):
    r = client.get(kv("syd", "never-written"))
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_write_without_context_replaces_what_the_replica_holds(client):
    ok(client.put(kv("lhr", "k"), json={"value": "first"}))
    w = ok(client.put(kv("syd", "k"), json={"value": "second"}))
    assert w["values"] == ["second"]
    assert ok(client.get(kv("jfk", "k")))["values"] == ["second"]


def make_siblings(client, cluster, key="k"):
    """Concurrent writes at lhr and syd, then each delta delivered everywhere.

    Returns the context of a read at lhr taken after its own write, before syd's arrived.
    """
    d_lhr = local_write(cluster, "lhr", "kv", key, {"value": "L"}, now=1000.0)
    lhr_only = ok(client.get(kv("lhr", key)))
    assert lhr_only["values"] == ["L"]
    d_syd = local_write(cluster, "syd", "kv", key, {"value": "S"}, now=1000.0)
    deliver(cluster, d_lhr, ["syd", "jfk"])
    deliver(cluster, d_syd, ["lhr", "jfk"])
    assert cluster.converged()
    return lhr_only["context"]


def test_concurrent_writes_become_siblings_and_a_write_with_the_read_context_replaces_them(client, cluster):
    make_siblings(client, cluster)
    r = ok(client.get(kv("jfk", "k")))
    assert r["values"] == ["L", "S"]
    assert [(s["replica"], s["counter"], s["hlc"]) for s in r["siblings"]] == [
        ("lhr", 1, [1000, 0]),
        ("syd", 1, [1000, 0]),
    ]

    w = ok(client.put(kv("jfk", "k"), json={"value": "merged", "context": r["context"]}))
    assert w["values"] == ["merged"]
    assert [s["replica"] for s in w["siblings"]] == ["jfk"]
    for rid in IDS:
        assert ok(client.get(kv(rid, "k")))["values"] == ["merged"]
    assert cluster.converged()


def test_a_write_supersedes_only_what_its_context_saw(client, cluster):
    stale = make_siblings(client, cluster)  # saw "L" only
    w = ok(client.put(kv("jfk", "k"), json={"value": "new", "context": stale}))
    assert sorted(w["values"]) == ["S", "new"]
    assert sorted(ok(client.get(kv("lhr", "k")))["values"]) == ["S", "new"]


def test_a_context_token_from_one_replica_works_at_another(client):
    ok(client.put(kv("lhr", "k"), json={"value": 1}))
    ctx = ok(client.get(kv("syd", "k")))["context"]
    assert ok(client.put(kv("jfk", "k"), json={"value": 2, "context": ctx}))["values"] == [2]


# -- kv: delete ---------------------------------------------------------------------------


def test_delete_with_context_in_the_body(client, cluster):
    ok(client.put(kv("lhr", "k"), json={"value": 1}))
    ctx = ok(client.get(kv("syd", "k")))["context"]
    d = ok(client.request("DELETE", kv("syd", "k"), json={"context": ctx}))
    assert d["key"] == "k" and d["replica"] == "syd"
    assert d["values"] == [] and d["siblings"] == [] and d["context"] is None
    for rid in IDS:
        assert client.get(kv(rid, "k")).status_code == 404
    assert cluster.converged()


def test_delete_with_a_stale_context_in_the_query_keeps_the_concurrent_sibling(client, cluster):
    stale = make_siblings(client, cluster)  # saw "L" only
    d = ok(client.delete(kv("jfk", "k"), params={"context": stale}))
    assert d["values"] == ["S"]
    assert [s["replica"] for s in d["siblings"]] == ["syd"]
    assert ok(client.get(kv("lhr", "k")))["values"] == ["S"]


def test_delete_without_context_removes_what_the_replica_holds(client, cluster):
    make_siblings(client, cluster)
    assert ok(client.delete(kv("lhr", "k")))["values"] == []
    assert client.get(kv("syd", "k")).status_code == 404


def test_delete_of_a_missing_key_changes_nothing(client, cluster):
    ok(client.put(kv("lhr", "other"), json={"value": 1}))
    before = cluster.digests()
    assert ok(client.delete(kv("lhr", "missing")))["values"] == []
    assert cluster.digests() == before


def test_a_value_can_be_written_again_after_delete(client):
    ok(client.put(kv("lhr", "k"), json={"value": 1}))
    ok(client.delete(kv("lhr", "k")))
    assert ok(client.put(kv("syd", "k"), json={"value": 2}))["values"] == [2]
    assert ok(client.get(kv("jfk", "k")))["values"] == [2]


# -- counters -----------------------------------------------------------------------------


def test_counter_never_written_reads_zero(client):
    assert ok(client.get(counter("syd", "hits"))) == {"key": "hits", "replica": "syd", "value": 0}


def test_counters_at_three_replicas_sum(client, cluster):
    assert ok(client.post(counter("lhr", "hits"), json={"add": 5})) == {"key": "hits", "replica": "lhr", "value": 5}
    assert ok(client.post(counter("syd", "hits"), json={"add": 3}))["value"] == 8
    assert ok(client.post(counter("jfk", "hits"), json={"add": -2}))["value"] == 6
    for rid in IDS:
        assert ok(client.get(counter(rid, "hits")))["value"] == 6
    assert cluster.converged()


def test_concurrent_counter_increments_all_count(client, cluster):
    d1 = local_write(cluster, "lhr", "counters", "c", {"add": 10}, now=1.0)
    d2 = local_write(cluster, "syd", "counters", "c", {"add": 7}, now=1.0)
    deliver(cluster, d1, ["syd", "jfk"])
    deliver(cluster, d2, ["lhr", "jfk"])
    for rid in IDS:
        assert ok(client.get(counter(rid, "c")))["value"] == 17


def test_counter_add_zero_changes_nothing(client, cluster):
    ok(client.post(counter("lhr", "c"), json={"add": 4}))
    before = cluster.digests()
    assert ok(client.post(counter("syd", "c"), json={"add": 0}))["value"] == 4
    assert cluster.digests() == before


def test_counter_namespace_is_separate_from_kv(client):
    ok(client.post(counter("lhr", "same"), json={"add": 1}))
    assert client.get(kv("lhr", "same")).status_code == 404
    assert ok(client.get(aset("lhr", "same")))["members"] == []


# -- sets ---------------------------------------------------------------------------------


def test_set_never_written_reads_empty(client):
    assert ok(client.get(aset("jfk", "tags"))) == {"key": "tags", "replica": "jfk", "members": []}


def test_set_add_and_remove(client, cluster):
    s = ok(client.post(aset("lhr", "tags"), json={"add": ["a", "b", "a"]}))
    assert s == {"key": "tags", "replica": "lhr", "members": ["a", "b"]}
    assert ok(client.post(aset("syd", "tags"), json={"remove": ["a"]}))["members"] == ["b"]
    for rid in IDS:
        assert ok(client.get(aset(rid, "tags")))["members"] == ["b"]
    assert cluster.converged()


def test_set_members_are_any_json(client):
    members = ok(client.post(aset("lhr", "s"), json={"add": [{"x": 1}, [1, 2], None, 3, "3"]}))["members"]
    assert sorted(map(repr, members)) == sorted(map(repr, [{"x": 1}, [1, 2], None, 3, "3"]))
    assert ok(client.get(aset("syd", "s")))["members"] == members


def test_removing_an_absent_element_changes_nothing(client, cluster):
    ok(client.post(aset("lhr", "s"), json={"add": ["a"]}))
    before = cluster.digests()
    assert ok(client.post(aset("syd", "s"), json={"remove": ["zzz"]}))["members"] == ["a"]
    assert cluster.digests() == before


def test_set_add_wins_over_a_concurrent_remove(client, cluster):
    ok(client.post(aset("lhr", "s"), json={"add": ["x", "y"]}))
    d_remove = local_write(cluster, "syd", "sets", "s", {"remove": ["x"]}, now=1.0)
    d_add = local_write(cluster, "lhr", "sets", "s", {"add": ["x"]}, now=1.0)
    deliver(cluster, d_remove, ["lhr", "jfk"])
    deliver(cluster, d_add, ["syd", "jfk"])
    for rid in IDS:
        assert ok(client.get(aset(rid, "s")))["members"] == ["x", "y"]
    # A remove that saw the add removes it everywhere.
    ok(client.post(aset("jfk", "s"), json={"remove": ["x"]}))
    for rid in IDS:
        assert ok(client.get(aset(rid, "s")))["members"] == ["y"]


# -- keys from the path ---------------------------------------------------------------------


# Starlette's TestClient percent-decodes the path twice (httpx's `url.path` is already
# decoded, then it unquotes again), so a key holding an escape such as "%2F" is checked
# over real HTTP in test_serve.py instead.
@pytest.mark.parametrize(
    "key",
    ["a/b", "with space", "ünïcødé ✓ 東京 🚀", "dir/sub dir/ﬁle", "100%", "a+b?c=d#e", "trailing/", "a//b"],
)
@pytest.mark.parametrize("ns", ["kv", "counters", "sets"])
def test_keys_round_trip(client, key, ns):
    if ns == "kv":
        w = ok(client.put(kv("lhr", key), json={"value": key}))
        r = ok(client.get(kv("syd", key)))
        assert r["values"] == [key]
    elif ns == "counters":
        w = ok(client.post(counter("lhr", key), json={"add": 2}))
        r = ok(client.get(counter("syd", key)))
        assert r["value"] == 2
    else:
        w = ok(client.post(aset("lhr", key), json={"add": [key]}))
        r = ok(client.get(aset("syd", key)))
        assert r["members"] == [key]
    assert w["key"] == key and r["key"] == key


def test_slash_and_percent_2f_name_the_same_key(client):
    ok(client.put("/api/replicas/lhr/kv/x%2Fy", json={"value": "encoded"}))
    r = ok(client.get("/api/replicas/syd/kv/x/y"))
    assert r["key"] == "x/y" and r["values"] == ["encoded"]


def test_key_of_exactly_256_utf8_bytes_is_accepted(client):
    key = "é" * 128  # 256 bytes
    assert ok(client.put(kv("lhr", key), json={"value": 1}))["key"] == key
    assert ok(client.get(kv("jfk", key)))["values"] == [1]


def test_value_of_exactly_64_kib_of_json_is_accepted(client):
    value = "x" * (64 * 1024 - 2)  # plus two quotes: 65536 bytes of JSON
    assert ok(client.put(kv("lhr", "big"), json={"value": value}))["values"] == [value]
    assert ok(client.get(kv("syd", "big")))["values"] == [value]


# -- bad input: right status, one error shape, no state change, never the 500 handler ---------


def seeded(client) -> dict[str, str]:
    """Some state at every replica; returns context tokens for keys `k` and `other`."""
    ok(client.put(kv("lhr", "k"), json={"value": "v"}))
    ok(client.put(kv("syd", "other"), json={"value": 1}))
    ok(client.post(counter("syd", "c"), json={"add": 5}))
    ok(client.post(aset("jfk", "s"), json={"add": ["x"]}))
    return {key: ok(client.get(kv("lhr", key)))["context"] for key in ("k", "other")}


def tamper(token: str) -> str:
    i = len(token) // 2
    return token[:i] + ("B" if token[i] != "B" else "C") + token[i + 1 :]


JSON = {"content-type": "application/json"}
NESTED_70 = "[" * 70 + "]" * 70
LONG_KEY = "é" * 128 + "x"  # 257 bytes of UTF-8

# (name, request(client, tokens) -> response, status, code, words the message must contain)
BAD = [
    # unknown replica
    ("unknown replica kv get", lambda c, t: c.get(kv("nope", "k")), 404, "unknown_replica", ["nope"]),
    ("unknown replica kv put", lambda c, t: c.put(kv("nope", "k"), json={"value": 1}), 404, "unknown_replica", ["nope"]),
    ("unknown replica kv delete", lambda c, t: c.delete(kv("nope", "k")), 404, "unknown_replica", ["nope"]),
    ("unknown replica counter", lambda c, t: c.post(counter("nope", "c"), json={"add": 1}), 404, "unknown_replica", []),
    ("unknown replica counter get", lambda c, t: c.get(counter("nope", "c")), 404, "unknown_replica", []),
    ("unknown replica set", lambda c, t: c.post(aset("nope", "s"), json={"add": [1]}), 404, "unknown_replica", []),
    # unknown paths: nothing of later issues is faked
    ("unknown path", lambda c, t: c.get("/api/nothing"), 404, "not_found", ["/api/nothing"]),
    ("unknown namespace", lambda c, t: c.get("/api/replicas/lhr/docs/k"), 404, "not_found", []),
    ("unknown fault", lambda c, t: c.post("/api/faults/meteor", json={}), 404, "not_found", []),
    ("unknown sim control", lambda c, t: c.put("/api/sim/gravity", json={"gravity": 1}), 404, "not_found", []),
    ("unknown replica action", lambda c, t: c.post("/api/replicas/lhr/explode"), 404, "not_found", []),
    # wrong method
    ("POST kv", lambda c, t: c.post(kv("lhr", "k"), json={"value": 1}), 405, "method_not_allowed", ["PUT"]),
    ("PATCH kv", lambda c, t: c.patch(kv("lhr", "k"), json={"value": 1}), 405, "method_not_allowed", []),
    ("PUT counter", lambda c, t: c.put(counter("lhr", "c"), json={"add": 1}), 405, "method_not_allowed", []),
    ("DELETE set", lambda c, t: c.delete(aset("lhr", "s")), 405, "method_not_allowed", []),
    ("POST healthz", lambda c, t: c.post("/healthz"), 405, "method_not_allowed", []),
    # wrong types: counters take a JSON integer, nothing else
    ("add true", lambda c, t: c.post(counter("lhr", "c"), json={"add": True}), 422, "validation_error", ["body.add", "integer"]),
    ("add 1.5", lambda c, t: c.post(counter("lhr", "c"), json={"add": 1.5}), 422, "validation_error", ["body.add", "integer"]),
    ("add 2.0", lambda c, t: c.post(counter("lhr", "c"), json={"add": 2.0}), 422, "validation_error", ["body.add"]),
    ('add "3"', lambda c, t: c.post(counter("lhr", "c"), json={"add": "3"}), 422, "validation_error", ["body.add", "integer"]),
    ("add null", lambda c, t: c.post(counter("lhr", "c"), json={"add": None}), 422, "validation_error", ["body.add"]),
    ("add [1]", lambda c, t: c.post(counter("lhr", "c"), json={"add": [1]}), 422, "validation_error", ["body.add"]),
    ("context 5", lambda c, t: c.put(kv("lhr", "k"), json={"value": 1, "context": 5}), 422, "validation_error", ["body.context"]),
    ("delete context 5", lambda c, t: c.request("DELETE", kv("lhr", "k"), json={"context": 5}), 422, "validation_error", ["body.context"]),
    ("set add string", lambda c, t: c.post(aset("lhr", "s"), json={"add": "x"}), 422, "validation_error", ["body.add", "list"]),
    ("set remove object", lambda c, t: c.post(aset("lhr", "s"), json={"remove": {"x": 1}}), 422, "validation_error", ["body.remove"]),
    ("set add null", lambda c, t: c.post(aset("lhr", "s"), json={"add": None}), 422, "invalid_operation", ["list"]),
    ("body is a list", lambda c, t: c.post(counter("lhr", "c"), json=[1]), 422, "validation_error", ["body"]),
    ("body is null", lambda c, t: c.put(kv("lhr", "k"), content=b"null", headers=JSON), 422, "validation_error", ["body"]),
    # missing and unknown fields
    ("kv no value", lambda c, t: c.put(kv("lhr", "k"), json={"context": None}), 422, "validation_error", ["body.value", "required"]),
    ("kv no body", lambda c, t: c.put(kv("lhr", "k")), 422, "validation_error", ["body", "required"]),
    ("counter no add", lambda c, t: c.post(counter("lhr", "c"), json={}), 422, "validation_error", ["body.add", "required"]),
    ("counter no body", lambda c, t: c.post(counter("lhr", "c")), 422, "validation_error", ["body"]),
    ("kv typo field", lambda c, t: c.put(kv("lhr", "k"), json={"value": 1, "contxt": None}), 422, "validation_error", ["body.contxt"]),
    ("counter extra", lambda c, t: c.post(counter("lhr", "c"), json={"add": 1, "sub": 1}), 422, "validation_error", ["body.sub"]),
    ("set neither", lambda c, t: c.post(aset("lhr", "s"), json={}), 422, "invalid_operation", ["add", "remove"]),
    ("set both", lambda c, t: c.post(aset("lhr", "s"), json={"add": ["a"], "remove": ["x"]}), 422, "invalid_operation", ["exactly one"]),
    # context tokens
    ("garbage context", lambda c, t: c.put(kv("lhr", "k"), json={"value": 1, "context": "garbage"}), 400, "bad_context", []),
    ("empty context", lambda c, t: c.put(kv("lhr", "k"), json={"value": 1, "context": ""}), 400, "bad_context", []),
    ("tampered context", lambda c, t: c.put(kv("lhr", "k"), json={"value": 1, "context": tamper(t['k'])}), 400, "bad_context", []),
    ("other key's context", lambda c, t: c.put(kv("lhr", "k"), json={"value": 1, "context": t['other']}), 400, "bad_context", ["different key"]),
    ("delete garbage query", lambda c, t: c.delete(kv("lhr", "k"), params={"context": "garbage"}), 400, "bad_context", []),
    ("delete other key's context", lambda c, t: c.request("DELETE", kv("lhr", "k"), json={"context": t['other']}), 400, "bad_context", []),
    ("delete two contexts", lambda c, t: c.request("DELETE", kv("lhr", "k"), params={"context": t['k']}, json={"context": t['k']}), 422, "invalid_operation", []),
    # bodies that are not JSON
    ("non-JSON body", lambda c, t: c.put(kv("lhr", "k"), content=b"{value: 1", headers=JSON), 400, "invalid_json", []),
    ("truncated JSON", lambda c, t: c.post(counter("lhr", "c"), content=b'{"add": ', headers=JSON), 400, "invalid_json", []),
    ("JSON sent as text", lambda c, t: c.post(counter("lhr", "c"), content=b'{"add": 1}', headers={"content-type": "text/plain"}), 415, "unsupported_media_type", ["application/json"]),
    ("JSON sent as a form", lambda c, t: c.put(kv("lhr", "k"), content=b'{"value": 1}', headers={"content-type": "application/x-www-form-urlencoded"}), 415, "unsupported_media_type", []),
    ("nested too deep to parse", lambda c, t: c.put(kv("lhr", "k"), content=b'{"value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", headers=JSON), 400, "bad_request", []),
    # keys and values the library refuses
    ("key over 256 bytes", lambda c, t: c.put(kv("lhr", LONG_KEY), json={"value": 1}), 422, "invalid_key", ["256"]),
    ("long counter key", lambda c, t: c.post(counter("lhr", LONG_KEY), json={"add": 1}), 422, "invalid_key", []),
    ("long set key", lambda c, t: c.get(aset("lhr", LONG_KEY)), 422, "invalid_key", []),
    ("empty key", lambda c, t: c.put("/api/replicas/lhr/kv/", json={"value": 1}), 422, "invalid_key", []),
    ("value over 64 KiB", lambda c, t: c.put(kv("lhr", "k"), json={"value": "x" * (64 * 1024 - 1)}), 413, "value_too_large", ["65536"]),
    ("set element over 64 KiB", lambda c, t: c.post(aset("lhr", "s"), json={"add": ["y" * 70_000]}), 413, "value_too_large", []),
    ("NaN value", lambda c, t: c.put(kv("lhr", "k"), content=b'{"value": NaN}', headers=JSON), 422, "invalid_value", []),
    ("infinite value", lambda c, t: c.put(kv("lhr", "k"), content=b'{"value": [1e999]}', headers=JSON), 422, "invalid_value", []),
    ("integer over 64 bits", lambda c, t: c.put(kv("lhr", "k"), json={"value": 2**64}), 422, "invalid_value", []),
    ("value nested 70 deep", lambda c, t: c.put(kv("lhr", "k"), content=b'{"value": ' + NESTED_70.encode() + b"}", headers=JSON), 422, "invalid_value", []),
    ("lone surrogate", lambda c, t: c.put(kv("lhr", "k"), content=b'{"value": "\\ud800"}', headers=JSON), 422, "invalid_value", []),
    ("NaN set element", lambda c, t: c.post(aset("lhr", "s"), content=b'{"add": [NaN]}', headers=JSON), 422, "invalid_value", []),
    ("counter overflow", lambda c, t: c.post(counter("lhr", "c"), json={"add": 2**63}), 422, "counter_overflow", []),
    ("huge counter add", lambda c, t: c.post(counter("lhr", "c"), json={"add": -(2**70)}), 422, "counter_overflow", []),
]


@pytest.mark.parametrize("request_, status, code, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_a_json_error_and_changes_nothing(client, cluster, caplog, request_, status, code, words):
    tokens = seeded(client)
    before = cluster.digests()
    with caplog.at_level(logging.DEBUG, logger="app.web.errors"):
        r = request_(client, tokens)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == ["error"] and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    for w in words:
        assert w.lower() in message.lower(), message
    assert cluster.digests() == before
    assert not [rec for rec in caplog.records if rec.name == "app.web.errors"], "reached the 500 handler"


def test_validation_messages_name_the_field_exactly(client):
    r = client.post(counter("lhr", "c"), json={"add": True})
    assert r.json()["error"]["message"] == "body.add: Input should be a valid integer"


def test_method_not_allowed_keeps_the_allow_header(client):
    r = client.post(kv("lhr", "k"), json={"value": 1})
    assert r.status_code == 405
    assert set(r.headers["allow"].replace(" ", "").split(",")) >= {"GET", "PUT", "DELETE"}


def test_counter_at_the_edge_of_63_bits(client):
    big = 2**63 - 1
    assert ok(client.post(counter("lhr", "c"), json={"add": big}))["value"] == big
    assert ok(client.get(counter("syd", "c")))["value"] == big
    r = client.post(counter("lhr", "c"), json={"add": 1})
    assert r.status_code == 422 and r.json()["error"]["code"] == "counter_overflow"
    assert ok(client.get(counter("lhr", "c")))["value"] == big


def test_a_token_from_another_cluster_is_refused(client):
    other = TestClient(create_app(InstantCluster("lhr", secret=b"another cluster")))
    ok(other.put(kv("lhr", "k"), json={"value": 1}))
    foreign = ok(other.get(kv("lhr", "k")))["context"]
    ok(client.put(kv("lhr", "k"), json={"value": 1}))
    r = client.put(kv("lhr", "k"), json={"value": 2, "context": foreign})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_context"


def test_unexpected_errors_are_500_json_and_logged(cluster, caplog):
    class Broken(InstantCluster):
        def read(self, *args, **kwargs):
            raise RuntimeError("secret internals")

    client = TestClient(create_app(Broken("lhr")), raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR, logger="app.web.errors"):
        r = client.get(kv("lhr", "k"))
    assert r.status_code == 500
    assert r.json() == {"error": {"code": "internal", "message": "internal server error"}}
    assert "secret internals" not in r.text
    assert [rec for rec in caplog.records if rec.name == "app.web.errors" and rec.exc_info]
