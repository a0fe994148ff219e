"""The embedded simulated cluster, run against the wall clock.

`LiveCluster` is what the web app talks to: it plays every role of the cluster contract
(`replication.contract.DashboardCluster`). It owns a `SimCluster` and maps wall time to
virtual time: `virtual = origin + elapsed_wall * speed`. `--speed 1` runs simulated time as
fast as wall time; smaller is slower, for watching a write cross an ocean on stage.

Everything runs on the event loop's thread: the pump task advances virtual time between
requests, and every request first brings virtual time up to "now", so a write lands at the
virtual instant its request arrived. Paused, virtual time stands still until stepped.

Catching up never blocks the loop for more than CATCH_UP_BUDGET_S of wall time. When the
simulation costs more wall time than it covers (many POPs, a high speed, a busy machine),
the rest is not owed: virtual time slips (the origin moves to where the simulation got), so
the lag never piles up and the server keeps answering; the page and `GET /api/sim` show the
effective speed beside the requested one. A catch-up that spends its whole budget (the CPU cannot
keep up) is followed by a rest of as long (CATCH_UP_REST_S) in which catching up only slips:
otherwise every request, frame and scrape in the same loop turn would each spend a budget of
their own (each inherits the virtual time the one before it took), and one turn would hold the
loop for several budgets. So the simulator takes at most about half of the loop when CPU-bound,
and less, in shorter slices, while the loop runs late beside other busy processes
(`pacing.RestPacer`).

Idempotency keys follow a real replica's rules (`replication.idempotency`), with the records
in memory, one ledger per replica: a write here is done the moment it returns (nothing to
flush), so there is never a keyed write in flight. A replica that loses its state in a crash
loses its records with it, as a real one whose data directory is gone does. Their lifetime
is counted on this object's clock (wall time; a test's hand-moved clock).
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Hashable, Iterable
from typing import Any, Callable

from replication.sim.cluster import SimCluster
from replication.contract import (
    ClockInfo,
    Convergence,
    ReplicaState,
    ReplicaStatus,
    SimInfo,
    Topology,
    TrafficStats,
)
from replication.baseline.costs import LastWrites
from replication.geo import LatencyModel, Placement
from replication.idempotency import Answer, Ledger, Once
from replication.batch import BatchOp
from replication.changefeed import ChangeFeed
from replication.errors import EdgeStateError, Overloaded
from replication.listing import Page

from ..web.detail import replica_detail
from ..web.events import EventBus
from ..web.watch import LocalWatch
from .pacing import RestPacer, thread_schedstat
from .ws.model import ANIMATED

MAX_SPEED = 100.0
FRAME_S = 0.02  # the pump wakes at least this often: the page animates at this grain
# One catch-up holds the loop for at most the budget plus the events of one slice. Events can be
# dear (a 1,000-member delta joined at one replica: ~3-5 ms; with 22 POPs a write arrives at 21
# of them within a few virtual ms), so the clock is read after every event (a read costs ~0.1 us,
# an event tens of us at least) and the budget leaves room under the 50 ms the HTTP API promises
# for any one valid request (`bench writes`). 4 ms, measured with `bench live --cpu-hog 0,2` (54
# POPs, 100 /ws clients): with two CPU hogs beside the server, 20 ms slices gave API p99 86 ms and
# a longest stall of 116 ms, 8 ms slices 45-51 and 75-101 ms, 4 ms 34-45 and 47-62 ms, 2 ms no
# better; the price is slower virtual time under contention, and without hogs 4 ms still keeps up.
# On a busy machine the pacer cuts it to a fraction of a millisecond (pacing.BUSY_SLICE_S).
CATCH_UP_BUDGET_S = 0.004  # the most wall time one catch-up may take before virtual time slips
CATCH_UP_SLICE = 1  # events between looks at the wall clock
CATCH_UP_REST_S = CATCH_UP_BUDGET_S  # after a catch-up that ran out of budget: the shortest rest (see pacing)
SPEED_WINDOW_S = 2.0  # the effective speed is measured over about this much wall time
# Writes come at wall-clock pace; when simulating cannot keep up, virtual time dilates and the
# messages they send wait in the simulated network, which then grows for as long as the load
# lasts (1,000 phones tapping every 3 s: 80,000 messages in flight after 20 s, the server's
# memory +6 MB a second). Past this many a new write is refused (503 `overloaded`, Retry-After)
# until the network drains: memory stays bounded. Far above a talk's ordinary load (an audience
# vote: a few hundred in flight; `bench live`, 54 POPs at 10 writes/s beside 2 CPU hogs for 26 s:
# under 30,000).
MAX_IN_FLIGHT = 50_000
# What of the simulated wire becomes events (the simulator counts all of it): the kinds the map
# animates, and at most LIVE_TRAFFIC_LIMIT of them per 100 virtual ms. Two events per message
# were 40 % of a write's cost to a live server (22 POPs: 60 messages a write, each built as an
# event, made a dict and handed to every subscriber); the map draws the newest 240 in flight, and
# a talk's ordinary load (a write at 54 POPs: about 150 messages) stays under the limit.
LIVE_TRAFFIC_KINDS = ANIMATED
LIVE_TRAFFIC_LIMIT = 300
# A POP's writes to one key within this long of its last send travel as one delta (see
# replication.coalesce): a hall tapping one counter costs the network per window, not per tap,
# while a single write after a quiet spell still leaves at once.
LIVE_COALESCE_MS = 100.0


class LiveCluster:
    def __init__(
        self,
        cluster: SimCluster,
        *,
        speed: float = 1.0,
        clock: Callable[[], float] | None = None,
        bus: EventBus | None = None,
        fresh: Callable[[], SimCluster] | None = None,
    ):
        self.cluster = cluster
        # how `reset` builds a fresh cluster with the same replicas (build_live's, or one from
        # this cluster's own placements, seed and sink), and the settings it goes back to
        self._fresh = fresh or _fresh_like(cluster)
        self._start = (speed, cluster.config.strategy, cluster.sim.loss)
        self.bus = bus or EventBus()  # the cluster's events, if it was built with bus.sim_sink
        self.sim = cluster.sim
        self._clock = clock or time.monotonic
        self._speed = check_speed(speed)
        self._paused = False
        self._wall0 = self._clock()
        self._virtual0 = self.sim.now
        self.slipped_ms = 0.0  # virtual time given up, in all, because simulating fell behind
        self._rest_until = -math.inf  # wall time until which catching up only slips (see the module docstring)
        # the OS's word on whether it shares the CPU, when the clock is the real one it is measured on
        self.pacer = RestPacer(CATCH_UP_REST_S, schedstat=thread_schedstat if clock is None else None)
        self._progress: list[tuple[float, float]] = [(self._wall0, self.sim.now)]  # (wall s, virtual ms)
        self._wake = asyncio.Event()
        # each POP's latest write, its local cost and its arrivals: the coordination panel's figures
        self.last_writes = LastWrites()
        self._unobserve = self.bus.subscribe(self.last_writes.observe)
        self._retired = _traffic_sum(())  # the traffic counters of the clusters resets replaced
        self._ledgers: dict[str, tuple[object, Ledger]] = {}  # replica -> (the node they belong to, records)
        # watched replicas' change feeds and the node each is attached to: a feed is made at the first
        # watch (no cursor can predate it) and renewed (every cursor resets) when its node is rebuilt
        self._feeds: dict[str, tuple[object, ChangeFeed]] = {}

    # -- time ----------------------------------------------------------------------------------

    @property
    def speed(self) -> float:
        return self._speed

    @property
    def paused(self) -> bool:
        return self._paused

    def _rebase(self) -> None:
        self._wall0 = self._clock()
        self._virtual0 = self.sim.now

    def target(self) -> float:
        """The virtual time that corresponds to now."""
        if self._paused:
            return self.sim.now
        return self._virtual0 + (self._clock() - self._wall0) * 1000.0 * self._speed

    def catch_up(self) -> None:
        """Bring virtual time up to now, within CATCH_UP_BUDGET_S of wall time (see the module
        docstring): what is left then is dropped, not carried to the next call."""
        t = self.target()
        if t > self.sim.now:
            start = self._clock()
            if start < self._rest_until:  # the last catch-up ran out of budget: the loop serves others now
                self.slipped_ms += t - self.sim.now
                self._rebase()
            else:
                deadline = start + self.pacer.slice_s(start)
                while not self.sim.advance(t, CATCH_UP_SLICE):
                    now = self._clock()
                    if now >= deadline:
                        self.slipped_ms += t - self.sim.now
                        self._rebase()
                        self._rest_until = now + self.pacer.rest_s(now)
                        break
        self._note_progress()
        if self._feeds:
            self._refeed()

    def _feed(self, replica_id: str) -> ChangeFeed:
        """This replica's change feed, attached to its current node."""
        node = self.sim.nodes[replica_id]
        held = self._feeds.get(replica_id)
        if held is None:
            feed = ChangeFeed(secrets.token_hex(8))
            node.feed = feed
            self._feeds[replica_id] = (node, feed)
            return feed
        if held[0] is not node:  # rebuilt without its state (a crash that lost it, a reset)
            held[1].renew(secrets.token_hex(8))
            node.feed = held[1]
            self._feeds[replica_id] = (node, held[1])
        return held[1]

    def _refeed(self) -> None:
        nodes = self.sim.nodes
        for rid, (node, _feed) in list(self._feeds.items()):
            if nodes.get(rid) is not node and rid in nodes:
                self._feed(rid)

    def _measure_afresh(self) -> None:
        """Start the effective speed's window now: after a speed change or a pause, the time
        before it is not the CPU falling behind."""
        self._progress = [(self._clock(), self.sim.now)]

    def _note_progress(self) -> None:
        wall = self._clock()
        p = self._progress
        if wall - p[-1][0] >= SPEED_WINDOW_S / 8:
            p.append((wall, self.sim.now))
            while len(p) > 2 and wall - p[1][0] >= SPEED_WINDOW_S:
                p.pop(0)

    @property
    def effective_speed(self) -> float:
        """Virtual time per wall time over the last couple of seconds: the requested speed while
        the simulation keeps up, less when it cannot (0 when paused)."""
        if self._paused:
            return 0.0
        (w0, v0), (w1, v1) = self._progress[0], (self._clock(), self.sim.now)
        if w1 - w0 < SPEED_WINDOW_S / 8 or self.slipped_ms == 0.0:
            return self._speed
        return max(0.0, min(self._speed, (v1 - v0) / 1000.0 / (w1 - w0)))

    def set_speed(self, speed: float) -> None:
        self.catch_up()
        self._speed = check_speed(speed)
        self._rebase()
        self._measure_afresh()
        self._wake.set()

    def pause(self) -> None:
        self.catch_up()
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._rebase()
        self._measure_afresh()
        self._wake.set()

    def step(self, ms: float) -> None:
        """Advance virtual time by `ms` (while paused: the presenter's step button)."""
        if not (ms > 0 and math.isfinite(ms)):
            raise ValueError("a step must be a positive number of milliseconds")
        self.catch_up()
        self.sim.run_until(self.sim.now + ms)
        self._rebase()

    async def pump(self) -> None:
        """Advance virtual time with the wall clock until cancelled."""
        while True:
            self.catch_up()
            nxt = self.sim.next_event_time()
            wait = FRAME_S
            if nxt is not None and not self._paused:
                wait = min(FRAME_S, max(0.0, (nxt - self.sim.now) / 1000.0 / self._speed))
                # resting after a catch-up that ran out of budget: nothing to simulate until it ends
                wait = max(wait, self._rest_until - self._clock())
            self._wake.clear()
            # not asyncio.wait_for: on 3.11 it can swallow a cancel that races the wake-up,
            # and then shutdown waits for this task for ever
            due = self._clock() + wait
            alarm = asyncio.get_running_loop().call_later(wait, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                alarm.cancel()
            now = self._clock()
            self.pacer.woke(now - due, now)

    # -- the cluster, at the current instant -------------------------------------------------

    @property
    def ids(self) -> list[str]:
        return self.cluster.ids

    def write(self, replica_id: str, ns: str, key: str, op: dict):
        self.catch_up()
        self._admit()
        view = self.cluster.write(replica_id, ns, key, op)
        us = self.cluster.last_write_us()
        if us is not None:
            self.last_writes.timed(replica_id, self.sim.now, us)
        return view

    def _admit(self) -> None:
        n = self.sim.in_flight()
        if n >= MAX_IN_FLIGHT:
            raise Overloaded(f"the simulated network is behind ({n} messages in flight, at most {MAX_IN_FLIGHT}): "
                             "retry in a moment")

    def read(self, replica_id: str, ns: str, key: str):
        self.catch_up()
        return self.cluster.read(replica_id, ns, key)

    async def start(self) -> None:
        """Nothing to start: the simulator runs inside `pump` (a cluster of processes has more to do)."""

    async def close(self) -> None:
        pass

    # what the HTTP API awaits (a real replica process answers once the write is durable)
    async def awrite(self, replica_id: str, ns: str, key: str, op: dict):
        await self._caught_up()
        return self.write(replica_id, ns, key, op)

    async def awrite_once(self, replica_id: str, ns: str, key: str, op: dict, once: Once) -> Answer:
        await self._caught_up()
        ledger = self._ledger(replica_id)
        now_ms = self._clock() * 1000.0
        rec = ledger.get(once.key, once.request, now_ms)
        if rec is not None:
            return rec.answer()
        ledger.admit(now_ms)
        record = once.record(self.write(replica_id, ns, key, op), int(now_ms))  # an error leaves no record
        ledger.add(record)
        return Answer(record.status, record.body)

    async def _caught_up(self) -> None:
        """Catch up, then let the loop run before the write. A catch-up may take its whole budget
        and the write its own cost (a 1,000-member add: ~10 ms, more with its request's parse):
        in one loop turn they would add up, so the write starts a turn of its own (its `catch_up`
        then only covers the instant the loop ran meanwhile)."""
        self.catch_up()
        await asyncio.sleep(0)

    def _ledger(self, replica_id: str) -> Ledger:
        """This replica's records; a crashed one answers nothing, as for any write."""
        self.cluster.check_up(replica_id)
        node = self.sim.nodes[replica_id]
        held = self._ledgers.get(replica_id)
        if held is None or held[0] is not node:  # a node rebuilt after losing its state: its records went too
            held = self._ledgers[replica_id] = (node, Ledger())
        return held[1]

    async def aread(self, replica_id: str, ns: str, key: str):
        return self.read(replica_id, ns, key)

    async def awatch(self, replica_id: str, prefix: str, types: frozenset[str] | None,
                     cursor: str | None) -> LocalWatch:
        self.catch_up()
        self.cluster.check_up(replica_id)
        return LocalWatch(self._feed(replica_id), replica_id, cursor, prefix=prefix, types=types,
                          read=lambda ns, key: self.aread(replica_id, ns, key))

    async def abatch(self, replica_id: str, ops: list[BatchOp], render: Callable[[list[Any]], bytes],
                     once: Once | None) -> Answer:
        await self._caught_up()
        self.cluster.check_up(replica_id)  # a crashed replica refuses the whole batch, as any write
        self._admit()
        if once is None:
            return Answer(200, render(self._batch(replica_id, ops)))
        ledger = self._ledger(replica_id)
        now_ms = self._clock() * 1000.0
        rec = ledger.get(once.key, once.request, now_ms)
        if rec is not None:
            return rec.answer()
        ledger.admit(now_ms)
        record = once.record(self._batch(replica_id, ops), int(now_ms))
        ledger.add(record)
        return Answer(record.status, record.body)

    def _batch(self, replica_id: str, ops: list[BatchOp]) -> list[Any]:
        """One write per op, in one go: nothing else runs between them (no await, no catch-up)."""
        results: list[Any] = []
        for b in ops:
            try:
                results.append(self.cluster.write(replica_id, b.ns, b.key, b.op))
            except EdgeStateError as e:
                results.append(e)
        return results

    async def alist(self, replica_id: str, ns: str, prefix: str, cursor: str | None, limit: int) -> Page:
        self.catch_up()
        return self.cluster.list_keys(replica_id, ns, prefix, cursor, limit)

    def topology(self) -> Topology:
        return self.cluster.topology()

    # -- what observers read (the WebSocket hub, /metrics, /api/sim); never runs the simulator.
    # A cluster of replica processes (ProcessLive) answers the same questions.

    def has(self, nid: str) -> bool:
        return nid in self.sim.nodes

    def state_of(self, nid: str) -> ReplicaStatus:
        return self.cluster.state_of(nid)

    def digests(self) -> dict[str, str]:
        return self.sim.digests()

    def clock_info(self) -> ClockInfo:
        return {"now_ms": self.target(), "speed": self._speed, "paused": self._paused,
                "strategy": self.cluster.config.strategy, "loss": self.sim.loss,
                "effective_speed": round(self.effective_speed, 4)}

    def stats(self) -> TrafficStats:
        st = self.sim.stats
        return {"sent": st["sent"], "delivered": st["delivered"], "dropped": st["dropped"],
                "dropped_by_reason": st["dropped_by_reason"], "in_flight": st["in_flight"], "writes": st["writes"],
                "unshown": st["unshown"]}

    def traffic_totals(self) -> dict:
        """Messages sent, delivered and dropped by kind, drops by reason and bytes by kind, since
        the server started: across resets, so they only grow (Prometheus counters)."""
        return _traffic_sum((self._retired, self.sim.stats))

    def now_ms(self) -> float:
        return self.sim.now

    def detail_ident(self, nid: str) -> Hashable:
        sim = self.sim
        return (nid, self.cluster.replica(nid).digest(), sim.up(nid), sim.incarnation(nid))

    def detail(self, nid: str, recent: Iterable[tuple[str, str]]) -> dict[str, Any]:
        return replica_detail(self.cluster.replica(nid), recent, self.sim.up(nid))

    def sim_info(self) -> SimInfo:
        """/api/sim: the settings, at virtual time brought up to now."""
        self.catch_up()
        return {"strategy": self.cluster.config.strategy, "speed": self._speed,
                "effective_speed": round(self.effective_speed, 4), "loss": self.sim.loss,
                "paused": self._paused, "now_ms": self.sim.now}

    def replica_states(self) -> list[ReplicaState]:
        self.catch_up()
        return self.cluster.replica_states()

    # -- what the coordination panel compares against (app/dashboard/coordination_panel.py) ------------------

    @property
    def placements(self) -> list[Placement]:
        return self.cluster.placements

    @property
    def model(self) -> LatencyModel:
        return self.cluster.model

    local_writes_timed = True  # the node's write runs here, so its wall-clock cost is measured

    def partition_groups(self) -> list[list[str]] | None:
        return self.cluster.partition_groups()

    def down(self) -> list[str]:
        return self.cluster.down()

    def convergence(self) -> Convergence:
        self.catch_up()
        return self.cluster.convergence()

    async def partition(self, groups: list[list[str]]) -> list[list[str]]:
        self.catch_up()
        return self.cluster.partition(groups)

    async def heal(self) -> None:
        self.catch_up()
        self.cluster.heal()

    async def crash(self, replica_id: str, lose_state: bool = False) -> None:
        self.catch_up()
        self.cluster.crash(replica_id, lose_state)

    async def recover(self, replica_id: str) -> None:
        self.catch_up()
        self.cluster.recover(replica_id)

    def set_strategy(self, name: str) -> None:
        self.catch_up()
        self.cluster.set_strategy(name)

    def set_loss(self, p: float) -> None:
        self.catch_up()
        self.cluster.set_loss(p)

    async def reset(self) -> None:
        """A fresh cluster with the same replicas: every key, fault, idempotency record and
        last write gone, strategy, loss and speed back to what the server started with, running
        (not paused), virtual time from zero. The caller stops whatever drives the old cluster
        (a scenario) first: nothing here keeps a reference to it."""
        speed, strategy, loss = self._start
        self._retired = _traffic_sum((self._retired, self.sim.stats))
        cluster = self._fresh()
        cluster.set_strategy(strategy)
        cluster.set_loss(loss)
        self.cluster, self.sim = cluster, cluster.sim
        if self._feeds:
            self._refeed()  # every node is new: watchers reset
        self._speed, self._paused = speed, False
        self.slipped_ms, self._rest_until = 0.0, -math.inf
        self.pacer.reset()
        self._ledgers.clear()
        self._unobserve()
        self.last_writes = LastWrites()
        self._unobserve = self.bus.subscribe(self.last_writes.observe)
        self._rebase()
        self._measure_afresh()
        self._wake.set()

    def settle(self, max_ms: float = 60_000.0) -> bool:
        """Run virtual time ahead until every live replica agrees (tests and scripts)."""
        ok = self.cluster.settle(max_ms)
        self._rebase()
        return ok


def build_live(
    placements: list[Placement],
    *,
    strategy: str = "plumtree",
    seed: int = 0,
    speed: float = 1.0,
    epoch_ms: float | None = None,
    secret: bytes | None = None,
    clock: Callable[[], float] | None = None,
) -> LiveCluster:
    """A live cluster whose events flow to its bus. `epoch_ms` (default: now) anchors the
    timestamps people see; virtual time itself starts at zero."""
    bus = EventBus()

    def fresh(at: float | None = epoch_ms) -> SimCluster:
        return SimCluster(
            placements, strategy=strategy, seed=seed, sink=bus.sim_sink, secret=secret,
            traffic_kinds=LIVE_TRAFFIC_KINDS, traffic_limit=LIVE_TRAFFIC_LIMIT, coalesce_ms=LIVE_COALESCE_MS, epoch_ms=time.time() * 1000.0 if at is None else at,
        )

    # a reset's cluster is anchored at the moment of the reset (unless a fixed epoch was given)
    return LiveCluster(fresh(), speed=speed, clock=clock, bus=bus, fresh=fresh)


def _traffic_sum(stats: Iterable[dict]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {"sent": {}, "delivered": {}, "dropped": {}, "dropped_by_reason": {}, "bytes": {}}
    for st in stats:
        for field, counts in out.items():
            for k, n in st[field].items():
                counts[k] = counts.get(k, 0) + n
    return out


def _fresh_like(cluster: SimCluster) -> Callable[[], SimCluster]:
    """A cluster built as `cluster` was: same placements, model, seed, secret and event sink."""
    placements, model, seed, secret = cluster.placements, cluster.model, cluster.seed, cluster.secret
    strategy, sink, epoch_ms = cluster.config.strategy, cluster.sim._sink, cluster.epoch_ms
    limit, kinds, coalesce = cluster.sim.traffic_limit, cluster.sim.traffic_kinds, cluster.config.coalesce_ms
    return lambda: SimCluster(placements, strategy=strategy, seed=seed, model=model, secret=secret,
                              sink=sink, traffic_limit=limit, traffic_kinds=kinds, epoch_ms=epoch_ms,
                              coalesce_ms=coalesce)


def check_speed(speed: float) -> float:
    if not (isinstance(speed, (int, float)) and math.isfinite(speed) and 0 < speed <= MAX_SPEED):
        raise ValueError(f"speed must be a number in (0, {MAX_SPEED:g}]")
    return float(speed)
