"""`GET /metrics`: Prometheus text from the live cluster's events, one registry per app."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from app.web.metrics import Metrics
from app.web.security import Settings
from live_helpers import FakeClock, make_client, make_live, ok


def scrape(client) -> dict[tuple, float]:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict, name: str, **labels) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def total(m: dict, name: str, **labels) -> float:
    """Sum over every sample of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in m.items() if n == name and want <= set(ls))


@pytest.fixture
def clock():
    return FakeClock()


def test_writes_are_counted_by_type_and_replica(clock):
    live = make_live(clock=clock)
    client = make_client(live)
    ok(client.put("/api/replicas/lhr/kv/k", json={"value": 1}))
    ok(client.post("/api/replicas/syd/counters/c", json={"add": 1}))
    ok(client.post("/api/replicas/syd/counters/c", json={"add": 2}))
    ok(client.post("/api/replicas/jfk/sets/s", json={"add": ["x"]}))
    m = scrape(client)
    assert value(m, "edgestate_writes_total", type="kv", replica="lhr") == 1
    assert value(m, "edgestate_writes_total", type="counters", replica="syd") == 2
    assert value(m, "edgestate_writes_total", type="sets", replica="jfk") == 1
    assert total(m, "edgestate_writes_total") == 4


def test_messages_bytes_and_time_to_reach_every_replica(clock):
    live = make_live(strategy="direct", clock=clock)
    client = make_client(live)
    wire = []
    live.bus.subscribe(lambda e: wire.append(e) if e["kind"] == "sent" else None)
    ok(client.put("/api/replicas/lhr/kv/k", json={"value": "hello"}))
    assert live.settle()
    m = scrape(client)

    assert value(m, "edgestate_messages_total", outcome="sent", kind="payload") == 2  # direct: one per peer
    assert value(m, "edgestate_messages_total", outcome="delivered", kind="payload") == 2
    # the bus carries only the kinds the map draws (payloads here, every one of them at this load);
    # the counters are the cluster's own, of every message
    assert {e["msg"] for e in wire} == {"payload"} and len(wire) == 2
    assert value(m, "edgestate_wire_bytes_total", kind="payload") == sum(e["bytes"] for e in wire) > 0
    assert total(m, "edgestate_messages_total", outcome="sent") == sum(live.sim.stats["sent"].values()) > len(wire)
    assert total(m, "edgestate_wire_bytes_total") > value(m, "edgestate_wire_bytes_total", kind="payload")

    # direct is one hop: the write reaches everyone when it reaches the farthest replica
    farthest_ms = max(live.cluster.one_way_ms("lhr", r) for r in ("syd", "jfk"))
    assert value(m, "edgestate_write_propagation_seconds_count") == 1
    assert value(m, "edgestate_write_propagation_seconds_sum") == pytest.approx(farthest_ms / 1000.0)
    assert value(m, "edgestate_write_propagation_seconds_bucket", le="0.1") == 0  # Sydney is ~106 ms away
    assert value(m, "edgestate_write_propagation_seconds_bucket", le="0.15") == 1


def test_a_partition_shows_as_drops_and_the_heal_as_anti_entropy_repairs(clock):
    live = make_live(clock=clock)
    client = make_client(live)
    ok(client.post("/api/faults/partition", json={"groups": [["lhr"]]}))
    ok(client.put("/api/replicas/lhr/kv/k", json={"value": 1}))
    clock.advance(3.0)
    m = scrape(client)
    assert value(m, "edgestate_messages_dropped_by_reason_total", reason="partition") > 0
    assert total(m, "edgestate_messages_total", outcome="dropped") > 0
    assert value(m, "edgestate_write_propagation_seconds_count") == 0  # not everywhere yet
    assert value(m, "edgestate_converged") == 0
    assert total(m, "edgestate_antientropy_repairs_total") == 0

    ok(client.delete("/api/faults/partition"))
    assert live.settle()
    m = scrape(client)
    assert total(m, "edgestate_antientropy_repairs_total") > 0
    assert value(m, "edgestate_antientropy_repaired_dots_total") >= 2  # syd and jfk each got the write
    assert value(m, "edgestate_write_propagation_seconds_count") == 1
    assert value(m, "edgestate_write_propagation_seconds_sum") >= 3.0  # it waited for the heal
    assert value(m, "edgestate_converged") == 1


def test_a_crashed_replica_does_not_hold_up_the_propagation_figure(clock):
    live = make_live(clock=clock)
    client = make_client(live)
    ok(client.post("/api/replicas/syd/crash"))
    ok(client.put("/api/replicas/lhr/kv/k", json={"value": 1}))
    assert live.settle()
    m = scrape(client)
    assert value(m, "edgestate_write_propagation_seconds_count") == 1
    assert value(m, "edgestate_replicas", status="down") == 1
    assert value(m, "edgestate_replicas", status="up") == 2
    assert value(m, "edgestate_messages_dropped_by_reason_total", reason="crashed") >= 0


def test_scrape_time_gauges(clock):
    live = make_live(clock=clock)
    client = make_client(live)
    ok(client.put("/api/replicas/lhr/kv/k", json={"value": 1}))
    m = scrape(client)
    assert value(m, "edgestate_messages_in_flight") > 0
    assert value(m, "edgestate_converged") == 0
    assert value(m, "edgestate_virtual_time_seconds") == pytest.approx(live.sim.now / 1000.0)


def test_websocket_client_gauges_are_driven_by_the_ws_endpoint():
    live = make_live()
    client = make_client(live)
    metrics: Metrics = client.app.state.metrics
    metrics.ws_connected(+1)
    metrics.ws_connected(+1)
    metrics.ws_connected(-1)
    metrics.ws_dropped()
    m = scrape(client)
    assert value(m, "edgestate_websocket_clients") == 1
    assert value(m, "edgestate_websocket_clients_dropped_total") == 1


def test_rate_limited_writes_are_counted():
    live = make_live()
    client = make_client(live, Settings(audience=True, write_rate=1, write_burst=1), wall_clock=FakeClock())
    ok(client.put("/api/replicas/lhr/kv/k", json={"value": 1}))
    assert client.put("/api/replicas/lhr/kv/k", json={"value": 2}).status_code == 429
    assert value(scrape(client), "edgestate_http_rate_limited_total") == 1


def test_each_app_has_its_own_registry_and_the_global_one_is_untouched():
    a = make_client(make_live())
    b = make_client(make_live())
    ok(a.put("/api/replicas/lhr/kv/k", json={"value": 1}))
    assert value(scrape(a), "edgestate_writes_total", type="kv", replica="lhr") == 1
    assert value(scrape(b), "edgestate_writes_total", type="kv", replica="lhr") == 0
    assert not [n for n in REGISTRY._names_to_collectors if n.startswith("edgestate")]


def test_the_metrics_subscriber_stays_subscribed(clock):
    live = make_live(clock=clock)
    client = make_client(live)
    attached = live.bus.subscribers  # the metrics, and whatever else the app subscribes
    assert attached >= 1
    ok(client.post("/api/faults/partition", json={"groups": [["syd"]]}))
    ok(client.post("/api/replicas/jfk/crash", json={"lose_state": True}))
    ok(client.post("/api/replicas/lhr/sets/s", json={"add": [1, 2, 3]}))
    clock.advance(2)
    ok(client.post("/api/replicas/jfk/recover"))
    ok(client.delete("/api/faults/partition"))
    assert live.settle()
    assert live.bus.subscribers == attached  # a subscriber that raised would have been dropped


# -- memory stays bounded ---------------------------------------------------------------------


def applied(t, node, dot, via):
    return {"t": t, "kind": "applied", "node": node, "dots": [list(dot)], "keys": [["kv", "k"]], "via": via}


def test_writes_that_never_arrive_everywhere_are_forgotten_after_the_horizon():
    m = Metrics(["a", "b"], horizon_ms=60_000)
    m.observe(applied(0.0, "a", ("a", 1), "local"))  # b never gets it
    m.observe(applied(30_000.0, "a", ("a", 2), "local"))
    assert m.pending_writes == 2
    m.observe(applied(61_000.0, "a", ("a", 3), "local"))
    assert m.pending_writes == 2  # the first is gone
    m.observe(applied(61_001.0, "b", ("a", 1), "ae"))  # too late to count
    m.observe(applied(61_002.0, "b", ("a", 3), "payload"))
    assert m.pending_writes == 1
    assert m.propagation._sum.get() == pytest.approx(0.002)


def test_at_most_max_pending_writes_are_tracked():
    m = Metrics(["a", "b"], max_pending=5)
    for n in range(1, 101):
        m.observe(applied(float(n), "a", ("a", n), "local"))
    assert m.pending_writes == 5


def test_a_single_replica_cluster_counts_a_write_as_everywhere_at_once():
    m = Metrics(["a"])
    m.observe(applied(5.0, "a", ("a", 1), "local"))
    assert m.pending_writes == 0 and m.propagation._sum.get() == 0.0


def test_traffic_counters_only_grow_across_a_reset(clock):
    """A reset starts a fresh simulated cluster, whose own counters start at zero; /metrics adds
    what the clusters before it counted, so every Prometheus counter of traffic only grows."""
    live = make_live(clock=clock)
    client = make_client(live)
    ok(client.put("/api/replicas/lhr/kv/k", json={"value": 1}))
    assert live.settle()
    families = ("edgestate_messages_total", "edgestate_wire_bytes_total", "edgestate_messages_dropped_by_reason_total")
    before = {k: v for k, v in scrape(client).items() if k[0] in families}
    assert total(before, "edgestate_messages_total", outcome="delivered") > 0
    ok(client.post("/api/reset"))
    assert live.sim.stats["messages_sent"] < total(before, "edgestate_messages_total", outcome="sent")
    after = scrape(client)
    assert all(after.get(k, 0.0) >= v for k, v in before.items()), [k for k, v in before.items() if after.get(k, 0.0) < v]
    ok(client.put("/api/replicas/syd/kv/k", json={"value": 2}))
    assert live.settle()
    again = scrape(client)
    assert value(again, "edgestate_messages_total", outcome="delivered", kind="payload") > value(
        after, "edgestate_messages_total", outcome="delivered", kind="payload")
