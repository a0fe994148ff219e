"""A write and its arrivals: which replica wrote it, when, and when each replica applied it.

The dashboard's stream (the snapshot's recent writes), the coordination panel (each POP's
latest write: its local cost, "everywhere in Y ms") and `bench propagation` (the time a write
takes to reach every replica, and whether anti-entropy had to repair it) all follow writes
the same way; this is that one way.

Sans-IO: it reads no clock. It is fed the cluster's "applied" events (`applied`, or `observe`
for the event bus's JSON dicts) and the times they carry, virtual milliseconds; and, by
whoever made a write, its wall-clock cost (`timed`). Rules:

- A write is known by its first dot, `"actor:counter"`. It starts when its origin applies it
  locally (an "applied" event with `via` "local"), or earlier, by `start`, for a caller that
  knows the dot before the write happens (the bench counts the write's own sends); its origin's
  local apply is then its first arrival.
- An arrival is the first time a replica applies any of the write's dots, with how it came
  (`via`: "local", "payload", "ae", ...). Later applications of the same dots at that replica
  (a duplicate, a repair of another of its dots) change nothing.
- Memory is bounded by what is kept: the `keep` most recent writes (None: all of them; the
  bench, whose run is finite), and with `latest_per_origin` also each origin's latest write
  however old (the coordination panel: one write per POP). A write that is no longer kept is
  forgotten with its dots: its late arrivals are ignored.
- With `everywhere` (a replica count), a write is complete once that many replicas have it;
  `completed` counts such writes, so a caller can wait for all of them.

The dashboard follows writes by the same rules from the stream it records (its
`static/js/writes.js`), so it can show any recorded moment again; the bound it keeps comes
from the `/ws` snapshot.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, Iterator

__all__ = ["Write", "WriteTracker", "write_id"]

DotKey = tuple  # (actor, counter): a `clocks.Dot`, or the same as a plain tuple


def write_id(dot) -> str:
    """A write's id on the wire and on the page: its first dot as `actor:counter`."""
    return f"{dot[0]}:{dot[1]}"


@dataclass(slots=True, eq=False)
class Write:
    id: str
    origin: str
    t: float  # virtual ms when its origin applied it (or when it was started)
    keys: list  # [namespace, key] refs, as the event carried them
    dots: tuple
    arrivals: dict[str, float] = field(default_factory=dict)  # replica -> first virtual ms it had it
    via: dict[str, str] = field(default_factory=dict)  # replica -> how it first came
    local_us: float | None = None  # wall-clock µs of the origin's own work, when timed

    def spread(self, up: Iterable[str]) -> tuple[int, int, float | None]:
        """Among the replicas `up`: how many have it, how many there are, and the virtual ms
        from the write until the last of them had it (None until every one has)."""
        arr = self.arrivals
        up = list(up)
        reached = [r for r in up if r in arr]
        everywhere = None
        if up and len(reached) == len(up):
            everywhere = max(arr[r] for r in up) - self.t
        return len(reached), len(up), everywhere

    def repaired(self) -> bool:
        """Some replica first got it from anti-entropy, not from dissemination."""
        return "ae" in self.via.values()

    def to_json(self) -> dict:
        """The form the `/ws` snapshot carries (and the page's recorder mirrors)."""
        return {"id": self.id, "origin": self.origin, "t": self.t, "keys": self.keys, "arrivals": self.arrivals}


class WriteTracker:
    def __init__(self, *, keep: int | None = None, latest_per_origin: bool = False,
                 everywhere: int | None = None) -> None:
        if keep is not None and keep < 0:
            raise ValueError("keep must be None or a count of writes")
        self.keep = keep
        self.latest_per_origin = latest_per_origin
        self.everywhere = everywhere
        self.completed = 0
        self._recent: OrderedDict[str, Write] = OrderedDict()  # the `keep` most recent, oldest first
        self._latest: dict[str, Write] = {}  # origin -> its latest write (with latest_per_origin)
        self._by_dot: dict[DotKey, Write] = {}

    # -- what is kept ------------------------------------------------------------------------------

    def recent(self) -> list[Write]:
        """The most recent writes kept, oldest first."""
        return list(self._recent.values())

    def latest(self, origin: str) -> Write | None:
        if self.latest_per_origin:
            return self._latest.get(origin)
        for w in reversed(self._recent.values()):
            if w.origin == origin:
                return w
        return None

    def get(self, dot) -> Write | None:
        """The write that dot belongs to, if it is kept."""
        return self._by_dot.get((dot[0], dot[1]))

    def __iter__(self) -> Iterator[Write]:
        return iter(self._recent.values())

    def __len__(self) -> int:
        return len(self._recent)

    # -- feeding it ----------------------------------------------------------------------------------

    def start(self, origin: str, t: float, dots: Iterable, keys: list | None = None) -> Write:
        """Follow a write from now on (see the module doc). Starting a dot already followed
        returns the write that has it."""
        dots = tuple(dots)
        if not dots:
            raise ValueError("a write has at least one dot")
        have = self._by_dot.get(dots[0])
        if have is not None:
            return have
        w = Write(write_id(dots[0]), origin, t, keys if keys is not None else [], dots)
        by_dot = self._by_dot
        for d in dots:
            by_dot[d] = w
        self._recent[w.id] = w
        if self.latest_per_origin:
            prev = self._latest.get(origin)
            self._latest[origin] = w
            if prev is not None and self._recent.get(prev.id) is not prev:
                self._forget(prev)
        if self.keep is not None:
            while len(self._recent) > self.keep:
                _, old = self._recent.popitem(last=False)
                if not (self.latest_per_origin and self._latest.get(old.origin) is old):
                    self._forget(old)
        return w

    def applied(self, node: str, t: float, dots, via: str, keys: list | None = None) -> Write | None:
        """One "applied" event: `dots` applied at `node` at virtual `t`. Returns the write it
        started (a local apply of dots not followed yet), else None. Dots must be hashable
        (`Dot`s or tuples)."""
        if not dots:
            return None
        by_dot = self._by_dot
        if via == "local" and dots[0] not in by_dot:
            w = self.start(node, t, dots, keys)
            self._arrive(w, node, t, via)
            return w
        for d in dots:  # the simulator's hot path under `bench propagation`: inlined `_arrive`
            w = by_dot.get(d)
            if w is not None:
                arr = w.arrivals
                if node not in arr:
                    arr[node] = t
                    w.via[node] = via
                    if len(arr) == self.everywhere:
                        self.completed += 1
        return None

    def observe(self, ev: dict) -> Write | None:
        """An event from the bus (`app.web.events`: dots as [actor, n] lists); kinds other than
        "applied" are ignored."""
        if ev.get("kind") != "applied":
            return None
        dots = ev.get("dots")
        if not dots:
            return None
        return self.applied(ev["node"], ev["t"], [(d[0], d[1]) for d in dots], ev.get("via", ""), ev.get("keys"))

    def timed(self, origin: str, t: float, local_us: float) -> None:
        """The write `origin` made at virtual `t` took `local_us` of wall-clock work there. Only
        its latest write, and only the first timing of it, counts."""
        w = self.latest(origin)
        if w is not None and w.t == t and w.local_us is None:
            w.local_us = local_us

    # -- inside ----------------------------------------------------------------------------------------

    def _arrive(self, w: Write, node: str, t: float, via: str) -> None:
        arr = w.arrivals
        if node in arr:
            return
        arr[node] = t
        w.via[node] = via
        if len(arr) == self.everywhere:
            self.completed += 1

    def _forget(self, w: Write) -> None:
        by_dot = self._by_dot
        for d in w.dots:
            if by_dot.get(d) is w:
                del by_dot[d]

