"""A tree of its own for every root, from its very first write, where replicas share POPs.

With one replica per POP, plumtree's shared seed tree (the POPs' minimum spanning tree) is
a fine first tree and each root's own tree relaxes from it in a few writes. With many
replicas per POP (a CDN: 1,000 replicas on 54 POPs) most roots write once or twice, so
their writes follow the shared tree, which suits no root: long ways round, and every
make-before-break switch towards a faster path costs a duplicate. Yet where every node
knows each member's POP and the latency between POPs, each can compute, on its own and
with no message exchanged, the same good tree for any root:

- The root's POP fans the write out to every other POP directly (one hop each way is the
  physical limit): its replicas, in a `fanout`-ary tree rooted at the root, share the sends
  to other POPs, `cross` each at most, the nearest POPs taken first (a degree-bounded
  shortest-path tree, Dijkstra's order), so the farthest POP is reached over a direct link
  from a replica a hop or two (~1 ms each) below the root. Where the root's POP has too few
  replicas for that, a POP already reached relays to others (its gateway sends on).
- In each other POP its first replica (the POP's head) takes the write and fans it out in a
  `fanout`-ary tree over the POP's replicas: the same tree for every root. Each node still
  receives one payload per write; what the same tree buys is that a node which finds a child
  dead (one round trip without an ack) routes round it for every root's writes at once. With
  a head chosen per root, each root's first write paid that round trip again, and after half
  of 300 replicas crashed the median write took 3.0x the physical limit (1.2 on the shared
  seed tree, which such repairs fix for every root).

Every node sends at most `fanout + cross` payloads per write. The cross-POP plan depends
only on the root's POP (positions in its tree, not names), so it is computed once per POP;
a node's children and parent for a root are then a few index sums.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from heapq import heappop, heappush

FANOUT = 4  # children inside a POP
CROSS = 4  # sends to other POPs, per replica


class _Plan:
    """For one root POP: which position of which POP's tree sends to which POP, and when the
    write reaches each POP's gateway (model ms from the root)."""

    __slots__ = ("arrive", "sends", "via")

    def __init__(self) -> None:
        self.arrive: dict[str, float] = {}  # POP -> model ms at its gateway (the root's POP: 0)
        self.sends: dict[tuple[str, int], list[str]] = {}  # (POP, position) -> POPs it sends to
        self.via: dict[str, tuple[str, int]] = {}  # POP -> (POP, position) it is reached from


class RootTrees:
    """Every root's tree over `placements` ((replica, POP id) pairs), under `pop_ms(a, b)`
    (one-way latency between two POPs; a POP to itself: a hop inside it)."""

    def __init__(self, placements: Iterable[tuple[str, str]], pop_ms: Callable[[str, str], float],
                 fanout: int = FANOUT, cross: int = CROSS) -> None:
        by_pop: dict[str, list[str]] = {}
        for rid, pop in placements:
            by_pop.setdefault(pop, []).append(rid)
        self._members = {pop: sorted(ids) for pop, ids in sorted(by_pop.items())}
        self._pop_of = {rid: pop for pop, ids in self._members.items() for rid in ids}
        self._index = {rid: i for ids in self._members.values() for i, rid in enumerate(ids)}
        self._ms = pop_ms
        self.fanout = fanout
        self.cross = cross
        self._plans: dict[str, _Plan] = {}

    def __contains__(self, member: str) -> bool:
        return member in self._pop_of

    # -- positions --------------------------------------------------------------------

    def _anchor(self, root: str, pop: str) -> str:
        """Where the root's write enters `pop`: the root itself, or its gateway there."""
        if self._pop_of[root] == pop:
            return root
        return self._members[pop][0]

    def _position(self, root: str, member: str) -> tuple[str, int]:
        """`member`'s POP and its position in that POP's tree for `root`: the anchor first, then
        the others in their sorted order."""
        pop = self._pop_of[member]
        anchor = self._anchor(root, pop)
        if member == anchor:
            return pop, 0
        i, a = self._index[member], self._index[anchor]
        return pop, i + 1 if i < a else i

    def _at(self, root: str, pop: str, pos: int) -> str:
        anchor = self._anchor(root, pop)
        if pos == 0:
            return anchor
        a = self._index[anchor]
        return self._members[pop][pos - 1 if pos - 1 < a else pos]

    def _depth(self, pos: int) -> int:
        d, first, width = 0, 0, 1  # positions first .. first+width-1 are at depth d
        while pos >= first + width:
            first += width
            width *= self.fanout
            d += 1
        return d

    # -- the cross-POP plan --------------------------------------------------------------

    def _plan(self, home: str) -> _Plan:
        plan = self._plans.get(home)
        if plan is not None:
            return plan
        plan = self._plans[home] = _Plan()
        hop = self._ms(home, home)
        ms = self._ms
        left = {pop for pop in self._members if pop != home}
        plan.arrive[home] = 0.0
        capacity: dict[tuple[str, int], int] = {}
        heap: list[tuple[float, str, int, str]] = []  # (arrival, sender POP, sender position, target POP)

        def offer(pop: str, pos: int, at: float) -> None:
            capacity[(pop, pos)] = self.cross
            for target in left:
                heappush(heap, (at + ms(pop, target), pop, pos, target))

        for pos in range(len(self._members[home])):
            offer(home, pos, self._depth(pos) * hop)
        while left and heap:
            at, pop, pos, target = heappop(heap)
            if target not in left or capacity[(pop, pos)] == 0:
                continue
            capacity[(pop, pos)] -= 1
            left.discard(target)
            plan.arrive[target] = at
            plan.sends.setdefault((pop, pos), []).append(target)
            plan.via[target] = (pop, pos)
            offer(target, 0, at)  # its gateway may relay (only needed when the home POP is small)
        return plan

    # -- what a node asks ----------------------------------------------------------------

    def children(self, root: str, member: str) -> list[str]:
        """Whom `member` sends `root`'s writes to (none for an unknown root or member)."""
        if root not in self._pop_of or member not in self._pop_of:
            return []
        pop, pos = self._position(root, member)
        n = len(self._members[pop])
        first = pos * self.fanout + 1
        out = [self._at(root, pop, p) for p in range(first, min(first + self.fanout, n))]
        for target in self._plan(self._pop_of[root]).sends.get((pop, pos), ()):
            out.append(self._anchor(root, target))
        return out

    def parent(self, root: str, member: str) -> str | None:
        """Whom `member` takes `root`'s writes from (None: the root, or unknown)."""
        if root not in self._pop_of or member not in self._pop_of or member == root:
            return None
        pop, pos = self._position(root, member)
        if pos > 0:
            return self._at(root, pop, (pos - 1) // self.fanout)
        src_pop, src_pos = self._plan(self._pop_of[root]).via[pop]
        return self._at(root, src_pop, src_pos)

    def path_ms(self, root: str, member: str) -> float | None:
        """The model latency from `root` to `member` along its tree; None if either is unknown."""
        if root not in self._pop_of or member not in self._pop_of:
            return None
        pop, pos = self._position(root, member)
        return self._plan(self._pop_of[root]).arrive[pop] + self._depth(pos) * self._ms(pop, pop)


__all__ = ["CROSS", "FANOUT", "RootTrees"]
