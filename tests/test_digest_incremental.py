"""The per-key content hash is kept dot by dot, and small deltas are joined entry by entry
(`replication.store`): after any sequence of writes, removals, remote deltas, anti-entropy and
restarts, every key's kept hash equals one computed from scratch from the key's content, the
digest equals that of a replica that joined every delta over whole keys, and both states are equal."""

from __future__ import annotations

from contextlib import contextmanager

from hypothesis import given, settings
from hypothesis import strategies as st

from histories import do
from histories import ops as any_op
from replication import Replica
from replication import store as store_mod
from replication.delta import Delta
from replication.io.storage import Storage
from replication.store import NBUCKETS, _key_hash, bucket_of

IDS = ["a", "b", "c"]
KEYS = ["k0", "k1", "k2"]

# Bigger sets than the types' EXAMPLES, with removals of part of them, so that keys hold many entries.
set_ops = st.tuples(st.just("sets"), st.sampled_from(KEYS), st.one_of(
    st.builds(lambda xs: {"add": xs}, st.lists(st.integers(0, 30), max_size=8)),
    st.builds(lambda xs: {"remove": xs}, st.lists(st.integers(0, 30), max_size=8)),
))
map_ops = st.tuples(st.just("maps"), st.sampled_from(KEYS), st.one_of(
    st.builds(lambda fs: {"set": fs}, st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 3), max_size=4)),
    st.builds(lambda fs: {"add": fs}, st.dictionaries(st.sampled_from("pqrs"), st.integers(-2, 2), max_size=3)),
    st.builds(lambda fs: {"remove": fs}, st.lists(st.sampled_from("abcdpqrs"), max_size=4)),
))
events = st.lists(st.one_of(
    st.tuples(st.just("op"), st.sampled_from(IDS), st.one_of(set_ops, map_ops, any_op(KEYS))),
    st.tuples(st.just("deliver"), st.integers(0, 10_000), st.sampled_from(IDS)),
    st.tuples(st.just("sync"), st.sampled_from(IDS), st.sampled_from(IDS)),
    st.tuples(st.just("restart"), st.sampled_from(IDS)),
), max_size=60)


@contextmanager
def whole_keys():
    """Every delta joined over whole keys, as before entry-by-entry joins."""
    saved = store_mod.SMALL_CTX_DOTS
    store_mod.SMALL_CTX_DOTS = -1
    try:
        yield
    finally:
        store_mod.SMALL_CTX_DOTS = saved


def assert_hashes_from_scratch(r: Replica, where: str) -> None:
    s = r.store
    scratch = {}
    for ns, key in s.keys():
        h = _key_hash(ns, key, s.data[ns][key], s.seals)
        if h:
            scratch[(ns, key)] = h
    assert s._khash == scratch, f"{where}: kept key hashes differ from hashes computed from scratch"
    s.content_root()  # fold the changes in
    buckets = [0] * NBUCKETS
    for ref, h in scratch.items():
        buckets[bucket_of(*ref)] = (buckets[bucket_of(*ref)] + h) % 2**256
    assert s._buckets == buckets, f"{where}: bucket sums differ from sums computed from scratch"
    assert s._sum == sum(buckets) % 2**256, f"{where}: root differs from the sum of the buckets"


def restarted(r: Replica) -> Replica:
    """A replica started from a checkpoint of `r` (what storage hands `restore`)."""
    back = Replica(r.id, members=IDS, actor=r.actor)
    back.restore(r.store.snapshot(), r.hlc.last)
    return back


@settings(max_examples=150, deadline=None)
@given(events)
def test_kept_hashes_equal_hashes_from_scratch_and_entry_joins_equal_whole_key_joins(history):
    reps = {i: Replica(i, members=IDS) for i in IDS}
    ref = {i: Replica(i, members=IDS) for i in IDS}  # the same deltas, each joined over whole keys
    log: list[Delta] = []
    for n, ev in enumerate(history):
        if ev[0] == "op":
            d = do(reps[ev[1]], ev[2], n)
            if d is None:
                continue
            log.append(d)
            with whole_keys():
                ref[ev[1]].apply(Delta.from_wire(d.to_wire()))
            touched = ev[1]
        elif ev[0] == "deliver":
            if not log:
                continue
            d = log[ev[1] % len(log)]
            reps[ev[2]].apply(Delta.from_wire(d.to_wire()))
            with whole_keys():
                ref[ev[2]].apply(Delta.from_wire(d.to_wire()))
            touched = ev[2]
        elif ev[0] == "sync":
            if ev[1] == ev[2]:
                continue
            reply = reps[ev[1]].deltas_since(reps[ev[2]].applied_context)
            if reply is not None:
                reps[ev[2]].apply(Delta.from_wire(reply.to_wire()))
                with whole_keys():
                    ref[ev[2]].apply(Delta.from_wire(reply.to_wire()))
            touched = ev[2]
        else:
            reps[ev[1]] = restarted(reps[ev[1]])
            touched = ev[1]
        r = reps[touched]
        assert_hashes_from_scratch(r, f"{touched} after step {n} {ev[0]}")
        assert r.store.data == ref[touched].store.data, f"{touched} after step {n}: entry joins differ"
        assert r.digest() == ref[touched].digest(), f"{touched} after step {n}: digests differ"
    for x in reps.values():  # anti-entropy all ways: they converge on one digest
        for y in reps.values():
            if x is not y and (reply := x.deltas_since(y.applied_context)) is not None:
                y.apply(Delta.from_wire(reply.to_wire()))
    for x in reps.values():
        for y in reps.values():
            if x is not y and (reply := x.deltas_since(y.applied_context)) is not None:
                y.apply(Delta.from_wire(reply.to_wire()))
    assert len({r.digest() for r in reps.values()}) == 1
    for i, r in reps.items():
        assert_hashes_from_scratch(r, f"{i} at the end")


def test_a_large_key_reloaded_from_storage_keeps_its_digest(tmp_path):
    """Through SQLite: a set key of thousands of members, part removed, closed and opened again."""
    disk = Storage.open(tmp_path / "a", synchronous="NORMAL")
    r = disk.restore("a", members=["a"])
    for i in range(5):
        disk.append(r.write("sets", "big", {"add": list(range(i * 1000, (i + 1) * 1000))}, now=i)[1])
    disk.append(r.write("sets", "big", {"remove": list(range(0, 2000, 3))}, now=9)[1])
    disk.append(r.write("maps", "m", {"set": {f"f{i}": i for i in range(200)}}, now=10)[1])
    disk.flush()
    disk.checkpoint(r)  # the set's row as a checkpoint writes it; the map's from the log
    disk.append(r.write("maps", "m", {"remove": ["f1", "f2"]}, now=11)[1])
    disk.flush()
    assert_hashes_from_scratch(r, "before the restart")
    digest = r.digest()
    disk.close()
    disk = Storage.open(tmp_path / "a", synchronous="NORMAL")
    back = disk.restore("a", members=["a"])
    assert_hashes_from_scratch(back, "after the restart")
    assert back.digest() == digest
    disk.close()
