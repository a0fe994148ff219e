"""`edgestate bench propagation`: how writes spread, strategy by strategy, on the simulated WAN.

All latency figures are virtual time from the deterministic simulator, so they do not depend on
this machine's load; only the throughput figures are wall-clock: `sim_msgs_per_s` is the
simulator's own speed (plumtree, no benchmark bookkeeping, over the run's writes on a fresh
cluster: at most 600, or 40 in a large cluster of over 2,048 replicas), and each strategy's
`sim_msgs_per_s_instrumented` is the speed of its measured run, bookkeeping included.

Per strategy, over `writes` measured writes (after `warmup` writes that let trees form: 300
unless told, 30 in a large cluster, where a root's first write already has its tree):
- ratio_p50 / ratio_p99: time for a write to reach every live replica, divided by the physical
  limit for that write (the direct one-way latency from its origin to its farthest replica);
- payloads_per_receiver: write payloads received per replica per write (1.0 is the minimum);
- max_sends_per_node: the most payload sends any one node made for any one write;
- delivered_before_antientropy: share of writes that reached every live replica by
  dissemination alone; delivered_everywhere: share that reached them in the end;
- heal_converge_ms: after a partition (the Americas against the rest) with writes on both
  sides, the time from heal until every replica has the same state;
- warmup_ratio_p50 / warmup_ratio_p99: the same ratio over the warm-up writes. With one
  replica per POP a root's first messages follow the shared tree (plumtree starts from the
  latency model's minimum spanning tree); each root's own tree then relaxes towards its fastest
  paths over a few messages. With several replicas per POP every root has a tree of its own
  from its first write (dissemination/roottrees.py).
- first_write_max / first_write_p50: on a fresh cluster, every root writes once, one write at a
  time (seeded order, FIRST_WRITE_GAP_MS apart): payloads received per receiver for each root's
  first write (`first_write_per_root`), the worst root and the median one. 1.0 is a tree; a
  flood is several. Up to FIRST_WRITE_ROOTS roots, a seeded sample beyond (8 roots, 1 s
  apart, in a large cluster, over 2,048 replicas: at 10,000 a virtual second costs seconds of
  wall time in membership and anti-entropy alone (the store scrub is off there: `scrubs`), and
  every root there has the same kind of tree, its model tree).
- switched_back_max / switched_back_p50: the same after trees have formed, the strategy was
  switched to another one and back (the dashboard's picker does this live).
- convergence_ms / physical_ms (in --json, drawn by --plot): per measured write, the ms until
  every replica had it (null: never) and its physical limit.

With --crash-fraction F (the mass-failure experiment of the Plumtree paper): after the
warm-up, F of the replicas (a seeded choice) crash at once, and the measured writes come from
survivors. Reported instead: crashed, reliability (mean share of the other survivors each
write reached, in the end; 1.0 is every one), complete_share (writes that reached all of
them), delivered_before_antientropy, ratio_p50 / ratio_p99 over the writes after the crash
(physical limit: the farthest survivor), and recovery_s: virtual seconds from the crash to
the end of the last 1-second window of writes whose ratio p99 was at or above
RECOVERED_RATIO (0: none was; inf: the last window still was).
"""

from __future__ import annotations

import gc
import math
import os
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

from ..clocks import Dot
from .. import dissemination
from ..sim.cluster import SimCluster
from ..geo import AMERICAS, place_replicas, select_pops
from ..messages import Gossip, GossipBatch
from ..node import LARGE_CLUSTER
from ..writes import WriteTracker, write_id
from .forks import Task, run_forked
from .report import Progress, phase

STRATEGIES = tuple(dissemination.STRATEGIES)  # all of them, the default first


WARMUP = 300
# Beyond node.LARGE_CLUSTER every root's tree is its model tree from its first write: there is no
# tree to form, and at 10,000 replicas the warm-up writes' figures were the measured ones (ratio p50
# 1.0614 and p99 1.0754 both, seed 1) while their 300 writes took most of the run
WARMUP_LARGE = 30


def default_warmup(replicas: int) -> int:
    """The warm-up writes `bench propagation` runs unless told: WARMUP, WARMUP_LARGE in a large cluster."""
    return WARMUP_LARGE if replicas > LARGE_CLUSTER else WARMUP


# A task's process at its peak, per replica: 3.5 GB at 10,000 replicas (bench propagation's runs)
TASK_BYTES_PER_REPLICA = 350_000


def available_memory() -> int | None:
    """Bytes of memory available to start processes with (Linux's MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_jobs(replicas: int) -> int:
    """The processes `run` uses unless told: one, or in a large cluster (where a run takes minutes
    and every task forks from a settled cluster) one per CPU this process may use, as many as the
    available memory holds at their peak (a many-core machine would otherwise run out of it)."""
    if replicas <= LARGE_CLUSTER:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    avail = available_memory()
    fits = cpus if avail is None else avail // (replicas * TASK_BYTES_PER_REPLICA)
    return max(1, min(cpus, fits))


@dataclass
class Params:
    pops: str = "all"
    replicas: int | None = None
    writes: int = 2000
    warmup: int = WARMUP
    rate: float = 20.0  # writes per virtual second, Poisson arrivals
    loss: float = 0.0
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    seed: int = 1
    partition_writes: int = 40
    crash_fraction: float = 0.0
    scrub: bool | None = None  # None: as `scrubs` decides


class _Sink:
    """The simulator's sink: every "applied" event goes to the tracker (first arrivals, and how)."""

    __slots__ = ("tracker",)

    def __init__(self, tracker: WriteTracker) -> None:
        self.tracker = tracker

    def __call__(self, ev) -> None:
        if ev.kind == "applied":
            d = ev.data
            self.tracker.applied(ev.node, ev.t, d["dots"], d["via"])


class _Counting:
    """Wraps a node to count payloads per write: sent by each node, received in all."""

    def __init__(self, node, sends: dict, received: Counter) -> None:
        self._node, self._sends, self._received = node, sends, received
        self.id, self.replica = node.id, node.replica

    def next_deadline(self):
        return self._node.next_deadline()

    def drain_events(self):
        return self._node.drain_events()

    def __getattr__(self, name):
        return getattr(self._node, name)

    def _count_out(self, outs):
        sends = self._sends
        for env in outs:
            m = env.msg
            items = m.items if isinstance(m, GossipBatch) else (m,) if isinstance(m, Gossip) else ()
            for g in items:
                per = sends.get(g.mid)
                if per is not None:
                    per[env.src] += 1
        return outs

    def write(self, ns, key, op, *, now):
        written = self._node.write(ns, key, op, now=now)
        self._count_out(written.envelopes)
        return written

    def receive(self, env, *, now):
        m = env.msg
        items = m.items if isinstance(m, GossipBatch) else (m,) if isinstance(m, Gossip) else ()
        for g in items:
            if g.mid in self._sends:
                self._received[g.mid] += 1
        return self._count_out(self._node.receive(env, now=now))

    def tick(self, *, now):
        return self._count_out(self._node.tick(now=now))

    def restart(self, *, now):
        return self._count_out(self._node.restart(now=now))


def _percentile(xs: list[float], q: float) -> float:
    if not xs:
        return math.nan
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))
    return xs[i]


def scrubs(p: Params) -> bool:
    """Whether the run's nodes scrub their stores: not in a large cluster. The scrub looks for memory
    changed behind the store's back, which this bench never does, so every figure is the same
    without it (tests/test_bench_propagation.py); at 10,000 replicas it was over half the wall
    time of an idle virtual second (each node re-hashing its whole small store every period)."""
    return (p.replicas or 0) <= LARGE_CLUSTER if p.scrub is None else p.scrub


def placements(p: Params):
    """The replicas the run places: `p.replicas` over `p.pops`."""
    return place_replicas(select_pops(p.pops), p.replicas)


SETTLE_MS = 2000.0  # membership and overlay settle before the first write


class Settled(NamedTuple):
    """A fresh cluster that has run SETTLE_MS with no writes, no sink and no wrapper: where every
    run of a strategy starts (`settle`; with --jobs, built once per strategy and forked)."""

    cluster: SimCluster
    wall_s: float  # the settle's wall time: part of a run's wall_s, as when it settled its own
    delivered: int  # messages delivered before the settle began


def settle(p: Params, strategy: str) -> Settled:
    cluster = SimCluster(placements(p), strategy=strategy, seed=p.seed, loss=p.loss, traffic_events=False,
                         scrub=scrubs(p))
    delivered, t0 = cluster.sim.delivered_count, time.perf_counter()
    cluster.sim.run_for(SETTLE_MS)
    return Settled(cluster, time.perf_counter() - t0, delivered)


def run_strategy(p: Params, strategy: str, progress: bool = True, firsts: bool = True,
                 settled: Settled | None = None) -> dict:
    """One strategy's run, from `settled` (else a cluster of its own): the measured writes, the
    heal, and (with `firsts`) its first writes and switched-back writes, each on a fresh cluster
    (`first_writes`; `run` with jobs measures those in processes of their own and adds them with
    `_add_firsts`)."""
    cluster, settle_s, delivered0 = settled or settle(p, strategy)
    wall0 = time.perf_counter() - settle_s
    tracker = WriteTracker(everywhere=len(cluster.ids))  # every write of the run, complete once all have it
    measured_ids: set[str] = set()
    sends: dict[Dot, Counter] = {}
    received: Counter = Counter()
    cluster.attach(sink=_Sink(tracker), wrap=lambda node: _Counting(node, sends, received), traffic_events=False)
    sim, ids = cluster.sim, cluster.ids
    rng = random.Random(f"bench:{p.seed}")
    bar = Progress(strategy, p.warmup + p.writes) if progress else None

    def write(i: int, measured: bool, origin: str | None = None) -> None:
        origin = origin or rng.choice(ids)
        node = sim.nodes[origin]
        dot = node.replica.store.ctx.next_dot(node.replica.actor)
        tracker.start(origin, sim.now, (dot,))  # before the write: its own sends are counted
        if measured:
            measured_ids.add(write_id(dot))
            sends[dot] = Counter()
        sim.write(origin, "kv", f"key{rng.randrange(1000)}", {"value": i})

    for i in range(p.warmup + p.writes):
        write(i, i >= p.warmup)
        sim.run_for(rng.expovariate(p.rate) * 1000.0)
        if bar:
            bar.update(i + 1)
    # every measured write has had time to be repaired by anti-entropy (a few periods)
    followed = tracker.recent()  # the heal below writes more: those are not figures of this run
    sim.run_until_condition(lambda: tracker.completed == len(followed), max_ms=30_000)

    ratios, warm_ratios, before_ae, everywhere = [], [], 0, 0
    took: list[float | None] = []  # per measured write, ms until every replica had it (None: never)
    limits: list[float] = []  # and its physical limit
    for w in followed:
        origin = w.origin
        phys = max(cluster.one_way_ms(origin, x) for x in ids if x != origin)
        complete = len(w.arrivals) == len(ids)
        ratio = (max(w.arrivals.values()) - w.t) / phys if complete else math.inf
        if w.id not in measured_ids:
            warm_ratios.append(ratio)
            continue
        ratios.append(ratio)
        took.append(max(w.arrivals.values()) - w.t if complete else None)
        limits.append(phys)
        everywhere += complete
        before_ae += complete and not w.repaired()
    k = max(1, len(ratios))
    if progress:
        phase(strategy, f"the Americas cut off, {p.partition_writes} writes, healed: time to converge")
    result = {
        "ratio_p50": _percentile(ratios, 0.50),
        "ratio_p99": _percentile(ratios, 0.99),
        "payloads_per_receiver": sum(received.values()) / (k * (len(ids) - 1)),
        "max_sends_per_node": max((max(c.values(), default=0) for c in sends.values()), default=0),
        "delivered_before_antientropy": before_ae / k,
        "delivered_everywhere": everywhere / k,
        "heal_converge_ms": _heal(sim, cluster, p, rng),
        "replicas": len(ids),
        "writes": len(ratios),
        "warmup_ratio_p50": _percentile(warm_ratios, 0.50),
        "warmup_ratio_p99": _percentile(warm_ratios, 0.99),
        "sim_messages": sim.delivered_count - delivered0,
        "convergence_ms": took,  # for --plot (bench.plot)
        "physical_ms": limits,
    }
    result["wall_s"] = time.perf_counter() - wall0
    if firsts:
        if progress:
            phase(strategy, "first writes, one root at a time, on a fresh cluster")
        first = _timed_first_writes(p, strategy, None)
        if progress:
            phase(strategy, f"first writes again after trees formed and a switch to {_other(strategy)} and back")
        _add_firsts(result, first, _timed_first_writes(p, strategy, _other(strategy)))
    return result


def _other(strategy: str) -> str:
    """The strategy the switched-back writes switch to and back from."""
    return next(s for s in STRATEGIES if s != strategy)


def _timed_first_writes(p: Params, strategy: str, switch_from: str | None,
                        settled: Settled | None = None) -> tuple[dict[str, float], float]:
    t0 = time.perf_counter() - (settled.wall_s if settled else 0.0)
    return first_writes(p, strategy, switch_from, settled), time.perf_counter() - t0


def _add_firsts(result: dict, first: tuple[dict[str, float], float], back: tuple[dict[str, float], float]) -> None:
    """A strategy's first-write figures into its result; their wall time into its `wall_s`."""
    (f, f_wall), (b, b_wall) = first, back
    result.update({
        "first_write_max": max(f.values()), "first_write_p50": _percentile(list(f.values()), 0.5),
        "switched_back_max": max(b.values()), "switched_back_p50": _percentile(list(b.values()), 0.5),
        "first_write_per_root": f,
    })
    result["wall_s"] += f_wall + b_wall


FIRST_WRITE_ROOTS = 60  # beyond this many replicas, a seeded sample of roots
FIRST_WRITE_ROOTS_LARGE = 8  # ...and this many in a large cluster
FIRST_WRITE_GAP_MS = 2000.0  # between two first writes: the slowest path and its repairs are done
# ...in a large cluster, where each virtual second costs seconds of wall time: a first write there
# reaches the farthest replica within 1.1x its physical limit (at most 123 ms one way between the
# 54 POPs), and a lost push is resent after a round trip of its link
FIRST_WRITE_GAP_LARGE_MS = 1000.0


def first_writes(p: Params, strategy: str, switch_from: str | None = None,
                 settled: Settled | None = None) -> dict[str, float]:
    """Payloads per receiver of each root's first write, on a fresh cluster (`settled`, else one of
    its own), one write at a time. `switch_from`: first let trees form (a few writes from every
    root), switch to that strategy and back, and only then measure. Virtual time, seeded: the same
    figures on every machine."""
    sends: dict[Dot, Counter] = {}
    received: Counter = Counter()
    cluster = (settled or settle(p, strategy)).cluster
    cluster.attach(wrap=lambda node: _Counting(node, sends, received))
    sim, ids = cluster.sim, cluster.ids
    rng = random.Random(f"first-writes:{p.seed}")
    large = len(ids) > LARGE_CLUSTER
    k = FIRST_WRITE_ROOTS_LARGE if large else FIRST_WRITE_ROOTS
    gap = FIRST_WRITE_GAP_LARGE_MS if large else FIRST_WRITE_GAP_MS
    roots = list(ids) if len(ids) <= k else rng.sample(ids, k)
    rng.shuffle(roots)
    if switch_from is not None:
        for i in range(3 * len(roots)):  # every root writes a few times: its tree forms and relaxes
            sim.write(roots[i % len(roots)], "kv", f"warm{i % 10}", {"value": i})
            sim.run_for(rng.expovariate(p.rate) * 1000.0)
        sim.run_for(gap)
        cluster.set_strategy(switch_from)
        sim.run_for(1000)
        cluster.set_strategy(strategy)
        sim.run_for(1000)
    out: dict[str, float] = {}
    for root in roots:
        replica = sim.nodes[root].replica
        dot = replica.store.ctx.next_dot(replica.actor)
        sends[dot] = Counter()
        sim.write(root, "kv", "first", {"value": root})
        sim.run_for(gap)
        out[root] = received[dot] / max(1, len(ids) - 1)
    return out


def _heal(sim, cluster: SimCluster, p: Params, rng: random.Random) -> float:
    """Partition the Americas from the rest, write on both sides, heal, time the convergence."""
    americas = [i for i in cluster.ids if cluster.pop_of[i].region in AMERICAS]
    rest = [i for i in cluster.ids if i not in americas]
    if not americas or not rest:
        return math.nan
    sim.partition([americas, rest])
    for i in range(p.partition_writes):
        side = americas if i % 2 else rest
        sim.write(rng.choice(side), "kv", f"split{i % 5}", {"value": i})
        sim.run_for(50)
    sim.run_for(3000)  # past the anti-entropy grace: the writes are old news on their side
    t_heal = sim.now
    sim.heal()
    if not sim.run_until_condition(sim.converged, max_ms=120_000):
        return math.inf
    return sim.now - t_heal


THROUGHPUT_WRITES = 600
THROUGHPUT_WRITES_LARGE = 40  # in a large cluster: 40 writes are 600,000 messages and more at 10,000


def throughput_writes(p: Params) -> int:
    """How many writes `sim_throughput` times: the run's own count, at most THROUGHPUT_WRITES
    (THROUGHPUT_WRITES_LARGE over node.LARGE_CLUSTER replicas)."""
    cap = THROUGHPUT_WRITES_LARGE if len(placements(p)) > LARGE_CLUSTER else THROUGHPUT_WRITES
    return max(1, min(cap, p.warmup + p.writes))


def sim_throughput(p: Params, writes: int = THROUGHPUT_WRITES, settled: Settled | None = None) -> float:
    """The simulator's own speed: delivered messages per wall-clock second for plumtree on the
    same POPs and write rate, on a fresh settled cluster (`settled`: plumtree's, else one of its
    own), without this benchmark's per-message bookkeeping (the runs above count payloads per
    write, which costs more than some of the messages themselves)."""
    sim = (settled or settle(p, "plumtree")).cluster.sim
    ids = sim.node_ids
    rng = random.Random(f"throughput:{p.seed}")
    t0, d0 = time.perf_counter(), sim.delivered_count
    for i in range(writes):
        sim.write(rng.choice(ids), "kv", f"key{rng.randrange(1000)}", {"value": i})
        sim.run_for(rng.expovariate(p.rate) * 1000.0)
    sim.run_for(3000)
    return (sim.delivered_count - d0) / (time.perf_counter() - t0)


RECOVERED_RATIO = 1.5
CRASH_SETTLE_MS = 30_000.0  # after the last write: anti-entropy has repaired what dissemination missed


def crash_run(p: Params, strategy: str, progress: bool = True) -> dict:
    """Crash `crash_fraction` of the replicas at once after the warm-up; measure the writes after it."""
    first: dict[Dot, dict[str, tuple[float, str]]] = {}  # write -> replica -> (first arrival, how)

    def sink(ev) -> None:
        if ev.kind == "applied":
            for d in ev.data["dots"]:
                first.setdefault(d, {}).setdefault(ev.node, (ev.t, ev.data["via"]))

    # with payload acks, as on lossy links: in the simulator a crashed child is as silent as a lost
    # payload (over TCP its broken connection says so), and acks are how plumtree finds it out
    cluster = SimCluster(placements(p), strategy=strategy, seed=p.seed, loss=p.loss, sink=sink, traffic_events=False,
                         acks=True, scrub=scrubs(p))
    sim, ids = cluster.sim, cluster.ids
    rng = random.Random(f"crash:{p.seed}")
    bar = Progress(strategy, p.warmup + p.writes) if progress else None
    wall0 = time.perf_counter()
    sim.run_for(2000)
    for i in range(p.warmup):
        sim.write(rng.choice(ids), "kv", f"key{rng.randrange(1000)}", {"value": i})
        sim.run_for(rng.expovariate(p.rate) * 1000.0)
        if bar:
            bar.update(i + 1)
    crashed = set(rng.sample(ids, round(p.crash_fraction * len(ids))))
    for c in sorted(crashed):
        cluster.crash(c)
    t_crash = sim.now
    survivors = [i for i in ids if i not in crashed]
    writes: list[tuple[Dot, str, float]] = []
    for i in range(p.writes):
        origin = rng.choice(survivors)
        replica = sim.nodes[origin].replica
        writes.append((replica.store.ctx.next_dot(replica.actor), origin, sim.now))
        sim.write(origin, "kv", f"key{rng.randrange(1000)}", {"value": i})
        sim.run_for(rng.expovariate(p.rate) * 1000.0)
        if bar:
            bar.update(p.warmup + i + 1)
    if progress:
        phase(strategy, f"{CRASH_SETTLE_MS / 1000:.0f} virtual seconds more, for anti-entropy's repairs")
    sim.run_for(CRASH_SETTLE_MS)
    shares, ratios, complete, before_ae = [], [], 0, 0
    windows: dict[int, list[float]] = {}
    for dot, origin, t in writes:
        got = first.get(dot, {})
        others = [x for x in survivors if x != origin]
        reached = [got[x] for x in others if x in got]
        shares.append(len(reached) / max(1, len(others)))
        done = len(reached) == len(others)
        complete += done
        before_ae += done and all(via != "ae" for _, via in reached)
        phys = max(cluster.one_way_ms(origin, x) for x in others)
        ratio = (max(a for a, _ in reached) - t) / phys if done and reached else math.inf
        ratios.append(ratio)
        windows.setdefault(int((t - t_crash) // 1000), []).append(ratio)
    recovery = 0.0
    for w in sorted(windows):
        if _percentile(windows[w], 0.99) >= RECOVERED_RATIO:
            recovery = math.inf if w == max(windows) else (w + 1.0)
    k = max(1, len(writes))
    return {
        "replicas": len(ids), "crashed": len(crashed), "writes": len(writes),
        "reliability": sum(shares) / k, "complete_share": complete / k,
        "delivered_before_antientropy": before_ae / k,
        "ratio_p50": _percentile(ratios, 0.5), "ratio_p99": _percentile(ratios, 0.99),
        "recovery_s": recovery,
        "window_ratio_p99": {w: _percentile(v, 0.99) for w, v in sorted(windows.items())},
        "sim_messages": sim.delivered_count, "wall_s": time.perf_counter() - wall0,
    }


def _strategy_run(p: Params, strategy: str, progress: bool) -> dict:
    return (crash_run if p.crash_fraction else run_strategy)(p, strategy, progress)


def _instrumented(r: dict) -> dict:
    r["sim_msgs_per_s_instrumented"] = r["sim_messages"] / r["wall_s"]
    return r


def _run_from(settled: Settled, p: Params, strategy: str) -> dict:
    return run_strategy(p, strategy, False, firsts=False, settled=settled)


def _firsts_from(settled: Settled, p: Params, strategy: str, switch_from: str | None):
    return _timed_first_writes(p, strategy, switch_from, settled)


def _crash_from(_: None, p: Params, strategy: str) -> dict:
    return crash_run(p, strategy, False)  # with acks and a sink from the start: a cluster of its own


def _side_by_side(p: Params, progress: bool, jobs: int) -> tuple[dict[str, dict], dict[str, Settled]]:
    """The strategies' results, and the settled clusters the tasks were forked from (pristine)."""
    firsts = not p.crash_fraction
    if firsts:  # the long runs first, then the switched-back writes (longer than the first writes)
        tasks = [Task((s, "run"), s, _run_from, (p, s)) for s in p.strategies]
        tasks += [Task((s, "switched back"), s, _firsts_from, (p, s, _other(s))) for s in p.strategies]
        tasks += [Task((s, "first writes"), s, _firsts_from, (p, s, None)) for s in p.strategies]
    else:
        tasks = [Task((s, "run"), None, _crash_from, (p, s)) for s in p.strategies]
    workers = min(jobs, len(tasks))
    t0 = time.perf_counter()

    def done(key) -> None:
        phase(key[0], f"{key[1]} done after {time.perf_counter() - t0:.0f} s ({workers} processes)")

    done_, prepared = run_forked(tasks, workers, lambda s: settle(p, s) if firsts else None,
                                 done if progress else None)
    out = {}
    for s in p.strategies:
        r = done_[(s, "run")]
        if firsts:
            _add_firsts(r, done_[(s, "first writes")], done_[(s, "switched back")])
        out[s] = _instrumented(r)
    return out, prepared


def run(p: Params, progress: bool = True, jobs: int = 1) -> dict:
    """Every strategy's run, then the simulator's own speed. With `jobs` > 1 the runs go side by
    side in that many processes (`forks`): each strategy's measured run, its switched-back writes
    and its first writes are separate tasks, the long ones first, so that the processes stay busy
    to the end, each forked from one settled cluster of its strategy (built once, not three times;
    every virtual-time figure is the same as one after another). Progress bars are then off; each
    task says when it is done. The simulator's speed is measured afterwards, alone, as it is a
    wall-clock figure, on plumtree's settled cluster."""
    prepared: dict[str, Settled] = {}
    if jobs > 1 and (len(p.strategies) > 1 or not p.crash_fraction):
        strategies, prepared = _side_by_side(p, progress, jobs)
    else:
        strategies = {s: _instrumented(_strategy_run(p, s, progress)) for s in p.strategies}
    if p.crash_fraction:  # the simulator's speed is the plain run's figure
        return {"params": asdict(p), "strategies": strategies}
    if progress:
        phase("simulator", f"its own speed: plumtree, {throughput_writes(p)} writes on a fresh cluster")
    # plumtree's settled cluster, never run since: the other ones' garbage is collected first, so
    # that no collection of it lands in the timed part
    plumtree = prepared.pop("plumtree", None)
    prepared.clear()
    gc.collect()
    return {"params": asdict(p), "strategies": strategies,
            "sim_msgs_per_s": sim_throughput(p, writes=throughput_writes(p), settled=plumtree)}
