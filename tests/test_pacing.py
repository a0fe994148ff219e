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
    t = 100.0  # the caller's clock, seconds
    assert p.rest_s(t) == 0.004
    p.woke(pacing.HIGH_S * 2, t)
    assert p.factor == 2.0
    for _ in range(20):
        p.woke(1.0, t)
    assert p.factor == pacing.MAX_FACTOR  # bounded: the simulator always keeps a share
    p.woke(-0.5, t)  # woken early (a speed change): no news
    p.woke((pacing.LOW_S + pacing.HIGH_S) / 2, t)  # neither late nor free: no change
    assert p.factor == pacing.MAX_FACTOR
    wakes = 0
    while p.factor > 1.0:
        p.woke(0.0, t)
        wakes += 1
    assert 5 <= wakes <= 20  # back to one slice within a fraction of a second of wakes
    p.woke(0.0, t)
    assert p.factor == 1.0  # never below one slice
    p.woke(1.0, t)
    p.reset()
    assert p.factor == 1.0 and not p.busy(t)


def test_a_busy_machine_gets_short_slices_until_it_has_been_calm_for_a_while():
    """Whole 4 ms slices on a calm machine (the simulation keeps its speed); short ones for as
    long as the pump has woken late lately (each slice a shorter hold of the loop, and a shorter
    burst for the OS to make up for), whatever the rest's factor does meanwhile."""
    p = RestPacer(0.004)
    assert p.slice_s(0.0) == p.rest_s(0.0) == 0.004
    p.woke(pacing.HIGH_S * 2, 10.0)
    assert p.slice_s(10.0) == pacing.BUSY_SLICE_S < 0.004
    assert p.rest_s(10.0) == pacing.BUSY_SLICE_S * p.factor  # the same share of the loop, finer
    for i in range(50):  # on time again: the factor drops back at once, the slices stay short
        p.woke(0.0, 10.0 + i * 0.02)
    assert p.factor == 1.0 and p.slice_s(11.0) == pacing.BUSY_SLICE_S
    assert p.slice_s(10.0 + pacing.BUSY_FOR_S + 0.001) == 0.004


def test_with_the_os_word_only_waiting_for_a_cpu_makes_the_machine_busy():
    """On Linux the pacer asks the OS how long the loop's thread waited for a CPU: a late wake
    of its own making (a long frame, a big write) on a machine it has to itself keeps whole
    slices, and the simulator its speed; waiting behind other processes makes slices short."""
    waited = [0]
    p = RestPacer(0.004, schedstat=lambda: (0, waited[0]))
    t = 0.0
    for _ in range(40):  # late every time, but never kept from a CPU: calm
        t += 0.05
        p.woke(1.0, t)
    assert p.factor == pacing.MAX_FACTOR and not p.busy(t) and p.slice_s(t) == 0.004
    for _ in range(40):  # now waiting for a CPU a fifth of the time: busy
        t += 0.05
        waited[0] += int(0.01e9)
        p.woke(0.0, t)
    assert p.busy(t) and p.slice_s(t) == pacing.BUSY_SLICE_S
    t += pacing.BUSY_FOR_S + pacing.SAMPLE_S
    p.woke(0.0, t)  # no more waiting since: calm again
    assert not p.busy(t + 0.001) and p.slice_s(t + 0.001) == 0.004


def test_when_the_os_cannot_say_late_wakes_do():
    answers = [(0, 0), None]
    p = RestPacer(0.004, schedstat=lambda: answers.pop(0) if answers else None)
    p.woke(0.0, 1.0)
    p.woke(0.0, 2.0)  # the file went away
    assert not p.busy(2.0)
    p.woke(1.0, 3.0)
    assert p.busy(3.0) and p.slice_s(3.0) == pacing.BUSY_SLICE_S


def test_the_os_word_is_this_threads_own():
    from app.dashboard.pacing import thread_schedstat

    import sys
    stat = thread_schedstat()
    if not sys.platform.startswith("linux"):
        assert stat is None
        return
    import time

    ran, waited = stat
    deadline = time.monotonic() + 30.0
    # its own CPU time, which the kernel adds up at its ticks and switches: spin until it shows
    while (now := thread_schedstat())[0] == ran and time.monotonic() < deadline:
        sum(range(10_000))
    ran2, waited2 = now
    assert ran2 > ran and waited2 >= waited >= 0


def _cpu_bound(clock):
    lc = LiveCluster(SimCluster(place_replicas(select_pops("default")), seed=1), speed=100.0, clock=clock)
    for i in range(22):
        lc.write(lc.ids[i], "kv", f"k{i}", {"value": i})
    return lc


def test_a_late_loop_makes_the_slice_shorter_and_the_rest_after_it_longer():
    def after_spent_slice(late_wakes: int) -> tuple[float, float]:
        clock = SlowMachine()
        clock.tick = CATCH_UP_REST_S / 40
        lc = _cpu_bound(clock)
        for _ in range(late_wakes):
            lc.pacer.woke(1.0, clock.t)
        clock.t += 1.0
        start = clock.t
        lc.catch_up()  # spends its slice
        return clock.t - start, lc._rest_until - clock.t

    (calm_ran, calm), (late_ran, late) = after_spent_slice(0), after_spent_slice(10)
    assert calm <= CATCH_UP_REST_S <= calm_ran
    assert late_ran < calm_ran / 2  # a short slice
    assert late > pacing.BUSY_SLICE_S * (pacing.MAX_FACTOR - 1)  # then a rest of MAX_FACTOR of them


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
    lc.pacer.woke = lambda late, now: seen.append(late) or real(late, now)

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
        lc.pacer.woke(1.0, clock.t)

    async def main():
        await lc.reset()

    run_async(main())
    assert lc.pacer.factor == 1.0
