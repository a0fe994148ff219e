"""Write coalescing (`replication.coalesce`): a replica's writes to one key in quick succession
travel as one delta group. Checked at every step as the delta tests are (the oracle, the model,
the wire), then in the simulator: what leaves at once, what waits, what a crash does."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replication import Replica
from replication.bench.oracle import History, Model, check_replica, check_round_trip
from replication.coalesce import Coalescer, join_local
from replication.delta import Delta
from replication.geo import place_replicas, select_pops
from replication.sim.cluster import SimCluster
from replication.writes import WriteTracker
from histories import do
from histories import ops as any_op

IDS = ["a", "b", "c"]
KEYS = ["k1", "k2"]
ops = any_op(KEYS)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("op"), st.sampled_from(IDS), ops, st.integers(1, 4)),
        st.tuples(st.just("flush"), st.sampled_from(IDS)),
        st.tuples(st.just("deliver"), st.integers(0, 10**6), st.sampled_from(IDS)),
        st.tuples(st.just("sync"), st.sampled_from(IDS), st.sampled_from(IDS)),
    ),
    min_size=20,
    max_size=80,
)


def _wire(d: Delta) -> Delta:
    return Delta.from_wire(msgpack.unpackb(msgpack.packb(d.to_wire(), use_bin_type=True), raw=False))


def _checked(r: Replica, hist: History, where: str, models: dict[str, Model]) -> None:
    check_replica(r, hist, where)
    models[r.id].check(where)
    check_round_trip(r, where)


@settings(max_examples=200, deadline=None)
@given(steps, st.randoms(use_true_random=False))
def test_groups_delivered_in_any_order_keep_every_invariant_at_every_step(history, rnd):
    """Each replica's writes wait in a group per key until a flush; groups are delivered in any
    order, some lost, some twice, with anti-entropy now and then. After every step each replica
    passes the oracle (its state is the join of the writes it applied), every group decodes from
    its wire form, and in the end everyone agrees."""
    reps = {i: Replica(i, members=IDS) for i in IDS}
    models = {i: Model.watch(r.store) for i, r in reps.items()}
    hist = History()
    held: dict[tuple[str, str, str], Delta] = {}  # (replica, namespace, key) -> its group so far
    log: list[tuple[str, Delta]] = []
    for n, ev in enumerate(history):
        if ev[0] == "op":
            r = reps[ev[1]]
            for _ in range(ev[3]):
                d = do(r, ev[2], n)
                if d is None:
                    continue
                hist.record(d)
                [(ns, key)] = d.entries
                k = (r.id, ns, key)
                held[k] = d if k not in held else join_local(held[k], d)
                group = _wire(held[k])  # a group is a valid delta at every step, not only when sent
                assert sorted(group.applied.dots()) == sorted(held[k].applied.dots())
            _checked(r, hist, f"{r.id} after step {n}", models)
        elif ev[0] == "flush":
            for k in [k for k in held if k[0] == ev[1]]:
                log.append((ev[1], held.pop(k)))
        elif ev[0] == "deliver":
            if not log:
                continue
            origin, d = log[ev[1] % len(log)]
            if ev[2] == origin or rnd.random() < 0.2:
                continue
            dst = reps[ev[2]]
            dst.apply(_wire(d), now=n)
            if rnd.random() < 0.3:
                dst.apply(d, now=n)
            _checked(dst, hist, f"{dst.id} after step {n}", models)
        else:
            src, dst = reps[ev[1]], reps[ev[2]]
            if src is dst:
                continue
            reply = src.deltas_since(dst.applied_context)
            if reply is not None:
                dst.apply(_wire(reply), now=n)
            _checked(dst, hist, f"{dst.id} after step {n}", models)
    log += [(k[0], d) for k, d in held.items()]
    for origin, d in log:  # every group, to everyone: no anti-entropy needed to agree
        for r in reps.values():
            if r.id != origin:
                r.apply(_wire(d))
                _checked(r, hist, f"{r.id} at the end", models)
    assert len({r.digest() for r in reps.values()}) == 1


def test_a_group_reads_as_its_writes_applied_one_by_one():
    a, by_one, by_group = (Replica(i, members="abc") for i in "abc")
    ds = [a.add_counter("c", n, now=n)[1] for n in (1, 2, -5, 7)]
    ds += [a.write("sets", "s", {"add": [x]}, now=9)[1] for x in ("x", "y")]
    ds.append(a.write("sets", "s", {"remove": ["x"]}, now=10)[1])
    for d in ds:
        by_one.apply(d)
    counter = ds[0]
    for d in ds[1:4]:
        counter = join_local(counter, d)
    s = join_local(join_local(ds[4], ds[5]), ds[6])
    by_group.apply(_wire(s))
    by_group.apply(_wire(counter))
    assert by_group.read_counter("c") == 5 == by_one.read_counter("c")
    assert by_group.read_set("s") == ["y"] == by_one.read_set("s")
    assert by_group.digest() == by_one.digest()
    assert by_group.version_vector == by_one.version_vector  # every write's dot counts as applied


def test_only_local_deltas_of_one_key_join():
    a = Replica("a", members="ab")
    d1, d2 = a.add_counter("x", 1, now=1)[1], a.add_counter("y", 1, now=2)[1]
    with pytest.raises(ValueError, match="one key"):
        join_local(d1, d2)
    with pytest.raises(ValueError, match="one key"):
        join_local(d1, a.store.full_delta())
    with pytest.raises(ValueError):
        Coalescer(0)


def test_the_coalescer_sends_after_a_quiet_spell_and_holds_within_the_window():
    a = Replica("a", members="ab")
    c = Coalescer(100.0)
    d = [a.add_counter("x", 1, now=t)[1] for t in range(4)]
    other = a.add_counter("y", 1, now=5)[1]
    assert c.offer(d[0], 0.0) is d[0]  # quiet: at once
    assert c.offer(d[1], 10.0) is None and c.next_deadline() == 100.0
    assert c.offer(other, 20.0) is other  # another key is not held by this one's window
    assert c.offer(d[2], 60.0) is None
    assert c.due(99.9) == []
    [group] = c.due(100.0)
    assert sorted(group.applied.dots()) == sorted(x for dd in d[1:3] for x in dd.applied.dots())
    assert c.next_deadline() is None and c.held_writes == 2
    assert c.offer(d[3], 150.0) is None and c.next_deadline() == 200.0  # within a window of the group's send
    assert [list(g.applied.dots()) for g in c.take_all()] == [list(d[3].applied.dots())]
    assert c.offer(d[3], 400.0) is d[3]


def _cluster(coalesce_ms: float, n_pops: int = 8) -> tuple[SimCluster, WriteTracker]:
    tracker = WriteTracker(everywhere=n_pops)

    def sink(ev) -> None:
        if ev.kind == "applied":
            tracker.applied(ev.node, ev.t, [tuple(d) for d in ev.data["dots"]], ev.data["via"])

    pops = select_pops("default")[:n_pops]
    return SimCluster(place_replicas(pops), seed=3, coalesce_ms=coalesce_ms, sink=sink, traffic_events=False), tracker


def _burst(c: SimCluster, at: str, n: int, gap_ms: float) -> None:
    for _ in range(n):
        c.write(at, "counters", "talk", {"add": 1})
        c.sim.run_for(gap_ms)


def test_a_burst_at_one_pop_travels_as_a_few_payloads_and_every_write_arrives_everywhere():
    (plain, t_plain), (grouped, t_grouped) = _cluster(0.0), _cluster(100.0)
    writer = plain.ids[0]
    _burst(plain, writer, 30, 5.0)
    _burst(grouped, writer, 30, 5.0)
    for c in (plain, grouped):
        assert c.settle()
        assert all(c.read(r, "counters", "talk") == 30 for r in c.ids)
    # 30 writes 5 ms apart span 150 ms: the first leaves at once, the rest in two groups
    assert grouped.sim.stats["sent"]["payload"] * 8 <= plain.sim.stats["sent"]["payload"]
    assert grouped.sim.nodes[writer].coalescer.held_writes == 29
    assert t_grouped.completed == t_plain.completed == 30  # every write reached every replica...
    for w in t_grouped:
        assert set(w.via.values()) <= {"local", "payload"}, w.via  # ...by dissemination, not repair
        # ...held at most a window (and a hop of the grown tree) longer than without
        farthest = max(w.arrivals.values()) - w.t
        assert farthest <= 100.0 + max(plain.one_way_ms(writer, r) for r in plain.ids) * 2 + 1


def test_a_single_write_after_a_quiet_spell_leaves_at_once():
    (plain, a), (grouped, b) = _cluster(0.0), _cluster(100.0)
    writer = plain.ids[0]
    _burst(plain, writer, 1, 0.0)
    _burst(grouped, writer, 1, 0.0)
    for c in (plain, grouped):
        c.sim.run_for(2000.0)
    [wa], [wb] = list(a), list(b)
    assert wa.arrivals and {r: t - wa.t for r, t in wa.arrivals.items()} == {r: t - wb.t for r, t in wb.arrivals.items()}


def test_held_writes_outlive_a_crash_of_their_replica_and_reach_everyone():
    c, _ = _cluster(100.0)
    writer = c.ids[1]
    _burst(c, writer, 1, 0.0)  # the window opens
    for _ in range(5):
        c.write(writer, "counters", "talk", {"add": 1})  # held
    assert c.sim.nodes[writer].coalescer.next_deadline() is not None
    c.crash(writer)
    c.sim.run_for(500.0)
    assert all(c.read(r, "counters", "talk") == 1 for r in c.ids if r != writer)
    c.recover(writer)
    assert c.settle()
    assert all(c.read(r, "counters", "talk") == 6 for r in c.ids)


def test_a_replica_taken_back_from_disk_forgets_what_it_held_and_anti_entropy_spreads_it():
    c, _ = _cluster(100.0)
    writer = c.ids[2]
    _burst(c, writer, 1, 0.0)
    for _ in range(3):
        c.write(writer, "counters", "talk", {"add": 2})
    node = c.sim.nodes[writer]
    node.take_replica(node.replica)
    assert node.coalescer.next_deadline() is None
    assert c.settle()
    assert all(c.read(r, "counters", "talk") == 7 for r in c.ids)


def test_the_dashboards_cluster_coalesces_a_burst_and_a_reset_keeps_doing_so():
    from live_helpers import run_async

    from app.dashboard.simulated import LIVE_COALESCE_MS, LiveCluster, build_live

    class Clock:
        t = 0.0

        def __call__(self) -> float:
            return self.t

    clock = Clock()
    live = build_live(place_replicas(select_pops("lhr,fra,syd")), seed=1, clock=clock)
    for cluster_of in (lambda: live, lambda: run_async(live.reset()) or live):
        lv: LiveCluster = cluster_of()
        sent0 = lv.sim.stats["sent"].get("payload", 0)
        for _ in range(10):
            lv.write("lhr", "counters", "talk", {"add": 1})
            clock.t += 0.005  # 5 ms apart: all within one window after the first
        clock.t += 1.0
        lv.catch_up()
        assert lv.cluster.config.coalesce_ms == LIVE_COALESCE_MS > 0
        assert lv.read("syd", "counters", "talk") == 10
        assert lv.sim.stats["sent"]["payload"] - sent0 == 2 * 2  # the first write, then one group, to 2 POPs


def test_the_coalescer_forgets_keys_it_sent_more_than_a_window_ago():
    """Its memory is the keys sent within about a window, not every key ever written."""
    a = Replica("a", members="ab")
    c = Coalescer(100.0)
    for i in range(2000):
        d = a.add_counter(f"k{i}", 1, now=i)[1]
        assert c.offer(d, i * 10.0) is d  # each key once: always quiet, always at once
    assert len(c._sent) <= 2 * (64 + 100.0 / 10.0)


def test_many_keys_within_one_window_cost_amortised_time():
    """1,000 keys sent within one window: the forgetting must not rescan them on every write."""
    a = Replica("a", members="ab")
    c = Coalescer(100.0)
    calls = []
    real = c._forget_quiet
    c._forget_quiet = lambda now: (calls.append(now), real(now))
    for i in range(1000):
        c.offer(a.add_counter(f"k{i}", 1, now=i)[1], i * 0.01)
    assert len(c._sent) == 1000 and len(calls) <= 6
