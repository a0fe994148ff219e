"""Observation, faults and simulation control over HTTP, on a live cluster whose clock the test moves.

Reads at a replica return that replica's view, which lags the others until the WAN carries
the write there: the tests move virtual time explicitly to show it.
"""

from __future__ import annotations

import pytest

from live_helpers import FakeClock, is_error, make_client, make_live, ok, snapshot

IDS = ["lhr", "syd", "jfk"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def live(clock):
    return make_live(",".join(IDS), clock=clock)


@pytest.fixture
def client(live):
    return make_client(live)


def kv(replica: str, key: str) -> str:
    return f"/api/replicas/{replica}/kv/{key}"


# -- observation ----------------------------------------------------------------------------


def test_topology_lists_replicas_and_modelled_round_trips(client):
    t = ok(client.get("/api/topology"))
    assert [r["id"] for r in t["replicas"]] == IDS
    lhr = t["replicas"][0]
    assert lhr == {"id": "lhr", "city": "London", "region": "Europe", "lat": 51.51, "lon": -0.13}
    assert set(t["rtt_ms"]) == set(IDS)
    assert set(t["rtt_ms"]["lhr"]) == {"syd", "jfk"}
    assert t["rtt_ms"]["lhr"]["jfk"] == t["rtt_ms"]["jfk"]["lhr"]
    assert t["rtt_ms"]["lhr"]["jfk"] == pytest.approx(72, rel=0.25)  # the design's measured figure


def test_replicas_show_status_version_vector_and_digest(client, live):
    before = ok(client.get("/api/replicas"))["replicas"]
    assert [r["id"] for r in before] == IDS
    assert all(r["status"] == "up" and r["version_vector"] == {} and r["incarnation"] == 0 for r in before)
    assert len({r["digest"] for r in before}) == 1

    ok(client.put(kv("lhr", "k"), json={"value": 1}))
    after = {r["id"]: r for r in ok(client.get("/api/replicas"))["replicas"]}
    assert after["lhr"]["version_vector"] == {"lhr": 1}
    assert after["syd"]["version_vector"] == {}  # not there yet: no virtual time has passed
    assert after["lhr"]["digest"] != after["syd"]["digest"]


def test_write_at_london_read_at_sydney_once_it_has_crossed(client, live, clock):
    ok(client.put(kv("lhr", "greeting"), json={"value": "hello"}))
    is_error(client.get(kv("syd", "greeting")), 404, "not_found")  # Sydney's own view: nothing yet
    c = ok(client.get("/api/convergence"))
    assert c["converged"] is False and c["in_flight"] > 0 and set(c["digests"]) == set(IDS)

    clock.advance(0.5)  # half a second of virtual time at speed 1: far more than London to Sydney
    r = ok(client.get(kv("syd", "greeting")))
    assert r["values"] == ["hello"] and r["replica"] == "syd"
    assert live.settle()
    c = ok(client.get("/api/convergence"))
    assert c["converged"] is True and len(set(c["digests"].values())) == 1


# -- partitions: parallel universes, and the write that reconciles them ----------------------


def test_partition_concurrent_writes_heal_siblings_and_a_write_with_the_context_resolves_them(client, live, clock):
    p = ok(client.post("/api/faults/partition", json={"groups": [["lhr"]]}))
    assert p == {"partitioned": True, "groups": [["lhr"], ["syd", "jfk"]]}  # the unlisted form one more group

    ok(client.put(kv("lhr", "k"), json={"value": "London"}))
    ok(client.put(kv("syd", "k"), json={"value": "Sydney"}))
    clock.advance(3.0)
    assert ok(client.get(kv("lhr", "k")))["values"] == ["London"]
    assert ok(client.get(kv("jfk", "k")))["values"] == ["Sydney"]
    assert ok(client.get("/api/convergence"))["converged"] is False

    assert ok(client.delete("/api/faults/partition")) == {"partitioned": False, "groups": []}
    assert live.settle()
    r = ok(client.get(kv("jfk", "k")))
    assert sorted(r["values"]) == ["London", "Sydney"]
    assert {s["replica"] for s in r["siblings"]} == {"lhr", "syd"}

    w = ok(client.put(kv("jfk", "k"), json={"value": "both", "context": r["context"]}))
    assert w["values"] == ["both"]
    assert live.settle()
    for rid in IDS:
        assert ok(client.get(kv(rid, "k")))["values"] == ["both"]


def test_a_new_partition_replaces_the_old_and_healing_twice_is_fine(client, live):
    ok(client.post("/api/faults/partition", json={"groups": [["lhr"], ["syd"]]}))
    p = ok(client.post("/api/faults/partition", json={"groups": [["lhr", "syd"]]}))
    assert p["groups"] == [["lhr", "syd"], ["jfk"]]
    assert live.sim.partitioned
    ok(client.delete("/api/faults/partition"))
    ok(client.delete("/api/faults/partition"))
    assert not live.sim.partitioned


# -- crashes --------------------------------------------------------------------------------


def test_a_crashed_replica_answers_503_and_never_serves_from_another(client, live):
    ok(client.put(kv("lhr", "k"), json={"value": 1}))
    assert live.settle()
    s = ok(client.post("/api/replicas/syd/crash"))
    assert s["id"] == "syd" and s["status"] == "down"
    for r in (
        client.get(kv("syd", "k")),
        client.put(kv("syd", "k"), json={"value": 2}),
        client.delete(kv("syd", "k")),
        client.get("/api/replicas/syd/counters/c"),
        client.post("/api/replicas/syd/counters/c", json={"add": 1}),
        client.get("/api/replicas/syd/sets/s"),
        client.post("/api/replicas/syd/sets/s", json={"add": [1]}),
    ):
        err = is_error(r, 503, "replica_down")
        assert "syd" in err["message"]
    assert {r["id"]: r["status"] for r in ok(client.get("/api/replicas"))["replicas"]}["syd"] == "down"

    ok(client.put(kv("lhr", "k"), json={"value": 3}))  # the others carry on
    assert live.settle()
    assert ok(client.get(kv("jfk", "k")))["values"] == [3]

    assert ok(client.post("/api/replicas/syd/recover"))["status"] == "up"
    assert ok(client.post("/api/replicas/syd/recover"))["status"] == "up"  # idempotent
    assert live.settle()
    assert ok(client.get(kv("syd", "k")))["values"] == [3]  # caught up by anti-entropy


def test_crash_losing_state_comes_back_empty_under_a_new_incarnation_then_catches_up(client, live):
    ok(client.post("/api/replicas/lhr/counters/c", json={"add": 7}))
    assert live.settle()
    assert ok(client.post("/api/replicas/jfk/crash", json={"lose_state": True}))["status"] == "down"
    s = ok(client.post("/api/replicas/jfk/recover"))
    assert s["status"] == "up" and s["incarnation"] == 1 and s["version_vector"] == {}
    assert live.settle()
    assert ok(client.get("/api/replicas/jfk/counters/c"))["value"] == 7


def test_crash_without_losing_state_keeps_it(client, live):
    ok(client.post("/api/replicas/lhr/counters/c", json={"add": 2}))
    assert live.settle()
    ok(client.post("/api/replicas/jfk/crash", json={"lose_state": False}))
    s = ok(client.post("/api/replicas/jfk/recover"))
    assert s["incarnation"] == 0 and s["version_vector"] == {"lhr": 1}


# -- simulation control ---------------------------------------------------------------------


def test_sim_settings_and_controls(client, live, clock):
    s = ok(client.get("/api/sim"))
    assert s == {"strategy": "plumtree", "speed": 1.0, "effective_speed": 1.0, "loss": 0.0, "paused": False,
                 "now_ms": s["now_ms"]}

    assert ok(client.put("/api/sim/strategy", json={"strategy": "gossip"}))["strategy"] == "gossip"
    assert live.cluster.config.strategy == "gossip"
    assert ok(client.put("/api/sim/speed", json={"speed": 0.25}))["speed"] == 0.25
    assert ok(client.put("/api/sim/speed", json={"speed": 2}))["speed"] == 2.0  # an integer is a number
    assert ok(client.put("/api/sim/loss", json={"loss": 0.5}))["loss"] == 0.5
    assert live.sim.loss == 0.5

    paused = ok(client.post("/api/sim/pause"))
    assert paused["paused"] is True
    clock.advance(10)
    assert ok(client.get("/api/sim"))["now_ms"] == paused["now_ms"]  # time stands still
    stepped = ok(client.post("/api/sim/step", json={"ms": 250}))
    assert stepped["now_ms"] == pytest.approx(paused["now_ms"] + 250)
    resumed = ok(client.post("/api/sim/resume"))
    assert resumed["paused"] is False
    clock.advance(1)
    assert ok(client.get("/api/sim"))["now_ms"] == pytest.approx(stepped["now_ms"] + 2000)  # speed 2


def test_session_on_an_open_server_allows_everything(client):
    assert ok(client.get("/api/session")) == {"can_write": True, "can_admin": True, "audience": False,
                                              "signed_in": False, "can_sign_in": False}


def test_admin_paths_are_in_the_openapi_schema_with_their_models(client):
    spec = ok(client.get("/openapi.json"))
    schemas = spec["components"]["schemas"]
    assert {"PartitionIn", "CrashIn", "StrategyIn", "SpeedIn", "LossIn", "StepIn", "SimOut", "SessionOut",
            "TopologyOut", "ReplicasOut", "ConvergenceOut"} <= set(schemas)
    assert schemas["StrategyIn"]["properties"]["strategy"]["enum"] == ["plumtree", "gossip", "direct"]
    # the bearer token is declared, so /docs offers "Authorize" for servers started with tokens
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert spec["paths"]["/api/sim/pause"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "401" in spec["paths"]["/api/replicas/{replica_id}/crash"]["post"]["responses"]


# -- bad input: nothing changes, one error shape ----------------------------------------------

BAD = [
    # (name, method, path, json, status, code, words in the message)
    ("partition unknown replica", "POST", "/api/faults/partition", {"groups": [["lhr", "zzz"]]}, 422, "invalid_partition", ["zzz"]),
    ("partition listed twice", "POST", "/api/faults/partition", {"groups": [["lhr"], ["syd", "lhr"]]}, 422, "invalid_partition", ["lhr", "once"]),
    ("partition twice in one group", "POST", "/api/faults/partition", {"groups": [["syd", "syd"]]}, 422, "invalid_partition", ["syd"]),
    ("partition no groups", "POST", "/api/faults/partition", {"groups": []}, 422, "invalid_partition", ["groups"]),
    ("partition empty group", "POST", "/api/faults/partition", {"groups": [["lhr"], []]}, 422, "invalid_partition", ["groups[1]"]),
    ("partition missing groups", "POST", "/api/faults/partition", {}, 422, "validation_error", ["body.groups"]),
    ("partition groups not lists", "POST", "/api/faults/partition", {"groups": ["lhr", "syd"]}, 422, "validation_error", ["body.groups.0"]),
    ("partition id not a string", "POST", "/api/faults/partition", {"groups": [[1]]}, 422, "validation_error", ["body.groups.0.0"]),
    ("partition extra field", "POST", "/api/faults/partition", {"groups": [["lhr"]], "heal_in": 5}, 422, "validation_error", ["body.heal_in"]),
    ("crash unknown replica", "POST", "/api/replicas/zzz/crash", None, 404, "unknown_replica", ["zzz"]),
    ("recover unknown replica", "POST", "/api/replicas/zzz/recover", None, 404, "unknown_replica", ["zzz"]),
    ("crash lose_state not bool", "POST", "/api/replicas/lhr/crash", {"lose_state": "yes"}, 422, "validation_error", ["body.lose_state"]),
    ("crash lose_state 1", "POST", "/api/replicas/lhr/crash", {"lose_state": 1}, 422, "validation_error", ["body.lose_state"]),
    ("crash unknown field", "POST", "/api/replicas/lhr/crash", {"forever": True}, 422, "validation_error", ["body.forever"]),
    ("strategy unknown", "PUT", "/api/sim/strategy", {"strategy": "flood"}, 422, "validation_error", ["body.strategy", "plumtree"]),
    ("strategy missing", "PUT", "/api/sim/strategy", {}, 422, "validation_error", ["body.strategy", "required"]),
    ("speed zero", "PUT", "/api/sim/speed", {"speed": 0}, 422, "validation_error", ["body.speed"]),
    ("speed negative", "PUT", "/api/sim/speed", {"speed": -1}, 422, "validation_error", ["body.speed"]),
    ("speed too fast", "PUT", "/api/sim/speed", {"speed": 1000}, 422, "validation_error", ["body.speed"]),
    ("speed string", "PUT", "/api/sim/speed", {"speed": "2"}, 422, "validation_error", ["body.speed"]),
    ("speed bool", "PUT", "/api/sim/speed", {"speed": True}, 422, "validation_error", ["body.speed"]),
    ("loss above 1", "PUT", "/api/sim/loss", {"loss": 1.5}, 422, "validation_error", ["body.loss"]),
    ("loss negative", "PUT", "/api/sim/loss", {"loss": -0.1}, 422, "validation_error", ["body.loss"]),
    ("loss null", "PUT", "/api/sim/loss", {"loss": None}, 422, "validation_error", ["body.loss"]),
    ("step zero", "POST", "/api/sim/step", {"ms": 0}, 422, "validation_error", ["body.ms"]),
    ("step negative", "POST", "/api/sim/step", {"ms": -5}, 422, "validation_error", ["body.ms"]),
    ("step over a minute", "POST", "/api/sim/step", {"ms": 1e9}, 422, "validation_error", ["body.ms"]),
    ("step missing", "POST", "/api/sim/step", None, 422, "validation_error", ["body"]),
    ("sim wrong method", "POST", "/api/sim/speed", {"speed": 1}, 405, "method_not_allowed", ["PUT"]),
    ("unknown path", "GET", "/api/replicas/lhr", None, 404, "not_found", []),
]


@pytest.mark.parametrize("method, path, body, status, code, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_admin_input_is_refused_and_changes_nothing(client, live, method, path, body, status, code, words):
    ok(client.put(kv("lhr", "k"), json={"value": 1}))
    before = snapshot(live)
    r = client.request(method, path, json=body) if body is not None else client.request(method, path)
    err = is_error(r, status, code)
    for w in words:
        assert w.lower() in err["message"].lower(), err["message"]
    assert snapshot(live) == before


@pytest.mark.parametrize("raw", [b'{"speed": NaN}', b'{"speed": Infinity}', b'{"ms": NaN}', b'{"loss": -Infinity}'])
def test_non_finite_numbers_are_refused(client, live, raw):
    path = {"speed": "/api/sim/speed", "ms": "/api/sim/step", "loss": "/api/sim/loss"}[raw.split(b'"')[1].decode()]
    method = "POST" if path.endswith("step") else "PUT"
    before = snapshot(live)
    is_error(client.request(method, path, content=raw, headers={"content-type": "application/json"}), 422,
             "validation_error")
    assert snapshot(live) == before
