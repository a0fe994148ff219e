"""Messages between replicas. Plain data: the simulator delivers them as objects, the real
transport encodes them with msgpack. Each kind says whether it carries a payload (a write's
delta) so that benchmarks can count "payloads per receiver" apart from control traffic.

A message's `kind` is a property, not a `ClassVar`: compiled by mypyc (`replication/native.py`)
a class variable of a dataclass became one of its fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from .clocks import CausalContext, Dot
from .delta import Delta
from .store import HASH_BYTES


@dataclass(slots=True)
class Gossip:
    """A write's delta pushed to a peer (plumtree eager push, gossip rounds, direct sends)."""

    @property
    def kind(self) -> str:
        return "payload"

    mid: Dot  # the write's dot names the message
    root: str  # the replica where the write happened
    delta: Delta
    hops: int = 0
    path_ms: float = 0.0  # estimated latency from the root along the path it took
    # (member, ms ago) found silent, where trees are modelled: routed round by those who hear it
    silent: tuple[tuple[str, float], ...] = ()


@dataclass(slots=True)
class GossipBatch:
    """Several payloads to one peer in one frame (gossip rounds piggyback like memberlist)."""

    @property
    def kind(self) -> str:
        return "payload"

    items: list[Gossip]


class Announcement(NamedTuple):
    """One item of an IHAVE: the sender holds message `mid`, from `root`, over a path of `path_ms`."""

    mid: Dot
    root: str
    path_ms: float


@dataclass(slots=True)
class IHave:
    """Lazy push: 'I have these messages'."""

    @property
    def kind(self) -> str:
        return "ihave"

    items: list[Announcement]


@dataclass(slots=True)
class Graft:
    """Make the receiver an eager parent for `root`; send `mids` if it has them."""

    @property
    def kind(self) -> str:
        return "graft"

    root: str
    mids: list[Dot] = field(default_factory=list)


@dataclass(slots=True)
class GraftAck:
    """'You are on my eager list for `root` now': the grafting node may retire its old parent."""

    @property
    def kind(self) -> str:
        return "graft_ack"

    root: str


@dataclass(slots=True)
class Prune:
    """Stop eager-pushing `root`'s messages to the sender (it gets them another way)."""

    @property
    def kind(self) -> str:
        return "prune"

    root: str
    only_root: bool = False  # a latency optimisation, not a redundant link: keep the shared tree


@dataclass(slots=True)
class Neighbour:
    """HyParView's NEIGHBOR: 'I have you in my view; add me to yours', so links are symmetric.

    Plumtree's tree is a set of undirected links: a link pruned one way is pruned both ways,
    and a tree link carries messages from any root in either direction.
    """

    @property
    def kind(self) -> str:
        return "neighbour"



@dataclass(slots=True)
class AeDigest:
    """Anti-entropy: the sender's applied context. The receiver answers with what it lacks.

    `root`: the sender's content root (`Store.content_root`). A receiver whose applied
    context is the same but whose root differs starts a content exchange (AeBuckets)."""

    @property
    def kind(self) -> str:
        return "ae_digest"

    applied: CausalContext
    want_reply: bool = True
    root: bytes = b""


@dataclass(slots=True)
class AeReply:
    @property
    def kind(self) -> str:
        return "ae_reply"

    delta: Delta


@dataclass(slots=True)
class AeBuckets:
    """Content exchange, step 1: the sender's non-empty bucket sums, for its `applied` context."""

    @property
    def kind(self) -> str:
        return "ae_buckets"

    applied: CausalContext
    sums: dict[int, bytes]


@dataclass(slots=True)
class AeKeys:
    """Step 2: the keys of the buckets that differ, with the sender's per-key hashes."""

    @property
    def kind(self) -> str:
        return "ae_keys"

    applied: CausalContext
    buckets: list[int]
    keys: dict[tuple[str, str], bytes]


@dataclass(slots=True)
class AeRepair:
    """Step 3 (and 4): the sender's states of the keys that differ, as a repair delta (it can
    only add), and the keys it `want`s back from the receiver (empty in the last step)."""

    @property
    def kind(self) -> str:
        return "ae_repair"

    applied: CausalContext
    delta: Delta
    want: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Ping:
    @property
    def kind(self) -> str:
        return "ping"

    seq: int
    updates: list = field(default_factory=list)  # piggybacked membership updates
    on_behalf_of: str | None = None
    incarnation: int = 0  # the sender's own: a newer one than the receiver knows revives it


@dataclass(slots=True)
class Ack:
    @property
    def kind(self) -> str:
        return "ack"

    seq: int
    updates: list = field(default_factory=list)
    target: str | None = None  # set when relaying an indirect probe's answer
    incarnation: int = 0  # the sender's (the relay's, for a relayed answer)


@dataclass(slots=True)
class PingReq:
    @property
    def kind(self) -> str:
        return "ping_req"

    seq: int
    target: str
    incarnation: int = 0


@dataclass(slots=True)
class PushPull:
    """Membership anti-entropy: the sender's whole member table, itself included, as
    (member, status, incarnation) triples. Repairs what piggybacked updates missed (they are
    sent a bounded number of times, so a partition can outlast them)."""

    @property
    def kind(self) -> str:
        return "push_pull"

    table: list
    want_reply: bool = True


Message = (Gossip | GossipBatch | IHave | Graft | GraftAck | Prune | Neighbour | AeDigest | AeReply | AeBuckets | AeKeys
           | AeRepair | Ping | Ack | PingReq | PushPull)


# -- transport only: the wire (`replication.wire`) frames these; a node never sees one -------


@dataclass(slots=True)
class Fragment:
    """Part `index` of `total` of message `fid` (the sender's counter): transport only, never
    seen by a node."""

    @property
    def kind(self) -> str:
        return "fragment"

    fid: int
    index: int
    total: int
    data: bytes


@dataclass(slots=True)
class Hello:
    """The first frame on every connection: who is speaking (the envelope's src). Transport only.
    After it, every frame on the connection must come from that replica."""

    @property
    def kind(self) -> str:
        return "hello"


# What the transport frames: a node's message, or one of its own frames.
Frame = Message | Fragment | Hello


class Kinded(Protocol):
    """What an envelope carries: any message with a kind. The simulator delivers other
    protocols' messages in envelopes too (the consensus baseline's), so an envelope does not
    name the union; compiled, a Protocol is not checked at construction (a union is)."""

    @property
    def kind(self) -> str: ...


@dataclass(slots=True)
class Envelope:
    src: str
    dst: str
    msg: Kinded

    @property
    def kind(self) -> str:
        return self.msg.kind

    @property
    def payloads(self) -> int:
        """How many write payloads this frame carries."""
        m = self.msg
        if isinstance(m, GossipBatch):
            return len(m.items)
        return 1 if isinstance(m, Gossip) else 0


_HEADER = 27  # frame length, version, kind, sender and receiver ids (3 letters), HMAC tag: see wire.py


def _delta_bytes(delta) -> int:
    size = getattr(delta, "wire_size", None)
    return size() if size is not None else 0  # a test double, not a Delta


def _ctx_bytes(ctx: CausalContext) -> int:
    return 8 * len(ctx.vv) + 8 * len(ctx.cloud)


def _refs_bytes(refs) -> int:
    """(namespace, key) pairs: two short strings in a two-element list each."""
    return sum(4 + len(ns) + len(key) for ns, key in refs)


def wire_size(msg: Kinded) -> int:
    """Bytes a message takes on the wire, for the simulated network's byte counters.

    Payload-bearing messages count their delta exactly (msgpack); control messages are
    counted from their fields. tests/test_wire.py holds every kind within 30% of its real
    frame (replication/wire.py) and the per-kind medians of a real run likewise.
    """
    if isinstance(msg, Gossip):
        if msg.silent:
            return _HEADER + 34 + _delta_bytes(msg.delta) + sum(12 + len(p) for p, _ in msg.silent)
        return _HEADER + 32 + _delta_bytes(msg.delta)
    if isinstance(msg, IHave):  # the two most frequent kinds first: this runs for every message a sink sees
        return _HEADER + 28 * len(msg.items)
    if isinstance(msg, GossipBatch):
        return _HEADER + sum(32 + _delta_bytes(g.delta) for g in msg.items)
    if isinstance(msg, AeReply):
        return _HEADER + _delta_bytes(msg.delta)
    if isinstance(msg, AeDigest):
        return _HEADER + 2 + _ctx_bytes(msg.applied) + len(msg.root)
    if isinstance(msg, AeRepair):
        return _HEADER + 2 + _ctx_bytes(msg.applied) + _delta_bytes(msg.delta) + _refs_bytes(msg.want)
    if isinstance(msg, AeKeys):
        return (_HEADER + 4 + _ctx_bytes(msg.applied) + len(msg.buckets)
                + _refs_bytes(msg.keys) + (2 + HASH_BYTES) * len(msg.keys))
    if isinstance(msg, AeBuckets):
        return _HEADER + 4 + _ctx_bytes(msg.applied) + (1 + HASH_BYTES) * len(msg.sums)
    if isinstance(msg, (Ping, Ack)):
        return _HEADER + 8 + 8 * len(msg.updates)
    if isinstance(msg, PingReq):
        return _HEADER + 10
    if isinstance(msg, PushPull):
        return _HEADER + 4 + 8 * len(msg.table)
    if isinstance(msg, Graft):
        return _HEADER + 8 + 10 * len(msg.mids)
    return _HEADER + 6
