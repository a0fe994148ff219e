"""Causal metadata: dots, version vectors, causal contexts with gaps, a hybrid logical clock.

A dot names one event: (replica, n) is the n-th event at that replica. A version
vector summarises a gap-free prefix of each replica's events. A causal context is a
version vector plus a small "cloud" of dots seen out of order; when the gaps fill,
the cloud folds back into the vector, so steady-state cost is O(replicas).
"""

from __future__ import annotations

from typing import Iterable, Iterator, NamedTuple, Protocol

from .errors import MalformedDelta

MAX_COUNTER = 2**63 - 1
MAX_REPLICA_ID_LEN = 64


class Dot(NamedTuple):
    replica: str
    counter: int


class VersionVector:
    """replica -> highest contiguous counter seen. Zero entries are never stored."""

    __slots__ = ("_v",)

    def __init__(self, entries: dict[str, int] | None = None) -> None:
        self._v: dict[str, int] = {r: n for r, n in (entries or {}).items() if n > 0}

    def get(self, replica: str) -> int:
        return self._v.get(replica, 0)

    def contains(self, dot: Dot) -> bool:
        return dot[1] <= self._v.get(dot[0], 0)

    def bump(self, replica: str, to: int) -> None:
        if to > self._v.get(replica, 0):
            self._v[replica] = to

    def merge(self, other: VersionVector) -> None:
        for r, n in other._v.items():
            if n > self._v.get(r, 0):
                self._v[r] = n

    def dominates(self, other: VersionVector) -> bool:
        """self >= other pointwise."""
        get = self._v.get
        for r, n in other._v.items():  # a plain loop: this runs on every anti-entropy digest
            if n > get(r, 0):
                return False
        return True

    def concurrent(self, other: VersionVector) -> bool:
        return not self.dominates(other) and not other.dominates(self)

    def meet(self, other: VersionVector) -> VersionVector:
        """Pointwise minimum: what both have seen."""
        return VersionVector({r: min(n, other.get(r)) for r, n in self._v.items()})

    def copy(self) -> VersionVector:
        vv = VersionVector()
        vv._v = dict(self._v)
        return vv

    def to_dict(self) -> dict[str, int]:
        return dict(sorted(self._v.items()))

    def items(self):
        return self._v.items()

    def __len__(self) -> int:
        return len(self._v)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VersionVector) and self._v == other._v

    def __repr__(self) -> str:
        return f"VersionVector({self.to_dict()})"


class Seen(Protocol):
    """What a join asks of a context: has it seen this dot? A CausalContext, or the store's own
    context seen without the damaged dots it is fetching back (`store._Minus`)."""

    def contains(self, dot: Dot) -> bool: ...


class CausalContext:
    """A set of dots stored as a version vector plus the dots beyond its gaps."""

    __slots__ = ("vv", "cloud")

    def __init__(self, vv: VersionVector | None = None, cloud: Iterable[Dot] = ()) -> None:
        self.vv = vv.copy() if vv is not None else VersionVector()
        self.cloud: set[Dot] = set()
        for d in cloud:
            self.add(d)

    @classmethod
    def of(cls, dots: Iterable[Dot]) -> CausalContext:
        return cls(cloud=dots)

    def contains(self, dot: Dot) -> bool:
        return dot[1] <= self.vv._v.get(dot[0], 0) or dot in self.cloud  # asked for every dot a join looks at

    def __contains__(self, dot: Dot) -> bool:  # not an alias of `contains`: mypyc compiles none
        return self.contains(dot)

    def next_dot(self, replica: str) -> Dot:
        """A dot above every dot of `replica` this context has seen, gaps included."""
        top = max((d[1] for d in self.cloud if d[0] == replica), default=self.vv.get(replica))
        return Dot(replica, top + 1)

    def add(self, dot: Dot) -> None:
        r, n = dot
        top = self.vv.get(r)
        if n <= top:
            return
        if n == top + 1:
            self.vv.bump(r, n)
            if self.cloud:
                self._fold(r)
        else:
            self.cloud.add(Dot(r, n))

    def _fold(self, replica: str) -> None:
        n = self.vv.get(replica)
        while (replica, n + 1) in self.cloud:
            n += 1
            self.cloud.discard(Dot(replica, n))
        self.vv.bump(replica, n)

    def merge(self, other: CausalContext) -> None:
        """Join `other` in, at a cost in proportion to `other` (and to this cloud only when the
        vector rises for an actor with dots in it): a store merges every delta it applies, and a
        lagging simulation's clouds hold thousands of dots that arrived out of order."""
        mine = self.vv._v
        get = mine.get
        raised = [r for r, n in other.vv._v.items() if n > get(r, 0)]
        for r in raised:
            mine[r] = other.vv._v[r]
        cloud = self.cloud
        touched = set(raised)
        for d in other.cloud:
            r, n = d
            top = get(r, 0)
            if n > top and d not in cloud:
                if n == top + 1 and (r, n + 1) not in cloud:
                    mine[r] = n  # the actor's next dot (a delta's usual one): the vector moves, nothing to fold
                else:
                    cloud.add(d)
                    touched.add(r)
        if not cloud or not touched:
            return
        if raised and any(d[1] <= get(d[0], 0) for d in cloud):
            self.cloud = cloud = {d for d in cloud if d[1] > get(d[0], 0)}
        for r in touched:
            if (r, get(r, 0) + 1) in cloud:
                self._fold(r)

    def covers(self, other: CausalContext) -> bool:
        """Every dot of `other` is in self."""
        theirs = other.cloud
        if not theirs and self.vv._v == other.vv._v:
            return True  # equal vectors: one C-level compare, the common case between peers
        if not self.vv.dominates(other.vv):
            return False
        get, cloud = self.vv._v.get, self.cloud
        for d in theirs:  # a delta's own dots: a loop, not a call per dot
            if d[1] > get(d[0], 0) and d not in cloud:
                return False
        return True

    def dots_not_in(self, other: CausalContext) -> Iterator[Dot]:
        """The dots of self that `other` lacks (lazily: the caller may stop early)."""
        theirs = other.vv._v
        cloud = other.cloud
        for r, top in self.vv._v.items():
            low = theirs.get(r, 0)
            if low >= top:
                continue
            for n in range(low + 1, top + 1):
                if not cloud or (r, n) not in cloud:
                    yield Dot(r, n)
        for d in sorted(self.cloud):  # sorted: set order varies between processes
            if not other.contains(d):
                yield d

    def dots(self) -> Iterator[Dot]:
        return self.dots_not_in(CausalContext())

    def copy(self) -> CausalContext:
        c = CausalContext()
        c.vv = self.vv.copy()
        c.cloud = set(self.cloud)
        return c

    def to_wire(self) -> list:
        return [self.vv.to_dict(), sorted([list(d) for d in self.cloud])]

    def to_packable(self) -> list:
        """`to_wire`'s msgpack bytes without a list made per dot (msgpack packs a tuple as it
        packs a list): for digests, taken per replica for every frame of a busy page."""
        return [self.vv.to_dict(), sorted(self.cloud)]

    @classmethod
    def from_wire(cls, obj: object) -> CausalContext:
        if not (isinstance(obj, (list, tuple)) and len(obj) == 2 and isinstance(obj[0], dict)):
            raise MalformedDelta("causal context must be [version_vector, cloud]")
        vv, cloud = obj
        if not isinstance(cloud, (list, tuple)):
            raise MalformedDelta("causal context cloud must be a list of dots")
        for r, n in vv.items():
            check_replica_id(r)
            if type(n) is not int or not 0 <= n <= MAX_COUNTER:
                raise MalformedDelta(f"version vector entry for {r!r} must be an integer in [0, 2^63)")
        return cls(VersionVector(vv), [dot_from_wire(d) for d in cloud])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CausalContext) and self.vv == other.vv and self.cloud == other.cloud

    def __repr__(self) -> str:
        return f"CausalContext({self.vv.to_dict()}, cloud={sorted(self.cloud)})"


def check_replica_id(r: object) -> str:
    if not isinstance(r, str) or not 0 < len(r) <= MAX_REPLICA_ID_LEN:
        raise MalformedDelta(f"replica id must be a non-empty string of at most {MAX_REPLICA_ID_LEN} characters")
    return r


def dot_from_wire(obj: object) -> Dot:
    if not (isinstance(obj, (list, tuple)) and len(obj) == 2):
        raise MalformedDelta("a dot must be [replica, counter]")
    r, n = obj
    check_replica_id(r)
    if type(n) is not int or not 1 <= n <= MAX_COUNTER:
        raise MalformedDelta("a dot's counter must be an integer in [1, 2^63)")
    return Dot(r, n)


class Timestamp(NamedTuple):
    """Hybrid logical time: wall milliseconds plus a counter for events in the same millisecond."""

    wall_ms: int
    logical: int


class HybridLogicalClock:
    """Kulkarni et al. HLC. Physical time is passed in; the clock never reads one.

    A remote timestamp further ahead of our physical clock than `max_drift_ms` is not
    adopted, so one peer with a broken clock cannot drag every timestamp into the future.
    """

    def __init__(self, max_drift_ms: int = 60_000) -> None:
        self.last = Timestamp(0, 0)
        self.max_drift_ms = max_drift_ms

    def now(self, physical_ms: float) -> Timestamp:
        pt = int(physical_ms)
        if pt > self.last.wall_ms:
            self.last = Timestamp(pt, 0)
        else:
            self.last = Timestamp(self.last.wall_ms, self.last.logical + 1)
        return self.last

    def advance_to(self, ts: Timestamp) -> None:
        """Never go back: the clock is at least at `ts`, a timestamp this replica made or saw
        before (restored from disk, or held by the state a reload replaced)."""
        if ts > self.last:
            self.last = Timestamp(*ts)

    def observe(self, remote: Timestamp, physical_ms: float) -> bool:
        """Fold in a timestamp seen on a message. Returns False when it was too far ahead to adopt."""
        pt = int(physical_ms)
        if remote.wall_ms - pt > self.max_drift_ms:
            return False
        wall = max(self.last.wall_ms, remote.wall_ms, pt)
        if wall == self.last.wall_ms == remote.wall_ms:
            logical = max(self.last.logical, remote.logical) + 1
        elif wall == self.last.wall_ms:
            logical = self.last.logical + 1
        elif wall == remote.wall_ms:
            logical = remote.logical + 1
        else:
            logical = 0
        self.last = Timestamp(wall, logical)
        return True
