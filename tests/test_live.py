"""The live cluster maps wall time to virtual time: speed, pause, step, and the pump task."""

import asyncio

import pytest

from app.live import LiveCluster
from live_helpers import run_async
from replication.cluster import SimCluster
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
    from app.live import build_live

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
