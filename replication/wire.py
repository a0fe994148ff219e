"""The real transport's frame format: envelopes as msgpack, authenticated with the cluster secret.

A frame on a TCP stream is

    +----------------+---------------------------+------------------+
    | length: 4 bytes| body: msgpack             | tag: 16 bytes    |
    | big-endian     | [version, kind, src, dst, | HMAC-SHA256(key, |
    | = len(body)+16 |  field, field, ...]       |  body)[:16]      |
    +----------------+---------------------------+------------------+

- `length` counts the body and the tag, so a reader knows the whole frame's size before
  buffering any of it, and refuses an oversized one at once.
- The tag is HMAC-SHA256 truncated to 128 bits (as in RFC 4868's HMAC-SHA-256-128 and the
  context tokens here): forging one takes ~2^128 work, and it saves 16 bytes a frame. It is
  keyed not with the cluster secret itself but with a key derived from it for this purpose
  only (HMAC(secret, "edgestate/frame/v1")), so a MAC computed for anything else the secret
  signs (context tokens) can never pass as a frame's, whatever its bytes.
- The tag is checked before the body is parsed: bytes from anyone without the secret never
  reach msgpack.
- What the tag does not do: it does not stop replays (a captured frame is valid again later;
  deltas are idempotent, and a replayed probe costs only a stale RTT sample), and with one
  cluster-wide secret any member can claim any `src`. `dst` is inside the body, so a decoder
  given its own id (`local_id`) refuses frames captured on the way to someone else.

Two modes, chosen per transport. With TLS between replicas (`io/tls`), frames carry no tag
(length = len(body)): TLS encrypts, authenticates and numbers every byte, and the peer's
certificate says which replica it is. Without TLS, the tag above is all there is: loopback
development only.

Every connection begins with a `Hello` frame naming its sender (at most HELLO_MAX_FRAME bytes:
that is all a stranger can make a receiver buffer); every later frame on the connection must
come from that replica, and under TLS the hello must name the replica the certificate names.

A message bigger than a frame (a full-state anti-entropy reply for a big keyspace) is sent as
consecutive `Fragment` frames on one connection, each tagged like any other frame; the
decoder reassembles them (at most `DEFAULT_MAX_MESSAGE` bytes, only from authenticated
frames) and yields the whole message, so callers never see a fragment.

Each message kind is a flat list of plain values (see `encode_message`); dots are
`[replica, counter]`, causal contexts `CausalContext.to_wire()`, deltas `Delta.to_wire()`.
Decoding checks every field strictly (types, replica ids, bounded lengths, the delta's own
invariants) and raises `BadFrame`, never any other exception, whatever the bytes.
"""

from __future__ import annotations

import hmac
import math
import struct
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .clocks import MAX_COUNTER, CausalContext, Dot, check_replica_id, dot_from_wire
from .delta import Delta
from .errors import BadFrame, EdgeStateError
from .store import HASH_BYTES, NBUCKETS
from .values import check_key, check_namespace
from .membership import ALIVE, DEAD, SUSPECT
from .messages import (
    Ack,
    AeBuckets,
    AeDigest,
    AeKeys,
    AeRepair,
    AeReply,
    Announcement,
    Envelope,
    Fragment,
    Frame,
    Gossip,
    GossipBatch,
    Graft,
    GraftAck,
    Hello,
    IHave,
    Neighbour,
    Ping,
    PingReq,
    Prune,
    PushPull,
)

WIRE_VERSION = 2  # 2: membership messages carry the sender's incarnation; push-pull
LENGTH_BYTES = 4
TAG_BYTES = 16
DEFAULT_MAX_FRAME = 16 * 1024 * 1024  # length field limit: body + tag
_KEY_LABEL = b"edgestate/frame/v1"

# Bounds on list fields, far above what the protocol sends (gossip batches hold 64, a ping
# piggybacks 9 updates, a push-pull the member table), well below what would let one frame
# make a receiver loop for long.
MAX_BATCH = 1024
MAX_IHAVE = 65536
MAX_GRAFT_MIDS = 65536
MAX_UPDATES = 256
MAX_MEMBERS = 65536  # a push-pull's member table
MAX_HOPS = 65535
MAX_SILENT = 256  # members a gossip names as found silent
MAX_AE_KEYS = 65536  # keys listed, or wanted back, in one content-exchange message
MAX_PATH_MS = 1e9

# Membership status on the wire: a small integer, not its name.
_STATUS = (ALIVE, SUSPECT, DEAD)
_STATUS_CODE = {s: i for i, s in enumerate(_STATUS)}

# Kind codes: stable, part of the wire format.
K_GOSSIP, K_BATCH, K_IHAVE, K_GRAFT, K_GRAFT_ACK, K_PRUNE, K_NEIGHBOUR = 1, 2, 3, 4, 5, 6, 7
K_AE_DIGEST, K_AE_REPLY, K_PING, K_ACK, K_PING_REQ = 8, 9, 10, 11, 12
K_FRAGMENT, K_PUSH_PULL, K_HELLO = 13, 14, 15
K_AE_BUCKETS, K_AE_KEYS, K_AE_REPAIR = 20, 21, 22  # content anti-entropy

# A message bigger than one frame (a full-state anti-entropy reply for a big keyspace) goes as
# consecutive fragments on one connection, each a frame of its own, tagged like any other: a
# receiver buffers only authenticated bytes, up to DEFAULT_MAX_MESSAGE, then parses the whole.
DEFAULT_MAX_MESSAGE = 256 * 1024 * 1024
FRAGMENT_OVERHEAD = 256  # bytes of a fragment frame that are not payload (header, ids, tag), rounded up

# BadFrame codes.
BAD_HMAC = "bad_hmac"
OVERSIZED = "oversized"
TRUNCATED = "truncated"
MALFORMED = "malformed"
MISDIRECTED = "misdirected"
NO_HELLO = "no_hello"  # a connection's first frame was not a hello
UNKNOWN_PEER = "unknown_peer"  # a hello from a replica that is not one of ours
IDENTITY = "identity"  # a hello or frame speaking for a replica its connection is not

# Before a connection's hello is read, a frame may be no longer than this: a stranger can make a
# receiver buffer at most this much before it is authenticated (the tag in shared-secret mode;
# TLS authenticates before anything is read at all).
HELLO_MAX_FRAME = 512


class _Invalid(Exception):
    """Internal: a field failed validation."""


# -- encoding ------------------------------------------------------------------------------


def _dot(d: Dot) -> list:
    return [d[0], d[1]]


def _gossip_fields(g: Gossip) -> list:
    f = [_dot(g.mid), g.root, g.delta.to_wire(), g.hops, float(g.path_ms)]
    if g.silent:  # only then: a frame without it is the one every earlier peer reads
        f.append([[p, float(age)] for p, age in g.silent])
    return f


def _updates(updates: list) -> list:
    return [[u[0], _STATUS_CODE[u[1]], u[2]] for u in updates]


def encode_message(msg: Any) -> list:
    """[kind, field, ...] for one message: plain values msgpack can carry."""
    t = type(msg)
    if t is Gossip:
        return [K_GOSSIP, *_gossip_fields(msg)]
    if t is GossipBatch:
        return [K_BATCH, [_gossip_fields(g) for g in msg.items]]
    if t is IHave:
        return [K_IHAVE, [[_dot(mid), root, float(path)] for mid, root, path in msg.items]]
    if t is Graft:
        return [K_GRAFT, msg.root, [_dot(d) for d in msg.mids]]
    if t is GraftAck:
        return [K_GRAFT_ACK, msg.root]
    if t is Prune:
        return [K_PRUNE, msg.root, bool(msg.only_root)]
    if t is Neighbour:
        return [K_NEIGHBOUR]
    if t is AeDigest:
        return [K_AE_DIGEST, msg.applied.to_wire(), bool(msg.want_reply), bytes(msg.root)]
    if t is AeReply:
        return [K_AE_REPLY, msg.delta.to_wire()]
    if t is AeBuckets:
        return [K_AE_BUCKETS, msg.applied.to_wire(), b"".join(bytes((b,)) + h for b, h in sorted(msg.sums.items()))]
    if t is AeKeys:
        return [K_AE_KEYS, msg.applied.to_wire(), bytes(sorted(msg.buckets)),
                [[ns, key, h] for (ns, key), h in sorted(msg.keys.items())]]
    if t is AeRepair:
        return [K_AE_REPAIR, msg.applied.to_wire(), msg.delta.to_wire(), [[ns, key] for ns, key in msg.want]]
    if t is Ping:
        return [K_PING, msg.seq, _updates(msg.updates), msg.on_behalf_of, msg.incarnation]
    if t is Ack:
        return [K_ACK, msg.seq, _updates(msg.updates), msg.target, msg.incarnation]
    if t is PingReq:
        return [K_PING_REQ, msg.seq, msg.target, msg.incarnation]
    if t is PushPull:
        return [K_PUSH_PULL, _updates(msg.table), bool(msg.want_reply)]
    if t is Fragment:
        return [K_FRAGMENT, msg.fid, msg.index, msg.total, msg.data]
    if t is Hello:
        return [K_HELLO]
    raise TypeError(f"not a replication message: {t.__name__}")


def encode_envelope(env: Envelope) -> list:
    kind, *fields = encode_message(env.msg)
    return [WIRE_VERSION, kind, env.src, env.dst, *fields]


def frame_key(secret: bytes | None) -> bytes | None:
    """The HMAC key for frames, derived from the cluster secret for this use only. None: frames
    carry no tag, for links where TLS already authenticates and protects every byte."""
    if secret is None:
        return None
    if not isinstance(secret, (bytes, bytearray)) or not secret:
        raise ValueError("the cluster secret must be non-empty bytes")
    return hmac.digest(bytes(secret), _KEY_LABEL, "sha256")


def _tag(key: bytes | None, body: bytes) -> bytes:
    return hmac.digest(key, body, "sha256")[:TAG_BYTES] if key is not None else b""


_LEN = struct.Struct(">I")


def encode_body(env: Envelope) -> bytes:
    return msgpack.packb(encode_envelope(env), use_bin_type=True)


def encode_frame(env: Envelope, secret: bytes | None, *, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """One whole frame. Raises BadFrame(oversized) for a message a peer would refuse."""
    return FrameEncoder(secret, max_frame=max_frame).encode(env)


class FrameEncoder:
    """encode_frame with the key derived once (a sender encodes many frames)."""

    def __init__(self, secret: bytes | None, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._key = frame_key(secret)
        self.tag_bytes = TAG_BYTES if self._key is not None else 0
        self.max_frame = max_frame
        self._fid = 0

    def encode(self, env: Envelope) -> bytes:
        body = encode_body(env)
        n = len(body) + self.tag_bytes
        if n > self.max_frame:
            raise BadFrame(OVERSIZED, f"a {env.kind} frame of {n} bytes exceeds the {self.max_frame}-byte limit")
        return self._frame(body)

    def _frame(self, body: bytes) -> bytes:
        return _LEN.pack(len(body) + self.tag_bytes) + body + _tag(self._key, body)

    def encode_all(self, env: Envelope, *, max_message: int = DEFAULT_MAX_MESSAGE) -> list[bytes]:
        """One frame, or consecutive fragment frames when the message is bigger than a frame
        (to be sent in order on one connection). Raises BadFrame(oversized) above `max_message`."""
        body = encode_body(env)
        if len(body) + self.tag_bytes <= self.max_frame:
            return [self._frame(body)]
        if len(body) > max_message:
            raise BadFrame(OVERSIZED, f"a {env.kind} message of {len(body)} bytes exceeds the {max_message}-byte limit")
        size = self.max_frame - FRAGMENT_OVERHEAD
        if size <= 0:
            raise ValueError(f"max_frame {self.max_frame} leaves no room for fragments")
        total = -(-len(body) // size)
        fid, self._fid = self._fid, self._fid + 1
        return [self._frame(encode_body(Envelope(env.src, env.dst, Fragment(fid, i, total, body[i * size:(i + 1) * size]))))
                for i in range(total)]


# -- decoding: every check raises _Invalid (or the library's own typed errors) -------------------


def _list(x: object, limit: int, what: str) -> list:
    if type(x) is not list:
        raise _Invalid(f"{what} must be a list")
    if len(x) > limit:
        raise _Invalid(f"{what} has {len(x)} items; at most {limit} are allowed")
    return x


def _int(x: object, lo: int, hi: int, what: str) -> int:
    if type(x) is not int or not lo <= x <= hi:
        raise _Invalid(f"{what} must be an integer in [{lo}, {hi}]")
    return x


def _bool(x: object, what: str) -> bool:
    if type(x) is not bool:
        raise _Invalid(f"{what} must be a boolean")
    return x


def _path(x: object) -> float:
    if type(x) is not float or not math.isfinite(x) or not 0.0 <= x <= MAX_PATH_MS:
        raise _Invalid(f"a path latency must be a finite float in [0, {MAX_PATH_MS:g}]")
    return x


def _rid(x: object) -> str:
    return check_replica_id(x)


def _opt_rid(x: object) -> str | None:
    return None if x is None else check_replica_id(x)


def _silent(x: object) -> tuple[tuple[str, float], ...]:
    out = []
    for item in _list(x, MAX_SILENT, "a gossip's silent members"):
        if type(item) is not list or len(item) != 2:
            raise _Invalid("a silent member must be [replica, ms ago]")
        out.append((_rid(item[0]), _path(item[1])))
    return tuple(out)


def _gossip(f: object) -> Gossip:
    if type(f) is not list or len(f) not in (5, 6):
        raise _Invalid("a gossip must be [mid, root, delta, hops, path_ms] or with [[replica, ms ago], ...] after")
    mid = dot_from_wire(f[0])
    root = _rid(f[1])
    delta = Delta.from_wire(f[2])
    if not delta.applied.contains(mid):
        raise _Invalid(f"a gossip's message id {mid} is not one of its delta's dots")
    silent = _silent(f[5]) if len(f) == 6 else ()
    return Gossip(mid, root, delta, _int(f[3], 0, MAX_HOPS, "hops"), _path(f[4]), silent)


def _inc(x: object) -> int:
    return _int(x, 0, MAX_COUNTER, "an incarnation")


def _updates_from(x: object, limit: int = MAX_UPDATES, what: str = "membership updates") -> list:
    out = []
    for u in _list(x, limit, what):
        if type(u) is not list or len(u) != 3:
            raise _Invalid("a membership update must be [member, status, incarnation]")
        status = _int(u[1], 0, len(_STATUS) - 1, "a membership status")
        out.append((_rid(u[0]), _STATUS[status], _inc(u[2])))
    return out


def _ihave_item(x: object) -> Announcement:
    if type(x) is not list or len(x) != 3:
        raise _Invalid("an IHAVE item must be [mid, root, path_ms]")
    return Announcement(dot_from_wire(x[0]), _rid(x[1]), _path(x[2]))


def _seq(x: object) -> int:
    return _int(x, 0, MAX_COUNTER, "a probe sequence number")


def _ctx(x: object) -> CausalContext:
    if type(x) is not list or len(x) != 2 or type(x[0]) is not dict or type(x[1]) is not list:
        raise _Invalid("a causal context must be [version_vector, cloud]")
    return CausalContext.from_wire(x)


def _root(x: object) -> bytes:
    if type(x) is not bytes or len(x) not in (0, HASH_BYTES):
        raise _Invalid(f"a content root must be empty or {HASH_BYTES} bytes")
    return x


def _hash(x: object) -> bytes:
    if type(x) is not bytes or len(x) != HASH_BYTES:
        raise _Invalid(f"a content hash must be {HASH_BYTES} bytes")
    return x


def _bucket_ids(x: object) -> list[int]:
    if type(x) is not bytes or list(x) != sorted(set(x)) or len(x) > NBUCKETS:
        raise _Invalid("bucket ids must be bytes in increasing order")
    return list(x)


def _bucket_sums(x: object) -> dict[int, bytes]:
    step = 1 + HASH_BYTES
    if type(x) is not bytes or len(x) % step or len(x) > NBUCKETS * step:
        raise _Invalid(f"bucket sums must be {step}-byte entries, at most {NBUCKETS}")
    out = {x[i]: x[i + 1:i + step] for i in range(0, len(x), step)}
    if list(out) != sorted(out) or len(out) * step != len(x):
        raise _Invalid("bucket sums must be in increasing bucket order, each bucket once")
    return out


def _ref(x: object) -> tuple[str, str]:
    if type(x) is not list or len(x) != 2:
        raise _Invalid("a key reference must be [namespace, key]")
    return check_namespace(x[0]), check_key(x[1])


def _key_hashes(x: object) -> dict[tuple[str, str], bytes]:
    out = {}
    for item in _list(x, MAX_AE_KEYS, "listed keys"):
        if type(item) is not list or len(item) != 3:
            raise _Invalid("a listed key must be [namespace, key, hash]")
        ref = _ref(item[:2])
        if ref in out:
            raise _Invalid(f"key {ref} is listed twice")
        out[ref] = _hash(item[2])
    return out


def _repair(ctx: object, delta: object, want: object) -> AeRepair:
    d = Delta.from_wire(delta)
    if not d.repair:
        raise _Invalid("a content repair must carry a repair delta")
    refs = [_ref(r) for r in _list(want, MAX_AE_KEYS, "wanted keys")]
    if len(set(refs)) != len(refs):
        raise _Invalid("a key is wanted twice")
    return AeRepair(_ctx(ctx), d, refs)


# kind -> (number of fields, builder)
_DECODERS: dict[int, tuple[int | tuple[int, ...], Callable[..., Frame]]] = {
    K_GOSSIP: ((5, 6), lambda *f: _gossip(list(f))),  # the sixth, the silent, only where there are any
    K_BATCH: (1, lambda items: GossipBatch([_gossip(g) for g in _list(items, MAX_BATCH, "a gossip batch")])),
    K_IHAVE: (1, lambda items: IHave([_ihave_item(i) for i in _list(items, MAX_IHAVE, "an IHAVE")])),
    K_GRAFT: (2, lambda root, mids: Graft(_rid(root), [dot_from_wire(d) for d in _list(mids, MAX_GRAFT_MIDS, "graft ids")])),
    K_GRAFT_ACK: (1, lambda root: GraftAck(_rid(root))),
    K_PRUNE: (2, lambda root, only: Prune(_rid(root), _bool(only, "only_root"))),
    K_NEIGHBOUR: (0, lambda: Neighbour()),
    K_AE_DIGEST: (3, lambda ctx, want, root: AeDigest(_ctx(ctx), _bool(want, "want_reply"), _root(root))),
    K_AE_REPLY: (1, lambda d: AeReply(Delta.from_wire(d))),
    K_PING: (4, lambda seq, up, who, inc: Ping(_seq(seq), _updates_from(up), _opt_rid(who), _inc(inc))),
    K_ACK: (4, lambda seq, up, target, inc: Ack(_seq(seq), _updates_from(up), _opt_rid(target), _inc(inc))),
    K_PING_REQ: (3, lambda seq, target, inc: PingReq(_seq(seq), _rid(target), _inc(inc))),
    K_PUSH_PULL: (2, lambda table, want: PushPull(_updates_from(table, MAX_MEMBERS, "a member table"),
                                                  _bool(want, "want_reply"))),
    K_AE_BUCKETS: (2, lambda ctx, sums: AeBuckets(_ctx(ctx), _bucket_sums(sums))),
    K_AE_KEYS: (3, lambda ctx, b, keys: AeKeys(_ctx(ctx), _bucket_ids(b), _key_hashes(keys))),
    K_AE_REPAIR: (3, _repair),
    K_FRAGMENT: (4, lambda fid, i, n, data: _fragment(fid, i, n, data)),
    K_HELLO: (0, Hello),
}


def _fragment(fid: object, index: object, total: object, data: object) -> Fragment:
    n = _int(total, 2, DEFAULT_MAX_MESSAGE, "a fragment count")
    if type(data) is not bytes or not data:
        raise _Invalid("a fragment carries non-empty bytes")
    return Fragment(_int(fid, 0, MAX_COUNTER, "a fragment id"), _int(index, 0, n - 1, "a fragment index"), n, data)


def decode_envelope(obj: Any) -> Envelope:
    """An envelope from its decoded msgpack form. Raises BadFrame(malformed), nothing else."""
    try:
        if type(obj) is not list or len(obj) < 4:
            raise _Invalid("a frame body must be [version, kind, src, dst, fields...]")
        version, kind, src, dst, *fields = obj
        if version != WIRE_VERSION or type(version) is not int:
            raise _Invalid(f"unsupported wire version {version!r}")
        spec = _DECODERS.get(kind) if type(kind) is int else None
        if spec is None:
            raise _Invalid(f"unknown message kind {kind!r}")
        arity, build = spec
        if len(fields) not in (arity if type(arity) is tuple else (arity,)):
            raise _Invalid(f"message kind {kind} takes {arity} fields, got {len(fields)}")
        return Envelope(_rid(src), _rid(dst), build(*fields))
    except BadFrame:
        raise
    except (_Invalid, EdgeStateError) as e:
        raise BadFrame(MALFORMED, f"malformed frame: {e}") from None
    except Exception as e:  # noqa: BLE001 - a trust boundary: whatever a check missed is still a bad frame
        raise BadFrame(MALFORMED, f"malformed frame ({type(e).__name__}): {e}") from None


def _reject_ext(code: int, data: bytes) -> None:
    raise _Invalid(f"msgpack extension type {code} is not used by this protocol")


def decode_body(body: bytes) -> Envelope:
    """Parse and validate an authenticated body."""
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True, ext_hook=_reject_ext)
    except Exception as e:  # noqa: BLE001 - ExtraData, StackError, UnicodeDecodeError, FormatError...
        raise BadFrame(MALFORMED, f"frame body is not one msgpack value ({type(e).__name__})") from None
    return decode_envelope(obj)


def decode_frame(frame: bytes, secret: bytes | None, **kw) -> Envelope:
    """One whole frame, exactly. For tests and datagrams; streams use FrameDecoder."""
    dec = FrameDecoder(secret, **kw)
    out = dec.feed(frame)
    dec.eof()
    if len(out) != 1:
        raise BadFrame(MALFORMED, f"expected one frame, found {len(out)}")
    return out[0]


@dataclass(slots=True)
class _Partial:
    """A fragmented message being reassembled: its fragments so far, and their bytes."""

    src: str
    fid: int
    total: int
    parts: list[bytes] = field(default_factory=list)
    size: int = 0


class FrameDecoder:
    """Incremental decoder for a byte stream: `feed(data) -> [Envelope, ...]`.

    Buffers at most one partial frame. A length over `max_frame` is refused as soon as its
    four bytes arrive, before any of the body is awaited. After any BadFrame the stream's
    framing can no longer be trusted: the decoder stays failed and every later call raises
    the same error; the caller drops the connection.

    `hello=True` (what the transport uses): the first frame must be a `Hello`, no longer than
    HELLO_MAX_FRAME, from one of `peers` (if given) and, when the connection's TLS certificate
    already says who it is, from `peer_id`. Every later frame must come from that same replica.
    The hello is consumed here; `peer` says who it named.
    """

    def __init__(self, secret: bytes | None, *, max_frame: int = DEFAULT_MAX_FRAME, local_id: str | None = None,
                 max_message: int = DEFAULT_MAX_MESSAGE, hello: bool = False, peer_id: str | None = None,
                 peers: Container[str] | None = None) -> None:
        if max_frame < TAG_BYTES + 1 or max_frame > 0xFFFFFFFF:
            raise ValueError("max_frame must fit the 4-byte length and hold a tag and a body")
        self._key = frame_key(secret)
        self._tag_bytes = TAG_BYTES if self._key is not None else 0
        self._hello = hello
        self._peer_id = peer_id
        self._peers = peers
        self.peer: str | None = None  # who the hello named
        self.max_frame = max_frame
        self.local_id = local_id
        self.max_message = max_message
        self._partial: _Partial | None = None
        self._buf = bytearray()
        self._need: int | None = None  # the current frame's length, once its prefix is read
        self.failed: BadFrame | None = None
        self.frames = 0  # good frames decoded
        self.bytes = 0  # bytes fed

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def _fail(self, err: BadFrame, decoded: list[Envelope]) -> BadFrame:
        self.failed = err
        self._buf = bytearray()
        err.decoded = decoded
        return err

    def feed(self, data: bytes) -> list[Envelope]:
        if self.failed is not None:
            raise BadFrame(self.failed.code, self.failed.message)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("feed takes bytes")
        self.bytes += len(data)
        buf = self._buf
        buf += data
        out: list[Envelope] = []
        pos = 0
        end = len(buf)
        try:
            while True:
                need = self._need
                if need is None:
                    if end - pos < LENGTH_BYTES:
                        break
                    (need,) = _LEN.unpack_from(buf, pos)
                    limit = HELLO_MAX_FRAME if self._hello and self.peer is None else self.max_frame
                    if need > limit:
                        before = " before the hello" if limit != self.max_frame else ""
                        raise BadFrame(OVERSIZED, f"frame length {need} exceeds the {limit}-byte limit{before}")
                    if need <= self._tag_bytes:
                        raise BadFrame(MALFORMED, f"frame length {need} leaves no room for a body and a tag")
                    pos += LENGTH_BYTES
                    self._need = need
                if end - pos < need:
                    break
                body = bytes(buf[pos : pos + need - self._tag_bytes])
                tag = bytes(buf[pos + need - self._tag_bytes : pos + need])
                pos += need
                self._need = None
                if self._key is not None and not hmac.compare_digest(tag, _tag(self._key, body)):
                    raise BadFrame(BAD_HMAC, "frame authentication failed: wrong secret, or altered in transit")
                env = decode_body(body)
                if self.local_id is not None and env.dst != self.local_id:
                    raise BadFrame(MISDIRECTED, f"frame for {env.dst!r} arrived at {self.local_id!r}")
                self.frames += 1
                if self._hello:
                    if self._check_source(env):
                        continue
                if type(env.msg) is Fragment or self._partial is not None:
                    env = self._reassemble(env)
                    if env is None:
                        continue
                out.append(env)
        except BadFrame as e:
            raise self._fail(e, out) from None
        del buf[:pos]
        return out

    def _check_source(self, env: Envelope) -> bool:
        """True for the connection's hello (consumed); raises BadFrame for a frame from the wrong replica."""
        if self.peer is not None:
            if type(env.msg) is Hello:
                raise BadFrame(MALFORMED, "a second hello on one connection")
            if env.src != self.peer:
                raise BadFrame(IDENTITY, f"a frame from {env.src!r} on {self.peer!r}'s connection")
            return False
        if type(env.msg) is not Hello:
            raise BadFrame(NO_HELLO, f"the connection began with a {env.msg.kind}, not a hello")
        if self._peer_id is not None and env.src != self._peer_id:
            raise BadFrame(IDENTITY, f"a hello from {env.src!r} on a connection whose certificate is {self._peer_id!r}'s")
        if self._peers is not None and env.src not in self._peers:
            raise BadFrame(UNKNOWN_PEER, f"a hello from {env.src!r}, which is not one of this replica's peers")
        self.peer = env.src
        return True

    def _reassemble(self, env: Envelope) -> Envelope | None:
        """Fragments arrive consecutively on one connection; anything else is a bad stream."""
        f = env.msg
        if type(f) is not Fragment:
            raise BadFrame(MALFORMED, "a message arrived in the middle of another one's fragments")
        if f.index == 0:
            if self._partial is not None:
                raise BadFrame(MALFORMED, "a fragmented message began before the last one ended")
            self._partial = _Partial(env.src, f.fid, f.total)
        p = self._partial
        if (env.src, f.fid, f.total, f.index) != (p.src, p.fid, p.total, len(p.parts)):
            raise BadFrame(MALFORMED, f"fragment {f.index}/{f.total} of message {f.fid} from {env.src!r} "
                                      f"out of sequence (expected {len(p.parts)}/{p.total} of {p.fid} from {p.src!r})")
        size = p.size + len(f.data)
        if size > self.max_message:
            raise BadFrame(OVERSIZED, f"a fragmented message exceeds the {self.max_message}-byte limit")
        p.parts.append(f.data)
        p.size = size
        if len(p.parts) < p.total:
            return None
        self._partial = None
        inner = decode_body(b"".join(p.parts))
        if type(inner.msg) is Fragment or (inner.src, inner.dst) != (env.src, env.dst):
            raise BadFrame(MALFORMED, "a reassembled message must be a protocol message between its fragments' ends")
        return inner

    def eof(self) -> None:
        """The stream ended. Raises BadFrame(truncated) if it ended inside a frame or a fragmented message."""
        if self.failed is not None:
            raise BadFrame(self.failed.code, self.failed.message)
        if self._partial is not None:
            err = BadFrame(TRUNCATED, f"stream ended inside a fragmented message ({len(self._partial.parts)} "
                                      f"of {self._partial.total} fragments)")
            raise self._fail(err, [])
        if self._buf or self._need is not None:
            got = len(self._buf)
            err = BadFrame(TRUNCATED, f"stream ended inside a frame ({got} bytes of it buffered)")
            raise self._fail(err, [])


__all__ = [
    "DEFAULT_MAX_FRAME",
    "HELLO_MAX_FRAME",
    "TAG_BYTES",
    "BadFrame",
    "Fragment",
    "Hello",
    "FrameDecoder",
    "FrameEncoder",
    "decode_body",
    "decode_envelope",
    "decode_frame",
    "encode_body",
    "encode_envelope",
    "encode_frame",
    "encode_message",
]
