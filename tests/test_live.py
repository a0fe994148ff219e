"""The live cluster maps wall time to virtual time: speed, pause, step, and the pump task."""

import asyncio

import pytest

from app.dashboard.simulated import CATCH_UP_BUDGET_S, CATCH_UP_REST_S, LiveCluster
from live_helpers import run_async
from replication.sim.cluster import SimCluster
from replication.geo import place_replicas, select_pops


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def live(speed=1.0, clock=None):
    return LiveCluster(SimCluster(place_replicas(select_pops("lhr,jfk,syd")), seed=1), speed=speed, clock=clock)


def test_virtual_time_follows_the_wall_clock_scaled_by_speed():
    clock = FakeClock()
    lc = live(speed=0.5, clock=clock)
    clock.t += 2.0  # two wall seconds
    lc.catch_up()
    assert lc.sim.now == pytest.approx(1000.0)  # one virtual second
    lc.set_speed(2.0)
    clock.t += 1.0
    lc.catch_up()
    assert lc.sim.now == pytest.approx(3000.0)


def test_a_write_lands_at_the_virtual_instant_its_request_arrived():
    clock = FakeClock()
    lc = live(speed=1.0, clock=clock)
    clock.t += 0.5
    lc.write("lhr", "kv", "k", {"value": 1})
    assert lc.sim.now == pytest.approx(500.0)
    # lhr to jfk is ~37 ms one way: not there at once, there after the wall clock moves on
    assert lc.read("jfk", "kv", "k").values == []
    clock.t += 0.1
    assert lc.read("jfk", "kv", "k").values == [1]


def test_pause_stops_virtual_time_and_step_advances_it():
    clock = FakeClock()
    lc = live(clock=clock)
    lc.pause()
    t0 = lc.sim.now
    clock.t += 10
    lc.catch_up()
    assert lc.sim.now == t0
    lc.step(250)
    assert lc.sim.now == pytest.approx(t0 + 250)
    lc.resume()
    clock.t += 1
    lc.catch_up()
    assert lc.sim.now == pytest.approx(t0 + 1250)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), 1000])
def test_bad_speeds_and_steps_are_refused(bad):
    lc = live()
    with pytest.raises(ValueError):
        lc.set_speed(bad)
    with pytest.raises(ValueError):
        lc.step(bad if bad <= 0 or bad != bad or bad == float("inf") else -bad)
    assert lc.speed == 1.0


def test_the_pump_advances_time_on_its_own():
    async def scenario():
        lc = live(speed=1.0)
        task = asyncio.create_task(lc.pump())
        start = lc.sim.now
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while lc.sim.now < start + 100 and loop.time() < deadline:  # 100 virtual ms: ~0.1 s
            await asyncio.sleep(0.01)
        task.cancel()
        return lc.sim.now - start

    assert run_async(scenario()) >= 100


def test_built_live_cluster_streams_json_events_and_switches_strategy():
    from app.dashboard.simulated import build_live

    lc = build_live(place_replicas(select_pops("lhr,jfk,syd")), seed=1, epoch_ms=0.0, clock=FakeClock())
    seen = []
    lc.bus.subscribe(seen.append)
    lc.set_strategy("direct")
    lc.write("lhr", "kv", "k", {"value": 1})
    lc.settle()
    kinds = {e["kind"] for e in seen}
    assert {"write", "sent", "delivered", "applied"} <= kinds
    applied = [e for e in seen if e["kind"] == "applied" and e["via"] == "payload"]
    assert {e["node"] for e in applied} == {"jfk", "syd"}
    assert applied[0]["dots"] == [["lhr", 1]] and applied[0]["keys"] == [["kv", "k"]]
    import json

    json.dumps(seen)  # every event is plain JSON
    with pytest.raises(ValueError, match="plumtree"):
        lc.set_strategy("flood")


class SlowMachine(FakeClock):
    """A wall clock that moves `tick` (a millisecond) every time it is read: simulating costs wall time."""

    tick = 0.001

    def __call__(self):
        self.t += self.tick
        return self.t


def test_catching_up_never_blocks_for_long_and_the_slip_shows_in_the_effective_speed():
    """Behind by far more than one call may simulate (22 POPs, speed 100, a minute of wall
    time): a catch-up returns after a bounded number of slices, gives up the rest instead of
    owing it to the next call, and the effective speed says so."""
    clock = SlowMachine()
    lc = LiveCluster(SimCluster(place_replicas(select_pops("default")), seed=1), speed=100.0, clock=clock)
    for i in range(22):
        lc.write(lc.ids[i], "kv", f"k{i}", {"value": i})
    clock.t += 60.0
    before = clock.t
    lc.catch_up()
    reads = (clock.t - before) / 0.001
    # one read per slice of CATCH_UP_SLICE events until the budget is spent, and a few around them
    assert reads <= CATCH_UP_BUDGET_S / 0.001 + 5, reads
    assert lc.slipped_ms > 50_000  # most of the minute's 6,000 virtual seconds were given up
    # and not owed: the next call starts from here (a few clock reads' worth, not the minute's 6,000 s)
    assert lc.target() - lc.sim.now < 1000.0
    for _ in range(10):  # calls a wall second apart: 100 virtual seconds each, more than a call may run
        clock.t += 1.0
        lc.catch_up()
    assert 0 < lc.effective_speed < 100.0
    assert lc.sim_info()["speed"] == 100.0 and lc.sim_info()["effective_speed"] < 100.0
    assert 0 < lc.clock_info()["effective_speed"] < 100.0  # in the clock events the page gets too
    lc.set_speed(1.0)  # measured afresh at the new speed: the old one's shortfall is not carried over
    assert lc.effective_speed == 1.0


def test_a_cluster_that_keeps_up_reports_its_requested_speed():
    clock = FakeClock()
    lc = live(speed=2.0, clock=clock)
    for _ in range(20):
        clock.t += 0.1
        lc.catch_up()
    assert lc.slipped_ms == 0.0 and lc.effective_speed == 2.0
    lc.pause()
    assert lc.effective_speed == 0.0


def test_a_catch_up_that_ran_out_of_budget_is_followed_by_a_rest():
    """CPU-bound, each catch-up inherits the virtual time the one before it spent: without a rest,
    every request in one loop turn would spend a whole budget of its own (bench live: 100-200 ms
    loop stalls). After a catch-up that ran out of budget, those within the rest only slip."""
    clock = SlowMachine()
    clock.tick = CATCH_UP_REST_S / 40  # a catch-up reads it a few times: a tenth of the rest
    lc = LiveCluster(SimCluster(place_replicas(select_pops("default")), seed=1), speed=100.0, clock=clock)
    for i in range(22):
        lc.write(lc.ids[i], "kv", f"k{i}", {"value": i})
    clock.t += 1.0
    lc.catch_up()  # spends its budget
    ran = []
    real = lc.sim._run
    lc.sim._run = lambda *a: ran.append(1) or real(*a)
    calls = 0
    while clock.t + CATCH_UP_REST_S / 4 < lc._rest_until:  # the rest of the loop turn: requests right after it
        before, slipped = clock.t, lc.slipped_ms
        lc.catch_up()  # a few reads of this clock, no simulating
        assert clock.t - before < CATCH_UP_REST_S / 4 and lc.slipped_ms > slipped
        calls += 1
    assert calls >= 1 and ran == []
    clock.t += CATCH_UP_REST_S  # the rest is over: it simulates again
    lc.catch_up()
    assert ran


def test_the_pump_sleeps_through_a_rest():
    clock = SlowMachine()
    clock.tick = CATCH_UP_REST_S / 40
    lc = LiveCluster(SimCluster(place_replicas(select_pops("default")), seed=1), speed=100.0, clock=clock)
    for i in range(22):
        lc.write(lc.ids[i], "kv", f"k{i}", {"value": i})
    clock.t += 1.0
    waits = []

    class Stop(Exception):
        pass

    class Loop:
        def call_later(self, wait, cb):
            waits.append(wait)
            raise Stop

    async def main():
        real = asyncio.get_running_loop
        asyncio.get_running_loop = lambda: Loop()
        try:
            with pytest.raises(Stop):
                await lc.pump()
        finally:
            asyncio.get_running_loop = real

    run_async(main())
    assert waits and waits[0] > CATCH_UP_REST_S / 4, waits  # not 0: a spinning pump would burn the CPU the rest frees


def test_a_catch_up_looks_at_the_clock_after_every_event():
    """A catch-up's stall is its budget plus the events run before it next looks at the clock: it
    must look after each one, so one dear event past the budget is the most it overruns."""
    clock = FakeClock()
    lc = LiveCluster(SimCluster(place_replicas(select_pops("default")), seed=1), clock=clock)
    lc.write("lhr", "sets", "s", {"add": list(range(50))})
    runs = []
    real = lc.sim._run

    def dear(until, pred, max_events):  # each event costs 15 ms of wall time
        n = real(until, pred, max_events)
        clock.t += 0.015 * max(n, 0)
        runs.append(n)
        return n

    lc.sim._run = dear
    clock.t += 1.0  # a second behind: hundreds of events due
    before = clock.t
    lc.catch_up()
    assert sum(runs) * 0.015 == pytest.approx(clock.t - before)
    # the budget is spent after a few events; the clock is looked at after each
    assert sum(runs) <= CATCH_UP_BUDGET_S / 0.015 + 1, runs


def test_a_write_over_http_lets_the_loop_run_between_its_catch_up_and_the_write():
    """The catch-up before a write may take its whole budget and the write its own cost: in one
    loop turn they add up, so the write yields between them (other tasks run), and still lands."""
    lc = live(clock=FakeClock())
    order = []
    real = lc.write

    def write(*a):
        order.append("write")
        return real(*a)

    lc.write = write

    async def main():
        async def other():
            order.append("other task")

        task = asyncio.ensure_future(other())
        await lc.awrite("lhr", "kv", "k", {"value": 1})
        await task
        task = asyncio.ensure_future(other())
        await lc.awrite_once("lhr", "kv", "k2", {"value": 2}, _once())
        await task

    run_async(main())
    assert order == ["other task", "write"] * 2
    assert lc.read("lhr", "kv", "k").values == [1] and lc.read("lhr", "kv", "k2").values == [2]


def _once():
    from replication.idempotency import Once, request_fingerprint

    return Once("key-1", request_fingerprint("PUT", "lhr", "kv", "k2", {"value": 2}), render=lambda v: b"{}")


def test_past_the_bound_on_messages_in_flight_a_write_is_refused_and_changes_nothing(monkeypatch):
    """Under a sustained load the simulation cannot keep up with, the simulated network would
    grow for as long as the load lasts: past MAX_IN_FLIGHT writes get 503 `overloaded` (with a
    Retry-After) until it drains, and the refused write changes nothing."""
    from fastapi.testclient import TestClient

    from app.dashboard import simulated
    from app.dashboard.server import create_app

    clock = FakeClock()  # virtual time moves only when the test says: nothing is delivered meanwhile
    lc = LiveCluster(SimCluster(place_replicas(select_pops("default")), seed=1), clock=clock)
    clock.t += 5.0
    lc.catch_up()
    bound = lc.sim.in_flight() + 30  # above what an idle cluster keeps in flight (probes, digests)
    monkeypatch.setattr(simulated, "MAX_IN_FLIGHT", bound)
    client = TestClient(create_app(lc))
    assert client.put("/api/replicas/lhr/kv/a", json={"value": 1}).status_code == 200
    for i, rid in enumerate(lc.ids * 3):  # each write sends a few: until the bound
        if lc.sim.in_flight() >= bound:
            break
        assert client.put(f"/api/replicas/{rid}/kv/k{i}", json={"value": i}).status_code == 200
    assert lc.sim.in_flight() >= bound
    before = lc.convergence()["digests"]
    for r in (client.put("/api/replicas/lhr/kv/c", json={"value": 1}),
              client.post("/api/replicas/lhr/counters/c", json={"add": 1}),
              client.post("/api/replicas/lhr/batch", json={"ops": [{"type": "counter", "key": "c", "add": 1}]})):
        assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded" and r.headers["retry-after"] == "1"
    assert lc.convergence()["digests"] == before
    assert client.get("/api/replicas/lhr/kv/a").status_code == 200  # reads go on
    clock.t += 5.0  # the network drains
    lc.catch_up()
    assert lc.sim.in_flight() < bound
    assert client.put("/api/replicas/lhr/kv/c", json={"value": 1}).status_code == 200
