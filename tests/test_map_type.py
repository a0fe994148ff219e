"""The map type (`maps`): an observed-remove map of registers and counters, end to end.

Its merge laws and delivery-order properties run in the shared harness with every other type
(test_crdt_laws, test_causal_deltas, test_convergence, the fault campaign); here are the
semantics particular to it, its errors, its wire form, and its place in the API, the scenarios,
the coordinated baseline and storage.
"""

from __future__ import annotations

import textwrap

import msgpack
import pytest
from fastapi.testclient import TestClient

from app.dashboard.server import create_app
from live_helpers import make_live, ok
from replication import Replica
from replication.bench.oracle import InvariantBroken, Model
from replication.baseline.consensus import ConsensusState, Entry
from replication.crdts import ormap
from replication.delta import Delta
from replication.errors import CounterOverflow, InvalidOperation, InvalidValue, MalformedDelta, ValueTooLarge
from replication.scenarios import parse, run_fast
from replication.scenarios.spec import ScenarioError
from replication.io.storage import Storage

IDS = ["a", "b", "c"]


def reps(*ids):
    return [Replica(i, members=ids) for i in ids]


def write(r: Replica, op: dict, key: str = "m", now: float = 1.0):
    return r.write("maps", key, op, now=now)


def fields(r: Replica, key: str = "m") -> dict:
    return r.read("maps", key).fields


def conflicts(r: Replica, key: str = "m") -> dict:
    return r.read("maps", key).conflicts


def wire(d: Delta) -> Delta:
    return Delta.from_wire(msgpack.unpackb(msgpack.packb(d.to_wire())))


# -- semantics --------------------------------------------------------------------------------------


def test_a_map_holds_registers_and_counters_by_field():
    a, b = reps("a", "b")
    v1, d1 = write(a, {"set": {"colour": "red", "size": {"eu": 40}}})
    v2, d2 = write(a, {"add": {"visits": 3}}, now=2)
    v3, d3 = write(a, {"add": {"visits": -1, "stock": 5}}, now=3)
    assert v3.fields == {"colour": "red", "size": {"eu": 40}, "visits": 2, "stock": 5} and v3.conflicts == {}
    for d in (d3, d1, d2):  # any order
        b.apply(wire(d))
    assert fields(b) == v3.fields and b.digest() == a.digest()
    v4, _ = write(a, {"remove": ["colour", "visits"]}, now=4)
    assert v4.fields == {"size": {"eu": 40}, "stock": 5}


def test_a_value_written_concurrently_with_the_fields_removal_survives():
    a, b = reps("a", "b")
    _, d = write(a, {"set": {"colour": "red"}})
    b.apply(d)
    _, rm = write(a, {"remove": ["colour"]}, now=2)
    _, blue = write(b, {"set": {"colour": "blue"}}, now=2)
    a.apply(blue)
    b.apply(rm)
    assert fields(a) == fields(b) == {"colour": "blue"}
    assert a.digest() == b.digest()


def test_a_counter_removed_concurrently_with_an_increment_keeps_exactly_that_increment():
    """Add-wins for counters, to the unit: the concurrent increment survives with its own amount,
    never the totals the removal took away (a dot-per-actor counter would bring back all 7)."""
    a, b = reps("a", "b")
    for i, n in enumerate((5, 2)):
        b.apply(write(a, {"add": {"n": n}}, now=i)[1])
    _, rm = write(b, {"remove": ["n"]}, now=5)  # b saw a's 7
    _, inc = write(a, {"add": {"n": 1}}, now=5)  # a did not see the removal: its totals say 8
    assert fields(a) == {"n": 8}
    a.apply(rm)
    b.apply(inc)
    assert fields(a) == fields(b) == {"n": 1} and a.digest() == b.digest()
    _, again = write(a, {"add": {"n": 2}}, now=6)  # the actor's totals continue above the floor
    b.apply(again)
    assert fields(a) == fields(b) == {"n": 3}


def test_an_old_counter_entry_arriving_after_its_field_was_removed_stays_removed():
    """The delta a replica never got, arriving after the removal of what superseded it: the
    removal's floor keeps it dead at every step (with contexts alone it would come back)."""
    a, b, c = reps("a", "b", "c")
    d1 = write(a, {"add": {"n": 1}})[1]
    d2 = write(a, {"add": {"n": 1}}, now=2)[1]
    b.apply(d2)  # b never gets d1
    rm = write(b, {"remove": ["n"]}, now=3)[1]
    c.apply(rm)
    assert fields(c) == {}
    c.apply(d1)  # late, and older than what the removal saw
    assert fields(c) == {}
    c.apply(d2)
    assert fields(c) == {}
    a.apply(rm)
    assert fields(a) == {} and a.read("maps", "m") == c.read("maps", "m")


def test_an_increment_made_after_seeing_a_removal_counts_only_itself_where_the_removal_is_late():
    a, b, c = reps("a", "b", "c")
    d1 = write(a, {"add": {"n": 4}})[1]
    b.apply(d1)
    rm = write(b, {"remove": ["n"]}, now=2)[1]
    a.apply(rm)
    inc = write(a, {"add": {"n": 1}}, now=3)[1]  # after the removal: 1, continuing a's totals (5) from its floor (4)
    c.apply(d1)
    c.apply(inc)  # the removal has not reached c
    assert fields(c) == {"n": 1}
    c.apply(rm)
    assert fields(c) == {"n": 1} and c.digest() == a.digest()


def test_counter_deltas_of_a_field_out_of_order_never_over_count():
    a, b = reps("a", "b")
    ds = [write(a, {"add": {"n": 1}}, now=i)[1] for i in range(3)]
    b.apply(ds[0])
    b.apply(ds[2])
    assert fields(b) == {"n": 3}
    b.apply(ds[1])
    assert fields(b) == {"n": 3}


def test_siblings_are_all_shown_and_the_field_shows_the_last_written():
    a, b = reps("a", "b")
    _, x = write(a, {"set": {"size": "M"}}, now=10)
    _, y = write(b, {"set": {"size": "L"}}, now=20)  # later by the hybrid clock
    a.apply(y)
    b.apply(x)
    for r in (a, b):
        assert fields(r) == {"size": "L"}
        assert conflicts(r) == {"size": ["M", "L"]}  # in dot order, as kv lists siblings
    _, z = write(a, {"set": {"size": "S"}}, now=30)  # a write that saw both resolves them
    b.apply(z)
    assert fields(b) == {"size": "S"} and conflicts(b) == {}


def test_a_field_set_at_one_replica_and_counted_at_another_conflicts_until_removed():
    a, b = reps("a", "b")
    _, x = write(a, {"set": {"f": "text"}})
    _, y = write(b, {"add": {"f": 2}})
    a.apply(y)
    b.apply(x)
    assert fields(a) == fields(b) == {"f": 2} and conflicts(a) == conflicts(b) == {"f": ["text", 2]}
    for op in ({"set": {"f": 1}}, {"add": {"f": 1}}):
        with pytest.raises(InvalidOperation, match="remove it"):
            write(a, op)
    _, rm = write(a, {"remove": ["f"]}, now=3)
    b.apply(rm)
    assert fields(a) == fields(b) == {} and a.digest() == b.digest()
    assert write(b, {"set": {"f": "again"}}, now=4)[0].fields == {"f": "again"}


def test_a_removed_counter_field_keeps_one_reset_however_often_it_is_removed():
    (a,) = reps("a")
    for i in range(5):
        write(a, {"add": {"n": 2}}, now=2 * i)
        write(a, {"remove": ["n"]}, now=2 * i + 1)
    f = a.store.get("maps", "m")["n"]
    assert (f.reg, f.ctr, len(f.rec)) == ({}, {}, 1)
    assert fields(a) == {}
    assert write(a, {"add": {"n": 1}}, now=20)[0].fields == {"n": 1}


def test_removing_what_is_not_there_and_empty_operations_change_nothing():
    (a,) = reps("a")
    for op in ({"remove": ["nothing"]}, {"set": {}}, {"add": {}}, {"add": {"n": 0}}):
        view, delta = write(a, op)
        assert delta is None and view.fields == {}
    assert a.version_vector.to_dict() == {}


@pytest.mark.parametrize("op, error", [
    ([], InvalidOperation),
    ({}, InvalidOperation),
    ({"set": {"a": 1}, "add": {"b": 1}}, InvalidOperation),
    ({"set": {"a": 1}, "context": None}, InvalidOperation),
    ({"set": ["a"]}, InvalidOperation),
    ({"add": {"a": 1.5}}, InvalidOperation),
    ({"add": {"a": True}}, InvalidOperation),
    ({"add": {"a": "1"}}, InvalidOperation),
    ({"add": {"n": 2**62}}, CounterOverflow),  # n holds 2^62 already
    ({"add": {"n": -(2**63)}}, CounterOverflow),
    ({"remove": "a"}, InvalidOperation),
    ({"remove": [1]}, InvalidOperation),
    ({"remove": [""]}, InvalidOperation),
    ({"set": {"": 1}}, InvalidOperation),
    ({"set": {"k" * 257: 1}}, InvalidOperation),
    ({"set": {"\ud800": 1}}, InvalidOperation),
    ({"set": {"a": float("nan")}}, InvalidValue),
    ({"set": {"a": "x" * 70_000}}, ValueTooLarge),
])
def test_bad_operations_raise_typed_errors_and_change_nothing(op, error):
    (a,) = reps("a")
    write(a, {"set": {"a": 1}})
    write(a, {"add": {"n": 2**62}}, now=2)
    before = (a.digest(), a.hlc.last, a.version_vector)
    with pytest.raises(error):
        write(a, op, now=9)
    assert (a.digest(), a.hlc.last, a.version_vector) == before


@pytest.mark.parametrize("store, why", [
    ("not a list", "a list of fields"),
    ([["f", [], [], []]], "holds nothing"),
    ([["f", [["a", 1, b"1", 0, 0]], [], []], ["f", [["a", 2, b"2", 0, 0]], [], []]], "appears twice"),
    ([["f", [["a", 1, b"1", 0, 0]], [["a", 1, 1, 0, 0, 0]], []]], "appears twice in one map"),
    ([["f", [], [["a", 1, 1, 0, 0, 0], ["a", 2, 2, 0, 0, 0]], []]], "two entries"),
    ([["f", [], [["a", 1, 1, 0, 2, 0]], []]], "base"),
    ([["f", [], [["a", 1, -1, 0, 0, 0]], []]], "totals"),
    ([["f", [], [["a", 1, 1, 0, 0, 0]], [["b", 1, [["a", 1, 1, 0]]]]]], "its own reset removed"),
    ([["f", [], [], [["b", 1, []]]]], "reset must be"),
    ([["f", [], [], [["b", 1, [["a", 1, 1, 0], ["a", 2, 2, 0]]]]]], "names one replica twice"),
    ([["", [["a", 1, b"1", 0, 0]], [], []]], "field name"),
    ([["f", [["a", 1, b"{ }", 0, 0]], [], []]], "canonical"),
    ([["f", [["a", 1, b"1", -1, 0]], [], []]], "timestamp"),
])
def test_a_malformed_map_state_from_a_peer_is_refused(store, why):
    with pytest.raises(MalformedDelta, match=why):
        ormap.from_wire(store)


def test_a_map_and_its_seals_survive_a_checkpoint_and_a_restart(tmp_path):
    st = Storage.open(tmp_path)
    a = st.restore("a")
    for i, op in enumerate(({"set": {"x": [1]}}, {"add": {"n": 4}}, {"remove": ["n"]}, {"add": {"n": 1}})):
        st.append(write(a, op, now=i)[1])
        st.flush()
    st.checkpoint(a)
    st.append(write(a, {"set": {"y": "after"}}, now=9)[1])  # in the log only
    st.flush()
    st.close()
    st = Storage.open(tmp_path)
    back = st.restore("a")
    assert fields(back) == {"x": [1], "n": 1, "y": "after"} and back.digest() == a.digest()
    st.close()


def test_a_map_value_replayed_from_the_log_moves_the_clock_past_its_time(tmp_path):
    """A peer's register time in a map field, like kv's, is one the restarted replica's clock
    must not fall behind (or its next write could be ordered before what it already showed)."""
    (a,) = reps("a")
    later = 30_000.0  # ahead of b's own clock, within the drift it adopts
    d = write(a, {"set": {"colour": "red"}}, now=later)[1]
    st = Storage.open(tmp_path)
    b = st.restore("b")
    st.append(d)
    st.flush()
    b.apply(d, now=1.0)
    assert b.hlc.last.wall_ms >= later
    st.close()
    st = Storage.open(tmp_path)
    back = st.restore("b")  # from the log alone: no checkpoint was taken
    assert back.hlc.last.wall_ms >= later
    _, blue = write(back, {"set": {"colour": "blue"}}, now=2.0)
    assert next(iter(ormap.timestamps(blue.entries[("maps", "m")]))).wall_ms >= later  # after red's
    st.close()


def test_the_model_check_fails_on_a_join_that_depends_on_the_order(monkeypatch):
    """The oracle's model (the join of what was applied, in a canonical order) can fail: with a
    counter join where the entry that arrived last wins, it does."""
    plain = ormap.join

    def last_arrival_wins(a, ca, b, cb):
        out = plain(a, ca, b, cb)
        for name, f in b.items():
            if f.ctr and name in out:
                out[name] = out[name]._replace(ctr={**{d: e for d, e in out[name].ctr.items()
                                                       if d[0] not in {x[0] for x in f.ctr}}, **f.ctr})
        return out

    monkeypatch.setattr(ormap, "join", last_arrival_wins)
    a, b = reps("a", "b")
    model = Model.watch(b.store)
    ds = [write(a, {"add": {"n": 1}}, now=i)[1] for i in range(2)]
    b.apply(ds[1])
    b.apply(ds[0])  # late: with this join it wins
    with pytest.raises(InvariantBroken, match="not the join of the deltas it applied"):
        model.check("b")


def test_the_coordinated_baseline_applies_map_operations_in_log_order():
    s = ConsensusState()
    for i, op in enumerate(({"set": {"a": 1, "b": 2}}, {"add": {"n": 2}}, {"add": {"n": -1}}, {"remove": ["a"]}), 1):
        s.apply(Entry(i, 1, "lhr", i, "maps", "m", op))
    assert s.read("maps", "m") == {"b": 2, "n": 1}


# -- the HTTP API, on the simulated cluster ------------------------------------------------------------


@pytest.fixture
def client():
    live = make_live("lhr,syd")
    with TestClient(create_app(live)) as c:
        c.live = live
        yield c


MAP = "/api/replicas/{}/maps/{}"


def test_the_map_routes_write_read_and_spread(client):
    got = ok(client.post(MAP.format("lhr", "cart"), json={"set": {"colour": "red"}}))
    assert got == {"key": "cart", "replica": "lhr", "fields": {"colour": "red"}, "conflicts": {}}
    ok(client.post(MAP.format("lhr", "cart"), json={"add": {"qty": 2}}))
    assert client.live.settle()
    assert ok(client.get(MAP.format("syd", "cart")))["fields"] == {"colour": "red", "qty": 2}
    assert ok(client.get(MAP.format("syd", "never")))["fields"] == {}
    assert ok(client.post(MAP.format("syd", "a/b"), json={"remove": ["x"]}))["key"] == "a/b"


@pytest.mark.parametrize("body, status, code", [
    ({"add": {"colour": 1}}, 422, "invalid_operation"),  # the field holds a value
    ({"set": {"a": 1}, "remove": ["a"]}, 422, "invalid_operation"),
    ({"add": {"n": 1.5}}, 422, "invalid_operation"),
    ({"add": {"n": 2**63}}, 422, "counter_overflow"),
    ({"set": {"big": "x" * 70_000}}, 413, "value_too_large"),
    ([{"set": {}}], 422, "validation_error"),
    ({"remove": ["f" * 300]}, 422, "invalid_operation"),
])
def test_bad_map_requests_get_the_one_error_shape_and_change_nothing(client, body, status, code):
    ok(client.post(MAP.format("lhr", "k"), json={"set": {"colour": "red"}}))
    before = client.live.cluster.sim.nodes["lhr"].replica.digest()
    r = client.post(MAP.format("lhr", "k"), json=body)
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    assert client.live.cluster.sim.nodes["lhr"].replica.digest() == before


def test_a_map_route_refuses_a_key_too_long_a_body_not_json_and_an_unknown_replica(client):
    r = client.post(MAP.format("lhr", "k" * 300), json={"set": {"a": 1}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_key"
    r = client.post(MAP.format("lhr", "k"), content=b"set=1", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = client.get(MAP.format("nowhere", "k"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_replica"


def test_a_keyed_map_write_is_applied_once_and_replayed(client):
    h = {"Idempotency-Key": "cart-1"}
    first = client.post(MAP.format("lhr", "cart"), json={"add": {"n": 1}}, headers=h)
    again = client.post(MAP.format("lhr", "cart"), json={"add": {"n": 1}}, headers=h)
    assert first.json()["fields"] == {"n": 1} and again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    other = client.post(MAP.format("lhr", "cart"), json={"add": {"n": 2}}, headers=h)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert ok(client.get(MAP.format("lhr", "cart")))["fields"] == {"n": 1}
    # other types' keyed writes are unchanged beside it
    counted = client.post("/api/replicas/lhr/counters/c", json={"add": 1}, headers={"Idempotency-Key": "c"})
    assert ok(counted)["value"] == 1


def test_the_openapi_schema_documents_the_map_operation(client):
    op = ok(client.get("/openapi.json"))["paths"]["/api/replicas/{replica_id}/maps/{key}"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert {k: v for k, v in schema.items() if k != "title"} == ormap.OP_SCHEMA
    answer = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(answer["required"]) == {"key", "replica", "fields", "conflicts"}


def test_the_dashboard_detail_lists_a_map_key(client):
    ok(client.post(MAP.format("lhr", "cart"), json={"set": {"colour": "red"}}))
    d = client.live.detail("lhr", [("maps", "cart")])
    assert d["maps"] == [{"key": "cart", "fields": {"colour": "red"}, "conflicts": {}, "size": 1}]
    assert d["kv"] == d["counters"] == d["sets"] == []


# -- scenarios ---------------------------------------------------------------------------------------


SCENARIO = textwrap.dedent("""\
    name: cart
    claim: a map's fields merge across a partition
    pops: lhr,syd
    steps:
      - partition: {groups: [[lhr], [syd]]}
      - write: {at: lhr, map: "cart-{run}", op: {set: {colour: red}}}
      - write: {at: syd, map: "cart-{run}", add: {qty: 2}}
      - write: {at: syd, map: "cart-{run}", op: {set: {size: L}}}
      - read: {at: lhr, map: "cart-{run}", as: before}
      - heal
      - settle: {within_ms: 5000}
      - expect: {map: "cart-{run}", fields: {colour: red, qty: 2, size: L}, conflicts: {}}
      - expect: {figure: before.fields, equals: {colour: red}}
    """)


def test_a_scenario_writes_map_fields_and_checks_them():
    report = run_fast(parse(SCENARIO), seed=3)
    assert report["passed"], report


@pytest.mark.parametrize("step, why", [
    ("write: {at: lhr, map: m, value: 1}", "a map write takes exactly one of add, remove, op"),
    ("write: {at: lhr, map: m, op: {set: {a: 1}, add: {b: 1}}}", "field 'op': a maps operation needs exactly one"),
    ("write: {at: lhr, map: m, add: {n: 1.5}}", "whole number"),
    ("write: {at: lhr, map: m, remove: [a], context_from: r}", "context_from goes with kv writes"),
    ("expect: {map: m, members: [1]}", "'members' does not go with map"),
    ("expect: {map: m}", "say what to expect of the map: fields, conflicts"),
])
def test_a_bad_map_step_is_refused_naming_its_line(step, why):
    text = (f"name: t\nclaim: c\npops: lhr\nsteps:\n  - read: {{at: lhr, kv: k, as: r}}\n  - {step}\n"
            "  - expect: {converged: true}\n")
    with pytest.raises(ScenarioError, match="<scenario>:6:") as e:
        parse(text)
    assert why in str(e.value)
