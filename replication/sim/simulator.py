"""A deterministic discrete-event network that drives sans-IO replica nodes.

Virtual time is in milliseconds and starts at 0.0. Nothing here reads a clock or sleeps:
the simulator pops the earliest event off a heap, advances `now` to its time and calls
into one node, which answers with envelopes to send. Every random choice (loss,
duplication, reordering, latency jitter) comes from one `random.Random(seed)`, and heap
ties are broken by a sequence number, so the same seed gives the same run, event for
event, in any process (no set is ever iterated where order could matter).

Faults: per-message loss, duplication and reordering (probabilities), partitions into
groups (cross-group messages are dropped when sent, and when delivered if the partition
started while they were in flight), and crashes (a crashed node sends nothing, runs no
timers, and messages reaching it are dropped; it recovers either with its state, via
`node.restart`, or as a fresh node from the factory with the next incarnation).

Events: with a `sink`, every observable step is passed to it as a `SimEvent`
(kinds "sent", "delivered", "dropped", "write", "crash", "recover", "partition", "heal",
plus whatever the nodes report through `drain_events`). Without a sink no event object
is built at all: the delivery loop stays lean.

Traffic events are the costly part of a sink (two per message, tens of messages per write).
With `traffic_kinds`, only messages of those kinds are reported; with `traffic_limit`, at most
that many messages per `TRAFFIC_WINDOW_MS` of virtual time (each with its "sent" and then its
"delivered" or "dropped", never half of one). The rest are only counted. The counters
(`stats`) and the run itself are the same either way: the choice reads virtual time only,
never the random generator.

The sink is called synchronously from inside the loop; it must not call back into the
simulator's mutating methods.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Protocol

from ..changefeed import ChangeFeed
from ..derived import partition_groups
from ..errors import ReplicaDown
from ..geo import LatencyModel, Placement
from ..messages import Envelope, wire_size
from .errors import SimulationError, TimerRunaway, UnknownNode

__all__ = [
    "SimNode",
    "SimEvent",
    "Simulator",
    "SimulationError",
    "TimerRunaway",
    "UnknownNode",
    "MAX_TICKS_PER_INSTANT",
]

# A node whose timer deadline never moves past `now` is ticked at most this many times at
# one virtual instant; then the simulator raises instead of hanging.
MAX_TICKS_PER_INSTANT = 1000

# `traffic_limit` counts reported messages per window of this many virtual ms
TRAFFIC_WINDOW_MS = 100.0


# -- the node interface the simulator relies on (duck-typed) ---------------------------


class _ReplicaView(Protocol):
    def digest(self) -> str: ...

    def read(self, ns: str, key: str) -> Any: ...

    def list_keys(self, ns: str, prefix: str, cursor: str | None, limit: int) -> Any: ...


class _Written(Protocol):
    @property
    def view(self) -> Any: ...

    @property
    def envelopes(self) -> list[Envelope]: ...


class SimNode(Protocol):
    """What the simulator needs from a node. Sans-IO: every call gets `now` (virtual ms)."""

    id: str
    replica: _ReplicaView
    feed: ChangeFeed | None  # where its changes are told, when a driver attached one (the watch stream)

    def write(self, ns: str, key: str, op: dict, *, now: float) -> _Written: ...

    def receive(self, env: Envelope, *, now: float) -> list[Envelope]: ...

    def tick(self, *, now: float) -> list[Envelope]: ...

    def next_deadline(self) -> float | None: ...

    def restart(self, *, now: float) -> list[Envelope]: ...

    def drain_events(self) -> list[tuple]: ...


# -- events and errors --------------------------------------------------------------------


@dataclass(slots=True)
class SimEvent:
    """One observable step. `node` is the node it happened at (for messages: "sent" at the
    source, "delivered" and "dropped" at the destination), None for cluster-wide events."""

    t: float
    kind: str
    node: str | None
    data: dict


def _check_probability(name: str, p: object) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability between 0 and 1, got {p!r}")
    return float(p)


def _check_traffic_limit(n: object) -> int | None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ValueError(f"traffic_limit must be None or an int >= 0, got {n!r}")
    return n


# -- the simulator ------------------------------------------------------------------------

# The heap holds two kinds of entry, both NamedTuples so that the heap compares them as plain
# tuples, in C: by (t, seq), and seq is unique, so nothing past it is ever compared. (A class
# with __lt__ would cost a Python call per comparison.) They are built with `_new`, the
# NamedTuple constructor minus its Python-level __new__, which is half the cost per message.

_new = tuple.__new__


class _Delivery(NamedTuple):
    """A message on the wire, delivered (or dropped) at `t`."""

    t: float
    seq: int
    env: Envelope
    mid: int  # the simulator's id for this copy of the message (events name it)
    sent_at: float
    copy_of: int | None  # a duplicate's original mid


class _Timer(NamedTuple):
    """A node's timer, due at `t`; stale once the node's token has moved past `token`."""

    t: float
    seq: int
    node: str
    token: int


class _Down(NamedTuple):
    """A crashed node: since when, and whether it comes back without its state."""

    since: float
    lose_state: bool


def _event_data(ev: tuple) -> dict:
    """Nodes report (kind, fields); anything else keeps its positional parts under "args"."""
    return ev[1] if len(ev) == 2 and isinstance(ev[1], dict) else {"args": tuple(ev[1:])}


class Simulator:
    def __init__(
        self,
        node_ids: list[str],
        node_factory: Callable[[str, int], SimNode],
        latency_ms: Callable[[str, str, random.Random], float],
        *,
        # the seed, the probabilities, reorder_ms and traffic_limit are checked below: `object`,
        # since compiled an `int` or a `float` would take True as 1 and a str as a TypeError
        seed: object,
        loss: object = 0.0,
        duplicate: object = 0.0,
        reorder: object = 0.0,
        reorder_ms: object = 50.0,
        sink: Callable[[SimEvent], None] | None = None,
        traffic_events: bool = True,
        traffic_limit: object = None,
        traffic_kinds: Iterable[str] | None = None,
        work_clock: Callable[[], int] | None = None,
    ) -> None:
        ids = list(node_ids)
        if not ids:
            raise ValueError("a simulation needs at least one node")
        for nid in ids:
            if not isinstance(nid, str) or not nid:
                raise ValueError(f"node ids must be non-empty strings, got {nid!r}")
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"node id(s) listed twice: {', '.join(dupes)}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        if isinstance(reorder_ms, bool) or not isinstance(reorder_ms, (int, float)) or not 0.0 <= reorder_ms < math.inf:
            raise ValueError(f"reorder_ms must be a finite number >= 0, got {reorder_ms!r}")

        self._ids: list[str] = ids
        self._factory = node_factory
        self._latency = latency_ms
        self._rng = random.Random(seed)
        self._loss = _check_probability("loss", loss)
        self._duplicate = _check_probability("duplicate", duplicate)
        self._reorder = _check_probability("reorder", reorder)
        self._reorder_ms = float(reorder_ms)
        self._sink = sink
        # per-message events (sent/delivered/dropped) dominate the cost of a sink; a benchmark
        # that only wants node events turns them off
        self._msg_sink = sink if traffic_events else None
        self._traffic_limit = _check_traffic_limit(traffic_limit)
        self._traffic_kinds = None if traffic_kinds is None else frozenset(traffic_kinds)
        picky = traffic_limit is not None or traffic_kinds is not None
        self._shown: set[int] | None = set() if picky else None  # reported mids in flight
        self._window = -1.0  # the traffic window now filling (its index), and what it has left
        self._window_left = 0
        self._unshown = 0  # messages counted but not reported (traffic_limit)
        # Passed in, never read otherwise: a nanosecond wall clock to time each local write's own
        # work with (the coordination panel's "local in X us"); virtual time never depends on it.
        self._work_clock = work_clock
        self.last_write_work_ns: int | None = None

        self._now = 0.0
        self._heap: list[Any] = []  # _Delivery and _Timer entries, told apart by type in the loop
        self._seq = itertools.count()
        self._mids = itertools.count(1)
        self._in_flight = 0
        self._delivered = 0

        self._groups: dict[str, int] | None = None  # node id -> partition group, None when healed
        self._witness: str | None = None  # the node `converged` last found different
        self._down: dict[str, _Down] = {}
        self._incarnation: dict[str, int] = {}

        # timers: the deadline the node asked for, and a token that invalidates older heap entries
        self._tick_want: dict[str, float | None] = {}
        self._tick_token: dict[str, int] = {}
        self._tick_instant: dict[str, float] = {}
        self._tick_repeats: dict[str, int] = {}

        # counters
        self._sent_by_kind: dict[str, int] = {}
        self._delivered_by_kind: dict[str, int] = {}
        self._dropped_by_kind: dict[str, int] = {}
        self._dropped_by_reason: dict[str, int] = {}
        self._duplicated_by_kind: dict[str, int] = {}
        self._bytes_by_kind: dict[str, int] = {}  # counted while traffic is reported (a sink)
        self._payloads_delivered = 0
        self._ticks = 0
        self._writes = 0

        self._nodes: dict[str, SimNode] = {}
        for nid in ids:
            self._nodes[nid] = self._build(nid, 0)
            self._tick_want[nid] = None
            self._tick_token[nid] = 0
            self._tick_instant[nid] = -1.0
            self._tick_repeats[nid] = 0
        self._nodes_view = MappingProxyType(self._nodes)
        for nid in ids:
            node = self._nodes[nid]
            self._forward_node_events(nid, node, 0.0)
            self._reschedule(nid, node.next_deadline(), 0.0)

    @classmethod
    def from_placements(
        cls,
        placements: list[Placement],
        node_factory: Callable[[str, int], SimNode],
        model: LatencyModel,
        *,
        seed: int,
        **kw: Any,
    ) -> "Simulator":
        """Replicas at POPs; one message's latency is `model.sample_ms(pop_a, pop_b, rng)`."""
        placements = list(placements)
        return cls([p.id for p in placements], node_factory, _geo_latency(placements, model), seed=seed, **kw)

    # -- inspection -----------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self._now

    @property
    def nodes(self) -> Mapping[str, SimNode]:
        """id -> the node currently running under that id (read-only view)."""
        return self._nodes_view

    @property
    def node_ids(self) -> list[str]:
        return list(self._ids)

    def attach(self, *, sink: Callable[[SimEvent], None] | None = None, traffic_events: bool = True,
               wrap: Callable[[SimNode], SimNode] | None = None) -> None:
        """Between runs: start reporting to `sink` (as if given to the constructor) and/or put each
        running node inside `wrap(node)` (nodes built later come from the factory, which must wrap
        them too). A bench settles one cluster and forks it for each measurement."""
        if sink is not None:
            self._sink = sink
            self._msg_sink = sink if traffic_events else None
        if wrap is not None:
            for nid, node in self._nodes.items():
                self._nodes[nid] = wrap(node)

    def up(self, node_id: str) -> bool:
        self._check_id(node_id)
        return node_id not in self._down

    def incarnation(self, node_id: str) -> int:
        self._check_id(node_id)
        return self._incarnation.get(node_id, 0)

    def in_flight(self) -> int:
        """Messages scheduled for delivery and not yet delivered or dropped."""
        return self._in_flight

    @property
    def delivered_count(self) -> int:
        return self._delivered

    @property
    def stats(self) -> dict:
        """A snapshot of the counters: messages by kind, drops by reason, payloads delivered."""
        return {
            "sent": dict(self._sent_by_kind),
            "delivered": dict(self._delivered_by_kind),
            "dropped": dict(self._dropped_by_kind),
            "dropped_by_reason": dict(self._dropped_by_reason),
            "duplicated": dict(self._duplicated_by_kind),
            "bytes": dict(self._bytes_by_kind),
            "unshown": self._unshown,
            "messages_sent": sum(self._sent_by_kind.values()),
            "messages_delivered": self._delivered,
            "messages_dropped": sum(self._dropped_by_reason.values()),
            "payloads_delivered": self._payloads_delivered,
            "in_flight": self._in_flight,
            "ticks": self._ticks,
            "writes": self._writes,
        }

    @property
    def traffic_limit(self) -> int | None:
        return self._traffic_limit

    @property
    def traffic_kinds(self) -> frozenset[str] | None:
        return self._traffic_kinds

    @property
    def loss(self) -> float:
        return self._loss

    @property
    def duplicate(self) -> float:
        return self._duplicate

    @property
    def reorder(self) -> float:
        return self._reorder

    @property
    def partitioned(self) -> bool:
        return self._groups is not None

    def groups(self) -> list[list[str]] | None:
        """The partition in force as groups of node ids (in node order), or None when healed."""
        if self._groups is None:
            return None
        out: dict[int, list[str]] = {}
        for nid in self._ids:
            out.setdefault(self._groups[nid], []).append(nid)
        return [out[k] for k in sorted(out)]

    def digests(self) -> dict[str, str]:
        """State digest of every node that is up, in node order."""
        down = self._down
        return {nid: node.replica.digest() for nid, node in self._nodes.items() if nid not in down}

    def converged(self) -> bool:
        """True when every node that is up holds the same state. Asked after every event while a
        run waits for it: the node that differed last time is asked first, and the scan stops at
        the first difference, so a wait costs O(1) per event rather than O(nodes)."""
        down, nodes = self._down, self._nodes
        first = next((nodes[nid].replica.digest() for nid in self._ids if nid not in down), None)
        if first is None:
            return True  # nobody is up
        w = self._witness
        if w is not None and w not in down and nodes[w].replica.digest() != first:
            return False
        for nid in self._ids:
            if nid not in down and nodes[nid].replica.digest() != first:
                self._witness = nid
                return False
        return True

    def next_event_time(self) -> float | None:
        """Virtual time of the next live event, or None when nothing is scheduled."""
        heap = self._heap
        while heap:
            entry = heap[0]
            if type(entry) is _Timer and entry.token != self._tick_token[entry.node]:
                heapq.heappop(heap)  # a cancelled timer
                continue
            return entry.t
        return None

    # -- client operations ------------------------------------------------------------------

    def write(self, node_id: str, ns: str, key: str, op: dict) -> Any:
        """A local write at `node_id` now; its envelopes leave at once. Returns the node's view."""
        self._check_id(node_id)
        if node_id in self._down:
            raise ReplicaDown(node_id, self._down[node_id].since)
        node = self._nodes[node_id]
        now = self._now
        clock = self._work_clock
        if clock is None:
            written = node.write(ns, key, op, now=now)
        else:
            t0 = clock()
            written = node.write(ns, key, op, now=now)
            self.last_write_work_ns = clock() - t0
        self._writes += 1
        if self._sink is not None:
            self._sink(SimEvent(now, "write", node_id, {"ns": ns, "key": key}))
        self._after_call(node_id, node, written.envelopes, now)
        return written.view

    def check_up(self, node_id: str) -> None:
        """Raise what a read or write at `node_id` would before touching it: unknown, or down."""
        self._check_id(node_id)
        if node_id in self._down:
            raise ReplicaDown(node_id, self._down[node_id].since)

    def read(self, node_id: str, ns: str, key: str) -> Any:
        self._check_id(node_id)
        if node_id in self._down:
            raise ReplicaDown(node_id, self._down[node_id].since)
        return self._nodes[node_id].replica.read(ns, key)

    def list_keys(self, node_id: str, ns: str, prefix: str, cursor: str | None, limit: int) -> Any:
        self._check_id(node_id)
        if node_id in self._down:
            raise ReplicaDown(node_id, self._down[node_id].since)
        return self._nodes[node_id].replica.list_keys(ns, prefix, cursor, limit)

    # -- faults -----------------------------------------------------------------------------

    def set_loss(self, p: object) -> None:
        self._loss = _check_probability("loss", p)

    def set_duplicate(self, p: object) -> None:
        self._duplicate = _check_probability("duplicate", p)

    def set_reorder(self, p: object) -> None:
        self._reorder = _check_probability("reorder", p)

    def partition(self, groups: list[list[str]]) -> list[list[str]]:
        """Split the network. Unlisted nodes form one more group (`derived.partition_groups`).
        Returns the groups in force."""
        final = partition_groups(groups, self._ids, unknown=UnknownNode)
        self._groups = {nid: i for i, group in enumerate(final) for nid in group}
        if self._sink is not None:
            self._sink(SimEvent(self._now, "partition", None, {"groups": [list(g) for g in final]}))
        return final

    def heal(self) -> None:
        self._groups = None
        if self._sink is not None:
            self._sink(SimEvent(self._now, "heal", None, {}))

    def crash(self, node_id: str, lose_state: bool = False) -> None:
        """Stop a node: it sends nothing, its timers stop, messages to it are dropped.
        Crashing a node that is already down only upgrades it to losing its state."""
        self._check_id(node_id)
        if node_id in self._down:
            since, lost = self._down[node_id]
            self._down[node_id] = _Down(since, lost or bool(lose_state))
            return
        self._down[node_id] = _Down(self._now, bool(lose_state))
        self._cancel_tick(node_id)
        if self._sink is not None:
            self._sink(SimEvent(self._now, "crash", node_id, {"lose_state": bool(lose_state)}))

    def recover(self, node_id: str) -> None:
        """Bring a crashed node back: with its state (`node.restart`) or as a fresh node built
        by the factory with the next incarnation. Recovering a node that is up does nothing."""
        self._check_id(node_id)
        if node_id not in self._down:
            return
        lose_state = self._down.pop(node_id).lose_state
        now = self._now
        self._tick_repeats[node_id] = 0
        if lose_state:
            inc = self._incarnation.get(node_id, 0) + 1
            self._incarnation[node_id] = inc
            node = self._build(node_id, inc)
            self._nodes[node_id] = node
            outs: list[Envelope] = []
        else:
            inc = self._incarnation.get(node_id, 0)
            node = self._nodes[node_id]
            outs = node.restart(now=now)
        if self._sink is not None:
            self._sink(SimEvent(now, "recover", node_id, {"incarnation": inc, "lost_state": lose_state}))
        self._after_call(node_id, node, outs, now)

    # -- running ----------------------------------------------------------------------------

    def step(self) -> bool:
        """Process one event. False when nothing is left to process."""
        return self._run(math.inf, None, 1) > 0

    def run_until(self, t: float) -> int:
        """Process every event at or before `t`, then set the clock to `t`. Returns the count."""
        if not t >= self._now:
            raise ValueError(f"cannot run back in time: now is {self._now}, asked for {t}")
        n = self._run(t, None, -1)
        self._now = t
        return n

    def advance(self, t: float, max_events: int) -> bool:
        """Like `run_until(t)`, but stop after `max_events` events: a driver that must not
        block for long runs the simulation in such slices. True when the clock reached `t`
        (every event at or before it processed); False with the clock at the last event run."""
        if not t >= self._now:
            raise ValueError(f"cannot run back in time: now is {self._now}, asked for {t}")
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events!r}")
        if self._run(t, None, max_events) < max_events:
            self._now = t
            return True
        nxt = self.next_event_time()
        if nxt is None or nxt > t:
            self._now = t
            return True
        return False

    def run_for(self, ms: float) -> int:
        if not ms >= 0:
            raise ValueError(f"ms must be >= 0, got {ms!r}")
        return self.run_until(self._now + ms)

    def run_until_condition(self, pred: Callable[[], bool], max_ms: float) -> bool:
        """Step until `pred()` holds (checked first and after each event). False, with the
        clock at now + max_ms, if virtual time would pass that point first."""
        if not max_ms >= 0:
            raise ValueError(f"max_ms must be >= 0, got {max_ms!r}")
        if pred():
            return True
        limit = self._now + max_ms
        if self._run(limit, pred, -1) < 0:
            return True
        self._now = limit
        return False

    # -- the loop -----------------------------------------------------------------------------

    def _run(self, until: float, pred: Callable[[], bool] | None, max_events: int) -> int:
        """Process events with time <= until. Returns how many, or -1 when `pred` became true."""
        heap = self._heap
        pop = heapq.heappop
        nodes = self._nodes
        down = self._down
        sink = self._sink
        msg_sink = self._msg_sink
        shown = self._shown
        delivered_by_kind = self._delivered_by_kind
        tick_token = self._tick_token
        tick_want = self._tick_want
        send = self._send
        reschedule = self._reschedule
        timer = _Timer
        processed = 0
        while heap:
            entry = heap[0]
            t = entry.t
            if t > until:
                break
            pop(heap)
            if type(entry) is timer:
                nid = entry.node
                if entry.token != tick_token[nid]:
                    continue  # cancelled: a newer deadline replaced it
                self._now = t
                tick_want[nid] = None
                self._run_tick(nid, t)
            else:
                self._now = t
                self._in_flight -= 1
                env = entry.env
                src = env.src
                dst = env.dst
                groups = self._groups
                if groups is not None and groups[src] != groups[dst]:
                    self._drop(env, entry.mid, "partition", t, self._reported(entry.mid))
                elif dst in down:
                    self._drop(env, entry.mid, "crashed", t, self._reported(entry.mid))
                else:
                    node = nodes[dst]
                    outs = node.receive(env, now=t)
                    self._delivered += 1
                    kind = env.msg.kind
                    delivered_by_kind[kind] = delivered_by_kind.get(kind, 0) + 1
                    if kind == "payload":  # only payload frames carry any (`Envelope.payloads`)
                        payloads = env.payloads
                        self._payloads_delivered += payloads
                    else:
                        payloads = 0
                    if msg_sink is not None:
                        mid = entry.mid
                        if shown is None or mid in shown:
                            if shown is not None:
                                shown.remove(mid)
                            msg_sink(SimEvent(t, "delivered", dst, {
                                "src": src, "dst": dst, "kind": kind, "payloads": payloads,
                                "mid": mid, "sent_at": entry.sent_at, "copy_of": entry.copy_of,
                            }))
                    evs = node.drain_events()
                    if evs and sink is not None:
                        for ev in evs:
                            sink(SimEvent(t, ev[0], dst, _event_data(ev)))
                    if outs:
                        send(dst, outs, t)
                    d = node.next_deadline()
                    if d != tick_want[dst]:
                        reschedule(dst, d, t)
            processed += 1
            if pred is not None and pred():
                return -1
            if processed == max_events:
                break
        return processed

    def _run_tick(self, nid: str, t: float) -> None:
        if self._tick_instant[nid] == t:
            repeats = self._tick_repeats[nid] + 1
            if repeats >= MAX_TICKS_PER_INSTANT:
                raise TimerRunaway(
                    f"node {nid!r} was ticked {repeats} times at t={t} ms and its next_deadline() "
                    f"still does not move past now: a timer bug in the node"
                )
            self._tick_repeats[nid] = repeats
        else:
            self._tick_instant[nid] = t
            self._tick_repeats[nid] = 0
        node = self._nodes[nid]
        self._ticks += 1
        outs = node.tick(now=t)
        self._after_call(nid, node, outs, t)

    def _after_call(self, nid: str, node: SimNode, outs: list[Envelope], now: float) -> None:
        self._forward_node_events(nid, node, now)
        if outs:
            self._send(nid, outs, now)
        d = node.next_deadline()
        if d != self._tick_want[nid]:
            self._reschedule(nid, d, now)

    def _forward_node_events(self, nid: str, node: SimNode, now: float) -> None:
        evs = node.drain_events()
        sink = self._sink
        if evs and sink is not None:
            for ev in evs:
                sink(SimEvent(now, ev[0], nid, _event_data(ev)))

    def _reschedule(self, nid: str, deadline: float | None, now: float) -> None:
        """Make the node's one live timer fire at `deadline` (at `now` if already past)."""
        self._tick_want[nid] = deadline
        token = self._tick_token[nid] + 1
        self._tick_token[nid] = token
        if deadline is None:
            return
        if not deadline == deadline:  # NaN
            raise SimulationError(f"node {nid!r} returned a NaN deadline")
        heapq.heappush(self._heap, _new(_Timer, (deadline if deadline > now else now, next(self._seq), nid, token)))

    def _cancel_tick(self, nid: str) -> None:
        self._tick_want[nid] = None
        self._tick_token[nid] += 1

    def _send(self, src: str, outs: list[Envelope], now: float) -> None:
        """Put a node's envelopes on the wire at `now`."""
        nodes = self._nodes
        rng = self._rng
        rand = rng.random
        latency = self._latency
        heap = self._heap
        push = heapq.heappush
        seq = self._seq
        mids = self._mids
        loss = self._loss
        dup = self._duplicate
        reorder = self._reorder
        groups = self._groups
        sink = self._msg_sink
        shown = self._shown
        kinds, limit = self._traffic_kinds, self._traffic_limit
        wire_bytes = self._bytes_by_kind
        sent_by_kind = self._sent_by_kind
        in_flight = 0
        try:
            for env in outs:
                dst = env.dst
                if dst not in nodes or env.src != src:
                    self._bad_envelope(src, env)
                kind = env.msg.kind
                sent_by_kind[kind] = sent_by_kind.get(kind, 0) + 1
                mid = next(mids)
                if sink is None:
                    shows = report = False
                else:
                    size = wire_size(env.msg)
                    wire_bytes[kind] = wire_bytes.get(kind, 0) + size
                    shows = kinds is None or kind in kinds  # a kind reported (its copy too), within the limit
                    report = shows and (limit is None or self._within_limit(now))
                if groups is not None and groups[src] != groups[dst]:
                    if report:
                        self._emit_sent(env, mid, now, None, None, size)
                    self._drop(env, mid, "partition", now, report)
                    continue
                if loss and rand() < loss:
                    if report:
                        self._emit_sent(env, mid, now, None, None, size)
                    self._drop(env, mid, "loss", now, report)
                    continue
                lat = latency(src, dst, rng)
                if reorder and rand() < reorder:
                    lat += rng.uniform(0.0, self._reorder_ms)
                if not lat >= 0.0:
                    raise SimulationError(f"latency_ms({src!r}, {dst!r}) gave {lat!r}; it must be >= 0")
                push(heap, _new(_Delivery, (now + lat, next(seq), env, mid, now, None)))
                in_flight += 1
                if report:
                    if shown is not None:
                        shown.add(mid)
                    self._emit_sent(env, mid, now, now + lat, None, size)
                if dup and rand() < dup:
                    copy = next(mids)
                    lat = latency(src, dst, rng)
                    if reorder and rand() < reorder:
                        lat += rng.uniform(0.0, self._reorder_ms)
                    if not lat >= 0.0:
                        raise SimulationError(f"latency_ms({src!r}, {dst!r}) gave {lat!r}; it must be >= 0")
                    push(heap, _new(_Delivery, (now + lat, next(seq), env, copy, now, mid)))
                    in_flight += 1
                    self._duplicated_by_kind[kind] = self._duplicated_by_kind.get(kind, 0) + 1
                    if sink is not None:
                        wire_bytes[kind] += size
                        if shows and (limit is None or self._within_limit(now)):
                            if shown is not None:
                                shown.add(copy)
                            self._emit_sent(env, copy, now, now + lat, mid, size)
        finally:
            self._in_flight += in_flight

    def _within_limit(self, now: float) -> bool:
        """Whether one more message may be reported in this window of virtual time
        (`traffic_limit`); counted as unshown if not."""
        window = now // TRAFFIC_WINDOW_MS
        if window != self._window:
            self._window, self._window_left = window, self._traffic_limit or 0  # set: the caller's test
        if self._window_left > 0:
            self._window_left -= 1
            return True
        self._unshown += 1
        return False

    def _reported(self, mid: int) -> bool:
        """Whether a message now leaving the wire was reported when sent (its last event)."""
        shown = self._shown
        if shown is None:
            return True
        if mid in shown:
            shown.remove(mid)
            return True
        return False

    def _emit_sent(self, env: Envelope, mid: int, now: float, deliver_at: float | None, copy_of: int | None,
                   size: int) -> None:
        sink = self._msg_sink
        assert sink is not None  # the caller's test
        sink(SimEvent(now, "sent", env.src, {
            "src": env.src, "dst": env.dst, "kind": env.msg.kind, "payloads": env.payloads,
            "bytes": size,
            "mid": mid, "deliver_at": deliver_at, "copy_of": copy_of,
        }))

    def _drop(self, env: Envelope, mid: int, reason: str, now: float, report: bool) -> None:
        kind = env.msg.kind
        self._dropped_by_kind[kind] = self._dropped_by_kind.get(kind, 0) + 1
        self._dropped_by_reason[reason] = self._dropped_by_reason.get(reason, 0) + 1
        if report and self._msg_sink is not None:
            self._msg_sink(SimEvent(now, "dropped", env.dst, {
                "src": env.src, "dst": env.dst, "kind": kind, "payloads": env.payloads,
                "mid": mid, "reason": reason,
            }))

    def _bad_envelope(self, src: str, env: Envelope) -> None:
        if env.src != src:
            raise SimulationError(f"node {src!r} emitted an envelope whose src is {env.src!r}")
        raise SimulationError(f"node {src!r} sent a message to unknown replica {env.dst!r}")

    # -- helpers ------------------------------------------------------------------------------

    def _build(self, nid: str, incarnation: int) -> SimNode:
        node = self._factory(nid, incarnation)
        if getattr(node, "id", None) != nid:
            raise ValueError(f"node_factory({nid!r}, {incarnation}) built a node with id {getattr(node, 'id', None)!r}")
        return node

    def _check_id(self, node_id: object) -> None:
        if node_id not in self._nodes:
            raise UnknownNode(node_id, self._ids)


def _geo_latency(placements: list[Placement], model: LatencyModel) -> Callable[[str, str, random.Random], float]:
    """latency_ms for replicas placed at POPs: `model.sample_ms(pop_a, pop_b, rng)`.

    For a plain LatencyModel the one-way base of each POP pair is computed once and the
    jitter drawn exactly as `LatencyModel.sample_ms` draws it (tests hold the two equal);
    any other model is asked on every message.
    """
    pop_of = {p.id: p.pop for p in placements}
    if type(model) is not LatencyModel:
        def latency(src: str, dst: str, rng: random.Random) -> float:
            return model.sample_ms(pop_of[src], pop_of[dst], rng)

        return latency

    pops = {p.pop.id: p.pop for p in placements}
    matrix = {a: {b: model.one_way_ms(pa, pb) for b, pb in pops.items()} for a, pa in pops.items()}
    rows = {rid: matrix[pop.id] for rid, pop in pop_of.items()}
    col = {rid: pop.id for rid, pop in pop_of.items()}
    jitter = model.jitter_ms
    if jitter:
        def latency(src: str, dst: str, rng: random.Random) -> float:
            return rows[src][col[dst]] + rng.uniform(0.0, jitter)
    else:
        def latency(src: str, dst: str, rng: random.Random) -> float:
            return rows[src][col[dst]]

    return latency
