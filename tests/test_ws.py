"""WebSocket `/ws`: snapshot on connect, the event stream, coalescing, and slow clients dropped.

In-process tests use the app's TestClient with virtual time driven by hand: every simulator
step runs inside `client.portal.call(...)`, on the app's own event loop, so no sender task can
run in the middle of it. Real-server tests use uvicorn on a loopback port and the `websockets`
client library.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import orjson
import pytest
from starlette.websockets import WebSocketDisconnect

from app.dashboard import ws as wsmod
from app.dashboard.simulated import build_live
from app.dashboard.server import create_app
from app.processes.supervisor import free_port
from replication.dissemination import STRATEGIES
from replication.geo import place_replicas, select_pops
from replication.scenarios.cuts import CUTS, cut_groups

pytestmark = pytest.mark.timeout(120)

IDS = "lhr,syd,iad"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Recorder:
    """Stands in for app.state.metrics: records the WebSocket hooks."""

    def __init__(self) -> None:
        self.connected = 0
        self.dropped = 0

    def ws_connected(self, delta: int = 1) -> None:
        self.connected += delta

    def ws_dropped(self) -> None:
        self.dropped += 1


def make(ids: str = IDS):
    from fastapi.testclient import TestClient

    live = build_live(place_replicas(select_pops(ids)), seed=3, epoch_ms=1.7e12, clock=FakeClock(),
                      secret=b"ws test secret")
    app = create_app(live)
    return live, app, TestClient(app)


def recv(ws) -> list[dict]:
    data = ws.receive_bytes()
    batch = orjson.loads(data)
    assert isinstance(batch, list) and batch, batch
    return batch


def collect(ws, until, max_messages: int = 500) -> list[dict]:
    """Events from `ws` until `until(events so far)` holds (the per-test timeout bounds the wait)."""
    seen: list[dict] = []
    for _ in range(max_messages):
        seen.extend(recv(ws))
        if until(seen):
            return seen
    raise AssertionError(f"condition not met after {max_messages} messages; kinds: {sorted({e['kind'] for e in seen})}")


def applied_at(events, key: str) -> set[str]:
    return {e["node"] for e in events if e["kind"] == "applied" and ["kv", key] in e["keys"]}


# -- in-process ----------------------------------------------------------------------------


def test_a_snapshot_arrives_on_connect():
    live, app, client = make()
    with client:
        # a write whose messages are still in flight when the client connects
        client.portal.call(lambda: live.write("lhr", "kv", "k", {"value": 1}))
        with client.websocket_connect("/ws") as ws:
            [snap] = recv(ws)
    assert snap["kind"] == "snapshot"
    assert [r["id"] for r in snap["topology"]["replicas"]] == live.ids
    assert snap["topology"]["rtt_ms"]["lhr"]["syd"] > 200
    states = {s["node"]: s for s in snap["replicas"]}
    assert set(states) == set(live.ids)
    assert states["lhr"]["version_vector"] == {"lhr": 1} and states["syd"]["version_vector"] == {}
    assert all(s["status"] == "up" and len(s["digest"]) == 64 for s in states.values())
    assert snap["convergence"] == {"kind": "convergence", "converged": False, "distinct": 2, "up": 3}
    assert {"now_ms", "speed", "paused", "strategy", "loss"} <= set(snap["clock"])
    flying = snap["in_flight"]
    assert flying and all(m["src"] == "lhr" and m["deliver_at"] > m["t"] for m in flying)
    assert {m["msg"] for m in flying} <= wsmod.ANIMATED
    assert [w["origin"] for w in snap["writes"]] == ["lhr"]
    assert snap["groups"] is None


def test_an_http_write_streams_applied_events_and_states():
    live, app, client = make()
    with client, client.websocket_connect("/ws") as ws:
        recv(ws)  # snapshot
        r = client.put("/api/replicas/lhr/kv/greeting", json={"value": "hello"})
        assert r.status_code == 200, r.text
        client.portal.call(live.settle)
        events = collect(ws, lambda ev: applied_at(ev, "greeting") == set(live.ids)
                         and {e["node"] for e in ev if e["kind"] == "state"} == set(live.ids))
    local = [e for e in events if e["kind"] == "applied" and e["via"] == "local"]
    assert len(local) == 1 and local[0]["node"] == "lhr" and local[0]["dots"] == [["lhr", 1]]
    assert {e["via"] for e in events if e["kind"] == "applied" and e["node"] != "lhr"} <= {"payload", "ae"}
    sent = [e for e in events if e["kind"] == "sent"]
    assert sent and all(e["msg"] in wsmod.ANIMATED for e in sent)
    assert all(e["deliver_at"] >= e["t"] for e in sent if e["deliver_at"] is not None)
    assert all(isinstance(e["w"], float) for e in events if e["kind"] in ("sent", "applied", "state"))
    # never forwarded one by one: SWIM pings and acks, anti-entropy digests, deliveries
    assert not [e for e in events if e["kind"] == "delivered"]
    assert not [e for e in sent if e["msg"] in ("ping", "ack", "ae_digest", "neighbour")]
    last = {e["node"]: e for e in events if e["kind"] == "state"}
    assert len({s["digest"] for s in last.values()}) == 1
    assert all(s["version_vector"] == {"lhr": 1} for s in last.values())


def test_partition_diverges_and_heal_converges_on_the_stream():
    live, app, client = make()
    hub = app.state.ws_hub

    def conv(events):
        return [e["converged"] for e in events if e["kind"] == "convergence"]

    with client, client.websocket_connect("/ws") as ws:
        assert recv(ws)[0]["convergence"]["converged"] is True
        r = client.post("/api/faults/partition", json={"groups": [["lhr"], ["syd", "iad"]]})
        assert r.status_code == 200, r.text
        client.put("/api/replicas/lhr/kv/k", json={"value": 1})
        client.portal.call(lambda: (live.sim.run_for(3000), hub.flush()))
        events = collect(ws, lambda ev: conv(ev)[-1:] == [False])
        assert [e["groups"] for e in events if e["kind"] == "partition"] == [[["lhr"], ["syd", "iad"]]]
        assert [e for e in events if e["kind"] == "dropped" and e["reason"] == "partition"]
        client.delete("/api/faults/partition")
        client.portal.call(live.settle)
        events = collect(ws, lambda ev: conv(ev)[-1:] == [True])
        assert [e["kind"] for e in events if e["kind"] in ("heal", "partition")] == ["heal"]
        assert applied_at(events, "k") == {"syd", "iad"}


def test_a_client_that_joins_during_a_cut_learns_when_the_cut_began():
    """The space-time diagram draws a cut as a band from its start: a page that connects (or
    reconnects) while the cut is in force must not start the band at its own arrival, which
    would put the cut after writes made under it."""
    live, app, client = make()
    with client:
        client.portal.call(lambda: live.sim.run_for(1500))
        r = client.post("/api/faults/partition", json={"groups": [["lhr"], ["syd", "iad"]]})
        assert r.status_code == 200, r.text
        began = live.sim.now
        assert began >= 1500
        client.portal.call(lambda: live.sim.run_for(2000))
        with client.websocket_connect("/ws") as ws:
            [snap] = recv(ws)
        assert snap["groups"] == [["lhr"], ["syd", "iad"]]
        assert snap["groups_t"] == pytest.approx(began) and began < live.sim.now - 1000, (began, live.sim.now)
        client.delete("/api/faults/partition")
        with client.websocket_connect("/ws") as ws:
            [snap] = recv(ws)
        assert snap["groups"] is None and snap["groups_t"] is None


def test_a_write_in_the_cuts_own_instant_never_comes_before_the_cut_or_after_the_heal():
    """The space-time diagram puts a write inside a cut's band when the band's start is at or
    before it: a write made in the cut's own virtual instant must carry a time no earlier than
    the cut's, on the stream and in a late joiner's snapshot (times the stream rounds to the
    microsecond; a cut at x.0004 ms once went out unrounded, after its own write at x.000)."""
    live, app, client = make()
    hub = app.state.ws_hub
    cut = {"groups": [["lhr"], ["syd", "iad"]]}
    with client, client.websocket_connect("/ws") as ws:
        recv(ws)
        for i, frac in enumerate((0.0004, 0.0006)):
            client.portal.call(lambda: live.sim.run_until(int(live.sim.now) + 1500 + frac))
            assert client.post("/api/faults/partition", json=cut).status_code == 200
            assert client.put(f"/api/replicas/lhr/kv/k{i}", json={"value": i}).status_code == 200
            with client.websocket_connect("/ws") as late:
                [snap] = recv(late)
            [mine] = [w for w in snap["writes"] if ["kv", f"k{i}"] in w["keys"]]
            assert snap["groups_t"] <= mine["t"], (snap["groups_t"], mine)
            client.portal.call(lambda: (live.sim.run_for(500), hub.flush()))
            assert client.delete("/api/faults/partition").status_code == 200
            assert client.put(f"/api/replicas/iad/kv/h{i}", json={"value": i}).status_code == 200
            client.portal.call(lambda: (live.sim.run_for(100), hub.flush()))
            events = collect(ws, lambda ev: any(e["kind"] == "applied" and ["kv", f"h{i}"] in e["keys"] for e in ev))
            [began] = [e["t"] for e in events if e["kind"] == "partition"]
            [healed] = [e["t"] for e in events if e["kind"] == "heal"]
            [write] = [e["t"] for e in events if e["kind"] == "applied" and e["via"] == "local" and ["kv", f"k{i}"] in e["keys"]]
            [after] = [e["t"] for e in events if e["kind"] == "applied" and e["via"] == "local" and ["kv", f"h{i}"] in e["keys"]]
            assert began <= write < healed <= after, (frac, began, write, healed, after)


def test_a_client_that_falls_behind_is_dropped_without_stalling_the_others():
    live, app, client = make()
    hub = app.state.ws_hub
    metrics = Recorder()
    app.state.metrics = metrics
    with client:
        hub.max_batches = 2  # a tiny bound for the slow client: three frames behind and it is out
        with client.websocket_connect("/ws") as slow:
            recv(slow)
            hub.max_batches = wsmod.DEFAULT_MAX_BATCHES
            with client.websocket_connect("/ws") as fast:
                recv(fast)
                assert metrics.connected == 2

                def burst():  # five frames, with no chance for any sender to run in between
                    for i in range(5):
                        live.write("lhr", "kv", f"k{i}", {"value": i})
                        live.settle()
                        hub.flush()

                client.portal.call(burst)
                events = collect(fast, lambda ev: applied_at(ev, "k4") == set(live.ids))
                assert all(applied_at(events, f"k{i}") == set(live.ids) for i in range(5))
                with pytest.raises(WebSocketDisconnect) as closed:
                    while True:
                        slow.receive_bytes()
                assert closed.value.code == wsmod.CLOSE_TOO_SLOW
                assert hub.dropped_clients == 1 and metrics.dropped == 1
                # the cluster and the survivors carry on
                assert client.put("/api/replicas/syd/kv/after", json={"value": 2}).status_code == 200
                client.portal.call(live.settle)
                assert applied_at(collect(fast, lambda ev: applied_at(ev, "after") == set(live.ids)), "after")
        assert len(hub.clients) == 0
    assert metrics.connected == 0


def test_each_frame_is_serialised_once_and_shared_by_every_client():
    live, app, client = make()
    hub = app.state.ws_hub
    with client:
        sockets = [client.websocket_connect("/ws") for _ in range(3)]
        conns = [s.__enter__() for s in sockets]
        try:
            for c in conns:
                recv(c)
            def frame():
                built, serialised, forwarded = hub.batches_built, hub.events_serialised, hub.forwarded_total
                live.write("lhr", "kv", "shared", {"value": 1})
                live.settle()
                hub.flush()
                # the very same bytes object sits in every client's queue
                ids = {id(c.batches[-1]) for c in hub.clients}
                return (ids, len(hub.clients), hub.batches_built - built, hub.events_serialised - serialised,
                        hub.forwarded_total - forwarded)

            ids, n, built, serialised, forwarded = client.portal.call(frame)
            assert n == 3 and len(ids) == 1
            assert built == 1  # one frame's batch, shared
            assert serialised == forwarded > 0  # each event serialised once, not once per client
            for c in conns:
                assert applied_at(collect(c, lambda ev: applied_at(ev, "shared") == set(live.ids)), "shared")
        finally:
            for s in sockets:
                s.__exit__(None, None, None)


def test_clients_in_step_share_one_message_and_a_client_behind_gets_its_own():
    """A frame's whole message is built once for every client whose queue was empty (a hundred
    per-client joins of a 24 KB frame were a tenth of the server's CPU under `bench live`). A
    client still holding an earlier frame, or with a replica selected, gets its own message, and
    after any sequence of frames, sends and selections what a client sends is exactly what its
    queue holds."""
    import random

    from live_helpers import run_async

    from app.dashboard.ws import hub as hubmod
    from app.dashboard.ws.client import message

    live = build_live(place_replicas(select_pops(IDS)), seed=5, epoch_ms=1.7e12, secret=b"ws test secret")
    rng = random.Random(11)

    async def main():
        hub = hubmod.Hub(live)
        clients = [hub.connect() for _ in range(4)]
        for c in clients:
            c.first = None  # the snapshots: not what this test is about
            c.take()  # and what each connect's flush queued for those before it
        # no await below: the hub's own loop never runs, every frame and send is this test's

        def frame():
            woken = hub.flush(wake=False)
            for c in hub.clients:  # a shared message is always exactly what the queue would give
                if c.whole is not None:
                    assert c.whole == message(c.batches, c.states.values(), c.slots.values())
            return woken

        live.write("lhr", "kv", "k", {"value": 0})
        live.settle()
        woken = frame()
        sent = [c.take() for c in woken]
        assert len(woken) == 4 and all(m is sent[0] for m in sent)  # one object, built once
        assert any(e["kind"] == "applied" for e in orjson.loads(sent[0]))

        behind = clients[0]
        live.write("syd", "kv", "k", {"value": 1})
        live.settle()
        frame()
        live.write("iad", "kv", "k", {"value": 2})
        live.settle()
        frame()
        for c in clients[1:]:
            c.take()
        own = behind.take()  # two frames: its own message, states coalesced
        events = orjson.loads(own)
        assert {e["node"] for e in events if e["kind"] == "applied" and e["via"] == "local"} == {"syd", "iad"}
        states = [e["node"] for e in events if e["kind"] == "state"]
        assert len(states) == len(set(states))

        for step in range(300):
            r = rng.random()
            if r < 0.3:
                live.write(rng.choice(live.ids), "counters", "c", {"add": 1})
                live.sim.run_until(live.sim.now + rng.uniform(0, 200))
            elif r < 0.6:
                frame()
            elif r < 0.9:
                c = rng.choice(clients)
                expected = None if c.idle() else message(c.batches, c.states.values(), c.slots.values())
                assert c.take() == expected, step
            else:
                hub.select(rng.choice(clients), rng.choice([None, *live.ids]))
        hub.close()

    run_async(main())


def test_replica_states_are_coalesced_latest_wins():
    live, app, client = make()
    hub = app.state.ws_hub
    with client, client.websocket_connect("/ws") as ws:
        recv(ws)

        def many_frames():
            t0 = time.monotonic() + 100.0  # frames of this test's own, each a state period apart
            for i in range(6):
                live.write("syd", "counters", "hits", {"add": 1})
                live.settle()
                hub.flush(t0 + i * wsmod.hub.STATES_EVERY_S)
            [c] = hub.clients
            return len(c.batches), sorted(c.states)

        batches, pending_states = client.portal.call(many_frames)
        assert batches == 6 and pending_states == sorted(live.ids)  # one pending state per replica
        events = collect(ws, lambda ev: len([e for e in ev if e["kind"] == "applied" and e["via"] == "local"]) == 6)
        states = [e for e in events if e["kind"] == "state"]
        assert sorted(s["node"] for s in states) == sorted(live.ids)  # once each, not six times
        assert all(s["version_vector"] == {"syd": 6} for s in states)


def test_replica_states_go_out_at_most_every_states_period_and_at_once_after_a_quiet_spell():
    """Each state is a digest of a replica's whole state: under a hall's taps every replica
    changes every frame, so states are built at most every STATES_EVERY_S; the first change
    after a quiet spell goes out at the next frame."""
    live, app, client = make()
    hub = app.state.ws_hub
    period = wsmod.hub.STATES_EVERY_S
    with client, client.websocket_connect("/ws") as ws:
        recv(ws)

        def frames():
            t0 = time.monotonic() + 100.0  # ahead of the hub's own frames
            built = []
            for i in range(8):  # a frame every fifth of a period, each after a write
                live.write("syd", "counters", "hits", {"add": 1})
                live.settle()
                before = hub.states_built
                hub.flush(t0 + i * period / 5)
                built.append(hub.states_built - before)
            live.write("lhr", "counters", "hits", {"add": 1})  # after a quiet spell
            live.settle()
            before = hub.states_built
            hub.flush(t0 + 10 * period)
            return built, hub.states_built - before

        built, after_quiet = client.portal.call(frames)
        n = len(live.ids)
        assert built == [n, 0, 0, 0, 0, n, 0, 0], built
        assert after_quiet == n
        # the last states sent are the latest: every replica holds all nine writes
        events = collect(ws, lambda ev: any(e["kind"] == "state" and e["version_vector"] == {"syd": 8, "lhr": 1}
                                            for e in ev))
        assert events


def test_select_streams_the_detail_of_one_replica_with_siblings_side_by_side():
    live, app, client = make()
    key = '<img src=x onerror="window.__xss=1">'
    with client, client.websocket_connect("/ws") as ws:
        recv(ws)
        client.post("/api/faults/partition", json={"groups": [["lhr"], ["syd"], ["iad"]]})
        for rid in ("lhr", "syd"):
            r = client.put(f"/api/replicas/{rid}/kv/{key}", json={"value": f"from {rid}"})
            assert r.status_code == 200, r.text
        client.post("/api/replicas/iad/counters/visits", json={"add": 3})
        client.post("/api/replicas/iad/sets/tags", json={"add": ["a", {"b": 1}]})
        client.delete("/api/faults/partition")
        client.portal.call(live.settle)
        ws.send_text(json.dumps({"select": "iad"}))
        events = collect(ws, lambda ev: any(e["kind"] == "detail" and e["kv"] for e in ev))
        ws.send_text("not json")  # ignored
        ws.send_text(json.dumps({"select": "nowhere"}))  # ignored: not a replica
    [detail] = [e for e in events if e["kind"] == "detail" and e["kv"]][-1:]
    assert detail["node"] == "iad" and detail["status"] == "up"
    [reg] = detail["kv"]
    assert reg["key"] == key  # raw text: the page shows it with textContent
    assert sorted(s["value"] for s in reg["siblings"]) == ["from lhr", "from syd"]
    assert detail["counters"] == [{"key": "visits", "value": 3}]
    assert detail["sets"] == [{"key": "tags", "members": ["a", {"b": 1}], "size": 2}]
    assert detail["version_vector"] == {"iad": 3, "lhr": 1, "syd": 1}  # the set add took a dot per element


def test_the_snapshot_carries_the_facts_the_page_takes_from_the_server():
    """Bounds, strategies and cuts come from the server (the page keeps no copies of them), and
    the recent writes are the last `RECENT_WRITES`, each with every replica's arrival."""
    live, app, client = make("lhr,fra,syd,iad,gru")
    with client:
        def writes():
            for i in range(wsmod.RECENT_WRITES + 2):
                live.write("lhr" if i % 2 else "syd", "kv", f"k{i}", {"value": i})
            live.settle()

        client.portal.call(writes)
        with client.websocket_connect("/ws") as ws:
            [snap] = recv(ws)
    assert snap["bounds"] == {"recent_writes": wsmod.RECENT_WRITES, "in_flight": wsmod.MAX_IN_FLIGHT}
    assert snap["strategies"] == ["plumtree", "gossip", "direct"] == list(STRATEGIES)
    named = snap["cuts"]["named"]
    assert set(named) == set(CUTS)
    assert [set(g) for g in named["atlantic"]] == [{"lhr", "fra"}, {"syd", "iad", "gru"}]
    assert [set(g) for g in named["americas"]] == [{"iad", "gru"}, {"lhr", "fra", "syd"}]
    assert named["pacific"] == cut_groups(live.placements, "pacific")
    regions = snap["cuts"]["regions"]
    assert list(regions) == sorted(regions) and regions
    for region, groups in regions.items():
        assert {i for i in groups[0]} == {p.id for p in live.placements if p.pop.region == region}
        assert sorted(i for g in groups for i in g) == sorted(live.ids)
    ws_writes = snap["writes"]
    assert [w["keys"] for w in ws_writes] == [[["kv", f"k{i}"]] for i in range(2, wsmod.RECENT_WRITES + 2)]
    assert all(set(w["arrivals"]) == set(live.ids) and w["arrivals"][w["origin"]] == w["t"] for w in ws_writes)


def test_the_bus_subscriber_never_raises_into_the_simulator():
    live, app, client = make()
    hub = app.state.ws_hub
    hub.on_event({"kind": "sent"})  # malformed: logged, not raised
    assert hub.on_event in live.bus._subs


# -- against a real server -------------------------------------------------------------------


def run_async(coro):
    """Run a coroutine on a fresh event loop in its own thread (whatever else this thread runs)."""
    box: dict = {}

    def target():
        try:
            box["result"] = asyncio.run(coro)  # own thread
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            box["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


async def _next_batch(conn, deadline: float) -> list[dict]:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise AssertionError("deadline passed")
    return orjson.loads(await asyncio.wait_for(conn.recv(), remaining))


def test_real_server_streams_a_snapshot_and_a_write(edge_server):
    from websockets.asyncio.client import connect

    async def scenario():
        async with connect(edge_server.ws_url, max_size=None, compression=None) as conn:
            deadline = time.monotonic() + 30
            [snap] = await _next_batch(conn, deadline)
            assert snap["kind"] == "snapshot"
            ids = [r["id"] for r in snap["topology"]["replicas"]]
            key = f"real-{time.monotonic_ns()}"
            async with httpx.AsyncClient(base_url=edge_server.base_url) as http:
                r = await http.put(f"/api/replicas/lhr/kv/{key}", json={"value": 1})
                assert r.status_code == 200, r.text
            seen: set[str] = set()
            lags = []
            while seen != set(ids):
                for e in await _next_batch(conn, deadline):
                    if e["kind"] == "applied" and ["kv", key] in e["keys"]:
                        seen.add(e["node"])
                        lags.append(time.time() * 1000 - e["w"])
            assert min(lags) >= -5  # the server's stamp is wall time on this host
            return ids

    assert len(run_async(scenario())) == 22


@pytest.fixture
def inproc_server():
    """uvicorn on a loopback port, in a thread, serving an app whose hub has small bounds."""
    import uvicorn

    from app.dashboard.ws.limits import uvicorn_options

    live = build_live(place_replicas(select_pops("default")), seed=5, speed=5.0)
    app = create_app(live, run_clock=True)
    hub = app.state.ws_hub
    hub.max_bytes = 256 * 1024  # about ten frames of this test's load
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                                           **uvicorn_options()))  # the limits `edgestate serve` runs with
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)  # polling interval
    try:
        yield app, port
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def test_real_server_drops_a_client_that_stops_reading(inproc_server):
    from websockets.asyncio.client import connect

    app, port = inproc_server
    hub = app.state.ws_hub
    url = f"ws://127.0.0.1:{port}/ws"

    async def scenario():
        # the slow client: a tiny receive buffer, and it never reads after the handshake
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        slow = await connect(url, sock=sock, max_queue=1, max_size=None, compression=None)
        fast = await connect(url, max_size=None, compression=None)
        fast_events = 0

        async def read_fast():
            nonlocal fast_events
            async for msg in fast:
                fast_events += len(orjson.loads(msg))

        reader = asyncio.create_task(read_fast())
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            i = 0
            while hub.dropped_clients == 0:
                assert time.monotonic() < deadline, "the slow client was never dropped"
                await http.put(f"/api/replicas/{('lhr', 'syd', 'gru')[i % 3]}/kv/k{i % 50}", json={"value": i})
                i += 1
                await asyncio.sleep(0.03)  # a steady load the fast client (in this process) keeps up with
            # the fast client still gets everything that follows
            before = fast_events
            r = await http.put("/api/replicas/lhr/kv/after", json={"value": 1})
            assert r.status_code == 200
            while fast_events == before:
                assert time.monotonic() < deadline, "the fast client stalled"
                await asyncio.sleep(0.02)  # polling interval
        assert len(hub.clients) == 1  # the fast one
        reader.cancel()
        await fast.close()
        # the slow client, reading at last, finds its connection closed by the server
        code = None
        try:
            while True:
                await asyncio.wait_for(slow.recv(), 20)
        except Exception as e:  # noqa: BLE001
            code = getattr(slow.close_code, "real", slow.close_code)
            assert "ConnectionClosed" in type(e).__name__ or isinstance(e, (TimeoutError, OSError)), e
        await slow.close()
        return code, i

    code, writes = run_async(scenario())
    assert hub.dropped_clients == 1
    assert code == wsmod.CLOSE_TOO_SLOW, code  # after the frames it had buffered, the close frame


def test_bench_ws_smoke(tmp_path):
    """`edgestate bench ws` runs end to end with a handful of clients (figures are not asserted)."""
    from app.bench import ws as bench_ws

    out = tmp_path / "ws.json"
    args = bench_ws.build_parser().parse_args(
        ["--clients", "4", "--duration", "1.5", "--warmup", "0.5", "--writes", "5", "--pops", "lhr,syd,iad,gru",
         "--json", str(out), "--quiet"])
    box = {}
    worker = threading.Thread(target=lambda: box.update(rc=bench_ws.run(args)))  # its own event loop
    worker.start()
    worker.join()
    assert box.get("rc") == 0
    result = json.loads(out.read_text())
    assert result["clients"] == 4 and result["clients_connected"] == 4
    assert result["events_delivered_per_s"] > 0 and result["lag_ms"]["p99"] is not None
    assert result["cluster_events_per_s"] > 0


def test_applied_events_carry_each_registers_sibling_count_there():
    """The space-time diagram draws a fork where a register holds 2 siblings and a merge where a
    write with the read's context brings it back to 1: the stream says so per applied event."""
    live, app, client = make()
    with client, client.websocket_connect("/ws") as ws:
        recv(ws)  # snapshot
        assert client.post("/api/faults/partition", json={"groups": [["lhr"], ["syd", "iad"]]}).status_code == 200
        assert client.put("/api/replicas/lhr/kv/g", json={"value": "london"}).status_code == 200
        assert client.put("/api/replicas/syd/kv/g", json={"value": "sydney"}).status_code == 200
        assert client.delete("/api/faults/partition").status_code == 200
        client.portal.call(live.settle)

        def sib(events, node):
            counts = [dict(e["sib"]).get("g") for e in events if e["kind"] == "applied" and e["node"] == node
                      and "sib" in e]
            return [c for c in counts if c is not None]

        events = collect(ws, lambda ev: all(2 in sib(ev, n) for n in live.ids))
        assert sib(events, "lhr")[0] == 1 and sib(events, "syd")[0] == 1  # each side's own write: one value
        both = client.get("/api/replicas/iad/kv/g").json()
        assert client.put("/api/replicas/iad/kv/g", json={"value": "merged", "context": both["context"]}).status_code == 200
        client.portal.call(live.settle)
        merged = collect(ws, lambda ev: all(sib(ev, n) and sib(ev, n)[-1] == 1 for n in live.ids))
    assert all(sib(merged, n)[-1] == 1 for n in live.ids)


def test_the_sibling_counts_an_applied_event_carries_are_bounded():
    from replication.node import SIBLING_KEYS

    live, app, client = make()
    events: list[dict] = []
    live.bus.subscribe(events.append)
    with client:
        for i in range(SIBLING_KEYS + 5):
            assert client.put(f"/api/replicas/lhr/kv/k{i}", json={"value": i}).status_code == 200
        client.portal.call(live.settle)
    big = [e for e in events if e["kind"] == "applied" and len(e["keys"]) > SIBLING_KEYS]
    assert all(len(e.get("sib", [])) <= SIBLING_KEYS for e in events if e["kind"] == "applied")
    assert all(len(e["sib"]) == SIBLING_KEYS for e in big)


def test_the_hub_wakes_its_senders_a_group_per_loop_turn():
    """A hundred senders woken in one loop turn hold the loop for milliseconds, and every
    request and timer due meanwhile waits (bench live --cpu-hog 2: loop p99 30 ms before, about
    20 after). The hub wakes WAKE_GROUP per turn, and still keeps its frame rate."""
    from live_helpers import WakeTurns, run_async

    from app.dashboard.ws import hub as hubmod

    live = build_live(place_replicas(select_pops(IDS)), seed=3, epoch_ms=1.7e12, secret=b"ws test secret")
    n = 3 * hubmod.WAKE_GROUP + 2

    async def main():
        loop = asyncio.get_running_loop()
        turns = WakeTurns()
        hub = hubmod.Hub(live)
        turns.watch([hub.connect() for _ in range(n)])
        live.write(live.ids[0], "kv", "k", {"value": 1})  # something for the next frame
        deadline = loop.time() + 30.0
        while len(turns.woke_at) < 2 * n and loop.time() < deadline:  # two frames
            await asyncio.sleep(0.001)
        hub.close()
        return turns

    turns = run_async(main())
    assert len(turns.woke_at) >= 2 * n, turns.woke_at
    per_turn = turns.per_turn()
    assert max(per_turn.values()) <= hubmod.WAKE_GROUP, per_turn
    assert len(per_turn) >= 2 * 4, per_turn  # 17 clients: 4 groups a frame
