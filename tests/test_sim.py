"""The discrete-event simulator, driven by tiny fake nodes defined here.

The real replica node is tested elsewhere; these nodes only flood, relay and tick, which
is all it takes to check latency, faults, timers and determinism.
"""

from __future__ import annotations

import hashlib
import math
import random

import pytest
from hashseeds import outputs_under_hash_seeds

from replication.sim import simulator as sim_module
from replication.geo import LatencyModel, place_replicas, select_pops
from replication.messages import Envelope, Gossip, GossipBatch, Ping
from replication.node import Written
from replication.errors import ReplicaDown
from replication.sim.simulator import (
    MAX_TICKS_PER_INSTANT,
    SimEvent,
    SimNode,
    SimulationError,
    Simulator,
    TimerRunaway,
    UnknownNode,
)

pytestmark = pytest.mark.timeout(60)


# -- fake nodes ------------------------------------------------------------------------------


class FakeReplica:
    """Grow-only: every write is kept under its (origin, n) name, so any order converges."""

    def __init__(self) -> None:
        self.data: dict[tuple, object] = {}

    def digest(self) -> str:
        return hashlib.sha256(repr(sorted(self.data.items())).encode()).hexdigest()

    def read(self, ns: str, key: str) -> list:
        return [v for (n, k, _o, _i), v in sorted(self.data.items()) if (n, k) == (ns, key)]


class FloodNode:
    """On a write, sends the write to every other node; optionally relays what it first sees."""

    def __init__(self, nid: str, peers: list[str], incarnation: int = 0, *, relay: bool = False) -> None:
        self.id = nid
        self.peers = [p for p in peers if p != nid]
        self.incarnation = incarnation
        self.relay = relay
        self.replica = FakeReplica()
        self.received: list[tuple[float, str, object]] = []  # (now, src, mid)
        self.restarts: list[float] = []
        self._seen: set = set()
        self._events: list[tuple] = []
        self._n = 0

    def _apply(self, g: Gossip) -> bool:
        if g.mid in self._seen:
            return False
        self._seen.add(g.mid)
        ns, key, value = g.delta
        self.replica.data[(ns, key, g.root, g.mid[1])] = value
        self._events.append(("applied", g.mid, key))
        return True

    def write(self, ns: str, key: str, op: dict, *, now: float):
        items = []
        for value in op.get("values", [op.get("value")]):
            self._n += 1
            g = Gossip(mid=(self.id, self._n), root=self.id, delta=(ns, key, value))
            self._apply(g)
            items.append(g)
        msg = items[0] if len(items) == 1 else GossipBatch(items)
        return Written([g.delta[2] for g in items], None, [Envelope(self.id, p, msg) for p in self.peers])

    def receive(self, env: Envelope, *, now: float) -> list[Envelope]:
        m = env.msg
        if isinstance(m, Ping):
            return []
        items = m.items if isinstance(m, GossipBatch) else [m]
        out = []
        for g in items:
            self.received.append((now, env.src, g.mid))
            if self._apply(g) and self.relay:
                out.extend(Envelope(self.id, p, g) for p in self.peers if p != env.src)
        return out

    def tick(self, *, now: float) -> list[Envelope]:
        return []

    def next_deadline(self) -> float | None:
        return None

    def restart(self, *, now: float) -> list[Envelope]:
        self.restarts.append(now)
        return []

    def drain_events(self) -> list[tuple]:
        evs, self._events = self._events, []
        return evs


class TickNode(FloodNode):
    """Pings every peer every `period` ms."""

    def __init__(self, nid: str, peers: list[str], incarnation: int = 0, *, period: float = 100.0, **kw) -> None:
        super().__init__(nid, peers, incarnation, **kw)
        self.period = period
        self.ticks: list[float] = []
        self._next = period

    def tick(self, *, now: float) -> list[Envelope]:
        self.ticks.append(now)
        self._next = now + self.period
        return [Envelope(self.id, p, Ping(seq=len(self.ticks))) for p in self.peers]

    def next_deadline(self) -> float | None:
        return self._next

    def restart(self, *, now: float) -> list[Envelope]:
        super().restart(now=now)
        self._next = now + self.period
        return []


class DebounceNode(FloodNode):
    """Wants a tick 50 ms after the last message it received (the deadline keeps moving)."""

    def __init__(self, nid: str, peers: list[str], incarnation: int = 0) -> None:
        super().__init__(nid, peers, incarnation)
        self.ticks: list[float] = []
        self._deadline: float | None = None

    def receive(self, env: Envelope, *, now: float) -> list[Envelope]:
        self._deadline = now + 50.0
        return super().receive(env, now=now)

    def tick(self, *, now: float) -> list[Envelope]:
        self.ticks.append(now)
        self._deadline = None
        return []

    def next_deadline(self) -> float | None:
        return self._deadline


class StuckTimerNode(FloodNode):
    """A buggy node: its deadline never moves past the instant it is ticked at."""

    def __init__(self, nid: str, peers: list[str], incarnation: int = 0) -> None:
        super().__init__(nid, peers, incarnation)
        self.ticks = 0

    def tick(self, *, now: float) -> list[Envelope]:
        self.ticks += 1
        return []

    def next_deadline(self) -> float | None:
        return 5.0


class LogNode(FloodNode):
    """Logs its ticks and receipts in the order the simulator makes them. Wants a tick at `at`,
    and `after_write` ms after each of its writes."""

    def __init__(self, nid: str, peers: list[str], incarnation: int = 0, *, at: float | None = None,
                 after_write: float | None = None) -> None:
        super().__init__(nid, peers, incarnation)
        self.log: list[tuple[str, float]] = []
        self.at = at
        self.after_write = after_write

    def write(self, ns: str, key: str, op: dict, *, now: float):
        out = super().write(ns, key, op, now=now)
        if self.after_write is not None:
            self.at = now + self.after_write
        return out

    def receive(self, env: Envelope, *, now: float) -> list[Envelope]:
        self.log.append(("receive", now))
        return super().receive(env, now=now)

    def tick(self, *, now: float) -> list[Envelope]:
        self.log.append(("tick", now))
        self.at = None
        return []

    def next_deadline(self) -> float | None:
        return self.at


def ids(n: int) -> list[str]:
    return [f"n{i:02d}" for i in range(n)]


def const(ms: float):
    return lambda src, dst, rng: ms


def flood_sim(n: int = 4, *, latency=const(10.0), seed: int = 1, node=FloodNode, **kw) -> Simulator:
    names = ids(n)
    return Simulator(names, lambda nid, inc: node(nid, names, inc), latency, seed=seed, **kw)


def test_fake_nodes_satisfy_the_protocol_shape():
    node: SimNode = FloodNode("a", ["a", "b"])
    for name in ("write", "receive", "tick", "next_deadline", "restart", "drain_events"):
        assert callable(getattr(node, name))
    assert node.id == "a" and node.replica.digest()


# -- latency --------------------------------------------------------------------------------


def test_delivery_time_is_send_time_plus_geo_one_way_latency():
    placements = place_replicas(select_pops("lhr,jfk,syd,nrt,gru"))
    pop = {p.id: p.pop for p in placements}
    model = LatencyModel()
    events: list[SimEvent] = []
    names = [p.id for p in placements]
    sim = Simulator.from_placements(
        placements, lambda nid, inc: FloodNode(nid, names, inc), model, seed=1, sink=events.append
    )
    sim.run_until(12.5)
    sim.write("lhr", "kv", "k", {"value": 1})
    sim.run_for(1000)
    delivered = [e for e in events if e.kind == "delivered"]
    assert sorted(e.node for e in delivered) == sorted(["jfk", "syd", "nrt", "gru"])
    for e in delivered:
        assert e.data["sent_at"] == 12.5
        assert e.t == 12.5 + model.one_way_ms(pop["lhr"], pop[e.node])
    # the nodes saw the same clock
    for nid in ("jfk", "syd", "nrt", "gru"):
        [(t, src, _mid)] = sim.nodes[nid].received
        assert src == "lhr" and t == 12.5 + model.one_way_ms(pop["lhr"], pop[nid])
    # and the model is physical: London to New York is a few tens of ms one way
    assert 25 < model.one_way_ms(pop["lhr"], pop["jfk"]) < 50
    sent = {e.data["dst"]: e.data["deliver_at"] for e in events if e.kind == "sent"}
    assert sent == {e.node: e.t for e in delivered}


@pytest.mark.parametrize("subclass", [False, True])
def test_geo_jitter_is_drawn_like_sample_ms_from_the_seeded_rng(subclass):
    class CustomModel(LatencyModel):
        pass

    model = (CustomModel if subclass else LatencyModel)(jitter_ms=7.0)
    placements = place_replicas(select_pops("lhr,fra,sin"), 5)  # two replicas share some POPs
    pop = {p.id: p.pop for p in placements}
    names = [p.id for p in placements]
    events: list[SimEvent] = []
    sim = Simulator.from_placements(
        placements, lambda nid, inc: FloodNode(nid, names, inc), model, seed=42, sink=events.append
    )
    for nid in names:
        sim.write(nid, "kv", "k", {"value": nid})
        sim.run_for(3.0)
    sim.run_for(1000)
    replay = random.Random(42)  # loss/dup/reorder are off: the rng is used for jitter only
    sent = [e for e in events if e.kind == "sent"]
    assert len(sent) == 5 * 4
    jitters = []
    for e in sent:
        expected = model.sample_ms(pop[e.data["src"]], pop[e.data["dst"]], replay)
        assert e.data["deliver_at"] == e.t + expected
        jitters.append(expected - model.one_way_ms(pop[e.data["src"]], pop[e.data["dst"]]))
    assert all(0 <= j <= 7.0 for j in jitters) and len(set(jitters)) == len(jitters)


# -- loss, duplication, reordering -------------------------------------------------------------


def run_many(sim: Simulator, writes: int = 200) -> None:
    names = list(sim.nodes)
    for i in range(writes):
        for nid in names:
            sim.write(nid, "kv", "k", {"value": i})
        sim.run_for(1.0)
    sim.run_for(10_000)


def test_loss_is_honoured_over_many_messages():
    sim = flood_sim(11, loss=0.2, seed=7)
    run_many(sim)
    st = sim.stats
    sent = st["messages_sent"]
    assert sent == 11 * 10 * 200
    lost = st["dropped_by_reason"]["loss"]
    assert 0.18 < lost / sent < 0.22
    assert st["messages_delivered"] == sent - lost == sim.delivered_count
    assert sim.in_flight() == 0


def test_duplication_is_honoured_and_copies_are_delivered():
    events: list[SimEvent] = []
    sim = flood_sim(11, duplicate=0.3, seed=8, sink=events.append)
    run_many(sim)
    st = sim.stats
    sent = st["messages_sent"]
    dups = sum(st["duplicated"].values())
    assert 0.28 < dups / sent < 0.32
    assert st["messages_delivered"] == sent + dups
    copies = [e for e in events if e.kind == "sent" and e.data["copy_of"] is not None]
    assert len(copies) == dups
    originals = {e.data["mid"]: e for e in events if e.kind == "sent" and e.data["copy_of"] is None}
    for c in copies[:50]:
        o = originals[c.data["copy_of"]]
        assert (o.data["src"], o.data["dst"]) == (c.data["src"], c.data["dst"])
    # duplicates are harmless to the grow-only fake: everyone converged
    assert sim.converged()
    mids = [e.data["mid"] for e in events if e.kind == "sent"]
    assert len(mids) == len(set(mids))


def test_reordering_is_honoured_and_actually_reorders_a_link():
    events: list[SimEvent] = []
    sim = flood_sim(11, reorder=0.5, reorder_ms=50.0, seed=9, sink=events.append)
    run_many(sim)
    delivered = [e for e in events if e.kind == "delivered"]
    delays = [e.t - e.data["sent_at"] for e in delivered]
    late = [d - 10.0 for d in delays if d > 10.0]
    assert all(d >= 10.0 for d in delays)
    assert 0.47 < len(late) / len(delays) < 0.53
    assert 22 < sum(late) / len(late) < 28  # uniform(0, 50): mean 25
    assert max(late) <= 50.0
    # on one link, later writes overtake earlier ones
    order = [mid[1] for (_t, src, mid) in sim.nodes["n01"].received if src == "n00"]
    assert len(order) == 200 and order != sorted(order)


def test_probabilities_can_change_mid_run():
    sim = flood_sim(5, seed=3)
    sim.set_loss(1.0)
    sim.write("n00", "kv", "k", {"value": 1})
    sim.run_for(100)
    assert sim.stats["dropped_by_reason"] == {"loss": 4} and sim.delivered_count == 0
    sim.set_loss(0.0)
    sim.set_duplicate(1.0)
    sim.write("n00", "kv", "k", {"value": 2})
    sim.run_for(100)
    assert sim.delivered_count == 8
    assert (sim.loss, sim.duplicate, sim.reorder) == (0.0, 1.0, 0.0)


# -- partitions ----------------------------------------------------------------------------------


def test_partition_drops_cross_group_messages_and_heal_restores_them():
    events: list[SimEvent] = []
    sim = flood_sim(4, sink=events.append)
    groups = sim.partition([["n00", "n01"]])
    assert groups == [["n00", "n01"], ["n02", "n03"]] and sim.partitioned
    assert events[-1].kind == "partition" and events[-1].data == {"groups": groups}
    sim.write("n00", "kv", "k", {"value": "west"})
    sim.write("n02", "kv", "k", {"value": "east"})
    sim.run_for(100)
    assert sim.read("n01", "kv", "k") == ["west"]
    assert sim.read("n03", "kv", "k") == ["east"]
    assert sim.read("n02", "kv", "k") == ["east"]
    assert sim.stats["dropped_by_reason"] == {"partition": 4}
    drops = [e for e in events if e.kind == "dropped"]
    assert all(e.data["reason"] == "partition" and e.t == 0.0 for e in drops)
    assert not sim.converged()
    sim.heal()
    assert events[-1].kind == "heal" and not sim.partitioned
    sim.write("n00", "kv", "k", {"value": "again"})
    sim.run_for(100)
    assert sim.read("n03", "kv", "k") == ["again", "east"]
    assert sim.stats["dropped_by_reason"] == {"partition": 4}


def test_partition_that_starts_while_messages_fly_drops_them_at_delivery():
    events: list[SimEvent] = []
    sim = flood_sim(4, sink=events.append)
    sim.write("n00", "kv", "k", {"value": 1})
    sim.run_until(5.0)
    assert sim.in_flight() == 3
    sim.partition([["n00", "n01"], ["n02"]])  # n03 is the unlisted group
    sim.run_for(100)
    assert sim.read("n01", "kv", "k") == [1]
    assert sim.read("n02", "kv", "k") == [] and sim.read("n03", "kv", "k") == []
    drops = [e for e in events if e.kind == "dropped"]
    assert sorted(e.node for e in drops) == ["n02", "n03"]
    assert all(e.t == 10.0 and e.data["reason"] == "partition" for e in drops)
    assert sim.in_flight() == 0


# -- crashes and recovery ------------------------------------------------------------------------


def test_crash_drops_messages_to_the_node_and_stops_its_ticks():
    events: list[SimEvent] = []
    sim = flood_sim(3, node=TickNode, sink=events.append)
    sim.run_until(150)
    sim.crash("n02")
    assert not sim.up("n02") and sim.up("n00")
    assert events[-1] == SimEvent(150, "crash", "n02", {"lose_state": False})
    sim.write("n00", "kv", "k", {"value": 1})
    sim.run_until(1000)
    assert sim.nodes["n02"].ticks == [100.0]
    assert sim.nodes["n00"].ticks == [100.0 * i for i in range(1, 11)]
    assert sim.nodes["n02"].replica.data == {}
    crashed = [e for e in events if e.kind == "dropped"]
    assert crashed and all(e.data["reason"] == "crashed" and e.node == "n02" for e in crashed)
    # a crashed node sends nothing: no message from it after the crash
    assert not [e for e in events if e.kind == "sent" and e.node == "n02" and e.t > 150]
    with pytest.raises(ReplicaDown, match="n02"):
        sim.write("n02", "kv", "k", {"value": 2})
    with pytest.raises(ReplicaDown, match="down"):
        sim.read("n02", "kv", "k")
    assert list(sim.digests()) == ["n00", "n01"] and sim.converged()


def test_recover_with_state_calls_restart_and_timers_resume():
    made: list[tuple[str, int]] = []
    names = ids(3)

    def factory(nid, inc):
        made.append((nid, inc))
        return TickNode(nid, names, inc)

    sim = Simulator(names, factory, const(10.0), seed=1)
    assert made == [("n00", 0), ("n01", 0), ("n02", 0)]
    sim.write("n02", "kv", "k", {"value": "kept"})
    sim.run_until(150)
    before = sim.nodes["n02"]
    sim.crash("n02")
    sim.run_until(500)
    sim.recover("n02")
    assert sim.up("n02") and sim.nodes["n02"] is before and before.restarts == [500.0]
    assert made == [("n00", 0), ("n01", 0), ("n02", 0)] and sim.incarnation("n02") == 0
    sim.run_until(800)
    assert before.ticks == [100.0, 600.0, 700.0, 800.0]
    assert sim.read("n02", "kv", "k") == ["kept"]
    sim.recover("n02")  # already up: nothing happens
    assert before.restarts == [500.0]


def test_recover_without_state_builds_a_fresh_incarnation():
    made: list[tuple[str, int]] = []
    names = ids(3)

    def factory(nid, inc):
        made.append((nid, inc))
        return TickNode(nid, names, inc)

    events: list[SimEvent] = []
    sim = Simulator(names, factory, const(10.0), seed=1, sink=events.append)
    sim.write("n01", "kv", "k", {"value": "gone"})
    sim.run_until(50)
    old = sim.nodes["n01"]
    sim.crash("n01", lose_state=True)
    sim.run_until(120)
    sim.recover("n01")
    assert made[-1] == ("n01", 1) and sim.incarnation("n01") == 1
    fresh = sim.nodes["n01"]
    assert fresh is not old and fresh.incarnation == 1 and fresh.restarts == []
    assert sim.read("n01", "kv", "k") == []  # the state is gone (other replicas still hold it)
    assert sim.read("n00", "kv", "k") == ["gone"]
    assert events[-1] == SimEvent(120, "recover", "n01", {"incarnation": 1, "lost_state": True})
    sim.run_until(400)
    # the fresh node's first deadline (100) is already past: it fires at once, then every 100 ms
    assert old.ticks == [] and fresh.ticks == [120.0, 220.0, 320.0]
    sim.crash("n01")
    sim.crash("n01", lose_state=True)  # crashing again only upgrades to losing state
    sim.recover("n01")
    assert made[-1] == ("n01", 2)


# -- timers --------------------------------------------------------------------------------------


def test_a_moving_deadline_leaves_one_live_timer():
    sim = flood_sim(2, node=DebounceNode)
    for _ in range(5):
        sim.write("n00", "kv", "k", {"value": 1})
        sim.run_for(10)
    sim.run_for(500)
    assert sim.nodes["n01"].ticks == [40.0 + 10.0 + 50.0]
    assert sim.nodes["n00"].ticks == []
    assert sim.stats["ticks"] == 1
    assert not sim.step() and sim.next_event_time() is None


def test_timers_and_deliveries_due_at_one_instant_run_in_the_order_they_were_scheduled():
    names = ids(3)
    wants = {"n01": {"at": 10.0}, "n02": {"after_write": 10.0}}
    sim = Simulator(names, lambda nid, inc: LogNode(nid, names, inc, **wants.get(nid, {})), const(10.0), seed=1)
    sim.write("n00", "kv", "k", {"value": 1})  # reaches n01 and n02 at 10.0
    sim.write("n02", "kv", "k", {"value": 2})  # reaches n00 and n01 at 10.0; n02 then wants a tick at 10.0
    sim.run_for(20)
    # n01's timer was set when it was built, before any message was sent
    assert sim.nodes["n01"].log == [("tick", 10.0), ("receive", 10.0), ("receive", 10.0)]
    # n02's timer was set after n00's message to it was sent
    assert sim.nodes["n02"].log == [("receive", 10.0), ("tick", 10.0)]
    assert sim.nodes["n00"].log == [("receive", 10.0)]


def test_a_timer_that_never_advances_raises_instead_of_hanging():
    sim = flood_sim(2, node=StuckTimerNode)
    with pytest.raises(TimerRunaway, match="n00"):
        sim.run_for(10)
    assert sim.now == 5.0
    assert sim.nodes["n00"].ticks == MAX_TICKS_PER_INSTANT


# -- the event stream and determinism ---------------------------------------------------------


def test_events_cover_writes_messages_and_node_observations():
    events: list[SimEvent] = []
    sim = flood_sim(3, sink=events.append)
    sim.write("n00", "sets", "s", {"values": ["a", "b", "c"]})
    sim.run_for(100)
    kinds = [(e.kind, e.node) for e in events]
    assert kinds[:4] == [("write", "n00"), ("applied", "n00"), ("applied", "n00"), ("applied", "n00")]
    assert events[0].data == {"ns": "sets", "key": "s"}
    assert events[1].data == {"args": (("n00", 1), "s")}
    sent = [e for e in events if e.kind == "sent"]
    assert [e.data["dst"] for e in sent] == ["n01", "n02"]
    assert sent[0].data == {
        "src": "n00", "dst": "n01", "kind": "payload", "payloads": 3, "mid": 1, "deliver_at": 10.0, "copy_of": None,
        "bytes": 27 + 3 * 32,  # a frame header, and per payload its envelope (the test double has no delta bytes)
    }
    delivered = [e for e in events if e.kind == "delivered"]
    assert delivered[0].data == {
        "src": "n00", "dst": "n01", "kind": "payload", "payloads": 3, "mid": 1, "sent_at": 0.0, "copy_of": None,
    }
    assert [e.kind for e in events[-4:]] == ["delivered", "applied", "applied", "applied"]
    st = sim.stats
    assert st["payloads_delivered"] == 6 and st["delivered"] == {"payload": 2} and st["sent"] == {"payload": 2}
    assert st["writes"] == 1 and st["in_flight"] == 0


def chaos_events(seed: int, *, sink_none: bool = False) -> list[SimEvent]:
    """A busy scenario: relaying, ticking, loss, duplication, reordering, partitions, crashes."""
    names = ["lhr", "jfk", "syd", "nrt", "gru", "fra", "sin", "jnb"]
    events: list[SimEvent] = []

    def latency(src, dst, rng):
        return 5.0 + (len(src) * 7 + ord(dst[0])) % 40 + rng.uniform(0.0, 3.0)

    sim = Simulator(
        names, lambda nid, inc: TickNode(nid, names, inc, period=37.0 + len(nid) + inc, relay=True), latency,
        seed=seed, loss=0.1, duplicate=0.1, reorder=0.2, reorder_ms=30.0,
        sink=None if sink_none else events.append,
    )
    for i in range(30):
        if sim.up(names[i % 8]):
            sim.write(names[i % 8], "kv", f"k{i % 5}", {"value": i})
        sim.run_for(7.0)
        if i == 10:
            sim.partition([["lhr", "fra", "jnb"], ["syd", "sin"]])
        if i == 15:
            sim.crash("nrt", lose_state=True)
            sim.crash("gru")
        if i == 20:
            sim.heal()
            sim.recover("nrt")
            sim.recover("gru")
    sim.run_until_condition(lambda: sim.in_flight() == 0, 5_000)
    sim.run_for(200)
    return events


def event_hash(events: list[SimEvent]) -> str:
    return hashlib.sha256("\n".join(map(repr, events)).encode()).hexdigest()


def test_same_seed_same_run_event_for_event():
    a, b = chaos_events(5), chaos_events(5)
    assert len(a) > 2000 and a == b
    kinds = {e.kind for e in a}
    assert {"sent", "delivered", "dropped", "write", "crash", "recover", "partition", "heal", "applied"} <= kinds
    reasons = {e.data["reason"] for e in a if e.kind == "dropped"}
    assert reasons == {"loss", "partition", "crashed"}


def test_different_seed_different_run():
    assert event_hash(chaos_events(5)) != event_hash(chaos_events(6))


def test_no_event_objects_are_built_without_a_sink(monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("an event was built with sink=None")

    monkeypatch.setattr(sim_module, "SimEvent", forbidden)
    chaos_events(5, sink_none=True)


def test_same_seed_same_run_across_processes_with_different_hash_seeds():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import test_sim; "
        "print(test_sim.event_hash(test_sim.chaos_events(5)))"
    )
    hashes = outputs_under_hash_seeds(code, ("1", "2", "987654"), timeout=60)
    assert len(hashes[0]) == 64
    assert hashes == [event_hash(chaos_events(5))] * 3


# -- running and inspection ---------------------------------------------------------------------


def test_step_run_until_and_conditions():
    sim = flood_sim(4)
    assert sim.now == 0.0 and not sim.step()
    sim.write("n00", "kv", "k", {"value": 1})
    assert sim.in_flight() == 3 and sim.next_event_time() == 10.0
    assert sim.step() and sim.now == 10.0 and sim.delivered_count == 1 and sim.in_flight() == 2
    assert sim.run_until(20.0) == 2 and sim.now == 20.0
    assert sim.converged() and len(set(sim.digests().values())) == 1
    sim.partition([["n00"]])
    sim.write("n00", "kv", "k", {"value": 2})
    assert not sim.run_until_condition(sim.converged, 500)
    assert sim.now == 520.0
    sim.heal()
    sim.write("n00", "kv", "k", {"value": 3})
    assert sim.run_until_condition(lambda: sim.read("n03", "kv", "k") == [1, 3], 500)
    assert sim.now == 530.0 and sim.in_flight() == 0
    assert sim.run_until_condition(lambda: True, 0)  # already true: returns at once
    with pytest.raises(ValueError, match="back in time"):
        sim.run_until(10.0)
    with pytest.raises(ValueError):
        sim.run_for(-1)
    assert sim.run_for(0) == 0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="loss"):
        flood_sim(loss=1.5)
    with pytest.raises(ValueError, match="duplicate"):
        flood_sim(duplicate=-0.1)
    with pytest.raises(ValueError, match="reorder_ms"):
        flood_sim(reorder_ms=-5)
    with pytest.raises(ValueError, match="twice"):
        Simulator(["a", "b", "a"], lambda nid, inc: FloodNode(nid, []), const(1.0), seed=1)
    with pytest.raises(ValueError, match="at least one"):
        Simulator([], lambda nid, inc: FloodNode(nid, []), const(1.0), seed=1)
    with pytest.raises(ValueError, match="built a node with id"):
        Simulator(["a"], lambda nid, inc: FloodNode("b", []), const(1.0), seed=1)
    sim = flood_sim(4)
    for setter in (sim.set_loss, sim.set_duplicate, sim.set_reorder):
        for bad in (1.5, -0.01, math.nan, True, "0.5"):
            with pytest.raises(ValueError):
                setter(bad)
    with pytest.raises(ValueError, match="nope"):
        sim.partition([["n00"], ["nope"]])
    with pytest.raises(ValueError, match="twice"):
        sim.partition([["n00", "n01"], ["n01"]])
    with pytest.raises(ValueError, match="twice"):
        sim.partition([["n00", "n00"]])
    with pytest.raises(ValueError):
        sim.partition(["n00", "n01"])  # a list of ids, not a list of groups
    assert not sim.partitioned  # a refused partition changes nothing
    with pytest.raises(UnknownNode, match="nope"):
        sim.write("nope", "kv", "k", {"value": 1})
    with pytest.raises(ValueError):
        sim.crash("nope")


def test_a_node_sending_to_an_unknown_replica_is_a_simulation_error():
    sim = Simulator(["a", "b"], lambda nid, inc: FloodNode(nid, ["a", "b", "ghost"]), const(1.0), seed=1)
    with pytest.raises(SimulationError, match="ghost"):
        sim.write("a", "kv", "k", {"value": 1})
    bad_latency = Simulator(["a", "b"], lambda nid, inc: FloodNode(nid, ["a", "b"]), const(-1.0), seed=1)
    with pytest.raises(SimulationError, match=">= 0"):
        bad_latency.write("a", "kv", "k", {"value": 1})
