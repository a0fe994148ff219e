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
"""

from __future__ import annotations

MAX_FACTOR = 8.0  # the longest rest, in budgets: the simulator keeps at least ~1/9 of the loop
HIGH_S = 0.008  # a wake later than this: the loop is held, by us or by the OS
LOW_S = 0.002  # a wake within this: the loop is free
DECAY = 0.8  # per on-time wake: 8 budgets back to 1 in about ten wakes (a fraction of a second)


class RestPacer:
    def __init__(self, budget_s: float, max_factor: float = MAX_FACTOR) -> None:
        self.budget_s = budget_s
        self.max_factor = max_factor
        self.factor = 1.0

    @property
    def rest_s(self) -> float:
        return self.budget_s * self.factor

    def woke(self, late_s: float) -> None:
        """The pump woke `late_s` seconds after it asked to (negative: woken early, no news)."""
        if late_s > HIGH_S:
            self.factor = min(self.max_factor, self.factor * 2.0)
        elif 0.0 <= late_s < LOW_S:
            self.factor = max(1.0, self.factor * DECAY)

    def reset(self) -> None:
        self.factor = 1.0
