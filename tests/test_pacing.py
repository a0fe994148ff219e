"""The simulator's rest after a catch-up that ran out of budget follows the loop's lateness:
longer while the pump wakes late (the loop is held, or the OS runs other work), back to one
budget once it wakes on time; see app/dashboard/pacing.py."""

from app.dashboard import pacing
from app.dashboard.pacing import RestPacer
from app.dashboard.simulated import CATCH_UP_REST_S, LiveCluster
from replication.geo import place_replicas, select_pops
from replication.sim.cluster import SimCluster

from test_live import SlowMachine


def test_late_wakes_lengthen_the_rest_up_to_its_bound_and_on_time_wakes_shorten_it():
    p = RestPacer(0.004)
    assert p.rest_s == 0.004
    p.woke(pacing.HIGH_S * 2)
    assert p.rest_s == 0.008
    for _ in range(20):
        p.woke(1.0)
    assert p.rest_s == 0.004 * pacing.MAX_FACTOR  # bounded: the simulator always keeps a share
    p.woke(-0.5)  # woken early (a speed change): no news
    p.woke((pacing.LOW_S + pacing.HIGH_S) / 2)  # neither late nor free: no change
    assert p.rest_s == 0.004 * pacing.MAX_FACTOR
    wakes = 0
    while p.rest_s > 0.004:
        p.woke(0.0)
        wakes += 1
    assert p.rest_s == 0.004 and 5 <= wakes <= 20  # back to one budget within a fraction of a second of wakes
    p.woke(0.0)
    assert p.rest_s == 0.004  # never below one budget
    p.woke(1.0)
    p.reset()
    assert p.factor == 1.0


def _cpu_bound(clock):
    lc = LiveCluster(SimCluster(place_replicas(select_pops("default")), seed=1), speed=100.0, clock=clock)
    for i in range(22):
        lc.write(lc.ids[i], "kv", f"k{i}", {"value": i})
    return lc


def test_a_late_loop_makes_the_rest_after_a_spent_budget_longer():
    def rest_after_spent_budget(late_wakes: int) -> float:
        clock = SlowMachine()
        clock.tick = CATCH_UP_REST_S / 40
        lc = _cpu_bound(clock)
        for _ in range(late_wakes):
            lc.pacer.woke(1.0)
        clock.t += 1.0
        lc.catch_up()  # spends its budget
        return lc._rest_until - clock.t

    calm, late = rest_after_spent_budget(0), rest_after_spent_budget(10)
    assert calm <= CATCH_UP_REST_S
    assert late > CATCH_UP_REST_S * (pacing.MAX_FACTOR - 1)


def test_the_pump_reports_how_late_it_woke():
    """Each pump wake reports its lateness on the cluster's clock: here every read of the clock
    takes 10 ms, so every wake is late, and the rest grows."""
    import asyncio

    from live_helpers import run_async

    clock = SlowMachine()
    clock.tick = 0.010
    lc = _cpu_bound(clock)
    seen = []
    real = lc.pacer.woke
    lc.pacer.woke = lambda late: seen.append(late) or real(late)

    async def main():
        task = asyncio.create_task(lc.pump())
        deadline = asyncio.get_running_loop().time() + 30.0
        while len(seen) < 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
        task.cancel()

    run_async(main())
    assert len(seen) >= 3 and all(late > 0 for late in seen) and max(seen) > pacing.HIGH_S, seen
    assert lc.pacer.factor > 1.0


def test_reset_forgets_the_lateness():
    from live_helpers import run_async

    clock = SlowMachine()
    lc = _cpu_bound(clock)
    for _ in range(10):
        lc.pacer.woke(1.0)

    async def main():
        await lc.reset()

    run_async(main())
    assert lc.pacer.factor == 1.0
