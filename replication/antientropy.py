"""Anti-entropy: exchange version vectors, then send only the missing deltas.

Every period a node sends its applied context to some peers (all of them in clusters of
up to 64, so that after a partition heals every pair compares within one period; three at
random beyond that). A peer answers with what the sender lacks, and, when the digest shows
it lacks something itself, with its own digest so the exchange runs both ways.

Dots applied less than `grace_ms` ago are usually still travelling by dissemination; a
reply that would carry only such dots is skipped (the next period catches any that were
lost). This keeps repair traffic to what dissemination actually failed to deliver.
"""

from __future__ import annotations

import random

from .errors import StaleDelta
from .messages import AeDigest, AeReply, Envelope

SMALL_CLUSTER = 64


class AntiEntropy:
    def __init__(self, me: str, rng: random.Random, interval_ms: float, grace_ms: float, fanout: int | None):
        self.me = me
        self.rng = rng
        self.interval_ms = interval_ms
        self.grace_ms = grace_ms
        self.fanout = fanout
        self.next_at = rng.uniform(0, interval_ms)
        self.stale_replies = 0

    def tick(self, now: float, replica, peers: list[str]) -> list[Envelope]:
        if now < self.next_at:
            return []
        self.next_at = now + self.interval_ms
        fanout = self.fanout if self.fanout is not None else (len(peers) if len(peers) <= SMALL_CLUSTER else 3)
        targets = peers if fanout >= len(peers) else self.rng.sample(peers, fanout)
        digest = AeDigest(replica.applied_context)
        return [Envelope(self.me, p, digest) for p in targets]

    def handle(self, env: Envelope, now: float, replica, young) -> list[Envelope]:
        """Answer a digest. `young(dot)` says a dot was applied here within the grace period."""
        msg = env.msg
        replica.observe_peer(env.src, msg.applied, forget=False)
        out = []
        delta = replica.deltas_since(msg.applied, young)
        if delta is not None:
            out.append(Envelope(self.me, env.src, AeReply(delta)))
        if msg.want_reply and not replica.store.applied.covers(msg.applied):
            out.append(Envelope(self.me, env.src, AeDigest(replica.applied_context, want_reply=False)))
        return out

    def next_deadline(self) -> float:
        return self.next_at


__all__ = ["AntiEntropy", "StaleDelta"]
