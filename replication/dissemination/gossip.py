"""Gossip rounds, the Serf/memberlist design: the common peer baseline.

Every round (200 ms) a node picks `fanout` (3) random live members and sends each the
broadcasts in its queue, batched into one frame. A broadcast is retransmitted
`retransmit_mult * ceil(log10(n + 1))` times by every node that learns it, then dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..clocks import Dot
from ..messages import Envelope, Gossip, GossipBatch

MAX_BATCH = 64  # memberlist fills a UDP packet; bound a frame likewise


@dataclass(slots=True)
class _Queued:
    """A broadcast this node retransmits, `sent` times so far (the least sent go first)."""

    gossip: Gossip
    sent: int = 0


class GossipRounds:
    name = "gossip"

    def __init__(self, host, config) -> None:
        self.h = host
        self.cfg = config
        n = len(host.reachable()) + 1
        self.limit = config.gossip_retransmit_mult * max(1, math.ceil(math.log10(n + 1)))
        self.queue: dict[Dot, _Queued] = {}
        self.next_round = host.rng.uniform(0, config.gossip_interval_ms)

    def _align(self, now: float) -> None:
        """Rounds are periodic: an idle node's next round is the next boundary, not 'now'."""
        if self.next_round < now:
            step = self.cfg.gossip_interval_ms
            self.next_round += math.ceil((now - self.next_round) / step) * step

    def broadcast(self, g: Gossip, now: float) -> list[Envelope]:
        self._align(now)
        self.queue[g.mid] = _Queued(g)
        return []

    def handle(self, src: str, msg, now: float) -> list[Envelope]:
        items = msg.items if isinstance(msg, GossipBatch) else [msg] if isinstance(msg, Gossip) else []
        self._align(now)
        for g in items:
            if g.mid not in self.queue and not self.h.have(g.mid):
                self.h.deliver(g, now, "payload")
                self.queue[g.mid] = _Queued(g)
        return []

    def tick(self, now: float) -> list[Envelope]:
        if now < self.next_round:
            return []
        self.next_round = now + self.cfg.gossip_interval_ms
        if not self.queue:
            return []
        peers = self.h.reachable()
        out = []
        for p in self.h.rng.sample(peers, min(self.cfg.gossip_fanout, len(peers))):
            batch = sorted(self.queue.values(), key=lambda e: e.sent)[:MAX_BATCH]
            for e in batch:
                e.sent += 1
            out.append(Envelope(self.h.id, p, GossipBatch([e.gossip for e in batch])))
        for mid in [m for m, e in self.queue.items() if e.sent >= self.limit]:
            del self.queue[mid]
        return out

    def next_deadline(self) -> float | None:
        return self.next_round if self.queue else None

    def view_changed(self, added: list[str], removed: list[str]) -> None:
        pass
