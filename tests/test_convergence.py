"""Whole replicas under any delivery order, duplication and loss, with anti-entropy repair:
every registered CRDT type, through its own operations."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replication import Replica
from replication.crdts import types
from replication.delta import Delta
from replication.errors import StaleDelta
from histories import do
from histories import ops as any_op

IDS = ["a", "b", "c", "d"]
KEYS = ["k1", "k2", "k3"]

ops = any_op(KEYS)
events = st.lists(
    st.one_of(
        st.tuples(st.just("op"), st.sampled_from(IDS), ops),
        st.tuples(st.just("deliver"), st.integers(0, 10**6), st.sampled_from(IDS)),
    ),
    min_size=1,
    max_size=40,
)


def view(r: Replica):
    return [t.to_json(r.read(t.NAME, k)) for t in types() for k in KEYS]


def anti_entropy(reps, rounds=4):
    for _ in range(rounds):
        for x in reps:
            for y in reps:
                if x is not y:
                    d = x.deltas_since(y.applied_context)
                    if d is not None:
                        y.apply(Delta.from_wire(d.to_wire()))
                    y.observe_peer(x.id, x.applied_context)


def run(history, lose, dup, rnd):
    reps = {i: Replica(i, members=IDS) for i in IDS}
    log = []
    now = 0
    for ev in history:
        now += 1
        if ev[0] == "op":
            d = do(reps[ev[1]], ev[2], now)
            if d is not None:
                log.append((ev[1], d))
        elif log:
            origin, d = log[ev[1] % len(log)]
            if ev[2] != origin and rnd.random() >= lose:
                reps[ev[2]].apply(Delta.from_wire(d.to_wire()), now=now)
                if rnd.random() < dup:
                    reps[ev[2]].apply(d, now=now)
    return reps, log


@settings(max_examples=200, deadline=None)
@given(events, st.randoms(use_true_random=False))
def test_every_delivery_order_with_duplicates_converges(history, rnd):
    reps, log = run(history, lose=0.0, dup=0.3, rnd=rnd)
    for r in reps.values():  # then every replica gets every delta, in a random order
        pending = [d for origin, d in log if origin != r.id] * 2
        rnd.shuffle(pending)
        for d in pending:
            r.apply(d)
    digests = {r.digest() for r in reps.values()}
    assert len(digests) == 1
    views = [view(r) for r in reps.values()]
    assert all(v == views[0] for v in views)


@settings(max_examples=200, deadline=None)
@given(events, st.randoms(use_true_random=False), st.floats(0.0, 1.0))
def test_anti_entropy_repairs_any_loss(history, rnd, lose):
    reps, _ = run(history, lose=lose, dup=0.1, rnd=rnd)
    anti_entropy(list(reps.values()))
    assert len({r.digest() for r in reps.values()}) == 1
    # and a converged cluster has nothing left to send
    for x in reps.values():
        for y in reps.values():
            assert x.deltas_since(y.applied_context) is None


def test_anti_entropy_repairs_a_delta_whose_successor_arrived_first():
    """x supersedes w, d supersedes x; q gets only d. q must not believe it has x's effects."""
    r, q = Replica("r", members=["r", "q"]), Replica("q", members=["r", "q"])
    _, w = r.write_kv("k", "w", now=1)
    q.apply(w)
    r.write_kv("k", "x", now=2)  # lost on the way to q
    _, d = r.write_kv("k", "d", now=3)
    q.apply(d)
    assert q.version_vector.get("r") < r.version_vector.get("r")  # gap: x not applied at q
    repair = r.deltas_since(q.applied_context)
    assert repair is not None
    q.apply(repair)
    assert q.read_kv("k").values == ["d"] and q.digest() == r.digest()


def test_stable_dots_are_forgotten_and_a_replica_that_lost_them_gets_full_state():
    ids = ["a", "b"]
    a, b = Replica("a", members=ids), Replica("b", members=ids)
    for i in range(5):
        b.apply(a.write_kv(f"k{i}", i, now=i)[1])
    assert len(a.store.key_of) == 5
    a.observe_peer("b", b.applied_context)
    assert len(a.store.key_of) == 0
    fresh = Replica("b2", members=ids)  # b restarted without its state, under a new identity
    repair = a.deltas_since(fresh.applied_context)
    assert repair.full
    fresh.apply(repair)
    assert [fresh.read_kv(f"k{i}").values for i in range(5)] == [[i] for i in range(5)]


def test_a_reply_computed_for_state_the_replica_lost_is_refused_unchanged():
    a, b = Replica("a"), Replica("b")
    b.apply(a.write_kv("k0", 0, now=1)[1])
    a.write_kv("k1", 1, now=2)
    reply = a.deltas_since(b.applied_context)
    assert not reply.full and reply.basis is not None
    lost = Replica("b")
    before = lost.digest()
    with pytest.raises(StaleDelta):
        lost.apply(reply)
    assert lost.digest() == before


def test_full_state_transfer_removes_keys_the_sender_deleted():
    a, b = Replica("a"), Replica("b")
    _, d = a.write_kv("gone", 1, now=1)
    b.apply(d)
    a.delete_kv("gone", now=2)  # the delete's delta is lost
    b.apply(a.store.full_delta())
    assert b.read_kv("gone").values == [] and b.digest() == a.digest()
