"""How long the simulator rests after a catch-up that ran out of budget, from how late the
server's event loop is running.

A catch-up that spends its whole budget is followed by a rest (see `simulated`): with a rest as
long as the budget the simulator takes about half of the loop. That is right when the server has
the CPU to itself, but not beside other busy processes: measured with `bench live --cpu-hog 2`,
the server then stayed runnable all the time, used more than its fair share of the two cores, and
the OS made it wait behind the hogs' time slices (loop lag p99 30-50 ms). A process that sleeps
more than its fair share is run as soon as it wakes. So the rest follows the loop's lateness:
every wake of the pump that comes later than asked (`HIGH_S`) doubles it, up to `MAX_FACTOR`
budgets; every wake on time (`LOW_S`) shrinks it by `DECAY` back towards one budget. The price
is slower virtual time while the machine is busy (time dilates further), shown as the effective
speed; the server's answers and frames come first.

On a busy machine each catch-up also runs in short slices (`BUSY_SLICE_S` instead of the whole
budget, the rest scaled alike, so the simulator's share of the loop is unchanged): a shorter hold
of the loop, and a shorter burst for the OS to make the process pay back in waiting. Busy means
the OS kept the loop's thread waiting for a CPU (Linux's schedstat, read every `SAMPLE_S`), not
merely a late wake: a late wake of the server's own making on a machine it has to itself keeps
whole slices, and the simulation its speed. `bench live`, three rounds side by side, 54 POPs,
100 clients: with two hogs, loop p99 <=17.5, <=17.5, <=15 ms against <=25, <=20, <=20 ms with
whole slices (effective speed 0.28-0.41 against 0.68-0.73); without hogs both 0.99 of the speed.
Slices shortened on late wakes alone kept the speed at 0.85 without hogs; slices shortened only
while the rest was long (the factor falls back in a fraction of a second) gave <=20-30 ms.
"""

from __future__ import annotations

import math
from collections.abc import Callable

MAX_FACTOR = 8.0  # the longest rest, in budgets: the simulator keeps at least ~1/9 of the loop
HIGH_S = 0.008  # a wake later than this: the loop is held, by us or by the OS
LOW_S = 0.002  # a wake within this: the loop is free
DECAY = 0.8  # per on-time wake: 8 budgets back to 1 in about ten wakes (a fraction of a second)
BUSY_SLICE_S = 0.0005  # a catch-up's slice while the machine is busy (see above)
BUSY_FOR_S = 5.0  # the machine counts as busy this long after it was last seen so
BUSY_WAIT_SHARE = 0.05  # busy: the thread waited for a CPU more than this share of the wall time
SAMPLE_S = 0.25  # how often the wait is read (a file read: tens of microseconds)


def thread_schedstat() -> tuple[int, int] | None:
    """This thread's time on a CPU and its time runnable but waiting for one (ns), from Linux's
    /proc/thread-self/schedstat; None where there is no such file."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            ran, waited, _slices = f.read().split()
        return int(ran), int(waited)
    except (OSError, ValueError):
        return None


class RestPacer:
    """Times are the caller's clock (seconds): the pacer reads none itself. `schedstat`, when
    given (`thread_schedstat`, with the real monotonic clock), says whether the OS makes this
    thread wait for a CPU; without it a late wake is taken as the sign of a busy machine."""

    def __init__(self, budget_s: float, max_factor: float = MAX_FACTOR,
                 schedstat: Callable[[], tuple[int, int] | None] | None = None) -> None:
        self.budget_s = budget_s
        self.max_factor = max_factor
        self.factor = 1.0
        self._schedstat = schedstat
        self._busy_at = -math.inf  # when the machine was last seen busy
        self._sampled: tuple[float, int] | None = None  # (when, time waited for a CPU so far, ns)

    def busy(self, now: float) -> bool:
        """Whether the machine was seen busy within BUSY_FOR_S before `now`."""
        return now - self._busy_at < BUSY_FOR_S

    def slice_s(self, now: float) -> float:
        """The longest one catch-up starting at `now` may run: the whole budget on a calm
        machine, BUSY_SLICE_S on a busy one."""
        return min(BUSY_SLICE_S, self.budget_s) if self.busy(now) else self.budget_s

    def rest_s(self, now: float) -> float:
        """The rest after a catch-up that spent its slice: `factor` slices."""
        return self.slice_s(now) * self.factor

    def woke(self, late_s: float, now: float) -> None:
        """The pump woke at `now`, `late_s` seconds after it asked to (negative: woken early,
        no news)."""
        if late_s > HIGH_S:
            self.factor = min(self.max_factor, self.factor * 2.0)
            if self._schedstat is None:
                self._busy_at = now
        elif 0.0 <= late_s < LOW_S:
            self.factor = max(1.0, self.factor * DECAY)
        if self._schedstat is not None:
            self._sample(now)

    def _sample(self, now: float) -> None:
        last = self._sampled
        if last is not None and now - last[0] < SAMPLE_S:
            return
        stat = self._schedstat()
        if stat is None:  # gone (not Linux after all): late wakes say it from now on
            self._schedstat = None
            return
        if last is not None and (stat[1] - last[1]) / 1e9 > BUSY_WAIT_SHARE * (now - last[0]):
            self._busy_at = now
        self._sampled = (now, stat[1])

    def reset(self) -> None:
        self.factor = 1.0
        self._busy_at = -math.inf
