"""A coordinated baseline: Raft-style log replication with one fixed leader and a majority quorum.

This exists to be compared with the coordination-free CRDT replicas on the same simulator and
the same geographic latency model (`Simulator.from_placements`). It is a SimNode: sans-IO,
driven by `write` / `receive` / `tick`, never reading a clock.

What it models, and what it simplifies:

- **Fixed leader, one term.** There is no election: the leader is chosen when the cluster is
  built (`ConsensusCluster(leader=...)`; by default `central_leader`, the POP whose leadership
  gives the lowest mean commit latency over all writers, ties to the first in placement order).
  With elections, a majority that lost its leader would elect a new one after an election
  timeout and carry on; with a fixed leader it stays unavailable until the leader is back.
  Since the leader never changes, logs never conflict, which keeps the follower side trivial.
- **Log replication.** A write submitted at the leader is appended to its log and sent at once
  to every follower (`raft_append`, carrying the leader's commit index as Raft's leaderCommit).
  Followers append and answer `raft_ack` with their log length. The leader commits an index once
  a majority *including itself* holds it, applies it, and tells the followers the new commit
  index (`raft_commit`).
- **Forwarding.** A write submitted at a follower is forwarded to the leader (`raft_forward`),
  which appends it like its own (deduplicated by (origin, request id)). The follower learns the
  commit through `raft_commit` (or a later append's commit index): that is when the write is
  acknowledged to its client. So a follower's commit latency is: one way to the leader, the
  leader's majority round trip, one way back.
- **Writes block until committed.** `write` returns a `Ticket`; the node records the virtual
  time at which each client write it received was committed and acknowledged
  (`committed_at(req)`, `commit_latency_ms(req)`, and a "raft_committed" event).
- **Partitions.** A leader cut off from a majority commits nothing; a follower cut off from the
  leader cannot even forward. Such writes stay *pending*: they are neither lost nor failed. The
  leader retries appends and the follower retries forwards every `retry_ms`, so once the
  partition heals they commit (late). A caller with a deadline (the benchmark's availability
  test) reports a write still pending at its deadline as unavailable.
- **Crashes** keep the log (`restart` resends what is outstanding). A node that lost its state
  comes back empty and is caught up by the leader's retries; a leader that lost its state is
  not modelled (nothing would repair it without elections).

Deterministic: no randomness at all, and no set iteration anywhere order matters.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from ..crdts import BY_NAMESPACE
from ..geo import LatencyModel, Placement
from ..messages import Envelope
from ..sim.simulator import Simulator
from ..values import check_namespace

__all__ = [
    "ConsensusCluster",
    "ConsensusNode",
    "ConsensusState",
    "Entry",
    "RaftAck",
    "RaftAppend",
    "RaftCommit",
    "RaftForward",
    "Ticket",
    "central_leader",
    "expected_commit_ms",
    "majority",
    "quorum_rtt_ms",
]

DEFAULT_RETRY_MS = 500.0


def majority(n: int) -> int:
    """Quorum size for n replicas: more than half, the leader included."""
    return n // 2 + 1


# -- messages (Envelope-compatible: plain data with a `kind`) ---------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry: a client write, named by the replica it was submitted at and its request id."""

    index: int
    term: int
    origin: str
    req: int
    ns: str
    key: str
    op: dict


@dataclass(slots=True)
class RaftAppend:
    """AppendEntries: entries after `prev_index` (possibly none: a heartbeat) and leaderCommit."""

    kind: ClassVar[str] = "raft_append"
    term: int
    prev_index: int
    entries: list[Entry]
    commit: int


@dataclass(slots=True)
class RaftAck:
    """A follower's answer: how long its log is now, and the commit index it knows."""

    kind: ClassVar[str] = "raft_ack"
    term: int
    match: int
    commit: int
    ok: bool = True  # False: the append did not follow on from the log (Raft's failed AppendEntries)


@dataclass(slots=True)
class RaftCommit:
    """The leader's commit index advanced."""

    kind: ClassVar[str] = "raft_commit"
    term: int
    commit: int


@dataclass(slots=True)
class RaftForward:
    """A client write submitted at a follower, on its way to the leader."""

    kind: ClassVar[str] = "raft_forward"
    origin: str
    req: int
    ns: str
    key: str
    op: dict


@dataclass(slots=True)
class _Forward:
    """A follower's client write forwarded to the leader, resent every `retry_ms` until it
    shows in the log."""

    msg: RaftForward
    last_sent: float


@dataclass(frozen=True, slots=True)
class Ticket:
    """What `write` returns: the write is pending until the node reports it committed."""

    node: str
    req: int
    submitted_at: float


class Submitted(NamedTuple):
    """A node's `write`, as the simulator takes it (`sim.SimNode`): the ticket, what to send."""

    view: Ticket
    envelopes: list[Envelope]


# -- the replicated state machine -----------------------------------------------------------


class ConsensusState:
    """Committed entries applied in log order, each by its type's sequential specification
    (`sequential` of each module in `crdts`: kv's last write wins, by log order; a counter sums;
    a set adds and removes; a map sets, counts and removes fields). One value per key: a
    coordinated log has no siblings."""

    def __init__(self) -> None:
        self.applied = 0
        self._data: dict[tuple[str, str], Any] = {}
        self._hash = hashlib.sha256()

    def apply(self, e: Entry) -> None:
        k = (e.ns, e.key)
        op = e.op
        self._data[k] = BY_NAMESPACE[e.ns].sequential(self._data.get(k), op)
        self.applied = e.index
        self._hash.update(json.dumps([e.index, e.origin, e.req, e.ns, e.key, op], sort_keys=True, default=repr).encode())

    def read(self, ns: str, key: str) -> Any:
        return self._data.get((ns, key))

    def digest(self) -> str:
        """Equal on two replicas exactly when they applied the same log prefix."""
        return self._hash.hexdigest()


# -- the node ---------------------------------------------------------------------------------


class ConsensusNode:
    """One replica of the coordinated baseline (leader or follower; see the module doc)."""

    def __init__(self, node_id: str, members: list[str], leader: str, *, retry_ms: float = DEFAULT_RETRY_MS,
                 term: int = 1) -> None:
        if leader not in members or node_id not in members:
            raise ValueError(f"leader {leader!r} and node {node_id!r} must both be members")
        if not retry_ms > 0:
            raise ValueError(f"retry_ms must be > 0, got {retry_ms!r}")
        self.id = node_id
        self.members = list(members)
        self.leader = leader
        self.term = term
        self.retry_ms = float(retry_ms)
        self.quorum = majority(len(self.members))
        self.followers = [m for m in self.members if m != leader]
        self.replica = ConsensusState()
        self.log: list[Entry] = []  # log[i] has index i + 1
        self.commit = 0
        self._events: list[tuple] = []
        self._next_req = 1
        # client writes submitted here: req -> submitted at / committed at / log index
        self._submitted: dict[int, float] = {}
        self._committed: dict[int, float] = {}
        self._index_of: dict[int, int] = {}
        self._waiting: list[tuple[int, int]] = []  # (index, req) of mine in the log, not yet committed
        self._forwards: dict[int, _Forward] = {}  # follower: req -> its forward, not yet in the log
        # leader bookkeeping (per follower, in member order)
        self._match = {f: 0 for f in self.followers}
        self._sent_upto = {f: 0 for f in self.followers}
        self._last_sent = {f: -math.inf for f in self.followers}
        self._known_commit = {f: 0 for f in self.followers}
        self._by_req: dict[tuple[str, int], int] = {}

    @property
    def is_leader(self) -> bool:
        return self.id == self.leader

    # -- what a client sees ------------------------------------------------------------------

    def committed_at(self, req: int) -> float | None:
        return self._committed.get(req)

    def commit_latency_ms(self, req: int) -> float | None:
        t = self._committed.get(req)
        return None if t is None else t - self._submitted[req]

    def pending(self) -> list[int]:
        """Client writes submitted here and not committed yet, in submission order."""
        return [r for r in self._submitted if r not in self._committed]

    # -- SimNode interface ---------------------------------------------------------------------

    def write(self, ns: str, key: str, op: dict, *, now: float) -> Submitted:
        if not isinstance(op, dict):
            raise TypeError("op must be a dict")
        BY_NAMESPACE[check_namespace(ns)].check(op)  # a bad operation never enters the log
        req = self._next_req
        self._next_req += 1
        self._submitted[req] = now
        self._events.append(("raft_submitted", {"req": req}))
        if self.is_leader:
            self._append_local(self.id, req, ns, key, op)
            outs = self._replicate(now)
            outs += self._advance_commit(now)
            return Submitted(Ticket(self.id, req, now), outs)
        fwd = RaftForward(self.id, req, ns, key, dict(op))
        self._forwards[req] = _Forward(fwd, now)
        return Submitted(Ticket(self.id, req, now), [Envelope(self.id, self.leader, fwd)])

    def receive(self, env: Envelope, *, now: float) -> list[Envelope]:
        m = env.msg
        if isinstance(m, RaftForward):
            return self._on_forward(m, now) if self.is_leader else []
        if isinstance(m, RaftAck):
            return self._on_ack(env.src, m, now) if self.is_leader else []
        if isinstance(m, RaftAppend):
            return self._on_append(m, now) if env.src == self.leader and not self.is_leader else []
        if isinstance(m, RaftCommit):
            if env.src == self.leader and not self.is_leader:
                self._learn_commit(m.commit, now)
            return []
        return []

    def tick(self, *, now: float) -> list[Envelope]:
        outs: list[Envelope] = []
        if self.is_leader:
            for f in self.followers:
                behind = self._match[f] < len(self.log) or self._known_commit[f] < self.commit
                if behind and now >= self._last_sent[f] + self.retry_ms:
                    outs.append(self._append_to(f, self._match[f], now))
        else:
            for fw in self._forwards.values():
                if now >= fw.last_sent + self.retry_ms:
                    fw.last_sent = now
                    outs.append(Envelope(self.id, self.leader, fw.msg))
        return outs

    def next_deadline(self) -> float | None:
        best: float | None = None
        if self.is_leader:
            for f in self.followers:
                if self._match[f] < len(self.log) or self._known_commit[f] < self.commit:
                    d = self._last_sent[f] + self.retry_ms
                    if best is None or d < best:
                        best = d
        else:
            for fw in self._forwards.values():
                d = fw.last_sent + self.retry_ms
                if best is None or d < best:
                    best = d
        return best

    def restart(self, *, now: float) -> list[Envelope]:
        for f in self.followers:
            self._last_sent[f] = -math.inf
        for fw in self._forwards.values():
            fw.last_sent = -math.inf
        return self.tick(now=now)

    def drain_events(self) -> list[tuple]:
        ev, self._events = self._events, []
        return ev

    # -- leader ----------------------------------------------------------------------------------

    def _append_local(self, origin: str, req: int, ns: str, key: str, op: dict) -> int:
        idx = len(self.log) + 1
        self.log.append(Entry(idx, self.term, origin, req, ns, key, dict(op)))
        self._by_req[(origin, req)] = idx
        if origin == self.id:
            self._mine(idx, req)
        return idx

    def _append_to(self, f: str, after: int, now: float) -> Envelope:
        self._sent_upto[f] = len(self.log)
        self._last_sent[f] = now
        return Envelope(self.id, f, RaftAppend(self.term, after, self.log[after:], self.commit))

    def _replicate(self, now: float) -> list[Envelope]:
        """Send every follower what it has not been sent yet (pipelined, like Raft)."""
        return [self._append_to(f, self._sent_upto[f], now) for f in self.followers
                if self._sent_upto[f] < len(self.log)]

    def _on_forward(self, m: RaftForward, now: float) -> list[Envelope]:
        if (m.origin, m.req) in self._by_req:
            return []  # a retry of a write already in the log: the retries of appends deliver it
        if m.origin not in self._match:
            return []
        self._append_local(m.origin, m.req, m.ns, m.key, m.op)
        return self._replicate(now) + self._advance_commit(now)

    def _on_ack(self, f: str, m: RaftAck, now: float) -> list[Envelope]:
        if f not in self._match or m.term != self.term:
            return []
        self._known_commit[f] = max(self._known_commit[f], m.commit)
        if not m.ok:
            # a gap: an earlier append was lost, or the follower came back empty. Its log is
            # exactly m.match long: resume from there at once.
            self._match[f] = m.match
            return [self._append_to(f, m.match, now)]
        self._match[f] = max(self._match[f], m.match)
        return self._advance_commit(now)

    def _advance_commit(self, now: float) -> list[Envelope]:
        # the quorum-th largest match index, the leader's own log counting as one
        marks = sorted([len(self.log)] + [self._match[f] for f in self.followers], reverse=True)
        candidate = marks[self.quorum - 1]
        if candidate <= self.commit:
            return []
        self._set_commit(candidate, now)
        return [Envelope(self.id, f, RaftCommit(self.term, self.commit)) for f in self.followers]

    # -- follower ----------------------------------------------------------------------------------

    def _on_append(self, m: RaftAppend, now: float) -> list[Envelope]:
        ok = m.prev_index <= len(self.log)
        if ok:
            for e in m.entries:
                if e.index == len(self.log) + 1:  # one leader, one term: an existing entry never differs
                    self.log.append(e)
                    if e.origin == self.id:
                        self._forwards.pop(e.req, None)
                        self._mine(e.index, e.req)
        # else: a gap (an earlier append was lost); the ack's match tells the leader where to resume
        self._learn_commit(m.commit, now)
        return [Envelope(self.id, self.leader, RaftAck(self.term, len(self.log), self.commit, ok))]

    def _learn_commit(self, commit: int, now: float) -> None:
        c = min(commit, len(self.log))
        if c > self.commit:
            self._set_commit(c, now)

    # -- both ----------------------------------------------------------------------------------------

    def _mine(self, idx: int, req: int) -> None:
        self._index_of[req] = idx
        self._waiting.append((idx, req))

    def _set_commit(self, c: int, now: float) -> None:
        self.commit = c
        while self.replica.applied < c:
            self.replica.apply(self.log[self.replica.applied])
        still = []
        for idx, req in self._waiting:
            if idx <= c:
                self._committed[req] = now
                self._events.append(("raft_committed", {"req": req, "index": idx,
                                                        "latency_ms": now - self._submitted[req]}))
            else:
                still.append((idx, req))
        self._waiting = still


# -- a cluster of them on the simulated WAN -------------------------------------------------------


def quorum_rtt_ms(leader: str, ids: list[str], rtt) -> float:
    """The leader's majority round trip: the (quorum-1)-th smallest RTT to a follower
    (0 when the leader alone is a majority). `rtt(a, b)` gives the round trip in ms."""
    k = majority(len(ids)) - 1
    if k == 0:
        return 0.0
    return sorted(rtt(leader, f) for f in ids if f != leader)[k - 1]


def expected_commit_ms(writer: str, leader: str, ids: list[str], one_way) -> float:
    """Commit latency without jitter or faults: forward to the leader, its majority round trip,
    the commit back to the writer. `one_way(a, b)` gives one-way latency in ms."""
    q = quorum_rtt_ms(leader, ids, lambda a, b: one_way(a, b) + one_way(b, a))
    if writer == leader:
        return q
    return one_way(writer, leader) + q + one_way(leader, writer)


def central_leader(placements: list[Placement], model: LatencyModel) -> str:
    """The replica whose leadership gives the lowest mean commit latency over every writer
    (ties: first in placement order). The fairest fixed leader for the comparison."""
    pop_of = {p.id: p.pop for p in placements}
    ids = [p.id for p in placements]

    def ow(a: str, b: str) -> float:
        return model.one_way_ms(pop_of[a], pop_of[b])

    best, best_cost = ids[0], math.inf
    for cand in ids:
        cost = sum(expected_commit_ms(w, cand, ids, ow) for w in ids) / len(ids)
        if cost < best_cost - 1e-9:
            best, best_cost = cand, cost
    return best


class ConsensusCluster:
    """ConsensusNodes at POPs on the simulated WAN (same latency model as SimCluster)."""

    def __init__(self, placements: list[Placement], *, leader: str | None = None, seed: int = 0,
                 model: LatencyModel | None = None, retry_ms: float = DEFAULT_RETRY_MS, **sim_kw: Any) -> None:
        self.placements = list(placements)
        self.ids = [p.id for p in self.placements]
        self.pop_of = {p.id: p.pop for p in self.placements}
        self.model = model or LatencyModel()
        self.leader = leader if leader is not None else central_leader(self.placements, self.model)
        if self.leader not in self.pop_of:
            raise ValueError(f"leader {self.leader!r} is not one of the replicas: {', '.join(self.ids)}")
        self.retry_ms = retry_ms
        self.sim = Simulator.from_placements(self.placements, self._make_node, self.model, seed=seed, **sim_kw)

    def _make_node(self, nid: str, incarnation: int) -> ConsensusNode:
        return ConsensusNode(nid, self.ids, self.leader, retry_ms=self.retry_ms)

    def one_way_ms(self, a: str, b: str) -> float:
        return self.model.one_way_ms(self.pop_of[a], self.pop_of[b])

    def expected_commit_ms(self, writer: str) -> float:
        return expected_commit_ms(writer, self.leader, self.ids, self.one_way_ms)

    def write(self, replica_id: str, ns: str, key: str, op: dict) -> Ticket:
        return self.sim.write(replica_id, ns, key, op)

    def committed(self, t: Ticket) -> bool:
        return self.sim.nodes[t.node].committed_at(t.req) is not None

    def latency_ms(self, t: Ticket) -> float | None:
        return self.sim.nodes[t.node].commit_latency_ms(t.req)

    def run_until_committed(self, tickets: list[Ticket], max_ms: float) -> bool:
        """Run until every ticket's write is committed and acknowledged, or `max_ms` passes."""
        return self.sim.run_until_condition(lambda: all(self.committed(t) for t in tickets), max_ms=max_ms)
