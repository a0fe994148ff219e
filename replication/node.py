"""A replica node: the sans-IO replica plus dissemination, anti-entropy and membership.

Like the replica, a node never reads a clock, sleeps or opens a socket. Its whole
interface is: `write(...) -> Written` (the view, the delta, the envelopes), `receive(envelope) -> envelopes`,
`tick() -> envelopes` with `next_deadline()` saying when `tick` next has work, and
`drain_events()` for what an observer (the dashboard, a benchmark) may want to see:
("applied", ...), ("membership", ...), and ("integrity", ...) for what content checks found
(`Store.findings`: damaged copies, conflicting copies of one dot, disputes, repaired keys).
The simulator and the real transport drive it identically.
"""

from __future__ import annotations

import random
from itertools import islice
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .antientropy import SCRUB_WORK, AntiEntropy
from .changefeed import ChangeFeed, origin_of
from .clocks import Dot
from .coalesce import Coalescer
from .delta import Delta
from .dissemination import DisseminationConfig, make_strategy
from .dissemination.roottrees import RootTrees
from .dissemination.seedtree import SeedTree
from .errors import StaleDelta
from .membership import ALIVE, DEAD, Membership, MembershipConfig
from .messages import (
    Ack, AeBuckets, AeDigest, AeKeys, AeRepair, AeReply, Envelope, Gossip, Neighbour, Ping, PingReq, PushPull,
)
from .replica import Replica


@dataclass(frozen=True, slots=True)
class Written:
    """A local write, done: what the writer is answered (`view`), the delta it made (None when
    nothing changed, as for deleting what is not there) and the envelopes that spread it. A
    durable driver logs `delta` before it sends any envelope or answers the writer."""

    view: Any
    delta: Delta | None
    envelopes: list[Envelope]


class WriteNotSent(Exception):
    """A write was applied (its delta is `delta`), then making its envelopes failed: a bug, the
    cause is chained. The replica holds the write, so a durable driver must log `delta` all
    the same (anti-entropy spreads it); the writer gets the error."""

    def __init__(self, delta: Delta) -> None:
        super().__init__("a write was applied, then its envelopes could not be made")
        self.delta = delta


@dataclass
class NodeConfig:
    strategy: str = "plumtree"
    dissemination: DisseminationConfig = field(default_factory=DisseminationConfig)
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    ae_interval_ms: float = 1000.0
    ae_grace_ms: float = 1000.0
    ae_fanout: int | None = None  # None: every peer in small clusters, 3 beyond
    ae_scrub_work: int = SCRUB_WORK  # scrub work per period (a key: 1, each live dot: 1 more); 0: no scrub
    record_events: bool = False
    # hold a key's writes for at most this long after its last send and send them as one delta
    # (`coalesce`); 0: every write leaves at once
    coalesce_ms: float = 0.0


GC_INTERVAL_MS = 5000.0
UNKNOWN_LINK_MS = 50.0  # until a probe has measured the link
SIBLING_KEYS = 8  # registers whose sibling count an "applied" event carries, at most (a repair may touch thousands)
_STRATEGY_KINDS = frozenset({"payload", "ihave", "graft", "graft_ack", "prune"})
_CONTENT_AE = (AeBuckets, AeKeys, AeRepair)


@dataclass(slots=True)
class _Arrival:
    """Dots applied here `at`: young (see `_young`) until the anti-entropy grace has passed. One
    record per applied delta, not per dot: a 1,000-member add reaching 22 replicas made 22,000
    records for the garbage collector to scan while it spread."""

    at: float
    dots: tuple[Dot, ...]


def actor_for(replica_id: str, incarnation: int, tag: str | None = None) -> str:
    """`id`, `id~N`, or `id~N.TAG`: TAG (hex) names a lineage begun after lost or repaired
    state, so that its actors cannot collide with ones minted before (see runner.fresh_actor)."""
    if incarnation == 0 and tag is None:
        return replica_id
    return f"{replica_id}~{incarnation}" + (f".{tag}" if tag is not None else "")


def parse_actor(replica_id: str, actor: str | None) -> tuple[int, str | None] | None:
    """The inverse of `actor_for`: (N, TAG or None), or None for anyone else's actor."""
    if actor == replica_id:
        return 0, None
    if actor and actor.startswith(replica_id + "~"):
        n, dot, tag = actor[len(replica_id) + 1 :].partition(".")
        if n.isascii() and n.isdigit() and (not dot or (tag and all(c in "0123456789abcdef" for c in tag))):
            return int(n), tag if dot else None
    return None


def incarnation_of(replica_id: str, actor: str | None) -> int | None:
    """N for `id~N` and `id~N.TAG`, 0 for `id`, None for anyone else's actor."""
    parsed = parse_actor(replica_id, actor)
    return None if parsed is None else parsed[0]


# Beyond this many members a node watches a partial view (`_partial_view`) instead of everyone.
LARGE_CLUSTER = 2048
OVERLAY_CANDIDATES = 512  # a large cluster's nearest neighbours are the nearest of this many, drawn at random
WATCH_RANDOM = 16  # members watched beyond the overlay and tree links, drawn at random
AE_LARGE_FANOUT = 3  # anti-entropy partners per period in a large cluster, drawn from all members


def _sample(members: tuple[str, ...], k: int, rng: random.Random) -> list[str]:
    return rng.sample(members, min(k, len(members)))


def _partial_view(me: str, members: tuple[str, ...], view: list[str], tree: SeedTree | None,
                  rng: random.Random) -> list[str]:
    """The members a node of a large cluster watches: its overlay, its seed tree links, and a
    few random others (so that views overlap and news of a death spreads), as HyParView's
    passive view does. Members that contact it join later (`Node._watch`)."""
    out = list(dict.fromkeys(view))
    if tree is not None and me in tree:
        out += [p for p in tree.neighbours(me) if p not in out]
    chosen = set(out)
    out += [p for p in _sample(members, WATCH_RANDOM + 1, rng) if p != me and p not in chosen]
    return [p for p in out if p != me]


def overlay_view(me: str, peers: list[str], link_ms: Callable[[str], float], rng: random.Random, near: int, far: int):
    """Out-neighbours in the spirit of HyParView's active view, made latency-aware: the
    `near` closest peers (short hops for the tree) plus `far` random ones (shortcuts, and
    connectivity when a region is cut off)."""
    others = [p for p in peers if p != me]
    # ties (several replicas at one POP) broken at random, or every replica would pick the same few
    nearest = sorted(others, key=lambda p: (round(link_ms(p), 3), rng.random()))[:near]
    chosen = set(nearest)
    rest = [p for p in others if p not in chosen]
    return nearest + rng.sample(rest, min(far, len(rest)))


class Node:
    def __init__(
        self,
        replica_id: str,
        peers: Sequence[str],  # a large cluster's driver passes its shared tuple of every member
        *,
        config: NodeConfig | None = None,
        seed: int | str = 0,
        link_ms: Callable[[str], float] | None = None,
        incarnation: int = 0,
        secret: bytes | None = None,
        epoch_ms: float = 0.0,
        replica: Replica | None = None,
        seed_tree: SeedTree | None = None,
        cluster: frozenset[str] | None = None,
        root_trees: RootTrees | None = None,
    ) -> None:
        """`replica`: state restored from disk (its actor already chosen); `incarnation` is
        then only the membership incarnation, which must rise with every start. `seed_tree`:
        the spanning tree of the members under the latency model, where the driver knows every
        member's location (the simulator): plumtree starts from it instead of flooding, and its
        links join the overlay. Without it (real replicas) the first broadcast floods.
        `root_trees`: where replicas share POPs, each root's own first tree (see roottrees)."""
        self.cfg = cfg = config or NodeConfig()
        self.id = replica_id
        # Added to the driver's clock for the timestamps people see (HLC); timers keep raw time.
        self.epoch_ms = epoch_ms
        self.rng = random.Random(f"{seed}:{replica_id}:{incarnation}")
        d = cfg.dissemination
        # A large cluster (`cluster`: every member, shared by the driver's nodes, never copied):
        # each node watches only a partial view of it (`_partial_view`), so that a node's memory
        # and membership traffic do not grow with the cluster. Up to LARGE_CLUSTER members, every
        # node watches everyone, as it always did.
        self._cluster = cluster if cluster is not None and len(cluster) > LARGE_CLUSTER else None
        self.large = self._cluster is not None  # what the strategy asks (plumtree's IHAVEs on model trees)
        self._all: tuple[str, ...] | None = None
        if self._cluster is not None:
            self._all = peers if isinstance(peers, tuple) else tuple(peers)
            self._base_view = overlay_view(replica_id, _sample(self._all, OVERLAY_CANDIDATES, self.rng),
                                           self._link_hint_or(link_ms), self.rng, d.view_near, d.view_far)
            self.peers = _partial_view(replica_id, self._all, self._base_view, seed_tree, self.rng)
        else:
            self.peers = [p for p in peers if p != replica_id]
        if replica is None:
            kw = {"secret": secret} if secret else {}
            members = self._cluster if self._cluster is not None else [replica_id, *self.peers]
            replica = Replica(replica_id, members=members, actor=actor_for(replica_id, incarnation), **kw)
        elif replica.id != replica_id:
            raise ValueError(f"restored replica {replica.id!r} given to node {replica_id!r}")
        self.replica = replica
        self._link_hint = link_ms
        # one-way latency estimate, asked on every push: the geographic model's own callable where
        # there is one (no frame of ours per call), else half the probed RTT
        self.link_ms: Callable[[str], float] = link_ms if link_ms is not None else self._probed_link_ms
        self.membership = Membership(replica_id, self.peers, self.rng, cfg.membership, incarnation,
                                     push_pull_rng=random.Random(f"{seed}:{replica_id}:{incarnation}:push-pull"))
        if self._cluster is None:
            self._base_view = overlay_view(replica_id, self.peers, self.link_ms, self.rng, d.view_near, d.view_far)
        # a tree link must be an overlay link: its ends exchange IHAVEs and GRAFTs, and membership
        # takes it out of the view when its far end dies (appended: the seeded draws stay the same)
        self.seed_tree = seed_tree if seed_tree is not None and replica_id in seed_tree else None
        if self.seed_tree is not None:
            watched = self.membership.members
            self._base_view += [p for p in self.seed_tree.neighbours(replica_id)
                                if p in watched and p not in self._base_view]
        self._view = list(self._base_view)
        self.root_trees = root_trees
        self.strategy = make_strategy(cfg.strategy, self, d)
        self.coalescer = Coalescer(cfg.coalesce_ms) if cfg.coalesce_ms > 0 else None
        self.ae = AntiEntropy(replica_id, self.rng, cfg.ae_interval_ms, cfg.ae_grace_ms, cfg.ae_fanout,
                              cfg.ae_scrub_work)
        self._arrived: dict[Dot, float] = {}
        self._arrivals: deque[_Arrival] = deque()  # oldest first
        self.events: list[tuple] = []
        self.stale_replies = 0
        self._announce_view = True
        self._gc_at = 0.0
        self._deadline: float | None = None  # min of membership, anti-entropy, gc deadlines; None: ask
        self._now = 0.0
        # every key applied here, for watchers (`changefeed`); the driver attaches it with a run id
        # of its choosing, since a node has no source of randomness that differs between runs
        self.feed: ChangeFeed | None = None

    # -- what strategies see of their host -------------------------------------------------

    def _link_hint_or(self, link_ms: Callable[[str], float] | None) -> Callable[[str], float]:
        """The latency estimate before membership exists (a large cluster's overlay is drawn first)."""
        return link_ms if link_ms is not None else (lambda peer: UNKNOWN_LINK_MS)

    def _watch(self, peer: str) -> None:
        """A large cluster: start watching a member that contacted us (it watches us; a probe we
        did not answer would make it suspect us)."""
        self.membership.watch(peer)
        self.peers.append(peer)

    def _probed_link_ms(self, peer: str) -> float:
        rtt = self.membership.rtt_ms.get(peer)
        return rtt / 2 if rtt else UNKNOWN_LINK_MS

    def reachable(self) -> list[str]:
        return self.membership.reachable()

    def view(self) -> list[str]:
        return self._view

    def down(self, peer: str) -> bool:
        """Declared dead here (a member this node does not watch is not known to be)."""
        m = self.membership.members.get(peer)
        return m is not None and m.status == DEAD

    def have(self, mid: Dot) -> bool:
        return self.replica.store.applied.contains(mid)

    def deliver(self, g: Gossip, now: float, via: str) -> bool:
        return self._apply(g.delta, now, via)

    # -- the node's interface ----------------------------------------------------------------

    def write(self, ns: str, key: str, op: dict, *, now: float) -> Written:
        """Apply a local write. Bad input raises a typed error before anything changed;
        WriteNotSent (a bug) means it was applied and carries its delta."""
        view, delta = self.replica.write(ns, key, op, now=now + self.epoch_ms)
        if delta is None:
            return Written(view, None, [])
        try:
            dots = sorted(delta.applied.dots())
            self._note(dots, [(ns, key)], now, "local")
            if self.coalescer is None:
                envelopes = self.strategy.broadcast(Gossip(dots[0], self.id, delta), now)
            else:
                group = self.coalescer.offer(delta, now)
                envelopes = [] if group is None else self.strategy.broadcast(Gossip(dots[0], self.id, group), now)
        except Exception as e:
            raise WriteNotSent(delta) from e
        return Written(view, delta, envelopes)

    def receive(self, env: Envelope, *, now: float) -> list[Envelope]:
        msg = env.msg
        if env.src not in self.membership.members:
            if self._cluster is None or env.src not in self._cluster:
                return []  # not a member of this cluster
            if isinstance(msg, (Ping, PingReq, PushPull, Neighbour)):
                self._watch(env.src)  # it watches us, or links to us: watch it back
        kind = msg.kind
        if kind in _STRATEGY_KINDS:  # the common case first: this runs for every message
            return self.strategy.handle(env.src, msg, now)
        if isinstance(msg, (Ping, Ack, PingReq, PushPull)):
            self._deadline = None  # an ack ends a probe's timeout, news may start a suspicion
            out = self.membership.handle(env, now)
            self._membership_changed()
            return out
        if isinstance(msg, AeDigest):
            self._now = now  # what `_young` compares ages against
            out = self.ae.handle(env, now, self.replica, self._young)
            self._integrity()
            return out
        if isinstance(msg, _CONTENT_AE):
            out = self.ae.handle_content(env, self.replica)
            repaired, self.ae.repaired = self.ae.repaired, []
            if repaired and self.feed is not None:
                self.feed.record(repaired, None, "repair", self.replica.store.applied.vv.to_dict())
            self._integrity()
            return out
        if isinstance(msg, Neighbour):
            if env.src not in self._base_view:
                self._base_view.append(env.src)
                if self.membership.status(env.src) != DEAD and env.src not in self._view:
                    self._view.append(env.src)
                    self.strategy.view_changed([env.src], [])
            return []
        if isinstance(msg, AeReply):
            try:
                self._apply(msg.delta, now, "ae")
            except StaleDelta:
                self.stale_replies += 1  # computed for state we no longer hold; the next round redoes it
            return []
        return self.strategy.handle(env.src, msg, now)

    def tick(self, *, now: float) -> list[Envelope]:
        fixed = self._deadline
        if fixed is not None and now < fixed and not self._announce_view:
            # Woken by the strategy alone (most wake-ups: a batch of IHAVEs to flush, a graft
            # timer): membership, anti-entropy and gc have nothing due before `fixed`, and their
            # ticks would change nothing, so only the strategy runs.
            out = self._send_held(now) + self.strategy.tick(now)
            self._integrity()
            self._expire_arrivals(now)
            return out
        out = self._send_held(now) + self.membership.tick(now)
        if self._announce_view:
            self._announce_view = False
            out += [Envelope(self.id, p, Neighbour()) for p in self._base_view]
        if now >= self._gc_at:
            self._gc_at = now + GC_INTERVAL_MS
            self.replica.forget_stable()
        self._membership_changed()
        out += self.strategy.tick(now)
        if self._all is None:
            out += self.ae.tick(now, self.replica, self.peers)
        elif now >= self.ae.next_at:  # a large cluster: a few random members of all, not of the view
            picks = [p for p in _sample(self._all, AE_LARGE_FANOUT + 1, self.rng) if p != self.id]
            out += self.ae.tick(now, self.replica, picks[:AE_LARGE_FANOUT])
        self._integrity()
        self._expire_arrivals(now)
        self._deadline = None  # membership, anti-entropy and gc deadlines may all have moved
        return out

    def next_deadline(self) -> float | None:
        """Asked after every call (by the simulator: after every delivery). Membership, anti-entropy
        and gc deadlines move only in `tick`, `restart` and membership messages, so their minimum
        is kept until one of those runs; the strategy's is asked each time. Young arrivals set no
        deadline: they age by time (`_young`), and are trimmed whenever the node runs."""
        if self._announce_view:
            return 0.0
        t = self._deadline
        if t is None:
            t = self._deadline = min(self.membership.next_deadline(), self.ae.next_at, self._gc_at)
        s = self.strategy.next_deadline()
        if s is not None and s < t:
            t = s
        if self.coalescer is not None:
            c = self.coalescer.next_deadline()
            if c is not None and c < t:
                t = c
        return t

    def restart(self, *, now: float) -> list[Envelope]:
        """Back from a crash with state intact: rejoin at a newer incarnation, catch up by anti-entropy."""
        self.membership.restart(now)
        self.ae.next_at = now
        self._deadline = None
        self._announce_view = True
        return self.tick(now=now)

    def take_replica(self, replica: Replica) -> None:
        """Go on with `replica` (this replica's durable state, read back after a failed flush)
        in place of the current one. Its clock and what peers hold carry over; dissemination
        starts afresh, so no cache still holds a payload of a write the disk refused."""
        if replica.id != self.id:
            raise ValueError(f"node {self.id!r} cannot take replica {replica.id!r}")
        replica.carry_over(self.replica)
        self.replica = replica
        if self.coalescer is not None:
            self.coalescer.drop_all()
        self.set_strategy(self.cfg.strategy)

    def set_strategy(self, name: str) -> None:
        """Switch dissemination live. In-flight repairs of the old strategy are dropped;
        anti-entropy delivers whatever they would have."""
        self.strategy = make_strategy(name, self, self.cfg.dissemination)

    def drain_events(self) -> list[tuple]:
        ev, self.events = self.events, []
        return ev

    # -- internals ---------------------------------------------------------------------------

    def _send_held(self, now: float) -> list[Envelope]:
        """Coalesced writes whose window has closed go out, each group as one payload."""
        if self.coalescer is None:
            return []
        out: list[Envelope] = []
        for group in self.coalescer.due(now):
            out += self.strategy.broadcast(Gossip(min(group.applied.dots()), self.id, group), now)
        return out

    def _apply(self, delta, now: float, via: str) -> bool:
        applied = self.replica.apply(delta, now=now + self.epoch_ms)
        if applied.dots:
            self._note(applied.dots, applied.keys, now, via)
        return bool(applied.dots)

    def _note(self, dots, keys, now: float, via: str) -> None:
        dots = tuple(dots)
        self._expire_arrivals(now)  # bounded by what arrived within one grace, without a timer
        arrived = self._arrived
        for d in dots:
            arrived[d] = now
        self._arrivals.append(_Arrival(now, dots))
        if self.feed is not None:
            self.feed.record(keys, origin_of(dots), via, self.replica.store.applied.vv.to_dict())
        if self.cfg.record_events:
            # how many siblings each register touched holds here now: a fork shows as 2 after a
            # concurrent write arrives, a merge as 1 after a write with the read's context
            store = self.replica.store
            sib = [[k, len(store.get("kv", k))] for ns, k in islice((r for r in keys if r[0] == "kv"), SIBLING_KEYS)]
            self.events.append(("applied", {"dots": list(dots), "keys": list(keys), "via": via, "sib": sib}))

    def _integrity(self) -> None:
        """What content checks found (damaged copies, conflicts, disputes, repairs) as events."""
        store = self.replica.store
        if store.findings:
            found = store.drain_findings()
            if self.cfg.record_events:
                self.events += [("integrity", f) for f in found]

    def _young(self, dot: Dot) -> bool:
        """Applied here less than the anti-entropy grace ago (at `_now`). Aged by time rather than
        by a timer: a timer per applied write woke every node once per write for nothing else."""
        at = self._arrived.get(dot)
        return at is not None and at + self.cfg.ae_grace_ms > self._now

    def _expire_arrivals(self, now: float) -> None:
        """Forget arrivals past the grace (bookkeeping only: `_young` compares times)."""
        grace = self.cfg.ae_grace_ms
        arrivals, arrived = self._arrivals, self._arrived
        while arrivals and arrivals[0].at + grace <= now:
            for d in arrivals.popleft().dots:
                arrived.pop(d, None)

    def _membership_changed(self) -> None:
        changes = self.membership.changes
        if not changes:
            return
        self.membership.changes = []
        if self.cfg.record_events:
            for peer, status in changes:
                self.events.append(("membership", {"peer": peer, "status": status}))
        if self.root_trees is not None:
            dead = [peer for peer, status in changes if status == DEAD]
            if dead and hasattr(self.strategy, "members_down"):
                self.strategy.members_down(dead)
        alive = {p for p in self.peers if self.membership.status(p) != DEAD}
        view = [p for p in self._base_view if p in alive]
        # keep the view's size: stand-ins for dead neighbours, drawn from the live others
        spares = [p for p in self.peers if p in alive and p not in view and p not in self._view]
        keep = [p for p in self._view if p in alive and p not in view]
        view += keep[: max(0, len(self._base_view) - len(view))]
        need = len(self._base_view) - len(view)
        if need > 0 and spares:
            view += self.rng.sample(spares, min(need, len(spares)))
        added = [p for p in view if p not in self._view]
        removed = [p for p in self._view if p not in view]
        self._view = view
        if added or removed:
            self.strategy.view_changed(added, removed)


__all__ = ["ALIVE", "Node", "NodeConfig", "WriteNotSent", "Written", "actor_for", "incarnation_of", "overlay_view",
           "parse_actor"]
