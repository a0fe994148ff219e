"""`edgestate bench coordination`: what coordination costs, POP by POP, on the same simulated WAN.

For every POP as the writer:
- crdt_local_us: wall-clock microseconds of local work for a CRDT write (`Replica.write_kv` on a
  replica object, median over `local_calls` calls). The write is answered there: no round trip.
  This is the only wall-clock figure; it depends on this machine.
- crdt_everywhere_ms: virtual ms until that write is applied at every replica, on a plumtree
  cluster after `warmup` writes per POP (so each root's tree has relaxed towards its fastest
  paths); median over `writes` writes. `direct` would be the physical limit; plumtree is what
  edgestate runs by default, so that is what is reported.
- consensus_commit_ms: virtual ms from submitting a write at that POP until it is committed and
  acknowledged there, on the Raft-style baseline (replication/baseline/consensus.py: one fixed leader,
  majority quorum) with the same placements and latency model. One write at a time, so no
  queueing: forward to the leader + the leader's majority round trip + the commit back.
- rtt_to_leader_ms: the round trip from that POP to the leader, for reference.

Availability: the network is split (`americas`: North and South America against the rest;
`europe`: Europe against the rest; `asia-pacific`: Asia and Oceania against the rest). Every
POP then submits a write under each model; a POP "can write" when its write is acknowledged
within `deadline_ms` of virtual time. CRDT: acknowledged locally at once on every POP that is
up. Consensus: only POPs on the leader's side, and only if that side holds a majority. After the
deadline the partition heals and the consensus writes still pending are run to commit
(`consensus_committed_after_heal`, `consensus_heal_commit_ms`): in this baseline a write blocked
by a partition waits (it is retried, not failed); a client with a deadline sees it as unavailable.

All virtual-time figures are deterministic for a seed.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import asdict, dataclass

from ..sim.cluster import SimCluster
from ..baseline.consensus import ConsensusCluster, majority
from ..baseline.costs import commit_baseline
from ..geo import AMERICAS, LatencyModel, place_replicas, select_pops
from ..replica import Replica
from .report import Progress

PARTITIONS = {
    "americas": AMERICAS,
    "europe": ("Europe",),
    "asia-pacific": ("Asia", "Oceania"),
}

COLUMNS = ["pop", "region", "crdt_local_us", "crdt_everywhere_ms", "consensus_commit_ms", "rtt_to_leader_ms"]


@dataclass
class Params:
    pops: str = "all"
    leader: str | None = None  # None: the most central POP (consensus.central_leader)
    warmup: int = 4  # plumtree warm-up writes per POP
    writes: int = 3  # measured CRDT writes per POP
    local_calls: int = 300  # Replica.write_kv calls timed per POP
    partition: str = "americas"
    deadline_ms: float = 5000.0
    seed: int = 1


class _Applied:
    """The sink: when each tracked dot was applied at each replica."""

    def __init__(self) -> None:
        self.at: dict = {}

    def __call__(self, ev) -> None:
        if ev.kind != "applied":
            return
        for d in ev.data["dots"]:
            w = self.at.get(d)
            if w is not None and ev.node not in w:
                w[ev.node] = ev.t


def local_write_us(replica_id: str, calls: int, seed: int) -> float:
    """Median wall-clock microseconds of `Replica.write_kv` on a fresh replica."""
    r = Replica(replica_id)
    rng = random.Random(seed)
    samples = []
    clock = time.perf_counter_ns
    for i in range(calls):
        key, value = f"key{rng.randrange(64)}", {"n": i, "by": replica_id}
        t0 = clock()
        r.write_kv(key, value, None, now=float(i))
        samples.append((clock() - t0) / 1000.0)
    return statistics.median(samples)


def crdt_everywhere(p: Params, ids_placements, progress: bool) -> dict[str, float]:
    """Median virtual ms for a write at each POP to be applied at every replica (plumtree)."""
    tracker = _Applied()
    cluster = SimCluster(ids_placements, strategy="plumtree", seed=p.seed, sink=tracker, traffic_events=False)
    sim, ids = cluster.sim, cluster.ids
    rng = random.Random(f"coordination:{p.seed}")
    sim.run_for(2000)  # membership and overlay settle
    bar = Progress("crdt", len(ids) * (p.warmup + p.writes)) if progress else None
    done = 0
    for _ in range(p.warmup):  # let every root's tree relax; rounds in a shuffled order
        order = list(ids)
        rng.shuffle(order)
        for origin in order:
            sim.write(origin, "kv", f"warm{rng.randrange(100)}", {"value": origin})
            sim.run_for(40)
            done += 1
            if bar:
                bar.update(done)
    sim.run_for(3000)
    times: dict[str, list[float]] = {i: [] for i in ids}
    n = len(ids)
    for k in range(p.writes):
        for origin in ids:
            node = sim.nodes[origin]
            dot = node.replica.store.ctx.next_dot(node.replica.actor)
            seen = tracker.at[dot] = {}
            t0 = sim.now
            sim.write(origin, "kv", f"measured{k}", {"value": origin})
            if not sim.run_until_condition(lambda seen=seen: len(seen) == n, max_ms=30_000):
                times[origin].append(math.inf)
            else:
                times[origin].append(max(seen.values()) - t0)
            del tracker.at[dot]
            sim.run_for(100)
            done += 1
            if bar:
                bar.update(done)
    return {i: statistics.median(v) for i, v in times.items()}


def availability(p: Params, placements, leader: str) -> dict:
    regions = PARTITIONS[p.partition]
    ids = [pl.id for pl in placements]
    side = [pl.id for pl in placements if pl.pop.region in regions]
    rest = [i for i in ids if i not in side]
    groups = [g for g in (side, rest) if g]
    result: dict = {"partition": p.partition, "groups": groups, "leader": leader, "quorum": majority(len(ids)),
                    "deadline_ms": p.deadline_ms}

    # CRDT: a write at every POP during the partition; acknowledged when it reads back locally
    crdt = SimCluster(placements, strategy="plumtree", seed=p.seed, traffic_events=False)
    crdt.sim.run_for(2000)
    crdt.partition(groups)
    crdt_ok = []
    for origin in ids:
        if not crdt.sim.up(origin):
            continue
        view = crdt.write(origin, "kv", "during-partition", {"value": origin})
        if origin in [s.value for s in view.siblings]:
            crdt_ok.append(origin)
    crdt.sim.run_for(p.deadline_ms)

    # consensus: a write at every POP, then wait out the deadline
    cc = ConsensusCluster(placements, leader=leader, seed=p.seed)
    cc.sim.partition(groups)
    t_part = cc.sim.now
    tickets = {origin: cc.write(origin, "kv", "during-partition", {"value": origin}) for origin in ids}
    cc.sim.run_until(t_part + p.deadline_ms)
    cons_ok = [o for o, t in tickets.items() if cc.committed(t)]
    cc.sim.heal()
    t_heal = cc.sim.now
    after = cc.run_until_committed(list(tickets.values()), max_ms=60_000)
    result.update({
        "crdt": len(crdt_ok) / len(ids),
        "consensus": len(cons_ok) / len(ids),
        "crdt_writers": crdt_ok,
        "consensus_writers": cons_ok,
        "consensus_committed_after_heal": sum(cc.committed(t) for t in tickets.values()) / len(ids),
        "consensus_heal_commit_ms": cc.sim.now - t_heal if after else math.inf,
    })
    return result


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def measure(p: Params, progress: bool = True) -> dict:
    if p.partition not in PARTITIONS:
        raise ValueError(f"unknown partition {p.partition!r}; choose from {', '.join(PARTITIONS)}")
    placements = place_replicas(select_pops(p.pops))
    if p.leader is not None and p.leader not in [pl.id for pl in placements]:
        raise ValueError(f"leader {p.leader!r} is not one of the selected POPs")
    model = LatencyModel()
    wall0 = time.perf_counter()
    local = {pl.id: local_write_us(pl.id, p.local_calls, p.seed) for pl in placements}
    everywhere = crdt_everywhere(p, placements, progress)
    base = commit_baseline(placements, model, p.leader, seed=p.seed, deadline_ms=p.deadline_ms)
    leader = base.leader
    pops = {}
    for pl in placements:
        i = pl.id
        pops[i] = {
            "region": pl.pop.region,
            "crdt_local_us": local[i],
            "crdt_everywhere_ms": everywhere[i],
            "consensus_commit_ms": base.commit_ms[i],
            "rtt_to_leader_ms": base.rtt_to_leader_ms[i],
        }
    rows = list(pops.values())
    summary = {
        "leader": leader,
        "replicas": len(placements),
        "quorum": majority(len(placements)),
        "strategy": "plumtree",
        "crdt_local_us_median": _median([r["crdt_local_us"] for r in rows]),
        "crdt_everywhere_ms_median": _median([r["crdt_everywhere_ms"] for r in rows]),
        "consensus_commit_ms_median": _median([r["consensus_commit_ms"] for r in rows]),
        "crdt_everywhere_ms_max": max(r["crdt_everywhere_ms"] for r in rows),
        "consensus_commit_ms_min": min(r["consensus_commit_ms"] for r in rows),
        "consensus_commit_ms_max": max(r["consensus_commit_ms"] for r in rows),
    }
    summary["commit_over_local_median"] = (
        summary["consensus_commit_ms_median"] * 1000.0 / summary["crdt_local_us_median"]
    )
    avail = availability(p, placements, leader)
    summary["wall_s"] = time.perf_counter() - wall0
    return {"params": asdict(p), "pops": pops, "summary": summary, "availability": avail}


# -- command line (wired into `edgestate bench` by the app) ----------------------------------------


def add_parser(which):
    """Add `coordination` to the benchmarks' subparsers (`which`, as returned by cli.add_parser)."""
    import argparse

    from ..cliargs import positive, positive_int

    p = which.add_parser(
        "coordination",
        help="the cost of coordination: CRDT local writes vs a Raft-style leader, per POP",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = Params()
    p.add_argument("--pops", default=d.pops, metavar="all|default|ID,...", help="POPs (default: %(default)s)")
    p.add_argument("--leader", default=None, metavar="ID",
                   help="the consensus leader's POP (default: the most central one)")
    p.add_argument("--warmup", type=int, default=d.warmup, metavar="W",
                   help="plumtree warm-up writes per POP (default: %(default)s)")
    p.add_argument("--writes", type=positive_int, default=d.writes, metavar="K",
                   help="measured CRDT writes per POP (default: %(default)s)")
    p.add_argument("--local-calls", type=positive_int, default=d.local_calls, metavar="N",
                   help="Replica.write_kv calls timed per POP (default: %(default)s)")
    p.add_argument("--partition", choices=sorted(PARTITIONS), default=d.partition,
                   help="the region(s) cut off from the rest for the availability test (default: %(default)s)")
    p.add_argument("--deadline-ms", type=positive, default=d.deadline_ms, metavar="MS",
                   help="virtual ms a write may take during the partition (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="simulation seed (default: %(default)s)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def run(args) -> int:
    """Run `edgestate bench coordination` from parsed arguments; returns the exit status."""
    import json
    import sys

    from .report import table

    prog = "edgestate bench coordination"
    try:
        select_pops(args.pops)
    except ValueError as e:
        print(f"{prog}: error: --pops {args.pops!r}: {e}", file=sys.stderr)
        return 2
    if args.warmup < 0:
        print(f"{prog}: error: --warmup must be >= 0", file=sys.stderr)
        return 2
    params = Params(pops=args.pops, leader=args.leader, warmup=args.warmup, writes=args.writes,
                    local_calls=args.local_calls, partition=args.partition, deadline_ms=args.deadline_ms,
                    seed=args.seed)
    try:
        result = measure(params, progress=not args.quiet)
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    print(format_result(result, table))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2, default=_json_default)
            f.write("\n")
    return 0


def format_result(result: dict, table) -> str:
    s, a = result["summary"], result["availability"]
    rows = [{"pop": i, **r} for i, r in result["pops"].items()]
    rows.append({"pop": "median", "crdt_local_us": s["crdt_local_us_median"],
                 "crdt_everywhere_ms": s["crdt_everywhere_ms_median"],
                 "consensus_commit_ms": s["consensus_commit_ms_median"]})
    lines = [table(rows, COLUMNS), ""]
    lines.append(f"consensus: leader {s['leader']}, quorum {s['quorum']} of {s['replicas']}; "
                 f"median commit {s['consensus_commit_ms_median']:.1f} ms against "
                 f"{s['crdt_local_us_median']:.1f} us of local CRDT work "
                 f"(everywhere in {s['crdt_everywhere_ms_median']:.1f} ms, plumtree)")
    lines.append(f"availability during the {a['partition']} partition (deadline {a['deadline_ms']:.0f} ms): "
                 f"CRDT {a['crdt']:.0%} of POPs can write, consensus {a['consensus']:.0%}; "
                 f"after heal {a['consensus_committed_after_heal']:.0%} of the blocked writes committed "
                 f"in {a['consensus_heal_commit_ms']:.0f} ms")
    return "\n".join(lines)


def _json_default(v):
    raise TypeError(f"not JSON: {v!r}")
