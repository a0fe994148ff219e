"""A tree of its own for every root, from its very first write, where replicas share POPs.

With one replica per POP, plumtree's shared seed tree (the POPs' minimum spanning tree) is
a fine first tree and each root's own tree relaxes from it in a few writes. With many
replicas per POP (a CDN: 1,000 replicas on 54 POPs) most roots write once or twice, so
their writes follow the shared tree, which suits no root: long ways round, and every
make-before-break switch towards a faster path costs a duplicate. Yet where every node
knows each member's POP and the latency between POPs, each can compute, on its own and
with no message exchanged, the same good tree for any root:

- Every POP's replicas form one `fanout`-ary tree, in sorted order under the POP's first
  replica (its head): the same tree for every root. A node that finds a child dead (one round
  trip without an ack) routes round it for every root's writes at once; with trees that
  depended on the root, each root's first write paid that round trip again (after half of 300
  replicas crashed, the median write took 3.0x the physical limit, against 1.2 on the shared
  seed tree, whose repairs serve every root).
- The root sends to its own subtree and to its POP's head, which sends to the rest of the POP.
- The root's POP fans the write out to every other POP directly, to each POP's head (one hop
  each way is the physical limit): its replicas share the sends, `cross` each at most, the
  nearest POPs taken first (a degree-bounded shortest-path tree, Dijkstra's order), so the
  farthest POP is reached over a direct link from a replica a hop or two (~1 ms each) below the
  root. Where the root's POP has too few replicas for that, a POP already reached relays to
  others (its head sends on).

Every node sends at most `fanout + cross + 1` payloads per write. The cross-POP plan depends
only on the root's POP (positions in its tree, not names), so it is computed once per POP;
a node's children and parent for a root are then a few index sums.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from heapq import heappop, heappush

FANOUT = 4  # children inside a POP
CROSS = 4  # sends to other POPs, per replica


class _Plan:
    """For one root POP: which position of which POP's tree sends to which other POP, and when
    the write reaches each other POP's head (model ms from the root)."""

    __slots__ = ("arrive", "sends", "via")

    def __init__(self) -> None:
        self.arrive: dict[str, float] = {}  # POP -> model ms at its head
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

    def _position(self, member: str) -> tuple[str, int]:
        """`member`'s POP and its position in that POP's tree: the POP's members in sorted order,
        the first (the head) at the top. The same for every root."""
        return self._pop_of[member], self._index[member]

    def _depth(self, pos: int) -> int:
        d, first, width = 0, 0, 1  # positions first .. first+width-1 are at depth d
        while pos >= first + width:
            first += width
            width *= self.fanout
            d += 1
        return d

    def _up(self, pos: int) -> int:
        return (pos - 1) // self.fanout

    def _below(self, pos: int, top: int) -> bool:
        """Is position `pos` in the subtree under position `top`?"""
        while pos > top:
            pos = self._up(pos)
        return pos == top

    # -- the cross-POP plan --------------------------------------------------------------

    def _plan(self, home: str) -> _Plan:
        plan = self._plans.get(home)
        if plan is not None:
            return plan
        plan = self._plans[home] = _Plan()
        hop = self._ms(home, home)
        ms = self._ms
        left = {pop for pop in self._members if pop != home}
        capacity: dict[tuple[str, int], int] = {}
        heap: list[tuple[float, str, int, str]] = []  # (arrival, sender POP, sender position, target POP)

        def offer(pop: str, pos: int, at: float) -> None:
            capacity[(pop, pos)] = self.cross
            for target in left:
                heappush(heap, (at + ms(pop, target), pop, pos, target))

        for pos in range(len(self._members[home])):
            # through the head, a hop from the root (a root's own subtree hears it sooner)
            offer(home, pos, (self._depth(pos) + 1) * hop)
        while left and heap:
            at, pop, pos, target = heappop(heap)
            if target not in left or capacity[(pop, pos)] == 0:
                continue
            capacity[(pop, pos)] -= 1
            left.discard(target)
            plan.arrive[target] = at
            plan.sends.setdefault((pop, pos), []).append(target)
            plan.via[target] = (pop, pos)
            offer(target, 0, at)  # its head may relay (only needed when the home POP is small)
        return plan

    # -- what a node asks ----------------------------------------------------------------

    def children(self, root: str, member: str) -> list[str]:
        """Whom `member` sends `root`'s writes to (none for an unknown root or member)."""
        if root not in self._pop_of or member not in self._pop_of:
            return []
        pop, pos = self._position(member)
        home = self._pop_of[root]
        ids = self._members[pop]
        first = pos * self.fanout + 1
        out = [ids[p] for p in range(first, min(first + self.fanout, len(ids)))]
        if pop == home:
            if member == root:
                if pos != 0:
                    out.append(ids[0])  # the head, for the rest of the home POP
            else:
                out = [c for c in out if c != root]  # the root's subtree hears it from the root
        for target in self._plan(home).sends.get((pop, pos), ()):
            out.append(self._members[target][0])
        return out

    def depth(self, member: str) -> int:
        """How far below its POP's head `member` sits (the head: 0): the same for every root."""
        return self._depth(self._index[member]) if member in self._index else 1 << 30

    def above(self, member: str) -> list[str]:
        """`member`'s ancestors in its POP's tree, its parent first and the head last (the same
        for every root). While one of them lives, only it sends to `member`; when all are dead,
        a sender in every other POP does."""
        if member not in self._pop_of:
            return []
        pop, pos = self._position(member)
        ids, out = self._members[pop], []
        while pos > 0:
            pos = self._up(pos)
            out.append(ids[pos])
        return out

    def parent(self, root: str, member: str) -> str | None:
        """Whom `member` takes `root`'s writes from (None: the root, or unknown)."""
        if root not in self._pop_of or member not in self._pop_of or member == root:
            return None
        pop, pos = self._position(member)
        if pos > 0:
            return self._members[pop][self._up(pos)]
        if pop == self._pop_of[root]:
            return root  # the home POP's head
        src_pop, src_pos = self._plan(self._pop_of[root]).via[pop]
        return self._members[src_pop][src_pos]

    def path_ms(self, root: str, member: str) -> float | None:
        """The model latency from `root` to `member` along its tree; None if either is unknown."""
        if root not in self._pop_of or member not in self._pop_of:
            return None
        pop, pos = self._position(member)
        hop = self._ms(pop, pop)
        home = self._pop_of[root]
        if pop != home:
            return self._plan(home).arrive[pop] + self._depth(pos) * hop
        top = self._index[root]
        if self._below(pos, top):
            return (self._depth(pos) - self._depth(top)) * hop
        return (self._depth(pos) + (top != 0)) * hop


__all__ = ["CROSS", "FANOUT", "RootTrees"]
