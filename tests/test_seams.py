"""The narrow seams a durable driver uses instead of reaching into a replica: snapshot and
restore, "already holds this delta", replay, a new actor, a reload; and the one result of a
node's write."""

from __future__ import annotations

import pytest

from replication.clocks import HybridLogicalClock, Timestamp
from replication.node import Node, Written
from replication.replica import Replica
from replication.store import Store

IDS = ["lhr", "fra", "syd"]


def busy(rid: str = "lhr") -> Replica:
    """A replica with some of everything: registers (one deleted), a counter, a set with a removal."""
    r = Replica(rid, members=IDS)
    r.write_kv("a", {"x": 1}, now=10)
    r.write_kv("b", "gone", now=11)
    r.delete_kv("b", now=12)
    r.add_counter("n", 5, now=13)
    r.add_to_set("s", ["p", "q"], now=14)
    r.remove_from_set("s", ["p"], now=15)
    other = Replica("fra", members=IDS)
    _, d = other.write_kv("a", "concurrent", now=16)
    r.apply(d, now=17)
    return r


def test_a_store_restored_from_a_snapshot_is_the_same_store():
    src = busy().store
    back = Store()
    back.restore(src.snapshot())
    assert back.digest() == src.digest()
    assert back.data == src.data and back.ctx == src.ctx and back.applied == src.applied
    assert dict(back.key_of) == dict(src.key_of) and back.seals == src.seals


def test_a_partial_snapshot_lists_only_live_keys_asked_for():
    store = busy().store
    snap = store.snapshot([("kv", "a"), ("kv", "b"), ("counters", "never")])
    assert set(snap.entries) == {("kv", "a")}  # b was deleted; never was never written
    assert snap.ctx is store.ctx and snap.applied is store.applied  # a view: read it before the store changes


def test_restore_fills_only_an_empty_store():
    store = busy().store
    with pytest.raises(ValueError, match="empty store"):
        store.restore(busy("fra").store.snapshot())


def test_holds_is_the_duplicate_test_of_apply():
    lhr, fra = Replica("lhr", members=IDS), Replica("fra", members=IDS)
    _, d = fra.add_counter("n", 2, now=1)
    assert not lhr.holds(d)
    assert lhr.apply(d).dots
    assert lhr.holds(d) and lhr.store.holds(d)
    assert lhr.apply(d) == ([], [])


def test_replay_moves_the_clock_past_the_log_even_when_the_store_refuses_it():
    lhr = Replica("lhr", members=IDS)
    _, d = Replica("fra", members=IDS).write_kv("k", 1, now=5_000)
    lhr.replay(d)
    assert lhr.hlc.last >= Timestamp(5_000, 0) and lhr.read_kv("k").values == [1]
    # a stale anti-entropy reply is refused again on replay, and still moves the clock
    stale = Replica("syd", members=IDS)
    stale.write_kv("k", 2, now=9_000)
    reply = stale.deltas_since(Replica("x").applied_context)
    reply.basis.vv.bump("nobody", 1)
    with pytest.raises(Exception, match="no longer has"):
        lhr.replay(reply)
    assert lhr.hlc.last >= Timestamp(9_000, 0) and lhr.read_kv("k").values == [1]


def test_the_clock_never_goes_back():
    c = HybridLogicalClock()
    c.advance_to(Timestamp(10, 3))
    c.advance_to(Timestamp(10, 1))
    c.advance_to(Timestamp(9, 9))
    assert c.last == Timestamp(10, 3)


def test_a_new_actor_must_be_this_replicas_and_unused():
    r = busy()
    with pytest.raises(ValueError, match="not one of replica"):
        r.take_actor("fra~1")
    r.take_actor("lhr~2.ab12cd34")
    r.take_actor("lhr~2.ab12cd34")  # the same one again: nothing to do
    _, d = r.write_kv("after", 1, now=20)
    assert {dot[0] for dot in d.applied.dots()} == {"lhr~2.ab12cd34"}
    with pytest.raises(ValueError, match="has dots here already"):
        r.take_actor("lhr")  # back to the first lineage, whose dots are here: its next could be minted twice
    assert r.actor == "lhr~2.ab12cd34"


def test_a_node_takes_a_reloaded_replica_with_its_clock_and_what_peers_hold():
    node = Node("lhr", IDS, seed=1)
    node.write("kv", "k", {"value": 1}, now=5_000)
    node.replica.observe_peer("fra", node.replica.version_vector, forget=False)
    before = node.replica.hlc.last
    strategy = node.strategy
    fresh = Replica("lhr", members=IDS)
    node.take_replica(fresh)
    assert node.replica is fresh and fresh.hlc.last == before and "fra" in fresh.peer_applied
    assert node.strategy is not strategy  # no cache of a dropped write survives
    with pytest.raises(ValueError):
        node.take_replica(Replica("fra", members=IDS))


def test_a_nodes_write_is_one_record():
    node = Node("lhr", IDS, seed=1)
    w = node.write("counters", "n", {"add": 2}, now=1)
    assert isinstance(w, Written) and w.view == 2 and w.delta is not None and w.envelopes
    nothing = node.write("kv", "absent", {"delete": True}, now=2)
    assert nothing.delta is None and nothing.envelopes == []
