"""One real replica: the sans-IO node driven by asyncio, over TCP, with its state on disk.

The same `Node` the simulator runs, with real time, real sockets and SQLite. What this
module adds is the order of events around the disk:

- A local write is applied to the node (that is how its delta and dots are made), its delta
  appended to the log, and then nothing about it leaves the process until the flush that
  holds it has returned: the HTTP answer waits, and so does every envelope the node makes
  meanwhile, not only the write's own: an anti-entropy reply, a plumtree GRAFT answered
  from its cache, a gossip round, all are computed from a state that holds the write.
  (Membership probes alone go at once: they carry no replica state.)
- A remote delta is appended and flushed *before* the node receives its message, so the
  node never counts as applied what the disk does not hold. Messages from the network are
  handled strictly in arrival order: one waiting for the disk holds back those behind it.
  A delta the store already holds (a duplicate) costs no write.
- Reads wait until every local write before them is durable, so no one reads a value
  that a crash could take back.
- Group commit: one flush runs at a time, in a thread of its own (`worker`), taking everything appended
  so far; whatever arrives meanwhile goes in the next one.
- Checkpoints (every CHECKPOINT_EVERY_S, or at CHECKPOINT_LOG_ROWS) are captured on the loop
  in milliseconds, then packed and written in a worker thread while writes go on: a flush
  waits only for the checkpoint's transaction (one connection; SQLite has one writer anyway).
  A capture may hold local writes not yet durable: it is written once they are, never
  before (a failed flush must be able to take them back), and a rollback drops it.

A flush that fails (a full disk) leaves no trace: a write answered with an error has
changed nothing, here or anywhere. The storage first reads whether the batch landed after
all (an fsync error can follow a write that reached the disk); if it did, it counts as
durable. If not: the held envelopes are dropped, every waiting write is answered 503
`storage_unavailable` (those buffered behind the failed batch too: their deltas build on
it), remote deltas waiting for the disk are dropped (their senders' anti-entropy brings
them again), the replica is reloaded from the disk (checkpoint and log) and the
dissemination strategy recreated, so no cache still holds a payload of a failed write.
Nothing of those writes left the process, so minting their dots again is safe.

After an unclean stop (the storage says whether the last session closed cleanly) the
replica still comes back under a new actor (`lhr~1`, ...), now as a second line of defence:
nothing about a write that was not durable left the process, so its dots could be minted
again, but should some path out ever be missed, one dot would name two writes. Its old dots
come back from peers through anti-entropy, like anyone else's.

Idempotency keys (`replication.idempotency`): a keyed write's record (the answer it gave)
is appended with its delta and becomes durable in the same flush; only then does it join
the ledger that answers retries. A retry that arrives while the first is in flight waits
for it; a write that failed leaves no record, so its retry applies fresh.

Damaged storage (see `integrity`): with no peer to repair from, the replica refuses to start
unless told to accept the loss. Otherwise the storage salvages what verifies, and the replica
takes a fresh actor (its contexts are partial now) and *recovers*: reads and writes answer
`Recovering` (503 over HTTP) until its applied context covers the digest every peer sent
(peers declared dead are not waited for), or REPAIR_TIMEOUT_S passed. An empty data directory
joins through the same gate: it may be a replica that lost its state, so it waits to hear
which actors of its id peers hold (writes wait, reads are served: there is nothing wrong in
what it holds). After lost or repaired state the new actor carries a random tag (`lhr~3.9f2a0c1b`):
a peer holding a higher incarnation may be down, and a tag no one has used cannot collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import logging
import os
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..batch import BatchOp
from ..changefeed import ChangeFeed
from ..clocks import CausalContext
from ..delta import Delta
from ..errors import CorruptStorage, EdgeStateError, IdempotencyKeyReused, Recovering, StorageUnavailable
from ..idempotency import Answer, Ledger, Once, Record
from ..membership import DEAD
from ..messages import Ack, AeDigest, AeReply, Envelope, Gossip, GossipBatch, Ping, PingReq
from ..dissemination.seedtree import SeedTree
from .net import Transport
from .worker import Worker
from ..node import Node, NodeConfig, WriteNotSent, actor_for, incarnation_of, parse_actor
from .checkpoint import Capture
from .storage import Damage, Repair, Storage, describe

log = logging.getLogger("edgestate.replica")

JOIN_TIMEOUT_S = 5.0  # an empty replica waits at most this long to hear whether it existed before
REPAIR_TIMEOUT_S = 30.0  # a repaired replica answers 503 at most this long while it catches up
CHECKPOINT_LOG_ROWS = 20_000  # checkpoint once the log holds this many deltas...
CHECKPOINT_EVERY_S = 30.0  # ...or this long after the last one, if anything was logged
FLUSH_RETRY_S = 0.5  # between attempts to read the disk after a failed flush
READ_ATTEMPTS = 3  # a read whose wait for earlier writes ends in a rollback looks again this often
_PROBES = (Ping, Ack, PingReq)  # membership only: never held behind the disk


def next_actor(replica_id: str, stored: str | None) -> str:
    """The actor after an unclean stop: one incarnation past the stored one, in its lineage
    (the state is intact, so this directory knows the newest actor of that lineage)."""
    n, tag = parse_actor(replica_id, stored) or (0, None)
    return actor_for(replica_id, n + 1, tag)


def fresh_actor(replica_id: str, after: int) -> str:
    """An actor no one has used: incarnation `after + 1` in a new lineage with a random tag,
    for a replica that lost or repaired its state and cannot know every actor it had."""
    return actor_for(replica_id, after + 1, os.urandom(4).hex())


def _deltas(msg) -> list[Delta]:
    if isinstance(msg, Gossip):
        return [msg.delta]
    if isinstance(msg, GossipBatch):
        return [g.delta for g in msg.items]
    if isinstance(msg, AeReply):
        return [msg.delta]
    return []


@dataclass
class RunnerStats:
    writes: int = 0
    remote_deltas_logged: int = 0
    duplicates_skipped: int = 0
    flush_errors: int = 0
    rollbacks: int = 0  # failed flushes undone: writes refused, state reloaded from disk
    writes_refused: int = 0  # local writes answered storage_unavailable by a rollback (not in `writes`)
    held_dropped: int = 0  # envelopes made while a failed write was pending, never sent
    idempotent_replays: int = 0  # keyed writes answered from their record
    foreign_dropped: int = 0  # frames from replicas not in the peer list


@dataclass
class _Gate:
    """Closed while an empty replica learns who it was, or a repaired one catches up."""

    reason: str  # "joining" (writes wait) or "repairing" (reads and writes: Recovering)
    started: float
    heard: dict[str, CausalContext]  # each peer's first digest since start


@dataclass
class _Waiter:
    seq: int
    future: asyncio.Future | None
    record: Record | None = None  # joins the ledger once durable
    local: bool = False  # a local write's own delta (not a barrier, not a record alone)


class _Held(NamedTuple):
    """Envelopes made while local write `seq` was not durable: they may carry it."""

    seq: int
    envelopes: list[Envelope]


class _Inbound(NamedTuple):
    """A message from a peer, taken in once the log is durable up to `seq` (None: it logged
    nothing, and waits only to stay in order behind those that did)."""

    seq: int | None
    env: Envelope


@dataclass
class _Flight:
    """A keyed write between its append and its flush: retries with its key wait for it."""

    request: bytes
    done: asyncio.Future


class ReplicaRunner:
    def __init__(
        self,
        replica_id: str,
        peers: dict[str, tuple[str, int]],
        *,
        data_dir: str | Path,
        secret: bytes,
        strategy: str = "plumtree",
        delay_ms: Callable[[str], float] | None = None,
        seed: int | str = 0,
        config: NodeConfig | None = None,
        on_events: Callable[[list[tuple]], None] | None = None,
        on_sent: Callable[[str, str, float, int], None] | None = None,
        fresh_actor: str | None = None,
        ledger: Ledger | None = None,
        wall_clock: Callable[[], float] = time.time,
        accept_data_loss: bool = False,
        tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
        seed_tree: SeedTree | None = None,
    ) -> None:
        """`tls`: (server, client) contexts for mutual TLS with peers (`io.tls.contexts`); without,
        frames are tagged with `secret` (loopback development only). `secret` always keys the
        context tokens clients carry between replicas. `on_events`: the node's events (applied, membership) as they happen; `on_sent`: every
        frame queued to a peer, as (dst, kind, delay_ms, bytes). Both for an observer; both optional.
        `fresh_actor`: the actor to take if the data directory holds no state yet, for a replica
        whose state was lost: its old actor's dots are out there already, and minting them
        again would lose writes. `ledger`: the idempotency records' lifetime and bounds
        (default: 10 minutes, `replication.idempotency`'s bounds); `wall_clock`: seconds, what
        their lifetime is counted in. `accept_data_loss`: start on damaged storage with no peer
        to repair it from, serving only what verified (else `start` raises CorruptStorage)."""
        self.id = replica_id
        self.peer_addrs = dict(peers)
        self.data_dir = Path(data_dir)
        self._secret = secret
        self._tls = tls
        self._seed_tree = seed_tree  # plumtree's first tree, when the latency between any two members is known
        self._strategy = strategy
        self._delay_ms = delay_ms
        self._seed = seed
        self._config = config
        self._on_events = on_events
        self._on_sent = on_sent
        self._fresh_actor = fresh_actor
        self._accept_data_loss = accept_data_loss
        self.stats = RunnerStats()
        self.storage: Storage | None = None
        self.node: Node | None = None
        self.transport: Transport | None = None
        self.boots = 0
        self.restarted_unclean = False
        self._inbox: deque[_Inbound] = deque()
        self._waiters: list[_Waiter] = []
        self._last_local_seq = 0
        self._durable_seq = 0  # as far as this loop has released (the storage's may be ahead)
        self._held: deque[_Held] = deque()  # oldest first
        self.ledger = ledger if ledger is not None else Ledger()
        self._wall_ms = lambda: int(wall_clock() * 1000.0)
        self._flights: dict[str, _Flight] = {}
        self._kick = asyncio.Event()
        self._flusher = Worker(f"{replica_id}-flush")  # the group commit's own thread (see io.worker)
        self._timer_wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._t0 = time.monotonic()
        self._last_checkpoint = self._t0
        self._ckpt: Capture | None = None  # captured, waiting for the writes it may hold to be durable
        self._ckpt_task: asyncio.Task | None = None  # the one being written, in a worker thread
        self._stopped = False
        self._joined = asyncio.Event()  # the gate is open (always, but after a join or a repair)
        self._gate: _Gate | None = None
        self._gate_timer: asyncio.TimerHandle | None = None
        self._seen_incarnation = -1  # the highest incarnation of this id that peers know of
        self.rejoined_as: str | None = None
        self.damage: list[Damage] = []  # what the storage found at start
        self.repair: Repair | None = None
        self.recovered: dict | None = None  # how the last repair ended
        # told each successful group commit's duration (seconds, in the flush's own thread, so no
        # loop hand-off is counted); set by whoever exports it (the replica's /metrics): this
        # layer knows no metrics library
        self.on_flush: Callable[[float], None] | None = None

    # -- time: timers run on the monotonic clock; the HLC sees wall time via the node's epoch --

    def now(self) -> float:
        return (time.monotonic() - self._t0) * 1000.0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, listen_host: str, listen_port: int) -> int:
        """Open the data directory, restore, and start serving peers. Returns the peer port.
        Damaged storage with no peers (and no `accept_data_loss`) raises CorruptStorage."""
        storage = Storage.open(self.data_dir)
        peers = sorted(self.peer_addrs)
        try:
            self.damage = damage = storage.damage
            stored = storage.stored_actor()
            fresh = stored is None and not damage
            actor = None
            if damage:
                if not peers and not self._accept_data_loss:
                    raise CorruptStorage(f"stored state in {self.data_dir} is damaged and there is no peer to repair "
                                         f"it from: {describe(damage)}", damage)
                known = max(incarnation_of(self.id, stored) or 0, incarnation_of(self.id, self._fresh_actor) or 0)
                actor = fresh_actor(self.id, known)
            elif fresh:
                actor = self._fresh_actor
            elif not storage.was_clean:
                actor = next_actor(self.id, stored)
                self.restarted_unclean = True
            replica = storage.restore(self.id, secret=self._secret, members=[self.id, *peers], actor=actor,
                                      repair=bool(damage))
            self.boots = storage.count_boot()
        except BaseException:
            storage.close()
            raise
        self.storage = storage
        self.repair = storage.repair
        self._durable_seq = self._last_local_seq = storage.durable_seq
        try:
            for rec in storage.load_records(self.ledger.cutoff(self._wall_ms())):
                self.ledger.add(rec)
        except BaseException:
            storage.close()
            raise
        cfg = self._config or NodeConfig(strategy=self._strategy)
        cfg.record_events = self._on_events is not None
        self.node = node = Node(
            self.id, peers, config=cfg, seed=f"{self._seed}:{self.boots}", link_ms=self._delay_ms,
            incarnation=self.boots, secret=self._secret, epoch_ms=time.time() * 1000.0 - self.now(), replica=replica,
            seed_tree=self._seed_tree,
        )
        node.feed = ChangeFeed(secrets.token_hex(8))  # a new run per start: an older cursor resets
        loop = asyncio.get_running_loop()
        if peers and (damage or (fresh and self._fresh_actor is None)):
            self._gate = _Gate("repairing" if damage else "joining", time.monotonic(), {})
            timeout = REPAIR_TIMEOUT_S if damage else JOIN_TIMEOUT_S
            self._gate_timer = loop.call_later(timeout, self._join)
        else:
            self._joined.set()
        if damage:
            r = self.repair
            log.error("%s: stored state is damaged: %s. Moved the damaged files aside (%s), kept what verified "
                      "(%d keys, %d log rows); %s", self.id, describe(damage, limit=10),
                      ", ".join(p.name for p in r.moved_aside) or "nothing to move", r.keys_kept, r.log_rows_kept,
                      f"repairing from peers as {replica.actor}: reads and writes answer 503 until caught up"
                      if peers else f"no peer to repair from, serving it as {replica.actor} (data loss accepted)")
        self.transport = Transport(self.id, self._secret, self.peer_addrs, self._on_envelope, delay_ms=self._delay_ms,
                                   on_sent=self._on_sent, tls=self._tls)
        port = await self.transport.listen(listen_host, listen_port)
        self._tasks = [loop.create_task(self._timers()), loop.create_task(self._committer())]
        log.info("%s: actor %s, boot %d, %d keys restored%s", self.id, replica.actor, self.boots,
                 len(replica.store), " after an unclean stop" if self.restarted_unclean else "")
        return port

    async def stop(self) -> None:
        """Flush, checkpoint and close cleanly (the next start keeps the same actor)."""
        if self._stopped:
            return
        self._stopped = True
        if self._gate_timer is not None:
            self._gate_timer.cancel()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._flusher.close()  # a flush under way finishes first; the storage closes after it
        self._ckpt = None  # the clean stop's own checkpoint below writes everything
        if self._ckpt_task is not None:
            # not cancelled: its thread would go on regardless; its transaction is short
            await asyncio.wait([self._ckpt_task])
        if self.transport is not None:
            await self.transport.close()
        if self.storage is not None:
            try:
                self.storage.close(self.node.replica if self.node else None)
            except Exception as e:  # noqa: BLE001 - the disk's failure; the next start sees an unclean stop
                log.error("%s: could not close the storage cleanly: %s", self.id, e)
        for w in self._waiters:
            if w.future is not None and not w.future.done():
                w.future.cancel()  # its caller is being torn down with us
        for f in self._flights.values():
            if not f.done.done():
                f.done.cancel()

    # -- local writes and reads -----------------------------------------------------------------

    @property
    def recovering(self) -> bool:
        """A repaired replica catching up: what it holds is true, but not all it should hold."""
        g = self._gate
        return g is not None and g.reason == "repairing" and not self._joined.is_set()

    def unready(self) -> str | None:
        """Why this replica may not take writes now (None: it may): `starting` before `start`
        has run, `joining` while an empty replica waits to hear from its peers which actors of
        its id they hold (writes wait, at most JOIN_TIMEOUT_S), `repairing` while a repaired
        one catches up (reads and writes answer Recovering), `stopped` after `stop`."""
        if self._stopped:
            return "stopped"
        if self.node is None:
            return "starting"
        if not self._joined.is_set():
            return self._gate.reason if self._gate is not None else "starting"
        return None

    def check_serving(self) -> None:
        """Raise Recovering while `recovering`."""
        g = self._gate
        if self.recovering:
            raise Recovering(f"replica {self.id} found damaged storage at start and is catching up from its peers "
                             f"({time.monotonic() - g.started:.0f} s so far, at most {REPAIR_TIMEOUT_S:.0f} s); "
                             "retry shortly, or ask another replica")

    async def write(self, ns: str, key: str, op: dict):
        """Apply a write here and return its view once it is durable. Bad input raises a typed
        error before anything changed; StorageUnavailable means it changed nothing at all."""
        self.check_serving()
        if not self._joined.is_set():
            await self._joined.wait()
        view, seq, _record, _changed = self._apply(ns, key, op, None)
        if seq is None:  # nothing changed (a delete of nothing): answer once earlier writes are durable
            await self.barrier()
        else:
            await self._durable(seq, local=True)
        return view

    async def write_once(self, ns: str, key: str, op: dict, once: Once) -> Answer:
        """A keyed write: applied once per key at this replica; a retry gets the first answer.
        Raises IdempotencyKeyReused for the key of another request, IdempotencyTableFull at
        the ledger's bound, and whatever `write` raises (leaving no record)."""
        self.check_serving()
        if not self._joined.is_set():
            await self._joined.wait()
        replay = await self._replay_or_admit(once)
        if replay is not None:
            return replay
        view, seq, record, changed = self._apply(ns, key, op, once)
        if record is None:  # rendering failed (a bug): the write stands, unkeyed
            await (self._durable(seq, local=True) if changed else self.barrier())
            raise RuntimeError("the answer to a keyed write could not be rendered")
        self._flights[once.key] = _Flight(once.request, asyncio.get_running_loop().create_future())
        await self._durable(seq, record, local=changed)
        return Answer(record.status, record.body)

    async def _replay_or_admit(self, once: Once) -> Answer | None:
        """The first answer to this key, if there is one (waiting for it while it is in
        flight); else None, with room in the ledger for this write's record."""
        while True:
            rec = self.ledger.get(once.key, once.request, self._wall_ms())
            if rec is not None:
                self.stats.idempotent_replays += 1
                return rec.answer()
            flight = self._flights.get(once.key)
            if flight is None:
                break
            if flight.request != once.request:
                raise IdempotencyKeyReused(
                    f"Idempotency-Key {once.key!r} is in use by a different request at this replica")
            # the first is in flight: its answer is ours (or, if it fails, we go ahead ourselves)
            await asyncio.shield(flight.done)
        self.ledger.admit(self._wall_ms(), in_flight=len(self._flights))
        return None

    async def write_batch(self, ops: list[BatchOp], render: Callable[[list], bytes], once: Once | None = None
                          ) -> Answer:
        """Apply checked operations in order with nothing in between (`replication.batch`), and
        answer `render(results)` (each op's view, or the typed error it answered) once all of
        them are durable: their deltas go into the log together, so one flush holds them all."""
        self.check_serving()
        if not self._joined.is_set():
            await self._joined.wait()
        if once is not None:
            replay = await self._replay_or_admit(once)
            if replay is not None:
                return replay
        results: list = []
        deltas: list[Delta] = []
        sends: list[list[Envelope]] = []
        body: bytes | None = None
        try:
            for b in ops:
                try:
                    written = self.node.write(b.ns, b.key, b.op, now=self.now())
                except WriteNotSent as e:  # a bug after the state changed: the disk must still follow
                    deltas.append(e.delta)
                    raise
                except EdgeStateError as e:  # refused before it changed anything: this op's answer
                    results.append(e)
                    continue
                results.append(written.view)
                if written.delta is not None:
                    deltas.append(written.delta)
                    sends.append(written.envelopes)
            body = render(results)
        finally:
            # whatever was applied is logged, even when something after it raised (a bug)
            record = None if once is None or body is None else Record(once.key, once.request, 200, body,
                                                                         self._wall_ms())
            seq = None
            if deltas:
                seq = self._last_local_seq = self.storage.append_many(deltas, record=record)
                self.stats.writes += len(deltas)
            elif record is not None:
                seq = self.storage.remember(record)
            for envelopes in sends:
                self._send(envelopes)  # held: not durable yet
            self._timer_wake.set()
        assert body is not None
        if record is not None:
            self._flights[record.key] = _Flight(record.request, asyncio.get_running_loop().create_future())
        if seq is None:
            await self.barrier()
        else:
            await self._durable(seq, record, local=bool(deltas))
        return Answer(200, body)

    def _apply(self, ns: str, key: str, op: dict, once: Once | None):
        """Apply a write to the node and append what must become durable (its delta, its
        record); nothing here awaits, so nothing else runs in between. Returns the view, the
        sequence number to wait for (None: nothing to write), the record, and whether the
        state changed."""
        try:
            written = self.node.write(ns, key, op, now=self.now())
        except WriteNotSent as e:  # a bug after the state changed: the disk must still follow
            self._last_local_seq = self.storage.append(e.delta)
            raise
        view, delta = written.view, written.delta
        record = None
        if once is not None:
            try:
                record = once.record(view, self._wall_ms())
            except Exception:  # noqa: BLE001 - the state changed: the delta must still be logged
                log.exception("%s: could not render the answer to a keyed write", self.id)
        self._timer_wake.set()
        if delta is None:
            return view, (None if record is None else self.storage.remember(record)), record, False
        seq = self.storage.append(delta, record=record)
        self.stats.writes += 1
        self._last_local_seq = seq
        self._send(written.envelopes)  # held: seq is not durable yet
        return view, seq, record, True

    async def read(self, ns: str, key: str):
        """This replica's value, once every local write before it is durable. A wait ended by a
        rollback looks again: the state then is the durable one, plus any writes made since."""
        await self._settled()
        return self.node.replica.read(ns, key)

    async def list_keys(self, ns: str, prefix: str, cursor: str | None, limit: int):
        """A page of this replica's keys (`replication.listing`), as a read sees them."""
        await self._settled()
        return self.node.replica.list_keys(ns, prefix, cursor, limit)

    async def _settled(self) -> None:
        self.check_serving()
        for attempt in range(READ_ATTEMPTS):
            try:
                await self.barrier()
                break
            except StorageUnavailable:
                if attempt == READ_ATTEMPTS - 1:
                    raise

    async def barrier(self) -> None:
        if self._last_local_seq > self._durable_seq:
            await self._durable(self._last_local_seq)

    async def _durable(self, seq: int, record: Record | None = None, *, local: bool = False) -> None:
        """Wait until the log is durable up to `seq` (and `record` is in the ledger)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(seq, fut, record, local))
        self._kick.set()
        await fut

    def _send(self, envelopes: list[Envelope]) -> None:
        """Send now, or hold until the latest local write is durable: anything the node makes
        meanwhile may carry it (an anti-entropy reply, a GRAFT answered from the cache, even a
        digest naming its dot). Membership probes carry no replica state: they go at once, so
        a slow disk does not make peers think this replica is dead."""
        if not envelopes:
            return
        if self._last_local_seq <= self._durable_seq:
            self.transport.send_all(envelopes)
            return
        probes = [e for e in envelopes if isinstance(e.msg, _PROBES)]
        if probes:
            self.transport.send_all(probes)
            envelopes = [e for e in envelopes if not isinstance(e.msg, _PROBES)]
        if envelopes:
            self._held.append(_Held(self._last_local_seq, envelopes))

    # -- the network ----------------------------------------------------------------------------

    def _on_envelope(self, env: Envelope) -> None:
        if env.src not in self.peer_addrs:
            # Authentic (it had the secret) but not one of our peers: refused before anything is
            # logged, or a restart would replay a delta the node never took.
            self.stats.foreign_dropped += 1
            return
        try:
            if not self._joined.is_set() and isinstance(env.msg, AeDigest):
                self._learn_identity(env.src, env.msg.applied)
            deltas = _deltas(env.msg)
            fresh = [d for d in deltas if not self.node.replica.holds(d)]
            if fresh:
                seq = 0
                for d in fresh:
                    seq = self.storage.append(d)
                self.stats.remote_deltas_logged += len(fresh)
                self._inbox.append(_Inbound(seq, env))
                self._kick.set()
            else:
                if deltas:
                    self.stats.duplicates_skipped += 1
                if self._inbox:
                    self._inbox.append(_Inbound(None, env))  # in order, behind messages waiting for the disk
                else:
                    self._receive(env)
        except Exception:  # a bug must not take the replica down with it; the peer will retry
            log.exception("%s: failed to handle a %s from %s", self.id, env.kind, env.src)

    def _learn_identity(self, peer: str, applied: CausalContext) -> None:
        """A peer's digest, while the gate is closed. An empty data directory may be a replica
        that lost its state, not a new one: if peers hold dots of this id's actors, writing as
        one of them again would mint dots they already have (and lose writes). A repaired one
        lacks what it dropped. Either way the gate stays closed until every peer has sent its
        digest (or is declared dead) and the applied context covers each, or the gate's
        timeout passed; then `_join` picks the actor."""
        for a in {*applied.vv.to_dict(), *(d[0] for d in applied.cloud)}:
            n = incarnation_of(self.id, a)
            if n is not None:
                self._seen_incarnation = max(self._seen_incarnation, n)
        self._gate.heard.setdefault(peer, applied.copy())
        self._gate_progress()

    def _gate_progress(self) -> None:
        if self._joined.is_set() or self._gate is None:
            return
        mine, heard, members = self.node.replica.store.applied, self._gate.heard, self.node.membership
        for p in self.peer_addrs:
            if members.status(p) == DEAD:
                continue  # not waited for: it may be down for good
            theirs = heard.get(p)
            if theirs is None or not mine.covers(theirs):
                return
        self._join()

    def _join(self) -> None:
        """Open the gate. An actor is chosen first where the old one may collide: after a
        repair, and for an empty directory whose peers know its id or did not all answer."""
        if self._joined.is_set():
            return
        if self._gate_timer is not None:
            self._gate_timer.cancel()
        g, me, rep = self._gate, self.id, self.node.replica
        unheard = sorted(p for p in self.peer_addrs if p not in g.heard)
        behind = sorted(p for p, d in g.heard.items() if not rep.store.applied.covers(d))
        new = None
        if g.reason == "repairing":
            if self._seen_incarnation >= (incarnation_of(me, rep.actor) or 0):
                new = fresh_actor(me, self._seen_incarnation)
        elif self._seen_incarnation >= 0 or unheard:
            new = fresh_actor(me, max(self._seen_incarnation, 0))
        if new is not None:
            rep.take_actor(new)
            self.storage.set_actor(new)  # cancels a checkpoint captured under the old actor
            self._ckpt = None
            self.rejoined_as = new
        waited = time.monotonic() - g.started
        self.recovered = {"reason": g.reason, "seconds": round(waited, 3), "not_heard": unheard, "behind": behind}
        if g.reason == "repairing":
            if unheard or behind:
                log.warning("%s: stopped waiting after %.1f s for %s: serving the %d keys it holds, as %s", me, waited,
                            ", ".join(unheard + behind), len(rep.store), rep.actor)
            else:
                log.warning("%s: repaired from its peers in %.1f s: %d keys; serving as %s", me, waited,
                            len(rep.store), rep.actor)
        elif new is not None:
            log.warning("%s: %s; this empty replica writes as %s", me,
                        f"peers hold writes of an earlier {actor_for(me, self._seen_incarnation)}"
                        if self._seen_incarnation >= 0 else f"no word from {', '.join(unheard)}, which may hold "
                        "writes of an earlier incarnation", new)
        self._joined.set()

    def _receive(self, env: Envelope) -> None:
        try:
            out = self.node.receive(env, now=self.now())
        except EdgeStateError as e:
            log.warning("%s: refused a %s from %s: %s", self.id, env.kind, env.src, e.message)
            return
        self._send(out)
        self._timer_wake.set()
        self._emit()
        if not self._joined.is_set():
            self._gate_progress()

    def _emit(self) -> None:
        if self._on_events is not None:
            events = self.node.drain_events()
            if events:
                self._on_events(events)

    async def _timers(self) -> None:
        node = self.node
        loop = asyncio.get_running_loop()
        while True:
            now = self.now()
            due = node.next_deadline()
            if due is not None and due <= now:
                self._send(node.tick(now=now))
                self._emit()
                if not self._joined.is_set():
                    self._gate_progress()  # a peer declared dead is no longer waited for
                continue
            self._timer_wake.clear()
            # not asyncio.wait_for: on 3.11 it can swallow a cancel that races the event
            alarm = None if due is None else loop.call_later((due - now) / 1000.0, self._timer_wake.set)
            try:
                await self._timer_wake.wait()
            finally:
                if alarm is not None:
                    alarm.cancel()

    # -- group commit ---------------------------------------------------------------------------

    async def _committer(self) -> None:
        storage = self.storage
        while True:
            await self._kick.wait()
            self._kick.clear()
            if storage.pending:
                try:
                    took = await self._flusher.call(self._timed_flush)
                except Exception as e:  # noqa: BLE001 - the disk's failure, not ours
                    self.stats.flush_errors += 1
                    log.error("%s: flush failed: %s", self.id, e)
                    if not await self._settle():
                        await self._roll_back(e)
                        continue
                else:
                    if self.on_flush is not None:  # outside the try: an observer's bug is no disk failure
                        try:
                            self.on_flush(took)
                        except Exception:  # noqa: BLE001 - and it must not stop the committer
                            log.exception("%s: the flush observer failed", self.id)
            self._release()
            self._maybe_checkpoint()

    def _timed_flush(self) -> float:
        t0 = time.perf_counter()
        self.storage.flush()
        return time.perf_counter() - t0

    async def _settle(self) -> bool:
        """Did the failed flush land after all? Asked until the disk can answer; meanwhile
        nothing is answered or sent (both wait on the durable point, which does not move)."""
        while True:
            try:
                landed = await asyncio.to_thread(self.storage.settle)
            except Exception as e:  # noqa: BLE001
                log.error("%s: cannot tell whether the failed flush landed (%s); asking again", self.id, e)
                await asyncio.sleep(FLUSH_RETRY_S)
                continue
            if landed:
                log.warning("%s: the failed flush's rows are on disk after all: its writes stand", self.id)
            return landed

    async def _roll_back(self, err: Exception) -> None:
        """Undo everything not durable, as if it had never been: see the module docstring."""
        old = self.node.replica
        while True:
            try:  # in a thread: a big state takes a while to load; writes meanwhile are dropped below
                fresh = await asyncio.to_thread(self.storage.reload, self.id, secret=self._secret,
                                                members=sorted(old.members), actor=old.actor)
                break
            except Exception as e:  # noqa: BLE001
                log.error("%s: cannot reload the durable state (%s); trying again", self.id, e)
                await asyncio.sleep(FLUSH_RETRY_S)
        # From here on nothing awaits: no write, message or timer sees a half-swapped replica.
        dropped = self.storage.discard_pending()
        refusal = StorageUnavailable(f"the write could not be made durable ({err}); it was not applied, retry it")
        for w in self._waiters:
            if w.future is not None and not w.future.done():
                w.future.set_exception(refusal)
            if w.local:
                self.stats.writes -= 1
                self.stats.writes_refused += 1
            if w.record is not None:
                self._land(w.record.key, None)
        self._waiters.clear()
        self.stats.held_dropped += sum(len(h.envelopes) for h in self._held)
        self._held.clear()
        self._inbox.clear()  # remote deltas not durable: anti-entropy brings them again
        self._ckpt = None  # it may hold the refused writes (a checkpoint being written fails: reloaded)
        self.node.take_replica(fresh)  # no cached payload of a dropped write survives
        if self.node.feed is not None:  # watchers may have been told of writes now undone: they re-list
            self.node.feed.renew(secrets.token_hex(8))
        self._last_local_seq = self._durable_seq = self.storage.durable_seq
        self.stats.rollbacks += 1
        self._timer_wake.set()
        log.warning("%s: rolled back to the durable state; %d deltas and records dropped", self.id, dropped)

    def _land(self, key: str, record: Record | None) -> None:
        """A keyed write is done: its record (None: it failed) answers retries from now on."""
        if record is not None:
            self.ledger.add(record)
        flight = self._flights.pop(key, None)
        if flight is not None and not flight.done.done():
            flight.done.set_result(None)

    def _release(self) -> None:
        durable = self._durable_seq = self.storage.durable_seq
        held = self._held
        while held and held[0].seq <= durable:
            self.transport.send_all(held.popleft().envelopes)
        inbox = self._inbox
        while inbox and (inbox[0].seq is None or inbox[0].seq <= durable):
            self._receive(inbox.popleft().env)
        if self._waiters:
            still = []
            for w in self._waiters:
                if w.seq > durable:
                    still.append(w)
                    continue
                if w.record is not None:
                    self._land(w.record.key, w.record)
                if w.future is not None and not w.future.done():
                    w.future.set_result(None)
            self._waiters = still
        self._timer_wake.set()
        self._emit()

    def _maybe_checkpoint(self) -> None:
        """Checkpoint now and then, without holding the loop: the state is captured here (a few
        milliseconds), then packed and written in a worker thread while writes go on (only the
        transaction itself holds back the flushes, which share its connection). One at a time.
        A capture may hold local writes still buffered: it is written only once they are
        durable, else a failed flush could not take them back; a rollback drops it."""
        storage = self.storage
        if self._ckpt_task is not None:
            return
        if self._ckpt is None:
            rows = storage.log_length
            if not rows or (rows < CHECKPOINT_LOG_ROWS
                            and time.monotonic() - self._last_checkpoint < CHECKPOINT_EVERY_S):
                return
            now = self._wall_ms()
            self.ledger.expire(now)
            try:
                self._ckpt = storage.prepare_checkpoint(self.node.replica, expire_records_before=self.ledger.cutoff(now))
            except Exception as e:  # noqa: BLE001 - retried at the next chance
                log.error("%s: checkpoint failed: %s", self.id, e)
                self._last_checkpoint = time.monotonic()
                return
        if storage.durable_seq < self._ckpt.need:
            if storage.pending:
                self._kick.set()  # the next group commit makes them durable
            return
        cap, self._ckpt = self._ckpt, None
        self._ckpt_task = asyncio.get_running_loop().create_task(self._write_checkpoint(cap))

    async def _write_checkpoint(self, cap: Capture) -> None:
        try:
            await asyncio.to_thread(self.storage.write_checkpoint, cap)
        except Exception as e:  # noqa: BLE001 - retried at the next chance
            log.error("%s: checkpoint failed: %s", self.id, e)
        finally:
            self._last_checkpoint = time.monotonic()
            self._ckpt_task = None

    # -- what an operator sees ------------------------------------------------------------------

    def status(self) -> dict:
        node, rep = self.node, self.node.replica
        net = self.transport.stats
        return {
            "id": self.id,
            "actor": rep.actor,
            "boots": self.boots,
            "restarted_unclean": self.restarted_unclean,
            "rejoined_as": self.rejoined_as,
            "joined": self._joined.is_set(),
            "recovering": self.recovering,
            "damage": [str(d) for d in self.damage],
            "recovered": self.recovered,
            "version_vector": rep.store.applied.vv.to_dict(),
            "digest": rep.digest(),
            "keys": len(rep.store),
            "peers": {p: node.membership.status(p) for p in node.peers},
            "durable_seq": self.storage.durable_seq,
            "pending": self.storage.pending,
            "waiting_inbound": len(self._inbox),
            "held_outbound": sum(len(h.envelopes) for h in self._held),
            "rollbacks": self.stats.rollbacks,
            "idempotency_records": len(self.ledger),
            "bad_frames": dict(net.bad_frames),
            "partitioned_from": sorted(self.transport.blocked),
            "transport": self.transport.link_status(),
        }

    def partition(self, blocked: set[str]) -> None:
        unknown = blocked - set(self.peer_addrs)
        if unknown:
            raise ValueError(f"unknown peers: {', '.join(sorted(unknown))}")
        self.transport.blocked = set(blocked)


__all__ = ["ReplicaRunner", "RunnerStats", "fresh_actor", "next_actor"]
