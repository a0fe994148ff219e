"""Content anti-entropy and seals: replicas with equal version vectors and different values
are found and repaired; a damaged copy never spreads; a lost dot never spreads as a removal.

"Tampering" here writes into a replica's memory behind its store's back (`store.data`,
`store.seals`), as a bit flip or a bug would: nothing tells the store, the scrub finds it.
"""

from __future__ import annotations

import itertools
import random
import sqlite3

import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replication import Replica, seals
from replication.crdts import orset
from replication.sim.cluster import SimCluster
from replication.delta import Delta
from replication.errors import MalformedDelta
from replication.geo import place_replicas, select_pops
from replication.io.integrity import record_sum
from replication.messages import AeBuckets, AeDigest, AeKeys, AeRepair, Envelope, wire_size
from replication.node import Node
from replication.errors import BadSeal
from replication.errors import CorruptStorage
from replication.io.storage import DB_NAME, Storage
from replication.wire import FrameDecoder, encode_frame

pytestmark = pytest.mark.timeout(300)

PERIOD_MS = 1000.0  # NodeConfig's anti-entropy interval
CONTENT_KINDS = ("ae_buckets", "ae_keys", "ae_repair")
THREE, FIVE = "lhr,iad,nrt", "lhr,iad,nrt,syd,gru"


# -- a converged cluster, and ways to damage one replica ---------------------------------------


def converged(pops: str = THREE, seed: int = 1, writes: int = 12, events: list | None = None, factory=None):
    kw = {"sink": events.append, "traffic_events": False} if events is not None else {}
    c = SimCluster(place_replicas(select_pops(pops)), seed=seed, secret=b"content-ae", wrap=factory, **kw)
    rng = random.Random(seed)
    for i in range(writes):
        at = rng.choice(c.ids)
        c.write(at, "kv", f"k{i % 4}", {"value": {"i": i}})
        c.write(at, "counters", f"c{i % 2}", {"add": rng.choice([-2, 1, 3])})
        c.write(at, "sets", "s", {"add": [i]} if i % 3 else {"remove": [i - 2]})
        c.sim.run_for(400)  # one value per key: each write sees the last
    assert c.settle(), "the cluster did not converge before the test began"
    c.sim.run_for(2 * PERIOD_MS)
    assert c.sim.converged()
    return c


def store_of(c: SimCluster, rid: str):
    return c.sim.nodes[rid].replica.store


def reads(c: SimCluster, ns: str, key: str) -> dict:
    return {i: c.read(i, ns, key) for i in c.ids}


def truth(c: SimCluster) -> str:
    [d] = set(c.sim.digests().values())
    return d


def damage_kv(store, key: str, value: bytes, *, reseal: bool = False):
    """Another value under the same dot; with `reseal`, a seal that verifies it (a forgery)."""
    [(d, (_v, ts))] = store.data["kv"][key].items()
    store.data["kv"][key] = {d: (value, ts)}
    if reseal:
        store.seals[d] = seals.seal("kv", key, d, (value, ts[0], ts[1]))
    return d


def run_periods(c: SimCluster, n: float) -> None:
    c.sim.run_for(n * PERIOD_MS)


# -- damaged copies: found by the scrub, refetched, every replica right again ------------------------


@pytest.mark.parametrize("pops", [THREE, FIVE], ids=["3-replicas", "5-replicas"])
def test_a_damaged_value_is_found_and_repaired_within_a_few_periods(pops):
    events: list = []
    c = converged(pops, events=events)
    right = reads(c, "kv", "k2")
    before = truth(c)
    victim = c.ids[-1]
    damage_kv(store_of(c, victim), "k2", b'"evil"')
    assert c.read(victim, "kv", "k2").values == ["evil"]
    run_periods(c, 4)
    assert reads(c, "kv", "k2") == right
    assert set(c.sim.digests().values()) == {before}
    st = store_of(c, victim).integrity
    assert (st.silent_changes, st.bad_seals) == (1, 1)
    found = [e.data for e in events if e.kind == "integrity" and e.node == victim]
    assert [f["what"] for f in found] == ["silent_change", "bad_seal"]
    assert found[1]["key"] == "k2" and found[1]["ns"] == "kv"


def test_a_damaged_value_is_repaired_under_message_loss():
    c = converged(FIVE, seed=7)
    before = truth(c)
    c.sim.set_loss(0.3)
    damage_kv(store_of(c, "gru"), "k0", b'"lossy"')
    damage_kv(store_of(c, "iad"), "k3", _forgeries(store_of(c, "iad"), "k3")[0], reseal=True)
    right = c.read("lhr", "kv", "k0").values
    run_periods(c, 12)
    assert c.sim.converged()  # with the loss still on
    assert c.read("gru", "kv", "k0").values == right
    assert truth(c) != before  # the forgery had the lower seal: every replica took it


def test_damaged_counters_sets_and_seals_are_repaired():
    c = converged(FIVE, seed=4)
    before = truth(c)
    right = {(ns, k): reads(c, ns, k) for ns, k in [("counters", "c0"), ("sets", "s"), ("kv", "k1")]}
    a, b, d = (store_of(c, i) for i in c.ids[:3])
    (dot, (p, n)), *_ = a.data["counters"]["c0"].items()
    a.data["counters"]["c0"] = {**a.data["counters"]["c0"], dot: (p + 1000, n)}  # other totals, same dot
    elems = dict(b.data["sets"]["s"])
    moved = sorted(elems)[0]
    elems[b"12345"] = elems.pop(moved)  # one add's dot now tags another element
    b.data["sets"]["s"] = elems
    [sib] = d.data["kv"]["k1"]
    d.seals[sib] = b"\x00" * 8  # the value is right, its seal is not
    run_periods(c, 4)
    assert {(ns, k): reads(c, ns, k) for ns, k in right} == right
    assert set(c.sim.digests().values()) == {before}
    assert [s.integrity.bad_seals for s in (a, b, d)] == [1, 1, 1]


def _forgeries(store, key: str) -> tuple[bytes, bytes]:
    """Two forged values whose seals fall below and above the real copy's."""
    [(d, (_v, ts))] = store.data["kv"][key].items()
    real = store.seals[d]
    lower = higher = None
    for i in range(1000):
        v = f'"forged {i}"'.encode()
        s = seals.seal("kv", key, d, (v, ts[0], ts[1]))
        if s < real and lower is None:
            lower = v
        if s > real and higher is None:
            higher = v
    return lower, higher


@pytest.mark.parametrize("side", ["lower", "higher"])
def test_with_a_forged_seal_every_replica_keeps_the_copy_with_the_lower_seal(side):
    """A forgery that verifies cannot be told from the real write: the replicas still end
    equal, on the copy with the lower seal, and count the conflict."""
    c = converged(FIVE)
    victim = c.ids[1]
    real = c.read(victim, "kv", "k3").values
    lower, higher = _forgeries(store_of(c, victim), "k3")
    forged = lower if side == "lower" else higher
    damage_kv(store_of(c, victim), "k3", forged, reseal=True)
    run_periods(c, 4)
    assert c.sim.converged()
    want = [orjson.loads(forged)] if side == "lower" else real
    assert {i: c.read(i, "kv", "k3").values for i in c.ids} == {i: want for i in c.ids}
    assert sum(store_of(c, i).integrity.conflicts for i in c.ids) >= 1
    assert sum(store_of(c, i).integrity.bad_seals for i in c.ids) == 0


# -- a lost live dot: contained and reported, never spread as a removal ---------------------------


def test_a_replica_that_lost_a_live_dot_does_not_spread_the_removal():
    events: list = []
    c = converged(FIVE, events=events)
    right = c.read("lhr", "kv", "k0").values
    victim = c.ids[2]
    st = store_of(c, victim)
    [lost] = st.data["kv"].pop("k0")  # gone from the store; the contexts still name it
    healthy = [i for i in c.ids if i != victim]
    sent = c.sim.stats["sent"].get("ae_buckets", 0)
    run_periods(c, 16)
    # each pair compares again after 1, 2, 4, 8 periods, not every period: at most 5 times each
    assert 0 < c.sim.stats["sent"]["ae_buckets"] - sent <= 5 * len(healthy)
    assert {i: c.read(i, "kv", "k0").values for i in healthy} == {i: right for i in healthy}
    assert c.read(victim, "kv", "k0").values == []  # not resurrected: a peer might be the damaged one
    assert len({c.sim.digests()[i] for i in healthy}) == 1
    assert st.integrity.disputed == 1  # reported once, however many exchanges see it
    disputes = [e.data for e in events if e.kind == "integrity" and e.data["what"] == "disputed"]
    assert {(e["key"], tuple(e["dot"])) for e in disputes} == {("k0", tuple(lost))}
    assert all(store_of(c, i).integrity.repaired_keys == 0 for i in healthy)
    # the next write that saw the value replaces it everywhere, and the cluster is one again
    view = c.read("lhr", "kv", "k0")
    c.write("lhr", "kv", "k0", {"value": "after", "context": view.context})
    assert c.settle()
    assert {i: c.read(i, "kv", "k0").values for i in c.ids} == {i: ["after"] for i in c.ids}


# -- cost: equal content sends nothing beyond the root ----------------------------------------------


def test_equal_content_sends_no_extra_messages_and_damage_does():
    c = converged(FIVE)
    sent = dict(c.sim.stats["sent"])
    run_periods(c, 10)
    after = c.sim.stats["sent"]
    assert after["ae_digest"] - sent.get("ae_digest", 0) >= 10 * len(c.ids)
    assert not {k: v for k, v in after.items() if k in CONTENT_KINDS}
    damage_kv(store_of(c, "nrt"), "k1", b'"x"', reseal=True)
    run_periods(c, 3)
    assert all(c.sim.stats["sent"].get(k, 0) > 0 for k in CONTENT_KINDS)


def test_the_root_costs_its_eight_bytes_in_a_digest():
    r = Replica("lhr")
    r.write_kv("k", 1, now=1)
    root = r.store.content_root()
    assert len(root) == 8
    assert wire_size(AeDigest(r.applied_context, root=root)) - wire_size(AeDigest(r.applied_context)) == 8


# -- seals on the wire and on disk -------------------------------------------------------------------------


def _replica_with_writes() -> tuple[Replica, list[Delta]]:
    r = Replica("lhr")
    out = [r.write_kv("k", {"v": 1}, now=1)[1], r.add_counter("c", 5, now=2)[1], r.add_to_set("s", ["a"], now=3)[1]]
    return r, out


@pytest.mark.parametrize("which", ["kv", "counters", "sets"])
def test_a_delta_whose_content_changed_under_its_seal_is_refused(which):
    _, deltas = _replica_with_writes()
    w = {"kv": deltas[0], "counters": deltas[1], "sets": deltas[2]}[which].to_wire()
    entry = w[1][0]
    assert entry[0] == which and len(entry[3]) == 8
    if which == "kv":
        entry[2][0][2] = b'{"v":2}'
    elif which == "counters":
        entry[2][0][2] += 1
    else:
        entry[2][0][0] = b'"b"'
    rep = Replica("syd")
    before = rep.digest()
    with pytest.raises(MalformedDelta) as ei:
        rep.apply_wire(w, now=5)
    assert isinstance(ei.value, BadSeal) and ei.value.code == "bad_seal"
    assert ei.value.key == {"kv": "k", "counters": "c", "sets": "s"}[which]
    assert rep.digest() == before
    w[1][0][3] = b""  # and a delta that drops the seals is no better
    with pytest.raises(MalformedDelta):
        Delta.from_wire(w)


def test_an_unchanged_delta_with_its_seals_is_accepted():
    _, deltas = _replica_with_writes()
    rep = Replica("syd")
    for d in deltas:
        rep.apply_wire(msgpack.unpackb(msgpack.packb(d.to_wire()), raw=False))
    assert rep.read_counter("c") == 5 and rep.read_set("s") == ["a"]


def test_seals_survive_checkpoint_and_restore(tmp_path):
    st = Storage.open(tmp_path)
    r = st.restore("lhr")
    for i in range(5):
        _, d = r.write_kv(f"k{i}", i, now=i + 1)
        st.append(d)
    _, d = r.add_to_set("s", ["x", "y"], now=9)
    st.append(d)
    st.flush()
    st.checkpoint(r)
    _, d = r.add_counter("c", 3, now=10)  # only in the log
    st.append(d)
    st.close(None)
    st = Storage.open(tmp_path)
    back = st.restore("lhr")
    st.close()
    assert back.store.seals == r.store.seals and len(back.store.seals) == 8
    assert back.digest() == r.digest()
    Delta.from_wire(msgpack.unpackb(msgpack.packb(back.store.full_delta().to_wire()), raw=False))  # verifies


def test_a_stored_row_that_no_longer_matches_its_seal_is_corrupt_storage_naming_the_key(tmp_path):
    st = Storage.open(tmp_path)
    r = st.restore("lhr")
    r.write_kv("good", 1, now=1)
    r.write_kv("user:7", {"name": "Ada"}, now=2)
    st.checkpoint(r, full=True)
    st.close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    (raw,) = db.execute("SELECT store FROM keyspace WHERE key='user:7'").fetchone()
    row = msgpack.unpackb(raw, raw=False)
    row[0][0][2] = b'{"name":"Eve"}'  # the value changed on disk; its seal did not
    # ...and its row checksum was made anew, as a bug writing the wrong value would: the seal still tells
    raw = msgpack.packb(row, use_bin_type=True)
    db.execute("UPDATE keyspace SET store=?, sum=? WHERE key='user:7'",
               (raw, record_sum("keyspace", ("kv", "user:7"), raw)))
    db.commit()
    db.close()
    st = Storage.open(tmp_path)
    with pytest.raises(CorruptStorage) as ei:
        st.load()
    st.close()
    assert "'user:7'" in ei.value.message and "seal" in ei.value.message


def damaged_on_disk(tmp_path) -> tuple[Storage, Replica, Replica]:
    """lhr's storage, lhr and fra: k written at lhr and sent to fra, then lhr's copy of k
    damaged (a copy that loses to fra's) and checkpointed, so the damage is on disk too."""
    st = Storage.open(tmp_path)
    a = st.restore("lhr", members=["lhr", "fra"])
    b = Replica("fra", members=["lhr", "fra"])
    _, d = a.write_kv("k", "real", now=1)
    st.append(d)
    st.flush()
    b.apply(d)
    st.checkpoint(a, full=True)
    _lower, higher = _forgeries(a.store, "k")
    damage_kv(a.store, "k", higher, reseal=True)  # a's copy (which loses to b's) ...
    st.checkpoint(a, full=True)  # ... reaches the disk
    return st, a, b


def test_a_repair_reaches_the_disk_at_the_next_checkpoint(tmp_path):
    """A repair is logged nowhere: the checkpoint must still write the keys it changed."""
    st, a, b = damaged_on_disk(tmp_path)
    changed = a.store.repair(b.store.repair_delta([("kv", "k")]), b.store.applied, "fra")
    assert changed == [("kv", "k")] and a.read_kv("k").values == ["real"]
    st.checkpoint(a)  # no logged delta touched k since the last checkpoint
    st.close()
    st = Storage.open(tmp_path)
    back = st.restore("lhr", members=["lhr", "fra"])
    st.close()
    assert back.read_kv("k").values == ["real"] and back.digest() == b.digest()


# -- repairs only ever add ------------------------------------------------------------------------------------


def test_a_repair_never_removes_a_live_dot_and_claims_no_write():
    a, b = Replica("lhr"), Replica("fra")
    _, d1 = a.write_kv("k", 1, now=1)
    b.apply(d1)
    _, d2 = b.write_kv("k", 2, now=2)  # supersedes d1 at b
    a_before = a.store.applied.copy()
    rep = b.store.repair_delta([("kv", "k")])
    assert rep.repair and not rep.applied.vv and set(rep.ctx.dots()) == set(rep.seals)
    a.store.repair(msgpack_round_trip(rep))
    assert sorted(a.read_kv("k").values) == [1, 2]  # added b's write, kept a's: nothing removed
    assert a.store.applied == a_before  # what superseded d1 still arrives by the ordinary path
    a.apply(d2)
    assert a.read_kv("k").values == [2]


@pytest.mark.parametrize("how", ["ae_reply", "full", "repair"])
def test_a_replica_never_sends_a_damaged_copy_nor_its_absence_as_a_removal(how):
    a, b, fresh = Replica("lhr"), Replica("fra"), Replica("syd")
    for i in range(3):
        _, d = a.write_kv(f"k{i}", i, now=i + 1)
        b.apply(d)
    [bad] = a.store.data["kv"]["k1"]
    damage_kv(a.store, "k1", b'"damaged"')
    out = {"ae_reply": lambda: a.deltas_since(fresh.applied_context),
           "full": lambda: a.store.full_delta(),
           "repair": lambda: a.store.repair_delta(list(a.store.keys()))}[how]()
    sent = msgpack_round_trip(out)  # what a peer decodes: every seal verifies
    assert bad not in sent.seals and not sent.ctx.contains(bad) and not sent.applied.contains(bad)
    assert not a.store.applied.contains(bad) and a.store.integrity.bad_seals == 1  # to be fetched back
    b.apply(sent)
    assert b.read_kv("k1").values == [1]  # the peer's good copy stays
    a.apply(b.deltas_since(a.applied_context))
    assert a.read_kv("k1").values == [1] and a.digest() == b.digest()


@pytest.mark.parametrize("newest", [True, False], ids=["newest-own-dot", "older-own-dot"])
def test_a_dropped_own_dot_is_fetched_back_and_never_minted_again(newest):
    a, b = Replica("lhr"), Replica("fra")
    for i in range(3):
        _, d = a.write_kv(f"k{i}", i, now=i + 1)
        b.apply(d)
    key = "k2" if newest else "k0"
    [bad] = a.store.data["kv"][key]
    damage_kv(a.store, key, b'"damaged"')
    a.store.scrub(100)
    assert not a.store.applied.contains(bad) and a.read_kv(key).values == []
    _, d = a.write_kv("new", "x", now=10)
    assert min(d.applied.dots()) == ("lhr", 4)  # never the dropped dot again
    b.apply(d)
    a.apply(b.deltas_since(a.applied_context))
    assert a.read_kv(key).values == [int(key[1])] and a.digest() == b.digest()


def test_a_dropped_dot_removed_meanwhile_is_not_brought_back_by_a_stale_peer():
    a, b, c = Replica("lhr"), Replica("fra"), Replica("syd")
    _, d1 = a.write_kv("k", "old", now=1)
    b.apply(d1)
    c.apply(d1)
    _, d2 = b.write_kv("k", "new", now=2)  # supersedes a's write; a and c have not seen it
    damage_kv(a.store, "k", b'"damaged"')
    a.store.scrub(10)  # a drops its copy of its own newest dot: it stays in a's join context
    a.apply(d2)  # the write that removed it arrives first
    a.apply(c.deltas_since(a.applied_context))  # then a peer that still holds the old value
    assert a.read_kv("k").values == ["new"]
    b.apply(a.deltas_since(b.applied_context) or d2)
    assert a.digest() == b.digest()


def test_a_dropped_dot_is_fetched_back_after_a_restart(tmp_path):
    st = Storage.open(tmp_path)
    a = st.restore("lhr")
    b = Replica("fra")
    for i in range(3):
        _, d = a.write_kv(f"k{i}", i, now=i + 1)
        st.append(d)
        b.apply(d)
    st.flush()
    st.checkpoint(a, full=True)
    damage_kv(a.store, "k0", b'"damaged"')
    a.store.scrub(100)  # dropped, and out of both contexts
    st.checkpoint(a)  # only the row a repair or a drop changed, with the contexts
    st.close()
    st = Storage.open(tmp_path)
    back = st.restore("lhr")
    st.close()
    assert back.read_kv("k0").values == [] and not back.store.applied.contains(("lhr", 1))
    back.apply(b.deltas_since(back.applied_context))
    assert back.read_kv("k0").values == [0] and back.digest() == b.digest()


def msgpack_round_trip(delta: Delta) -> Delta:
    return Delta.from_wire(msgpack.unpackb(msgpack.packb(delta.to_wire()), raw=False))


# -- the exchange over the real wire codec ---------------------------------------------------------------------


class CodecNode(Node):
    """A node that only ever receives what crossed encode_frame and a FrameDecoder."""

    def receive(self, env, *, now):
        frame = encode_frame(env, b"wire-secret")
        (decoded,) = self.decoder.feed(frame)
        assert abs(wire_size(env.msg) / len(frame) - 1) <= 0.3 or env.kind not in CONTENT_KINDS, env.kind
        return super().receive(decoded, now=now)


def test_a_content_exchange_crosses_the_wire_codec():
    def wrap(node):
        n = CodecNode(node.id, list(node.peers) + [node.id], config=node.cfg, seed=1, link_ms=node._link_hint)
        n.decoder = FrameDecoder(b"wire-secret", local_id=node.id)
        return n

    c = converged(THREE, factory=wrap)
    before = truth(c)
    damage_kv(store_of(c, "nrt"), "k1", b'"damaged"')
    damage_kv(store_of(c, "iad"), "k2", _forgeries(store_of(c, "iad"), "k2")[1], reseal=True)
    run_periods(c, 5)
    assert set(c.sim.digests().values()) == {before}
    assert all(c.sim.stats["sent"].get(k, 0) > 0 for k in CONTENT_KINDS)


def test_wire_size_of_content_messages_is_within_30_percent():
    r = Replica("lhr")
    for i in range(40):
        r.write_kv(f"user:{i}", {"name": "Ada", "visits": i}, now=1_700_000_000_000 + i)
    s = r.store
    ctx = r.applied_context
    msgs = {
        "buckets": AeBuckets(ctx, s.bucket_sums()),
        "keys": AeKeys(ctx, sorted(s.bucket_sums())[:8], s.key_hashes(sorted(s.bucket_sums())[:8])),
        "repair": AeRepair(ctx, s.repair_delta([("kv", f"user:{i}") for i in range(5)]), [("kv", "user:9")]),
        "digest": AeDigest(ctx, root=s.content_root()),
    }
    for name, m in msgs.items():
        actual = len(encode_frame(Envelope("lhr", "fra", m), b"k"))
        assert 0.7 <= wire_size(m) / actual <= 1.3, (name, wire_size(m), actual)


# -- property: any history, any damage to one replica, and anti-entropy restores the truth ----------------


DAMAGES = ["kv_value", "kv_seal", "counter", "set_move", "set_seal"]


def _damage(store, kind: str, rng: random.Random) -> bool:
    """One damage of this kind to a random live dot; False when the store has none to damage."""
    if kind.startswith("kv"):
        keys = sorted(store.data["kv"])
        if not keys:
            return False
        key = rng.choice(keys)
        d, (v, ts) = rng.choice(sorted(store.data["kv"][key].items()))
        if kind == "kv_value":
            store.data["kv"][key] = {**store.data["kv"][key], d: (b'"damaged"' if v != b'"damaged"' else b'"again"', ts)}
        else:
            store.seals[d] = b"\x00" * 7 + b"x"
        return True
    if kind == "counter":
        keys = sorted(store.data["counters"])
        if not keys:
            return False
        key = rng.choice(keys)
        d, (p, n) = rng.choice(sorted(store.data["counters"][key].items()))
        store.data["counters"][key] = {**store.data["counters"][key], d: (p + rng.randint(1, 9), n)}
        return True
    keys = sorted(store.data["sets"])
    if not keys:
        return False
    key = rng.choice(keys)
    elems = dict(store.data["sets"][key])
    e = rng.choice(sorted(elems))
    if kind == "set_seal":
        store.seals[min(orset.dots_of(elems[e]))] = b"\x01" * 8
    else:
        to = next(m for m in (b'"moved %d"' % i for i in itertools.count()) if m not in elems)
        elems[to] = elems.pop(e)  # an element no one added
        store.data["sets"][key] = elems
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    writes=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["kv", "counters", "sets"]), st.integers(0, 3),
                              st.integers(-3, 5)), min_size=1, max_size=25),
    damages=st.lists(st.tuples(st.sampled_from(DAMAGES), st.integers(0, 2**32)), min_size=1, max_size=3),
    victim=st.integers(0, 2),
)
def test_any_history_and_any_damage_to_one_replica_end_in_the_untampered_truth(seed, writes, damages, victim):
    c = SimCluster(place_replicas(select_pops(THREE)), seed=seed, secret=b"p")
    for at, ns, k, n in writes:
        op = {"kv": {"value": n}, "counters": {"add": n}, "sets": {"add": [n]} if n >= 0 else {"remove": [-n]}}[ns]
        c.write(c.ids[at], ns, f"{ns}{k}", op)
        c.sim.run_for(abs(n) * 7.0)
    assert c.settle()
    c.sim.run_for(2 * PERIOD_MS)
    right = truth(c)
    views = {(ns, k): c.read(c.ids[0], ns, k) for ns in ("kv", "counters", "sets") for k in (f"{ns}{i}" for i in range(4))}
    store = store_of(c, c.ids[victim])
    damaged = [_damage(store, kind, random.Random(r)) for kind, r in damages]
    run_periods(c, 5)
    assert set(c.sim.digests().values()) == {right}, (damages, damaged)
    for i in c.ids:
        assert {ref: c.read(i, *ref) for ref in views} == views
    if any(damaged):
        assert store.integrity.bad_seals >= 1, (seed, writes, damages, victim, damaged)
