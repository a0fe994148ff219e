"""A replica's change feed: every key it changed, in order, for watchers (`GET .../watch`).

The node records one `Change` per key each time it applies something that changed it: its
own write, a remote delta (dissemination or anti-entropy), a content repair. Each change gets
the next number of a per-feed sequence; the feed keeps the latest `capacity` (10,000) in a
ring, so memory is bounded whatever the write rate. A change carries the key, its type, who
wrote it (`origin`: the actor of its dots when they are all one actor's, else None) and the
replica's version vector just after it; the key's value is not kept (watchers read it when they
send, so an event may show a value newer than its own change, never an older one).

Cursors are `RUN.SEQ`: RUN names this feed (a random id the driver chooses; a new one for every
server start, a replica that lost its state, a rebuilt cluster), SEQ the last change seen.
`position` turns a cursor back into a SEQ, or None when the changes after it are no longer all
known here (another RUN, older than the ring, ahead of the sequence): the watcher must then
re-list the keys and go on from now (a `reset`). No cursor means "from now".

A `Watcher` is one connection's place in the feed: no queue of its own (the ring is the
queue), only how far it got. It is `lost` once the ring has dropped a change it had not yet
taken, which is how a reader that is too slow is found: it is told (`overflow`) and dropped.

Pure and synchronous like the rest of the core: waking a connection is the caller's business
(`subscribe` calls back after every record, on the thread that recorded).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .errors import InvalidCursor

RING = 10_000  # changes kept per replica: how far behind a watcher may fall, and a resume may reach back
_RUN = re.compile(r"^[0-9A-Za-z]{1,32}$")
_CURSOR = re.compile(r"^([0-9A-Za-z]{1,32})\.([0-9]{1,18})$")


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    ns: str
    key: str
    origin: str | None  # the actor whose write it was, when the change came from one actor's dots
    via: str  # local, payload (dissemination), ae (anti-entropy), repair (content anti-entropy)
    version_vector: dict[str, int]  # the replica's, just after it (shared by the keys of one delta)


def origin_of(dots: Iterable) -> str | None:
    """The one actor that minted every dot, or None (several actors, or no dots: a repair)."""
    actors = {d[0] for d in dots}
    return actors.pop() if len(actors) == 1 else None


class ChangeFeed:
    def __init__(self, run: str, capacity: int = RING) -> None:
        if not _RUN.match(run):
            raise ValueError("a feed's run id is 1 to 32 letters and digits")
        if capacity < 1:
            raise ValueError("a feed keeps at least one change")
        self.run = run
        self.capacity = capacity
        self.seq = 0  # the latest change's number; 0: none yet
        self._ring: deque[Change] = deque(maxlen=capacity)
        self._subs: list[Callable[[], object]] = []

    # -- writing -----------------------------------------------------------------------------

    def record(self, keys: Iterable[tuple[str, str]], origin: str | None, via: str,
               version_vector: dict[str, int]) -> None:
        """One change per key (in the order given), then every subscriber is called once."""
        ring = self._ring
        n = 0
        for ns, key in keys:
            self.seq += 1
            ring.append(Change(self.seq, ns, key, origin, via, version_vector))
            n += 1
        if n:
            for fn in list(self._subs):
                fn()

    def renew(self, run: str) -> None:
        """Start a new run: what was recorded may not have happened after all (a replica rolled
        back to its durable state), so every cursor so far, and every watcher, must reset."""
        if not _RUN.match(run):
            raise ValueError("a feed's run id is 1 to 32 letters and digits")
        self.run = run
        self._ring.clear()
        for fn in list(self._subs):
            fn()

    def subscribe(self, fn: Callable[[], object]) -> Callable[[], None]:
        """`fn()` after every record (synchronously: it must not block); returns the unsubscribe."""
        self._subs.append(fn)

        def unsubscribe() -> None:
            if fn in self._subs:
                self._subs.remove(fn)

        return unsubscribe

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    # -- reading -----------------------------------------------------------------------------

    @property
    def oldest(self) -> int:
        """The number of the oldest change held (seq + 1 when none is)."""
        return self._ring[0].seq if self._ring else self.seq + 1

    def cursor(self, seq: int) -> str:
        return f"{self.run}.{seq}"

    def position(self, cursor: str | None) -> int | None:
        """Where a watcher resumes: the SEQ of a cursor whose later changes are all held here;
        None for a cursor of another run, older than the ring or ahead of it (reset: re-list);
        `self.seq` (from now) without one. InvalidCursor for text that is no cursor at all."""
        if cursor is None:
            return self.seq
        m = _CURSOR.match(cursor)
        if m is None:
            raise InvalidCursor("a watch cursor is the `id` of an event the watch sent (RUN.SEQ)")
        run, seq = m.group(1), int(m.group(2))
        if run != self.run or seq > self.seq or seq + 1 < self.oldest:
            return None
        return seq

    def after(self, seq: int, limit: int) -> list[Change]:
        """Up to `limit` changes after `seq`, oldest first (those still held)."""
        ring = self._ring
        if not ring or seq >= self.seq:
            return []
        start = max(0, seq + 1 - ring[0].seq)
        out = []
        for i in range(start, min(len(ring), start + limit)):
            out.append(ring[i])
        return out


class Watcher:
    """One connection's place in a feed and what it wants (a key prefix, some types)."""

    def __init__(self, feed: ChangeFeed, pos: int, *, prefix: str = "", types: frozenset[str] | None = None) -> None:
        self.feed = feed
        self.run = feed.run  # the run its position counts in: another one means reset
        self.pos = pos  # the last change taken (sent or passed over by the filter)
        self.prefix = prefix
        self.types = types

    @property
    def behind(self) -> int:
        """Changes recorded since the last one taken: this connection's queue, held by the ring."""
        return self.feed.seq - self.pos

    @property
    def renewed(self) -> bool:
        """The feed started a new run since: re-list, then go on from now (`restart`)."""
        return self.feed.run != self.run

    def restart(self) -> None:
        self.run, self.pos = self.feed.run, self.feed.seq

    @property
    def lost(self) -> bool:
        """The ring dropped a change this watcher had not taken: it cannot go on without a gap."""
        return self.feed.oldest > self.pos + 1

    def wants(self, c: Change) -> bool:
        return c.key.startswith(self.prefix) and (self.types is None or c.ns in self.types)

    def take(self, limit: int = 500) -> list[Change]:
        """The next changes it wants among up to `limit` recorded ones; moves past them all."""
        got = self.feed.after(self.pos, limit)
        if got:
            self.pos = got[-1].seq
        return [c for c in got if self.wants(c)]


__all__ = ["RING", "Change", "ChangeFeed", "Watcher", "origin_of"]
