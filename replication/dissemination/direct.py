"""Direct: the origin sends the delta to every replica. One hop: the physical latency limit,
and the reference every other strategy is measured against. Costs n-1 sends at the origin."""

from __future__ import annotations

from ..messages import Envelope, Gossip


class Direct:
    name = "direct"

    def __init__(self, host, config) -> None:
        self.h = host

    def broadcast(self, g: Gossip, now: float) -> list[Envelope]:
        me = self.h.id
        return [Envelope(me, p, g) for p in self.h.reachable()]

    def handle(self, src: str, msg, now: float) -> list[Envelope]:
        if isinstance(msg, Gossip) and not self.h.have(msg.mid):
            self.h.deliver(msg, now, "payload")
        return []

    def tick(self, now: float) -> list[Envelope]:
        return []

    def next_deadline(self) -> float | None:
        return None

    def view_changed(self, added: list[str], removed: list[str]) -> None:
        pass
