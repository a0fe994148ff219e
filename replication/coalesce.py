"""Write coalescing: a replica's writes to one key in quick succession travel as one delta.

Dissemination costs the same for every payload (at 22 POPs about 60 messages and 21 joins),
whatever it carries. When a hall of phones taps one counter at a few hundred writes a second,
sending each write on its own makes the network's work grow with the write rate. A replica
that has just sent a key's delta therefore holds that key's next writes for at most `window_ms`
since that send, joins them into one delta (a delta group: Almeida, Shoker, Baquero, "Delta
State Replicated Data Types", 2018, section 4), and sends the group when the window closes.

- A write after a quiet spell (the key not sent within the window) goes at once: the one write
  a presenter makes on stage travels exactly as without coalescing.
- Only what leaves is delayed: every write is applied (and answered) locally at once.
- A group joins deltas of one key made here, in the order they were made: its entries are the
  type's causal join of theirs, its contexts the union of theirs, its seals those of the dots
  still live. Joining the group at a receiver equals joining its deltas one by one (the join is
  associative), so a receiver cannot tell a group from its deltas arriving together. Its id on
  the wire (`Gossip.mid`) is its first dot.
- Keys are independent: nothing orders deltas of different keys, with or without coalescing.

Sans-IO, like the node that holds it: it reads no clock; `now` is the caller's.
"""

from __future__ import annotations

from .clocks import Dot
from .crdts import BY_NAMESPACE
from .delta import Delta, KeyRef


def join_local(a: Delta, b: Delta) -> Delta:
    """The delta group of two local single-key deltas of one key, `a` made before `b`."""
    if len(a.entries) != 1 or a.entries.keys() != b.entries.keys() or a.basis is not None or b.basis is not None or a.full or b.full or a.repair or b.repair:
        raise ValueError("only local single-key deltas of one key coalesce")
    [(ref, sa)] = a.entries.items()
    sb = b.entries[ref]
    mod = BY_NAMESPACE[ref[0]]
    store = mod.join(sa, a.ctx, sb, b.ctx)
    ctx = a.ctx.copy()
    ctx.merge(b.ctx)
    applied = a.applied.copy()
    applied.merge(b.applied)
    seals: dict[Dot, bytes] = {}
    for d in mod.dots(store):
        seals[d] = b.seals[d] if d in b.seals else a.seals[d]
    return Delta(entries={ref: store}, ctx=ctx, applied=applied, keys={**a.keys, **b.keys}, seals=seals)


PRUNE_FROM = 64  # keys' send times kept before the quiet ones are first forgotten


class Coalescer:
    def __init__(self, window_ms: float) -> None:
        if not window_ms > 0:
            raise ValueError("a coalescing window is a positive number of milliseconds")
        self.window_ms = window_ms
        self._sent: dict[KeyRef, float] = {}  # key -> when its last delta left (within a window or so)
        self._held: dict[KeyRef, Delta] = {}  # key -> the group waiting for its window to close
        self._due: dict[KeyRef, float] = {}
        self._next: float | None = None
        self._prune_at = PRUNE_FROM
        self.held_writes = 0  # writes that waited (for the figures: how much coalescing did)

    def offer(self, delta: Delta, now: float) -> Delta | None:
        """A local write's delta: returned to be sent now, or None when it is held."""
        [ref] = delta.entries
        held = self._held.get(ref)
        if held is not None:
            self._held[ref] = join_local(held, delta)
            self.held_writes += 1
            return None
        last = self._sent.get(ref)
        if last is None or now - last >= self.window_ms:
            self._sent[ref] = now
            if len(self._sent) > self._prune_at:
                self._forget_quiet(now)
                self._prune_at = max(PRUNE_FROM, 2 * len(self._sent))  # amortised: many keys in one window
            return delta
        self._held[ref] = delta
        due = self._due[ref] = last + self.window_ms
        self.held_writes += 1
        if self._next is None or due < self._next:
            self._next = due
        return None

    def due(self, now: float) -> list[Delta]:
        """The groups whose window has closed by `now`, to be sent (oldest key first)."""
        if self._next is None or now < self._next:
            return []
        out = []
        for ref, t in list(self._due.items()):
            if t <= now:
                del self._due[ref]
                out.append(self._held.pop(ref))
                self._sent[ref] = now
        self._next = min(self._due.values(), default=None)
        return out

    def take_all(self) -> list[Delta]:
        """Every held group, now (the node goes on without waiting: a strategy change)."""
        out = list(self._held.values())
        self._held.clear()
        self._due.clear()
        self._next = None
        return out

    def drop_all(self) -> None:
        """Forget what is held: its writes are in the replica, and anti-entropy spreads them."""
        self._held.clear()
        self._due.clear()
        self._next = None

    def next_deadline(self) -> float | None:
        return self._next

    def _forget_quiet(self, now: float) -> None:
        """Keys sent more than a window ago start afresh anyway: their send times are not needed."""
        w = self.window_ms
        self._sent = {r: t for r, t in self._sent.items() if now - t < w or r in self._held}


__all__ = ["Coalescer", "join_local"]
