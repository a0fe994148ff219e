"""`edgestate bench faults`: random fault schedules on the simulator, invariants at every step.

Each seed draws one schedule: writes of every registered type (kv with and without a context,
deletes, counter increments and decrements, set adds and removes; every other type, such as the
map, with operations drawn from its own `EXAMPLES`) at random live replicas, while
message loss (0-30 %), duplication and reordering change, partitions come and go, and
replicas crash, with or without losing their state, and recover. Then every fault is
lifted (heal, recover all, no loss) and the cluster must converge.

Checked after every event that changed a replica (see `oracle`): what a reader sees there,
that nothing it held is lost, that its state is the join of the deltas it applied (recomputed
in a canonical order), that its state round-trips through the wire form; at every
crash, that its state survives a checkpoint and restore through the real storage. After the
heal: convergence, each counter exactly its acknowledged increments, every surviving write
visible unless superseded, and every replica seeing every other alive.

Every write in the simulator is acknowledged the moment it is made (the writer's replica
applied it); `acked_writes` counts them. A failing seed reports the first broken invariant; `--seed S` replays exactly that run (every
random choice comes from the seed).
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass

from ..sim.cluster import SimCluster
from ..crdts import types
from ..crdts.base import FROM_READ
from ..errors import InvalidOperation
from ..geo import place_replicas, select_pops
from ..membership import ALIVE
from ..node import Node
from .oracle import History, InvariantBroken, Model, check_replica, check_round_trip, expected_counter
from .report import Progress

DEFAULT_POPS = "lhr,iad,sjc,gru,nrt,syd"
KV_KEYS = [f"k{i}" for i in range(5)]
COUNTER_KEYS = ["c0", "c1", "c2"]
SET_KEYS = ["s0", "s1"]
OWN_WRITES = ("kv", "counters", "sets")  # the types with a schedule of their own below; the rest draw EXAMPLES
KEYS_PER_TYPE = 2
MEMBERSHIP_HEAL_MS = 5000.0


@dataclass
class Params:
    seeds: int = 100
    first_seed: int = 0
    pops: str = DEFAULT_POPS
    replicas: int | None = None  # dealt round-robin over the POPs (None: one per POP); several per POP: model trees
    duration_ms: float = 20_000.0
    converge_ms: float = 60_000.0
    restore_checks: bool = True  # checkpoint + restore through SQLite at every crash
    coalesce_ms: float = 0.0  # hold a key's writes this long after its last send (NodeConfig.coalesce_ms)


@dataclass
class SeedResult:
    seed: int
    ok: bool
    failure: str | None = None
    at_ms: float | None = None
    writes: int = 0
    faults: int = 0
    converge_ms: float | None = None
    membership_ms: float | None = None
    checks: int = 0
    held_writes: int = 0  # writes that waited to travel in a group (with coalesce_ms)


class _Checked:
    """A node whose every call is followed by the oracle's checks, when its state changed."""

    def __init__(self, node: Node, campaign: "_Campaign") -> None:
        self._node = node
        self._c = campaign
        self.id = node.id
        self._digest = node.replica.digest()
        self._applied = node.replica.store.applied.copy()
        self._model = Model.watch(node.replica.store)

    @property
    def replica(self):
        return self._node.replica

    def __getattr__(self, name):
        return getattr(self._node, name)

    def _check(self) -> None:
        rep = self._node.replica
        d = rep.digest()
        if d == self._digest:
            return
        self._digest = d
        where = f"{self.id} ({rep.actor}) at t={self._c.now():.1f} ms"
        if not rep.store.applied.covers(self._applied):
            raise InvariantBroken(f"{where}: its applied context shrank: it lost dots it held")
        self._applied = rep.store.applied.copy()
        check_replica(rep, self._c.hist, where)
        self._model.check(where)
        check_round_trip(rep, where)
        self._c.checks += 1

    def write(self, ns, key, op, *, now):
        co = self._node.coalescer
        held = co.held_writes if co is not None else 0
        out = self._node.write(ns, key, op, now=now)
        if co is not None:
            self._c.held_writes += co.held_writes - held
        if out.delta is not None:
            self._c.hist.record(out.delta)  # exactly as its replica made it
        self._check()
        return out

    def receive(self, env, *, now):
        out = self._node.receive(env, now=now)
        self._check()
        return out

    def tick(self, *, now):
        out = self._node.tick(now=now)
        self._check()
        return out

    def restart(self, *, now):
        out = self._node.restart(now=now)
        self._check()
        return out

    def next_deadline(self):
        return self._node.next_deadline()

    def drain_events(self):
        return self._node.drain_events()


class _Campaign:
    def __init__(self, seed: int, params: Params) -> None:
        self.seed = seed
        self.params = params
        self.rng = random.Random(f"faults:{seed}")
        self.hist = History()
        self.checks = 0
        self.cluster = SimCluster(
            place_replicas(select_pops(params.pops), params.replicas), seed=seed, secret=b"faults", wrap=self._wrap,
            traffic_events=False, coalesce_ms=params.coalesce_ms,
        )
        self.sim = self.cluster.sim
        self.ids = self.cluster.ids
        self.writes = 0
        self.refused = 0
        self.faults = 0
        self.held_writes = 0

    def _wrap(self, node: Node):
        return _Checked(node, self)

    def now(self) -> float:
        return self.sim.now

    # -- the schedule -----------------------------------------------------------------

    def _write(self) -> None:
        rng, sim = self.rng, self.sim
        up = [i for i in self.ids if sim.up(i)]
        if not up:
            return
        at = rng.choice(up)
        kind = rng.random()
        if kind < 0.35:
            key = rng.choice(KV_KEYS)
            op = {"value": rng.randrange(1000)}
            if rng.random() < 0.5:
                op["context"] = sim.read(at, "kv", key).context
            ns = "kv"
        elif kind < 0.42:
            key, ns, op = rng.choice(KV_KEYS), "kv", {"delete": True}
        elif kind < 0.65:
            key, ns = rng.choice(COUNTER_KEYS), "counters"
            op = {"add": rng.choice([-2, -1, 1, 1, 2, 3, 5])}
        elif kind < 0.82:
            key, ns = rng.choice(SET_KEYS), "sets"
            elems = rng.sample(range(6), rng.randint(1, 2))
            op = {"add": elems} if rng.random() < 0.6 else {"remove": elems}
        else:
            t = rng.choice([t for t in types() if t.NAME not in OWN_WRITES])
            ns, key, op = t.NAME, f"{t.LABEL}{rng.randrange(KEYS_PER_TYPE)}", rng.choice(t.EXAMPLES)
            if op.get("context") == FROM_READ:
                op = {**op, "context": getattr(sim.read(at, ns, key), "context", None)}
        try:
            sim.write(at, ns, key, op)
        except InvalidOperation:
            self.refused += 1  # e.g. a map field holding the other type here: refused, nothing changed
            return
        self.writes += 1

    def _fault(self) -> None:
        rng, sim, ids = self.rng, self.sim, self.ids
        self.faults += 1
        r = rng.random()
        if r < 0.2:
            shuffled = ids[:]
            rng.shuffle(shuffled)
            cut = rng.randint(1, len(ids) - 1)
            sim.partition([shuffled[:cut], shuffled[cut:]])
        elif r < 0.3:
            sim.heal()
        elif r < 0.55:
            up = [i for i in ids if sim.up(i)]
            if len(up) > 1:
                victim = rng.choice(up)
                if self.params.restore_checks:
                    self._check_restore(victim)
                sim.crash(victim, lose_state=rng.random() < 0.35)
        elif r < 0.75:
            down = [i for i in ids if not sim.up(i)]
            if down:
                sim.recover(rng.choice(down))
        else:
            self.cluster.set_loss(rng.choice([0.0, 0.05, 0.1, 0.2, 0.3]))  # and plumtree acks with it
            sim.set_duplicate(rng.choice([0.0, 0.0, 0.05, 0.2]))
            sim.set_reorder(rng.choice([0.0, 0.1, 0.3]))

    def _check_restore(self, nid: str) -> None:
        """A checkpoint of this replica, restored through the real storage, is the same state."""
        from ..io.storage import Storage  # SQLite only where the check runs

        rep = self.sim.nodes[nid].replica
        with tempfile.TemporaryDirectory(prefix="edgestate-faults-") as d:
            st = Storage.open(d, synchronous="NORMAL")
            st.restore(rep.id, members=rep.members, actor=rep.actor)
            st.checkpoint(rep, full=True)
            st.close()
            st = Storage.open(d, synchronous="NORMAL")
            try:
                back = st.restore(rep.id, members=rep.members, actor=rep.actor)
            except Exception as e:  # noqa: BLE001 - the finding
                raise InvariantBroken(f"{nid} at t={self.now():.1f} ms: its checkpoint does not restore: {e}") from None
            finally:
                st.close()
        if back.digest() != rep.digest():
            raise InvariantBroken(f"{nid} at t={self.now():.1f} ms: restored from its checkpoint, it is another state")

    # -- one run ------------------------------------------------------------------------

    def run(self) -> SeedResult:
        rng, sim, p = self.rng, self.sim, self.params
        res = SeedResult(self.seed, ok=True)
        try:
            t = 0.0
            next_fault = rng.uniform(500, 2500)
            while t < p.duration_ms:
                t += rng.expovariate(1 / 120.0)
                sim.run_until(min(t, p.duration_ms))
                if t >= p.duration_ms:
                    break
                if t >= next_fault:
                    self._fault()
                    next_fault = t + rng.uniform(300, 2500)
                else:
                    self._write()
            # lift every fault, then the cluster must converge
            healed_at = sim.now
            sim.heal()
            self.cluster.set_loss(0.0)
            sim.set_duplicate(0.0)
            sim.set_reorder(0.0)
            for i in self.ids:
                sim.recover(i)
            if not sim.run_until_condition(sim.converged, p.converge_ms):
                raise InvariantBroken(f"not converged {p.converge_ms:.0f} ms after the heal: "
                                      f"{len(set(sim.digests().values()))} different states")
            res.converge_ms = sim.now - healed_at
            self._check_end()
            if not sim.run_until_condition(self._all_alive, max(0.0, healed_at + MEMBERSHIP_HEAL_MS - sim.now)):
                raise InvariantBroken(f"{MEMBERSHIP_HEAL_MS:.0f} ms after the heal some replica still sees "
                                      f"another as not alive: {self._not_alive()}")
            res.membership_ms = sim.now - healed_at
        except InvariantBroken as e:
            res.ok = False
            res.failure = str(e)
            res.at_ms = sim.now
        res.writes, res.faults, res.checks, res.held_writes = self.writes, self.faults, self.checks, self.held_writes
        return res

    def _all_alive(self) -> bool:
        return not self._not_alive()

    def _not_alive(self) -> list[str]:
        out = []
        for i in self.ids:
            m = self.sim.nodes[i].membership
            out += [f"{i} sees {p} {m.status(p)}" for p in m.members if m.status(p) != ALIVE]
        return out

    def _check_end(self) -> None:
        """Converged: the state every replica holds is what the history says it must be."""
        rep = self.sim.nodes[self.ids[0]].replica
        applied = rep.store.applied
        for key in COUNTER_KEYS:
            want = expected_counter(self.hist, key, applied)
            got = rep.read_counter(key)
            if got != want:
                raise InvariantBroken(f"after convergence counter {key!r} reads {got}; its surviving increments sum to {want}")
        for i in self.ids:
            check_replica(self.sim.nodes[i].replica, self.hist, f"{i} after convergence")


def run_seed(seed: int, params: Params | None = None) -> SeedResult:
    return _Campaign(seed, params or Params()).run()


def run(params: Params, progress: bool = True) -> dict:
    bar = Progress("faults", params.seeds) if progress else None
    results = []
    t0 = time.perf_counter()
    for i in range(params.seeds):
        results.append(run_seed(params.first_seed + i, params))
        if bar:
            bar.update(i + 1)
    wall = time.perf_counter() - t0
    conv = sorted(r.converge_ms for r in results if r.converge_ms is not None)
    memb = sorted(r.membership_ms for r in results if r.membership_ms is not None)
    return {
        "params": asdict(params),
        "seeds": len(results),
        "failed": [asdict(r) for r in results if not r.ok],
        "acked_writes": sum(r.writes for r in results),
        "held_writes": sum(r.held_writes for r in results),
        "faults": sum(r.faults for r in results),
        "checks": sum(r.checks for r in results),
        "converge_ms_p50": _pct(conv, 50),
        "converge_ms_p99": _pct(conv, 99),
        "converge_ms_max": conv[-1] if conv else None,
        "membership_ms_p50": _pct(memb, 50),
        "membership_ms_p99": _pct(memb, 99),
        "wall_s": round(wall, 2),
    }


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[p - 1] if p < 100 else xs[-1]


__all__ = ["Params", "SeedResult", "run", "run_seed"]
