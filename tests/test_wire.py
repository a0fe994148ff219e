"""The real transport's frames: every message kind round-trips; anything else is a BadFrame.

Round trips are checked for meaning, not object identity: a single-key delta's key hints
are implied on the wire (see Delta.to_wire), so decoded deltas are compared by their
canonical wire form and by what they do to a replica.
"""

from __future__ import annotations

import hmac
import random
import statistics
from collections import Counter
from typing import ClassVar

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replication import Replica
from replication.clocks import CausalContext, Dot, VersionVector
from replication.delta import Delta
from replication.errors import BadFrame, EdgeStateError
from replication.geo import LatencyModel, place_replicas, select_pops
from replication.messages import (
    Ack,
    AeBuckets,
    AeDigest,
    AeKeys,
    AeRepair,
    AeReply,
    Announcement,
    Envelope,
    Gossip,
    GossipBatch,
    Graft,
    GraftAck,
    IHave,
    Neighbour,
    Ping,
    PingReq,
    Prune,
    PushPull,
    wire_size,
)
from replication.node import Node, NodeConfig
from replication.sim.simulator import Simulator
from replication.wire import (
    TAG_BYTES,
    WIRE_VERSION,
    FrameDecoder,
    FrameEncoder,
    decode_frame,
    encode_body,
    encode_envelope,
    encode_frame,
    frame_key,
)

pytestmark = pytest.mark.timeout(120)

SECRET = b"cluster-secret-for-tests-0123456789"
ALL_KINDS = {c.__name__ for c in (Gossip, GossipBatch, IHave, Graft, GraftAck, Prune, Neighbour,
                                 AeDigest, AeReply, AeBuckets, AeKeys, AeRepair, Ping, Ack, PingReq, PushPull)}


# -- real deltas, from real replicas ------------------------------------------------------------


def _deltas() -> list[Delta]:
    a, b = Replica("lhr"), Replica("fra~2")
    out = []
    _, d = a.write_kv("k", {"n": 1, "s": "héllo"}, now=1_700_000_000_000)
    out.append(d)
    b.apply(d)
    _, d = b.write_kv("k", [1, 2.5, None, True], now=1_700_000_000_001)
    out.append(d)
    _, d = a.write_kv("k2", "concurrent", now=1_700_000_000_002)
    out.append(d)
    _, d = a.add_counter("c", -7, now=5)
    out.append(d)
    _, d = a.add_to_set("s", ["x", {"y": [1]}, 3], now=6)
    out.append(d)
    _, d = a.remove_from_set("s", ["x"], now=7)
    out.append(d)
    _, d = a.delete_kv("k2", now=8)
    out.append(d)
    partial = a.deltas_since(b.applied_context)  # an anti-entropy reply with a basis and hints
    assert partial is not None and partial.basis is not None
    out.append(partial)
    out.append(a.store.full_delta(b.applied_context))  # a full state transfer
    return out


DELTAS = _deltas()


def _repair_delta() -> Delta:
    a = Replica("lhr")
    for i in range(3):
        a.write_kv(f"k{i}", {"i": i}, now=1_700_000_000_000 + i)
    a.add_counter("c", 5, now=1)
    a.add_to_set("s", ["x", "y"], now=2)
    return a.store.repair_delta(list(a.store.keys()))


REPAIR = _repair_delta()  # a content repair: only live dots, nothing applied


def _gossip(i: int, hops: int = 1, path: float = 12.5) -> Gossip:
    d = DELTAS[i % 7]  # the single-write deltas
    mid = min(d.applied.dots())
    return Gossip(mid, mid.replica.split("~")[0], d, hops, path)


def vars_of(g: Gossip) -> tuple:
    return (g.mid, g.root, g.delta, g.hops, g.path_ms)


def sample_envelopes() -> list[Envelope]:
    ctx = CausalContext(VersionVector({"lhr": 10, "fra~2": 3}), [Dot("syd", 7), Dot("syd", 9)])
    msgs = [
        _gossip(0),
        _gossip(1, hops=0, path=0.0),
        Gossip(*list(vars_of(_gossip(2)))[:5], silent=(("syd", 0.0), ("nrt-3", 1234.5))),
        GossipBatch([_gossip(i, hops=i, path=i * 1.5) for i in range(7)]),
        GossipBatch([]),
        IHave([(Dot("lhr", 1), "lhr", 0.0), (Dot("fra~2", 99), "fra", 71.25)]),
        IHave([]),
        Graft("lhr"),
        Graft("lhr", [Dot("lhr", 3), Dot("lhr~1", 4)]),
        GraftAck("syd"),
        Prune("nrt"),
        Prune("nrt", only_root=True),
        Neighbour(),
        AeDigest(ctx),
        AeDigest(CausalContext(), want_reply=False),
        AeDigest(ctx, root=b"\x01" * 8),
        *[AeReply(d) for d in DELTAS],
        AeBuckets(ctx, {0: b"\x00" * 8, 17: b"abcdefgh", 255: b"\xff" * 8}),
        AeBuckets(CausalContext(), {}),
        AeKeys(ctx, [3, 200], {("kv", "k"): b"12345678", ("sets", "s"): b"\x00" * 8}),
        AeKeys(ctx, [], {}),
        AeRepair(ctx, REPAIR, [("kv", "k2"), ("counters", "c")]),
        AeRepair(ctx, Replica("x").store.repair_delta([])),
        Ping(1),
        Ping(2**63 - 1, [("lhr", "alive", 0), ("fra", "suspect", 3), ("syd", "dead", 12)], on_behalf_of="jnb",
             incarnation=2**63 - 1),
        Ack(5),
        Ack(6, [("lhr", "alive", 1)], target="gru", incarnation=4),
        PingReq(9, "sin"),
        PingReq(10, "sin", incarnation=300),
        PushPull([("lhr", "alive", 2), ("fra", "suspect", 3), ("syd", "dead", 0)]),
        PushPull([("lhr", "alive", 0)], want_reply=False),
        PushPull([]),
    ]
    return [Envelope("lhr", "fra", m) for m in msgs]


def meaning(env: Envelope):
    """What an envelope says, with deltas in canonical wire form."""
    return encode_envelope(env)


def assert_same(a: Envelope, b: Envelope) -> None:
    assert type(a.msg) is type(b.msg)
    assert (a.src, a.dst) == (b.src, b.dst)
    assert meaning(a) == meaning(b)
    m, n = a.msg, b.msg
    # beyond the wire form: the decoded objects are the protocol's own types, equal field by field
    if isinstance(m, (Gossip, AeReply, AeRepair)):
        x, y = m.delta, n.delta
        assert x.to_wire() == y.to_wire()
        assert (x.entries, x.ctx, x.applied, x.basis, x.full) == (y.entries, y.ctx, y.applied, y.basis, y.full)
        assert (x.seals, x.repair) == (y.seals, y.repair)
        assert all(x.key_of(d) == y.key_of(d) for d in x.applied.dots())
        if x.basis is None:
            r1, r2 = Replica("x"), Replica("x")
            r1.apply(x)
            r2.apply(y)
            assert r1.digest() == r2.digest()
            assert dict(r1.store.key_of) == dict(r2.store.key_of)
    elif isinstance(m, GossipBatch):
        assert [g.mid for g in m.items] == [g.mid for g in n.items]
    else:
        assert m == n


# -- round trips ----------------------------------------------------------------------------------


def test_every_kind_is_covered_by_the_samples():
    assert {type(e.msg).__name__ for e in sample_envelopes()} == ALL_KINDS


@pytest.mark.parametrize("env", sample_envelopes(), ids=lambda e: type(e.msg).__name__)
def test_round_trip(env):
    frame = encode_frame(env, SECRET)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    back = decode_frame(frame, SECRET)
    assert_same(env, back)
    # decoded values have exactly the types the protocol code builds
    m = back.msg
    if isinstance(m, IHave):
        assert all(type(a) is Announcement and isinstance(a.mid, Dot) and type(a.path_ms) is float for a in m.items)
    if isinstance(m, (Ping, Ack)):
        assert all(type(u) is tuple for u in m.updates)
    if isinstance(m, PushPull):
        assert all(type(u) is tuple for u in m.table)
    if isinstance(m, Graft):
        assert all(isinstance(d, Dot) for d in m.mids)


def test_stream_of_frames_split_anywhere():
    envs = sample_envelopes()
    stream = b"".join(encode_frame(e, SECRET) for e in envs)
    rng = random.Random(7)
    for trial in range(20):
        dec = FrameDecoder(SECRET)
        got = []
        pos = 0
        while pos < len(stream):
            n = rng.choice([1, 2, 3, 5, 17, 100, 4096]) if trial else 1  # trial 0: byte by byte
            got += dec.feed(stream[pos : pos + n])
            pos += n
        dec.eof()
        assert len(got) == len(envs)
        for a, b in zip(envs, got):
            assert_same(a, b)
        assert dec.buffered == 0 and dec.frames == len(envs)


def test_all_frames_in_one_chunk():
    envs = sample_envelopes()
    dec = FrameDecoder(SECRET)
    got = dec.feed(b"".join(encode_frame(e, SECRET) for e in envs))
    assert [meaning(e) for e in got] == [meaning(e) for e in envs]


def test_tag_is_truncated_hmac_sha256_of_the_body_with_a_derived_key():
    env = sample_envelopes()[0]
    frame = encode_frame(env, SECRET)
    body, tag = frame[4:-TAG_BYTES], frame[-TAG_BYTES:]
    assert body == encode_body(env)
    assert tag == hmac.digest(frame_key(SECRET), body, "sha256")[:16]
    assert frame_key(SECRET) != SECRET and len(frame_key(SECRET)) == 32


def test_encoder_object_matches_function():
    enc = FrameEncoder(SECRET)
    for env in sample_envelopes():
        assert enc.encode(env) == encode_frame(env, SECRET)


# -- hypothesis: generated messages round-trip ----------------------------------------------------

rid = st.text(st.characters(codec="utf-8"), min_size=1, max_size=64)
counter = st.integers(1, 2**63 - 1)
dot = st.builds(Dot, rid, counter)
path = st.floats(0.0, 1e9, allow_nan=False, allow_infinity=False)
status = st.sampled_from(["alive", "suspect", "dead"])
incarnation = st.integers(0, 2**63 - 1)
update = st.tuples(rid, status, incarnation)
seq = st.integers(0, 2**63 - 1)
ctx = st.builds(
    lambda vv, cloud: CausalContext(VersionVector(vv), cloud),
    st.dictionaries(rid, st.integers(0, 2**63 - 1), max_size=6),
    st.lists(dot, max_size=6),
)
gossip = st.builds(
    lambda i, hops, p: _gossip(i, hops, p), st.integers(0, 6), st.integers(0, 65535), path
)
message = st.one_of(
    gossip,
    st.builds(GossipBatch, st.lists(gossip, max_size=5)),
    st.builds(IHave, st.lists(st.tuples(dot, rid, path), max_size=8)),
    st.builds(Graft, rid, st.lists(dot, max_size=8)),
    st.builds(GraftAck, rid),
    st.builds(Prune, rid, st.booleans()),
    st.just(Neighbour()),
    st.builds(AeDigest, ctx, st.booleans()),
    st.builds(AeReply, st.sampled_from(DELTAS)),
    st.builds(Ping, seq, st.lists(update, max_size=9), st.none() | rid, incarnation),
    st.builds(Ack, seq, st.lists(update, max_size=9), st.none() | rid, incarnation),
    st.builds(PingReq, seq, rid, incarnation),
    st.builds(PushPull, st.lists(update, max_size=40), st.booleans()),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(src=rid, dst=rid, msg=message)
def test_generated_messages_round_trip(src, dst, msg):
    env = Envelope(src, dst, msg)
    back = decode_frame(encode_frame(env, SECRET), SECRET)
    assert meaning(back) == meaning(env)
    if not isinstance(msg, (Gossip, GossipBatch, AeReply)):
        assert back == env


# -- bad frames -----------------------------------------------------------------------------------


def _frame(obj, secret: bytes = SECRET) -> bytes:
    """A correctly authenticated frame around an arbitrary body object."""
    body = msgpack.packb(obj, use_bin_type=True) if not isinstance(obj, bytes) else obj
    tag = hmac.digest(frame_key(secret), body, "sha256")[:TAG_BYTES]
    return (len(body) + TAG_BYTES).to_bytes(4, "big") + body + tag


def _code(data: bytes, **kw) -> str:
    dec = FrameDecoder(SECRET, **kw)
    with pytest.raises(BadFrame) as ei:
        dec.feed(data)
        dec.eof()
    return ei.value.code


def test_wrong_secret_is_bad_hmac():
    frame = encode_frame(sample_envelopes()[0], b"another cluster's secret")
    assert _code(frame) == "bad_hmac"


@pytest.mark.parametrize("where", ["length", "body", "tag"])
def test_any_flipped_bit_is_refused(where):
    frame = bytearray(encode_frame(sample_envelopes()[0], SECRET))
    i = {"length": 3, "body": 10, "tag": len(frame) - 1}[where]
    for bit in range(8):
        bad = bytearray(frame)
        bad[i] ^= 1 << bit
        assert _code(bytes(bad)) in {"bad_hmac", "truncated", "malformed", "oversized"}


def test_oversized_length_is_refused_before_the_body_arrives():
    dec = FrameDecoder(SECRET, max_frame=1024)
    with pytest.raises(BadFrame) as ei:
        dec.feed((1025).to_bytes(4, "big"))  # the prefix alone
    assert ei.value.code == "oversized"
    assert dec.buffered == 0
    with pytest.raises(BadFrame) as again:  # the stream is dead: it stays refused
        dec.feed(b"x" * 10)
    assert again.value.code == "oversized"


def test_largest_allowed_frame_passes_and_one_byte_more_does_not():
    env = Envelope("lhr", "fra", AeReply(DELTAS[-1]))
    frame = encode_frame(env, SECRET)
    size = len(frame) - 4
    assert decode_frame(frame, SECRET, max_frame=size).kind == "ae_reply"
    assert _code(frame, max_frame=size - 1) == "oversized"
    with pytest.raises(BadFrame) as ei:
        encode_frame(env, SECRET, max_frame=size - 1)
    assert ei.value.code == "oversized"


def test_truncated_stream():
    frame = encode_frame(sample_envelopes()[0], SECRET)
    for cut in (1, 3, 4, 5, len(frame) - 1):
        dec = FrameDecoder(SECRET)
        assert dec.feed(frame[:cut]) == []
        with pytest.raises(BadFrame) as ei:
            dec.eof()
        assert ei.value.code == "truncated"


def test_length_too_small_for_a_tag():
    for n in (0, 1, TAG_BYTES):
        assert _code(n.to_bytes(4, "big") + b"\0" * n) == "malformed"


def test_good_frames_before_a_bad_one_are_handed_over_with_the_error():
    envs = sample_envelopes()[:3]
    good = b"".join(encode_frame(e, SECRET) for e in envs)
    dec = FrameDecoder(SECRET)
    with pytest.raises(BadFrame) as ei:
        dec.feed(good + encode_frame(envs[0], b"wrong") + encode_frame(envs[1], SECRET))
    assert ei.value.code == "bad_hmac"
    assert [meaning(e) for e in ei.value.decoded] == [meaning(e) for e in envs]
    with pytest.raises(BadFrame):
        dec.eof()


def test_misdirected_frame():
    frame = encode_frame(Envelope("lhr", "fra", Neighbour()), SECRET)
    assert decode_frame(frame, SECRET, local_id="fra").dst == "fra"
    assert _code(frame, local_id="ams") == "misdirected"


V = WIRE_VERSION
VALID = encode_envelope(Envelope("lhr", "fra", Ping(1, [("syd", "alive", 2)])))


def _gossip_body() -> list:
    """A valid gossip's five fields, as the wire has them."""
    d = DELTAS[0]
    mid = min(d.applied.dots())
    return [[mid[0], mid[1]], mid[0], d.to_wire(), 1, 2.5]


def _content_ae_malformed() -> list:
    """Content anti-entropy bodies that must be refused (kinds 8 and 20..22)."""
    ctx = [{"lhr": 1}, []]
    rep = REPAIR.to_wire()
    not_repair = DELTAS[0].to_wire()
    wide = REPAIR.to_wire()
    wide[2] = [{"lhr": 99}, []]  # a repair that would say more dots are known than it carries
    claims = REPAIR.to_wire()
    claims[3] = [{"lhr": 1}, []]  # a repair that claims a write's effects
    body = lambda *f: msgpack.packb([V, *f], use_bin_type=True)  # noqa: E731
    return [
        pytest.param(body(8, "lhr", "fra", ctx, True, b"short"), id="digest-root-length"),
        pytest.param(body(8, "lhr", "fra", ctx, True), id="digest-no-root"),
        pytest.param(body(20, "lhr", "fra", ctx, b"\x05" + b"a" * 8 + b"\x01" + b"b" * 8), id="buckets-unordered"),
        pytest.param(body(20, "lhr", "fra", ctx, b"\x05" + b"a" * 7), id="buckets-ragged"),
        pytest.param(body(21, "lhr", "fra", ctx, b"\x02\x01", []), id="keys-buckets-unordered"),
        pytest.param(body(21, "lhr", "fra", ctx, b"\x01", [["docs", "k", b"a" * 8]]), id="keys-bad-namespace"),
        pytest.param(body(21, "lhr", "fra", ctx, b"\x01", [["kv", "k", b"a" * 4]]), id="keys-short-hash"),
        pytest.param(body(21, "lhr", "fra", ctx, b"\x01", [["kv", "k", b"a" * 8]] * 2), id="keys-twice"),
        pytest.param(body(22, "lhr", "fra", ctx, not_repair, []), id="repair-not-a-repair"),
        pytest.param(body(22, "lhr", "fra", ctx, wide, []), id="repair-wide-context"),
        pytest.param(body(22, "lhr", "fra", ctx, claims, []), id="repair-claims-applied"),
        pytest.param(body(22, "lhr", "fra", ctx, rep, [["kv", ""]]), id="repair-want-empty-key"),
        pytest.param(body(22, "lhr", "fra", ctx, rep, [["kv", "a"], ["kv", "a"]]), id="repair-want-twice"),
    ]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xc1", id="never-used-msgpack-byte"),
        pytest.param(msgpack.packb(VALID) + b"\x00", id="trailing-bytes"),
        pytest.param(b"\x91" * 5000 + b"\x00", id="nested-too-deep"),
        pytest.param(b"\x94\x01\x0a\xa3l\xffr\xa3fra", id="invalid-utf8-id"),
        pytest.param(msgpack.packb([V, 10, "lhr", "fra", msgpack.ExtType(5, b"x"), [], None, 0]), id="ext-type"),
        pytest.param(msgpack.packb({"a": 1}), id="map-body"),
        pytest.param(msgpack.packb([V, 10, "lhr"]), id="short"),
        pytest.param(msgpack.packb([V + 1, *VALID[1:]]), id="future-version"),
        pytest.param(msgpack.packb([1, 10, "lhr", "fra", 1, [], None]), id="version-1-ping"),
        pytest.param(msgpack.packb([True, *VALID[1:]]), id="bool-version"),
        pytest.param(msgpack.packb([V, 99, "lhr", "fra"]), id="unknown-kind"),
        pytest.param(msgpack.packb([V, 10.0, *VALID[2:]]), id="float-kind"),
        pytest.param(msgpack.packb([*VALID, None]), id="extra-field"),
        pytest.param(msgpack.packb([V, 10, "", "fra", 1, [], None, 0]), id="empty-src"),
        pytest.param(msgpack.packb([V, 10, "lhr", "x" * 65, 1, [], None, 0]), id="long-dst"),
        pytest.param(msgpack.packb([V, 10, "lhr", b"fra", 1, [], None, 0]), id="bytes-dst"),
        pytest.param(msgpack.packb([V, 10, "lhr", "fra", -1, [], None, 0]), id="negative-seq"),
        pytest.param(msgpack.packb([V, 10, "lhr", "fra", True, [], None, 0]), id="bool-seq"),
        pytest.param(msgpack.packb([V, 10, "lhr", "fra", 1, [["a", 3, 0]], None, 0]), id="unknown-status"),
        pytest.param(msgpack.packb([V, 10, "lhr", "fra", 1, [["a", 0]], None, 0]), id="short-update"),
        pytest.param(msgpack.packb([V, 10, "lhr", "fra", 1, [["a", 0, -1]], None, 0]), id="negative-incarnation"),
        pytest.param(msgpack.packb([V, 10, "lhr", "fra", 1, [["a", 0, 0]] * 257, None, 0]), id="too-many-updates"),
        pytest.param(msgpack.packb([V, 10, "lhr", "fra", 1, [], 7, 0]), id="int-on-behalf"),
        pytest.param(msgpack.packb([V, 3, "lhr", "fra", [[["a", 1], "a", float("nan")]]]), id="ihave-nan"),
        pytest.param(msgpack.packb([V, 3, "lhr", "fra", [[["a", 1], "a", float("inf")]]]), id="ihave-inf"),
        pytest.param(msgpack.packb([V, 3, "lhr", "fra", [[["a", 1], "a", -1.0]]]), id="ihave-negative"),
        pytest.param(msgpack.packb([V, 3, "lhr", "fra", [[["a", 1], "a", 5]]]), id="ihave-int-path"),
        pytest.param(msgpack.packb([V, 3, "lhr", "fra", [[["a", 0], "a", 5.0]]]), id="ihave-zero-counter"),
        pytest.param(msgpack.packb([V, 3, "lhr", "fra", [[["a", 1], "", 5.0]]]), id="ihave-empty-root"),
        pytest.param(msgpack.packb([V, 3, "lhr", "fra", [[["a", 1, 2], "a", 5.0]]]), id="ihave-long-dot"),
        pytest.param(msgpack.packb([V, 3, "lhr", "fra", [[["a", 1], "a", 5.0]] * 65537]), id="ihave-too-many"),
        pytest.param(msgpack.packb([V, 4, "lhr", "fra", "lhr", [["a", 2**63]]]), id="graft-huge-counter"),
        pytest.param(msgpack.packb([V, 4, "lhr", "fra", "lhr", "notalist"]), id="graft-mids-str"),
        pytest.param(msgpack.packb([V, 6, "lhr", "fra", "lhr", 1]), id="prune-int-flag"),
        pytest.param(msgpack.packb([V, 8, "lhr", "fra", [{"a": -1}, []], True, b""]), id="digest-negative-vv"),
        pytest.param(msgpack.packb([V, 8, "lhr", "fra", [{"a": 1}, [["b"]]], True, b""]), id="digest-bad-cloud"),
        pytest.param(msgpack.packb([V, 8, "lhr", "fra", [[], []], True, b""]), id="digest-list-vv"),
        pytest.param(msgpack.packb([V, 8, "lhr", "fra", {"a": 1}, True, b""]), id="digest-not-a-context"),
        pytest.param(msgpack.packb([V, 9, "lhr", "fra", [2, [], [{}, []], [{}, []], [], None, False, False]]), id="empty-partial-delta"),
        pytest.param(msgpack.packb([V, 9, "lhr", "fra", [1, [], [{}, []], [{}, []], [], None, False]]), id="delta-version-1"),
        pytest.param(msgpack.packb([V, 9, "lhr", "fra", "delta"]), id="delta-str"),
        pytest.param(msgpack.packb([V, 1, "lhr", "fra", ["lhr", 2], "lhr", DELTAS[0].to_wire(), 0, 1.0]), id="gossip-mid-not-in-delta"),
        pytest.param(msgpack.packb([V, 1, "lhr", "fra", ["lhr", 1], "lhr", DELTAS[0].to_wire(), -1, 1.0]), id="gossip-negative-hops"),
        pytest.param(msgpack.packb([V, 2, "lhr", "fra", [["lhr", 1]]]), id="batch-bad-item"),
        *[pytest.param(msgpack.packb([V, 1, "lhr", "fra", *_gossip_body(), silent]), id=f"gossip-silent-{name}")
          for name, silent in [("str", "syd"), ("negative-age", [["syd", -1.0]]), ("int-age", [["syd", 1]]),
                               ("short-item", [["syd"]]), ("empty-id", [["", 1.0]]), ("nan-age", [["syd", float("nan")]]),
                               ("too-many", [["syd", 1.0]] * 257)]],
        pytest.param(msgpack.packb([V, 1, "lhr", "fra", *_gossip_body(), [], None]), id="gossip-seven-fields"),
        pytest.param(msgpack.packb([V, 12, "lhr", "fra", 1, None, 0]), id="pingreq-no-target"),
        pytest.param(msgpack.packb([V, 10, "lhr", "fra", 1, [], None, -1]), id="ping-negative-own-incarnation"),
        pytest.param(msgpack.packb([V, 10, "lhr", "fra", 1, [], None, True]), id="ping-bool-incarnation"),
        pytest.param(msgpack.packb([V, 10, "lhr", "fra", 1, [], None, 2**63]), id="ping-huge-incarnation"),
        pytest.param(msgpack.packb([V, 10, "lhr", "fra", 1, [], None]), id="ping-without-incarnation"),
        pytest.param(msgpack.packb([V, 11, "lhr", "fra", 1, [], None, 1.0]), id="ack-float-incarnation"),
        pytest.param(msgpack.packb([V, 12, "lhr", "fra", 1, "syd", "3"]), id="pingreq-str-incarnation"),
        pytest.param(msgpack.packb([V, 14, "lhr", "fra", {"a": [0, 1]}, True]), id="push-pull-map-table"),
        pytest.param(msgpack.packb([V, 14, "lhr", "fra", [["a", 0]], True]), id="push-pull-short-entry"),
        pytest.param(msgpack.packb([V, 14, "lhr", "fra", [["a", 3, 0]], True]), id="push-pull-unknown-status"),
        pytest.param(msgpack.packb([V, 14, "lhr", "fra", [["", 0, 0]], True]), id="push-pull-empty-member"),
        pytest.param(msgpack.packb([V, 14, "lhr", "fra", [["a", 0, -2]], True]), id="push-pull-negative-incarnation"),
        pytest.param(msgpack.packb([V, 14, "lhr", "fra", [["a", 0, 0]] * 65537, True]), id="push-pull-too-many"),
        pytest.param(msgpack.packb([V, 14, "lhr", "fra", [], 1]), id="push-pull-int-flag"),
        pytest.param(msgpack.packb([V, 14, "lhr", "fra", []]), id="push-pull-no-flag"),
        pytest.param(msgpack.packb([V, 7, "lhr", "fra", None]), id="neighbour-with-field"),
    ],
)
def test_authenticated_but_malformed_bodies(body):
    assert _code(_frame(body)) == "malformed"


def test_valid_reference_body_decodes():
    """The malformed cases above are mutations of bodies like this one, which is fine."""
    assert decode_frame(_frame(VALID), SECRET).msg == Ping(1, [("syd", "alive", 2)])
    ok = [V, 1, "lhr", "fra", ["lhr", 1], "lhr", DELTAS[0].to_wire(), 0, 1.0]
    assert decode_frame(_frame(ok), SECRET).msg.mid == Dot("lhr", 1)
    ping = [V, 10, "lhr", "fra", 1, [["a", 0, 0]], None, 0]
    assert decode_frame(_frame(ping), SECRET).msg == Ping(1, [("a", "alive", 0)])
    req = [V, 12, "lhr", "fra", 1, "syd", 3]
    assert decode_frame(_frame(req), SECRET).msg == PingReq(1, "syd", 3)
    table = [V, 14, "lhr", "fra", [["a", 0, 0]] * 300, True]
    assert decode_frame(_frame(table), SECRET).msg == PushPull([("a", "alive", 0)] * 300)


def test_an_unexpected_exception_in_a_check_is_still_a_bad_frame(monkeypatch):
    """The decoder is a trust boundary: a check that blows up (a bug, a library surprise)
    drops the frame like any other bad one."""

    def explode(obj):
        raise RuntimeError("a bug in a check")

    monkeypatch.setattr(Delta, "from_wire", staticmethod(explode))
    assert _code(encode_frame(Envelope("lhr", "fra", AeReply(DELTAS[0])), SECRET)) == "malformed"


def test_tampered_delta_inside_an_authenticated_frame_is_malformed():
    w = DELTAS[0].to_wire()
    w[2] = [{}, []]  # drop the context: the live dot is no longer covered
    assert _code(_frame([V, 9, "lhr", "fra", w])) == "malformed"


# -- fuzz: arbitrary bytes, and mutations of real bodies, only ever raise BadFrame -----------------


def _feed_all(dec: FrameDecoder, data: bytes, chunk: int) -> None:
    try:
        for i in range(0, len(data), chunk):
            dec.feed(data[i : i + chunk])
        dec.eof()
    except BadFrame as e:
        assert isinstance(e, EdgeStateError) and e.code in {"bad_hmac", "oversized", "truncated", "malformed"}


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=300), chunk=st.integers(1, 64))
def test_arbitrary_bytes_never_crash_the_decoder(data, chunk):
    _feed_all(FrameDecoder(SECRET, max_frame=4096), data, chunk)


@settings(max_examples=500, deadline=None)
@given(body=st.binary(max_size=300))
def test_arbitrary_authenticated_bodies_are_malformed_or_valid(body):
    try:
        decode_frame(_frame(body), SECRET)
    except BadFrame as e:
        assert e.code == "malformed"


def _leaves(obj, path=()):
    if isinstance(obj, list):
        yield path, obj
        for i, x in enumerate(obj):
            yield from _leaves(x, path + (i,))
    elif isinstance(obj, dict):
        yield path, obj
        for k, x in obj.items():
            yield from _leaves(x, path + (k,))
    else:
        yield path, obj


def _replace(obj, path, value):
    if not path:
        return value
    import copy

    obj = copy.deepcopy(obj)
    target = obj
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return obj


junk = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=70),
    st.binary(max_size=8), st.lists(st.integers(-3, 3), max_size=3), st.just([]), st.just({}),
    st.dictionaries(st.text(max_size=3), st.integers(-2, 2), max_size=2),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, 10_000), where=st.integers(0, 10_000), value=junk)
def test_mutated_real_bodies_only_ever_raise_bad_frame(which, where, value):
    envs = sample_envelopes()
    obj = encode_envelope(envs[which % len(envs)])
    leaves = list(_leaves(obj))
    path, _old = leaves[where % len(leaves)]
    mutated = _replace(obj, path, value)
    try:
        env = decode_frame(_frame(mutated), SECRET)
    except BadFrame as e:
        assert e.code == "malformed"
        return
    # accepted: then it is a well-formed envelope that re-encodes to a frame that decodes again
    again = decode_frame(encode_frame(env, SECRET), SECRET)
    assert meaning(again) == meaning(env)


# -- real traffic: a simulated cluster whose every message crosses the wire codec ----------------


class WireNode(Node):
    """A node that only ever sees what came through encode_frame -> FrameDecoder."""

    seen: ClassVar[Counter] = Counter()
    sizes: ClassVar[list] = []

    def receive(self, env, *, now):
        frame = encode_frame(env, SECRET)
        (decoded,) = self.decoder.feed(frame)
        WireNode.seen[type(env.msg).__name__] += 1
        WireNode.sizes.append((type(env.msg).__name__, len(frame), wire_size(env.msg)))
        return super().receive(decoded, now=now)


def _wire_cluster(strategy: str, seed: int) -> Simulator:
    placements = place_replicas(select_pops("lhr,fra,iad,ord,sjc,gru,jnb,sin,nrt,syd"))
    ids = [p.id for p in placements]
    pop_of = {p.id: p.pop for p in placements}
    model = LatencyModel()

    def factory(nid: str, inc: int) -> Node:
        n = WireNode(nid, ids, config=NodeConfig(strategy=strategy), seed=seed,
                     link_ms=lambda p: model.one_way_ms(pop_of[nid], pop_of[p]), incarnation=inc)
        n.decoder = FrameDecoder(SECRET, local_id=nid)
        return n

    return Simulator.from_placements(placements, factory, model, seed=seed, loss=0.03, duplicate=0.02)


@pytest.mark.parametrize("strategy", ["plumtree", "gossip", "direct"])
def test_a_cluster_converges_over_the_wire_codec(strategy):
    WireNode.seen.clear()
    WireNode.sizes.clear()
    sim = _wire_cluster(strategy, seed=3)
    rng = random.Random(3)
    ids = sim.node_ids
    for i in range(80):
        ns = rng.choice(["kv", "counters", "sets"])
        op = {"kv": {"value": {"i": i}}, "counters": {"add": rng.choice([-2, 1, 5])}, "sets": {"add": [i]}}[ns]
        sim.write(rng.choice(ids), ns, f"k{rng.randrange(12)}", op)
        sim.run_for(rng.uniform(0, 30))
        if i == 40:
            sim.partition([[ids[0], ids[1]]])  # suspicion, indirect probes, then repair
            sim.run_for(6000)
    sim.heal()
    sim.set_loss(0.0)
    assert sim.run_until_condition(sim.converged, 60_000), "replicas did not converge over the wire"
    expected = {"plumtree": {"Gossip", "IHave", "Graft", "Prune"}, "gossip": {"GossipBatch"}, "direct": {"Gossip"}}
    common = {"AeDigest", "AeReply", "Ping", "Ack", "PingReq", "PushPull", "Neighbour"}
    assert expected[strategy] | common <= set(WireNode.seen), WireNode.seen


# -- wire_size: the simulator's byte counters against real frames ------------------------------------


def typical() -> dict[str, Envelope]:
    """Typical messages of a 22-POP cluster that has taken ~100k writes per replica."""
    ids = ["lhr", "fra", "ams", "cdg", "mad", "arn", "waw", "iad", "ord", "dfw", "sjc", "sea",
           "lax", "gru", "scl", "jnb", "dxb", "bom", "sin", "nrt", "hkg", "syd"]
    r = Replica("lhr")
    _, write = r.write_kv("user:42", {"name": "Ada", "visits": 17}, now=1_700_000_000_000)
    writes = []
    for i in range(10):
        _, d = r.write_kv(f"user:{i}", {"name": "Ada", "visits": i}, now=1_700_000_000_000 + i)
        writes.append(d)
    big = CausalContext(VersionVector({p: 100_000 + i for i, p in enumerate(ids)}))
    small = CausalContext(VersionVector({p: 300 + i for i, p in enumerate(ids)}))
    mid = Dot("lhr", 1)
    g = Gossip(mid, "lhr", write, 2, 35.5)
    out = {
        "Gossip": g,
        "Gossip, 32 silent": Gossip(mid, "lhr", write, 2, 35.5, tuple((f"{p}-{i}", 1500.25) for i, p in zip(range(32), ids * 2))),
        "GossipBatch(10)": GossipBatch([Gossip(min(d.applied.dots()), "lhr", d, 1, 10.0) for d in writes]),
        "IHave(1)": IHave([(mid, "lhr", 35.5)]),
        "IHave(10)": IHave([(Dot("lhr", 100_000 + i), "lhr", 35.5) for i in range(10)]),
        "Graft(1)": Graft("lhr", [Dot("lhr", 100_000)]),
        "Graft(0)": Graft("lhr"),
        "GraftAck": GraftAck("lhr"),
        "Prune": Prune("lhr", True),
        "Neighbour": Neighbour(),
        "AeDigest(22, small)": AeDigest(small),
        "AeDigest(22, 100k)": AeDigest(big),
        "AeReply(5 keys)": AeReply(r.deltas_since(CausalContext(VersionVector({"lhr": 6})))),
        "Ping(0)": Ping(1234),
        "Ping(3)": Ping(1234, [("fra", "alive", 1), ("syd", "suspect", 0), ("nrt", "dead", 2)]),
        "Ack(3)": Ack(1234, [("fra", "alive", 1), ("syd", "suspect", 0), ("nrt", "dead", 2)]),
        "PingReq": PingReq(1234, "syd"),
        "Ping(3, incarnation 300)": Ping(1234, [("fra", "alive", 1)] * 3, incarnation=300),
        "PushPull(22)": PushPull([(p, "alive", i % 3) for i, p in enumerate(ids)]),
        "PushPull(22, incarnations ~1000)": PushPull([(p, "dead", 1000 + i) for i, p in enumerate(ids)], False),
    }
    return {name: Envelope("lhr", "fra", m) for name, m in out.items()}


def size_table() -> list[tuple[str, int, int, float]]:
    rows = []
    for name, env in typical().items():
        actual = len(encode_frame(env, SECRET))
        est = wire_size(env.msg)
        rows.append((name, actual, est, est / actual))
    return rows


@pytest.mark.parametrize("name", list(typical()))
def test_wire_size_estimate_within_30_percent(name):
    env = typical()[name]
    actual = len(encode_frame(env, SECRET))
    est = wire_size(env.msg)
    assert 0.7 <= est / actual <= 1.3, f"{name}: estimated {est} bytes, frame is {actual}"


def test_wire_size_over_real_traffic_is_close_in_the_median():
    """Over a real run's traffic (all kinds), per-kind medians of estimate/actual."""
    WireNode.seen.clear()
    WireNode.sizes.clear()
    sim = _wire_cluster("plumtree", seed=5)
    rng = random.Random(5)
    for i in range(40):
        sim.write(rng.choice(sim.node_ids), "kv", f"k{i % 7}", {"value": i})
        sim.run_for(rng.uniform(0, 30))
    assert sim.run_until_condition(sim.converged, 60_000)
    by_kind: dict[str, list[float]] = {}
    for kind, actual, est in WireNode.sizes:
        by_kind.setdefault(kind, []).append(est / actual)
    medians = {k: statistics.median(v) for k, v in by_kind.items()}
    off = {k: round(m, 2) for k, m in medians.items() if not 0.7 <= m <= 1.3}
    assert not off, off
