"""Anti-entropy: exchange version vectors, then send only the missing deltas; and compare
content where the version vectors agree.

Every period a node sends its applied context to some peers (all of them in clusters of
up to 64, so that after a partition heals every pair compares within one period; three at
random beyond that). A peer answers with what the sender lacks, and, when the digest shows
it lacks something itself, with its own digest so the exchange runs both ways.

Dots applied less than `grace_ms` ago are usually still travelling by dissemination; a
reply that would carry only such dots is skipped (the next period catches any that were
lost). This keeps repair traffic to what dissemination actually failed to deliver.

Content. Equal version vectors do not make equal replicas: a damaged value, a bug or a dot
minted twice leaves two replicas different for ever while their vectors agree. So each
digest also carries the sender's content root (`Store.content_root`: an additive hash of
every key's state and seals). When the receiver's applied context equals the sender's and
the roots differ, the one of the pair with the lower id narrows the difference down, like
Riak's active anti-entropy walks its hash trees:

    A -> B  AeDigest(applied, root)          every period, as above
    B -> A  AeBuckets(applied, bucket sums)  B: same applied, other root, B < A
    A -> B  AeKeys(applied, buckets that differ, A's keys there with their hashes)
    B -> A  AeRepair(applied, B's states of the keys that differ, keys B wants back)
    A -> B  AeRepair(applied, A's states of the keys B wants)

Each step goes on only while the two applied contexts are still equal (writes arriving in
between make contents differ legitimately; the next period tries again). Repairs can only
add and prefer the copy whose seal verifies (`Store.repair`). Equal content costs nothing
beyond the 8-byte root in each digest.

Each period also re-hashes a slice of the keyspace from its actual content (`Store.scrub`,
bounded by work, not keys: a big key is scanned a slice per period), so a value changed
behind the store's back shows in the root within a sweep.
"""

from __future__ import annotations

import random
from typing import Any, NamedTuple

from .errors import StaleDelta
from .messages import AeBuckets, AeDigest, AeKeys, AeRepair, AeReply, Envelope
from .store import bucket_of
from .wire import MAX_AE_KEYS

SMALL_CLUSTER = 64
# Work the scrub does per period: a key costs one, each of its live dots one more (a seal checked,
# ~3 us). So ~0.25 ms per period whatever the keys' sizes; 100k single-value keys are swept in
# ~50 minutes at 1 s, a set at its 10,000-member bound takes ~160 periods of its own.
SCRUB_WORK = 64
MAX_LISTED = 2048  # keys listed (and so repaired) in one exchange; the rest wait for the next
MAX_BACKOFF = 32  # periods between exchanges that would compare the same two roots again


class _Tried(NamedTuple):
    """The last content comparison with a peer (see AntiEntropy._may_compare)."""

    roots: tuple[bytes, bytes]  # theirs and ours, as compared
    periods: int  # the wait it set, in periods; doubled while the same roots come back
    until: float  # no comparison of the same roots before then


class AntiEntropy:
    def __init__(self, me: str, rng: random.Random, interval_ms: float, grace_ms: float, fanout: int | None,
                 scrub_work: int = SCRUB_WORK):
        self.me = me
        self.scrub_work = scrub_work
        self.rng = rng
        self.interval_ms = interval_ms
        self.grace_ms = grace_ms
        self.fanout = fanout
        self.next_at = rng.uniform(0, interval_ms)
        self.stale_replies = 0
        self.repaired: list = []  # keys a content repair changed, until the node takes them for its feed
        # an exchange that changed neither root (a dispute; or lost on the way) backs off
        self._tried: dict[str, _Tried] = {}

    def tick(self, now: float, replica, peers: list[str]) -> list[Envelope]:
        if now < self.next_at:
            return []
        self.next_at = now + self.interval_ms
        store = replica.store
        if self.scrub_work:
            store.scrub(self.scrub_work)
        fanout = self.fanout if self.fanout is not None else (len(peers) if len(peers) <= SMALL_CLUSTER else 3)
        targets = peers if fanout >= len(peers) else self.rng.sample(peers, fanout)
        digest = AeDigest(replica.applied_context, root=store.content_root())
        return [Envelope(self.me, p, digest) for p in targets]

    def handle(self, env: Envelope, now: float, replica, young) -> list[Envelope]:
        """Answer a digest. `young(dot)` says a dot was applied here within the grace period."""
        msg: Any = env.msg  # an AeDigest
        store = replica.store
        theirs, mine = msg.applied, store.applied
        # a digest's context is the sender's copy, never changed after: kept as it is
        replica.observe_peer(env.src, theirs, forget=False, copy=False)
        if not mine.cloud and not theirs.cloud and mine.vv._v == theirs.vv._v:
            # Equal contexts, the common case between peers: one C-level compare answers all three
            # questions below (nothing to send, nothing to ask for, the roots may be compared).
            if msg.root and self.me < env.src and msg.root != store.content_root():
                return self._roots_differ(env.src, msg.root, now, store)
            return []
        out = []
        if not mine.cloud and not theirs.cloud:
            # most digests between peers while writes travel: they differ only in dots in flight
            held, covered = store.against(theirs.vv, young)
        else:
            held, covered = False, None
        delta = None if held else replica.deltas_since(msg.applied, young)
        if delta is not None:
            out.append(Envelope(self.me, env.src, AeReply(delta)))
        if covered is None and msg.want_reply:
            covered = store.applied.covers(msg.applied)
        if msg.want_reply and not covered:
            out.append(Envelope(self.me, env.src, AeDigest(replica.applied_context, want_reply=False,
                                                           root=store.content_root())))
        elif msg.root and self.me < env.src and msg.applied == store.applied and msg.root != store.content_root():
            out += self._roots_differ(env.src, msg.root, now, store)
        return out

    def _roots_differ(self, peer: str, root: bytes, now: float, store) -> list[Envelope]:
        """Same applied context, other content root: start a content exchange (step 2)."""
        store.integrity.root_mismatches += 1
        if self._may_compare(peer, (root, store.content_root()), now):
            return [Envelope(self.me, peer, AeBuckets(store.applied.copy(), store.bucket_sums()))]
        return []

    def _may_compare(self, peer: str, roots: tuple[bytes, bytes], now: float) -> bool:
        """Compare these two roots now? The same pair again waits 1, 2, 4... periods: an
        exchange that left both as they were found nothing it could repair."""
        last = self._tried.get(peer)
        if last is not None and last.roots == roots:
            if now < last.until:
                return False
            wait = min(last.periods * 2, MAX_BACKOFF)
        else:
            wait = 1
        self._tried[peer] = _Tried(roots, wait, now + (wait - 0.5) * self.interval_ms)
        return True

    def handle_content(self, env: Envelope, replica) -> list[Envelope]:
        """One step of a content exchange (the module docstring's steps 2 to 4)."""
        msg: Any = env.msg  # one of the content exchange's kinds
        store = replica.store
        me, peer = self.me, env.src
        if isinstance(msg, AeRepair):
            if msg.delta.entries:
                self.repaired += store.repair(msg.delta, msg.applied, peer)  # the node's change feed drains it
            if msg.want:
                delta = store.repair_delta(msg.want[:MAX_LISTED])
                if delta.entries:
                    return [Envelope(me, peer, AeRepair(store.applied.copy(), delta))]
            return []
        if msg.applied != store.applied:
            return []  # one of us moved on: contents may differ for that alone
        if isinstance(msg, AeBuckets):
            mine = store.bucket_sums()
            differ = sorted(b for b in mine.keys() | msg.sums.keys() if mine.get(b) != msg.sums.get(b))
            if not differ:
                return []
            store.integrity.mismatched_buckets += len(differ)
            chosen: list[int] = []
            listed = 0
            for b in differ:
                size = store.bucket_size(b)
                if size > MAX_AE_KEYS or (chosen and listed + size > MAX_LISTED):
                    continue
                chosen.append(b)
                listed += size
            return [Envelope(me, peer, AeKeys(store.applied.copy(), chosen, store.key_hashes(chosen)))]
        if isinstance(msg, AeKeys):
            mine = store.key_hashes(msg.buckets)
            asked = set(msg.buckets)
            theirs = {r: h for r, h in msg.keys.items() if bucket_of(*r) in asked}
            differ = sorted(r for r in mine.keys() | theirs.keys() if mine.get(r) != theirs.get(r))
            if not differ:
                return []
            differ = differ[:MAX_LISTED]  # whatever the peer listed, one exchange repairs this much
            delta = store.repair_delta([r for r in differ if r in mine])
            want = [r for r in differ if r in theirs]
            if not delta.entries and not want:
                return []
            return [Envelope(me, peer, AeRepair(store.applied.copy(), delta, want))]
        return []

    def next_deadline(self) -> float:
        return self.next_at


__all__ = ["AntiEntropy", "StaleDelta"]
