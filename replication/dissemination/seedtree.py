"""The tree plumtree starts from: the minimum spanning tree of the members under the latency model.

Classic Plumtree starts with every overlay link eager, so a root's first broadcast floods the
overlay and the duplicates prune it to a spanning tree: on 22 POPs the first write sent about
ten payloads per receiver. When every node can compute the latency between any two members
(the simulator's geographic model), each can compute the same spanning tree on its own, with no
message exchanged, and start with exactly its tree links eager: the very first write of every
root then follows a tree (one payload per receiver). The minimum spanning tree is the shared
tree that suits no root in particular, and it keeps each node's fanout small; each root's own
tree then relaxes towards its fastest paths by Plumtree's latency optimisation, and broken
links are repaired by IHAVE and GRAFT as before.

Every node must build the same tree, so the construction is deterministic: Prim's algorithm
over the complete graph, ties broken by the members' ids.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable


class SeedTree:
    """A spanning tree of `members` (ids) under `latency_ms(a, b)` (symmetric, one way)."""

    def __init__(self, members: Iterable[str], latency_ms: Callable[[str, str], float]) -> None:
        ids = sorted(set(members))
        self._adj: dict[str, list[str]] = {i: [] for i in ids}
        self._ms: dict[tuple[str, str], float] = {}
        self._paths: dict[str, dict[str, float]] = {}  # root -> member -> path latency along the tree
        if not ids:
            return
        # Prim, O(n^2): a few thousand latency look-ups for the largest clusters we place
        best: dict[str, tuple[float, str]] = {i: (latency_ms(ids[0], i), ids[0]) for i in ids[1:]}
        while best:
            nxt = min(best, key=lambda i: (best[i][0], i, best[i][1]))
            ms, via = best.pop(nxt)
            self._adj[nxt].append(via)
            self._adj[via].append(nxt)
            self._ms[(nxt, via)] = self._ms[(via, nxt)] = ms
            for i, (old, _) in best.items():
                d = latency_ms(nxt, i)
                if d < old:
                    best[i] = (d, nxt)
        for nbrs in self._adj.values():
            nbrs.sort()

    @classmethod
    def from_edges(cls, members: list[str], edges: list[tuple[str, str, float]]) -> SeedTree:
        """A tree given by its edges (a, b, one-way ms), built elsewhere (`sim.cluster.pop_seed_tree`)."""
        tree = cls([], lambda a, b: 0.0)
        tree._adj = {m: [] for m in members}
        for a, b, ms in edges:
            tree._adj[a].append(b)
            tree._adj[b].append(a)
            tree._ms[(a, b)] = tree._ms[(b, a)] = ms
        for nbrs in tree._adj.values():
            nbrs.sort()
        return tree

    def __contains__(self, member: str) -> bool:
        return member in self._adj

    def neighbours(self, member: str) -> list[str]:
        """`member`'s links in the tree (none for a member the tree was not built over)."""
        return list(self._adj.get(member, ()))

    def path_ms(self, root: str, member: str) -> float | None:
        """The model latency from `root` to `member` along the tree; None if either is unknown."""
        paths = self._paths.get(root)
        if paths is None:
            if root not in self._adj:
                return None
            paths = self._paths[root] = {root: 0.0}
            stack = [root]
            while stack:
                a = stack.pop()
                for b in self._adj[a]:
                    if b not in paths:
                        paths[b] = paths[a] + self._ms[(a, b)]
                        stack.append(b)
        return paths.get(member)

    def edges(self) -> list[tuple[str, str]]:
        return sorted((a, b) for a, nbrs in self._adj.items() for b in nbrs if a < b)

    def total_ms(self) -> float:
        return math.fsum(self._ms[e] for e in self.edges())
