"""The replica runner's ordering around the disk, in one process: two runners on loopback.

A flush that has not returned must hold back the write's answer, its dissemination, later
reads, and a remote delta's application. Each test blocks the flush on purpose and looks.
A flush that fails must leave nothing behind, here or at the peer; a keyed write is applied
once. The disk fails through the storage's connection (`FailingConn` from test_storage)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
import time

import pytest
from live_helpers import run_async

from app.processes.supervisor import free_port
from replication.errors import IdempotencyKeyReused, IdempotencyTableFull, StorageUnavailable
from replication.idempotency import Answer, Ledger, Once
from replication.messages import Ack, AeDigest, AeReply, Envelope, Gossip, GossipBatch, Graft, Ping
from replication.node import NodeConfig, WriteNotSent
from replication.io.runner import ReplicaRunner, next_actor
from replication.io.storage import Storage
from test_storage import FailingConn, crash_copy, restored

SECRET = b"a test cluster secret, 32 bytes!"
DEADLINE_S = 20.0


async def until(what: str, cond, deadline_s: float = DEADLINE_S):
    deadline = time.monotonic() + deadline_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)  # poll interval


class GatedFlush:
    """Wraps a storage's flush so the test decides when it may complete."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.real = storage.flush
        self.gate = threading.Event()
        self.entered = threading.Event()
        storage.flush = self.flush

    def flush(self):
        self.entered.set()
        assert self.gate.wait(DEADLINE_S), "the test never opened the gate"
        return self.real()


async def pair(tmp_path, config=None, **lhr_kw):
    """Two runners on loopback. `config()`: a NodeConfig for each; `lhr_kw`: more for lhr."""
    ports = {"lhr": free_port(), "jfk": free_port()}
    peers = {rid: ("127.0.0.1", p) for rid, p in ports.items()}
    runners = {
        rid: ReplicaRunner(rid, {p: a for p, a in peers.items() if p != rid}, data_dir=tmp_path / rid, secret=SECRET,
                           config=config() if config else None, **(lhr_kw if rid == "lhr" else {}))
        for rid in ports
    }
    for rid, r in runners.items():
        await r.start("127.0.0.1", ports[rid])
    return runners


def test_a_write_is_answered_and_sent_only_after_its_flush(tmp_path):
    async def main():
        rs = await pair(tmp_path)
        lhr, jfk = rs["lhr"], rs["jfk"]
        try:
            gate = GatedFlush(lhr.storage)
            write = asyncio.ensure_future(lhr.write("kv", "k", {"value": 1}))
            read = None
            await until("the flush to start", gate.entered.is_set)
            read = asyncio.ensure_future(lhr.read("kv", "k"))
            await asyncio.sleep(0.3)  # time for a wrong implementation to answer or send
            assert not write.done() and not read.done()
            assert jfk.node.replica.read_kv("k").values == []
            assert lhr.storage.durable_seq == 0
            gate.gate.set()
            view = await asyncio.wait_for(write, DEADLINE_S)
            assert view.values == [1]
            assert (await asyncio.wait_for(read, DEADLINE_S)).values == [1]
            await until("jfk to have it", lambda: jfk.node.replica.read_kv("k").values == [1])
        finally:
            gate.gate.set()
            for r in rs.values():
                await r.stop()

    run_async(main())


def test_a_write_applied_before_a_bug_is_still_logged(tmp_path):
    """A bug after a write changed the replica (here its dissemination raises) answers an
    error, but the state holds the write, so the disk must hold it too: a crash copy of the
    data directory taken then restores it."""

    async def main():
        lhr = ReplicaRunner("lhr", {}, data_dir=tmp_path / "lhr", secret=SECRET)
        await lhr.start("127.0.0.1", free_port())
        try:
            def broken(g, now):
                raise RuntimeError("a bug in the strategy")

            lhr.node.strategy.broadcast = broken
            with pytest.raises(WriteNotSent) as e:
                await lhr.write("counters", "c", {"add": 2})
            assert isinstance(e.value.__cause__, RuntimeError) and e.value.delta is not None
            assert lhr.node.replica.read_counter("c") == 2
            await lhr.barrier()
            assert lhr.storage.durable_seq == 1
            st, back = restored(crash_copy(tmp_path / "lhr", tmp_path / "killed"))
            assert back.read_counter("c") == 2
            st.close()
        finally:
            await lhr.stop()

    run_async(main())


def test_a_remote_delta_is_applied_only_after_its_flush(tmp_path):
    async def main():
        rs = await pair(tmp_path)
        lhr, jfk = rs["lhr"], rs["jfk"]
        try:
            gate = GatedFlush(jfk.storage)
            await lhr.write("counters", "c", {"add": 5})
            await until("jfk to log the delta", gate.entered.is_set)
            await asyncio.sleep(0.3)
            assert jfk.node.replica.read_counter("c") == 0
            assert jfk.status()["waiting_inbound"] >= 1
            gate.gate.set()
            await until("jfk to apply it", lambda: jfk.node.replica.read_counter("c") == 5)
        finally:
            gate.gate.set()
            for r in rs.values():
                await r.stop()

    run_async(main())


def test_acknowledged_writes_are_on_disk_the_moment_they_are_answered(tmp_path):
    """A crash right after the answer is a copy of the data directory taken then."""

    async def main():
        rs = await pair(tmp_path)
        try:
            views = await asyncio.gather(*(rs["lhr"].write("kv", f"k{i}", {"value": i}) for i in range(50)))
            assert [v.values for v in views] == [[i] for i in range(50)]
            shutil.copytree(tmp_path / "lhr", tmp_path / "crash-copy", ignore=shutil.ignore_patterns("LOCK"))
            flushes = rs["lhr"].storage.stats.flushes
            assert flushes < 50, "50 concurrent writes should share flushes (group commit)"
        finally:
            for r in rs.values():
                await r.stop()

    run_async(main())
    with Storage.open(tmp_path / "crash-copy") as st:
        assert not st.was_clean
        rep = st.restore("lhr")
        assert [rep.read_kv(f"k{i}").values for i in range(50)] == [[i] for i in range(50)]


def test_duplicates_cost_no_disk_write(tmp_path):
    async def main():
        rs = await pair(tmp_path)
        lhr, jfk = rs["lhr"], rs["jfk"]
        try:
            await lhr.write("kv", "k", {"value": 1})
            await until("jfk to apply", lambda: jfk.node.replica.read_kv("k").values == [1])
            appended = jfk.storage.stats.appended
            # the same delta again, as a retransmission would carry it
            from replication.messages import Envelope, Gossip

            delta = lhr.node.replica.store.full_delta()
            dot = next(iter(delta.applied.dots()))
            jfk._on_envelope(Envelope("lhr", "jfk", Gossip(dot, "lhr", delta)))
            await asyncio.sleep(0.2)
            assert jfk.storage.stats.appended == appended and jfk.storage.pending == 0
            assert jfk.stats.duplicates_skipped >= 1
        finally:
            for r in rs.values():
                await r.stop()

    run_async(main())


@pytest.mark.parametrize(("stored", "expected"), [(None, "lhr~1"), ("lhr", "lhr~1"), ("lhr~1", "lhr~2"),
                                                  ("lhr~9", "lhr~10"), ("lhr~x", "lhr~1"), ("fra~3", "lhr~1"),
                                                  ("lhr~2.9f2a", "lhr~3.9f2a")])
def test_next_actor(stored, expected):
    assert next_actor("lhr", stored) == expected


def test_a_delta_from_a_replica_outside_the_peer_list_is_not_logged_or_applied(tmp_path):
    async def main():
        rs = await pair(tmp_path)
        jfk = rs["jfk"]
        try:
            from replication.messages import Envelope, Gossip
            from replication.replica import Replica

            stranger = Replica("zzz", secret=SECRET)
            _view, delta = stranger.write_kv("k", "from a stranger", now=1.0)
            jfk._on_envelope(Envelope("zzz", "jfk", Gossip(next(iter(delta.applied.dots())), "zzz", delta)))
            await asyncio.sleep(0.2)  # time for a wrong implementation to log and apply it
            assert jfk.storage.pending == 0 and jfk.storage.stats.appended == 0
            assert jfk.node.replica.read_kv("k").values == []
            assert jfk.stats.foreign_dropped == 1
        finally:
            for r in rs.values():
                await r.stop()

    run_async(main())


# -- a failed flush leaves nothing behind ---------------------------------------------------------


def carried(env: Envelope) -> set:
    """Every dot whose delta an envelope carries."""
    msg = env.msg
    deltas = [msg.delta] if isinstance(msg, (Gossip, AeReply)) else [g.delta for g in msg.items] \
        if isinstance(msg, GossipBatch) else []
    return {d for delta in deltas for d in delta.applied.dots()}


class SentSpy:
    def __init__(self, runner: ReplicaRunner) -> None:
        self.envelopes: list[Envelope] = []
        real = runner.transport.send_all

        def send_all(envs):
            self.envelopes.extend(envs)
            return real(envs)

        runner.transport.send_all = send_all

    def dots(self) -> set:
        return {d for env in self.envelopes for d in carried(env)}


class GatedCommit:
    """The storage's COMMIT waits for the test, then fails (or not): the batch is taken, so
    what is written meanwhile is buffered behind it."""

    def __init__(self, storage: Storage, *, fail: bool) -> None:
        self.real = storage._conn
        self.fail = fail
        self.gate = threading.Event()
        self.entered = threading.Event()
        storage._conn = self

    def __getattr__(self, name):
        return getattr(self.real, name)

    def execute(self, sql, *args):
        if sql == "COMMIT" and not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(DEADLINE_S), "the test never opened the gate"
            if self.fail:
                raise sqlite3.OperationalError("database or disk is full")
        return self.real.execute(sql, *args)


def no_grace():
    return NodeConfig(ae_grace_ms=0.0)  # an anti-entropy reply carries even a dot applied just now


def test_a_failed_flush_changes_nothing_here_or_at_the_peer_and_nothing_it_made_is_sent(tmp_path):
    """While the write waits for its flush, an anti-entropy reply and a GRAFT answer computed
    by lhr carry it: they are held. The flush fails: the write is refused, the held envelopes
    dropped, the state and the plumtree cache rolled back, and its dot minted again later."""
    from replication.clocks import Dot

    async def main():
        rs = await pair(tmp_path, config=no_grace)
        lhr, jfk = rs["lhr"], rs["jfk"]
        gate = None
        try:
            await lhr.write("counters", "c", {"add": 1})
            await until("jfk to have the first", lambda: jfk.node.replica.read_counter("c") == 1)
            failed = Dot("lhr", 2)
            spy = SentSpy(lhr)
            gate = GatedFlush(lhr.storage)
            lhr.storage._conn = FailingConn(lhr.storage._conn, "COMMIT")
            write = asyncio.ensure_future(lhr.write("counters", "c", {"add": 1}))
            await until("the flush to start", gate.entered.is_set)
            assert failed in lhr.node.strategy.cache
            lhr._on_envelope(Envelope("jfk", "lhr", AeDigest(jfk.node.replica.applied_context)))
            lhr._on_envelope(Envelope("jfk", "lhr", Graft("lhr", [failed])))
            held = [env for _seq, envs in lhr._held for env in envs]
            assert sum(failed in carried(env) for env in held) >= 3  # its own push, the AE reply, the GRAFT answer
            lhr._on_envelope(Envelope("jfk", "lhr", Ping(seq=987)))
            assert any(isinstance(e.msg, Ack) and e.msg.seq == 987 for e in spy.envelopes)  # probes are not held
            read = asyncio.ensure_future(lhr.read("counters", "c"))
            gate.gate.set()
            with pytest.raises(StorageUnavailable):
                await asyncio.wait_for(write, DEADLINE_S)
            assert await asyncio.wait_for(read, DEADLINE_S) == 1  # the durable state, not a 503
            assert failed not in spy.dots()
            assert lhr.node.replica.read_counter("c") == 1 and failed not in lhr.node.strategy.cache
            assert lhr.stats.rollbacks == 1 and lhr.stats.writes_refused == 1 and lhr.stats.held_dropped >= 3
            st = lhr.status()
            assert st["held_outbound"] == 0 and st["pending"] == 0
            # answered from the fresh cache: nothing
            lhr._on_envelope(Envelope("jfk", "lhr", Graft("lhr", [failed])))
            assert failed not in spy.dots()
            view = await lhr.write("counters", "c", {"add": 10})
            assert view == 11 and failed in spy.dots()  # the same dot, minted again, for real this time
            await until("jfk to have 11", lambda: jfk.node.replica.read_counter("c") == 11)
            assert jfk.node.replica.digest() == lhr.node.replica.digest()
        finally:
            if gate is not None:
                gate.gate.set()
            for r in rs.values():
                await r.stop()

    run_async(main())
    with Storage.open(tmp_path / "lhr") as st:
        assert st.restore("lhr").read_counter("c") == 11


def test_writes_buffered_behind_a_failed_flush_are_refused_too(tmp_path):
    """The second write's delta says 'lhr's total is 3': on disk without the first, it would
    count the refused write. Both are refused; the next one is counted once."""

    async def main():
        rs = await pair(tmp_path)
        lhr = rs["lhr"]
        gate = None
        try:
            gate = GatedCommit(lhr.storage, fail=True)
            first = asyncio.ensure_future(lhr.write("counters", "c", {"add": 1}))
            await until("the first flush to commit", gate.entered.is_set)
            assert lhr.storage.pending == 0
            second = asyncio.ensure_future(lhr.write("counters", "c", {"add": 2}))
            await until("the second to be buffered behind it", lambda: lhr.storage.pending == 1)
            gate.gate.set()
            for w in (first, second):
                with pytest.raises(StorageUnavailable):
                    await asyncio.wait_for(w, DEADLINE_S)
            assert await lhr.read("counters", "c") == 0
            assert await lhr.write("counters", "c", {"add": 4}) == 4
            assert lhr.stats.writes == 1 and lhr.stats.writes_refused == 2
        finally:
            if gate is not None:
                gate.gate.set()
            for r in rs.values():
                await r.stop()

    run_async(main())
    with Storage.open(tmp_path / "lhr") as st:
        assert st.restore("lhr").read_counter("c") == 4


def test_a_remote_delta_in_a_failed_flush_is_dropped_and_comes_back_by_anti_entropy(tmp_path):
    async def main():
        rs = await pair(tmp_path)
        lhr, jfk = rs["lhr"], rs["jfk"]
        try:
            lhr.storage._conn = FailingConn(lhr.storage._conn, "COMMIT")
            await jfk.write("counters", "c", {"add": 5})
            await until("lhr's flush to fail", lambda: lhr.stats.rollbacks == 1)
            await until("lhr to have it from anti-entropy", lambda: lhr.node.replica.read_counter("c") == 5)
            assert lhr.stats.flush_errors == 1
        finally:
            for r in rs.values():
                await r.stop()

    run_async(main())


def test_a_flush_that_raised_but_whose_rows_landed_is_a_success(tmp_path):
    async def main():
        rs = await pair(tmp_path)
        lhr, jfk = rs["lhr"], rs["jfk"]
        try:
            lhr.storage._conn = FailingConn(lhr.storage._conn, "COMMIT", after=True)
            assert await lhr.write("counters", "c", {"add": 3}) == 3
            assert lhr.storage.stats.landed_after_error == 1 and lhr.stats.rollbacks == 0
            await until("jfk to have it", lambda: jfk.node.replica.read_counter("c") == 3)
        finally:
            for r in rs.values():
                await r.stop()

    run_async(main())


# -- idempotency keys ----------------------------------------------------------------------------


def once(key: str, request: bytes = b"add 1 to c") -> Once:
    return Once(key, request, render=lambda value: f"value={value}".encode())


def test_a_keyed_retry_in_flight_waits_for_the_first_and_gets_its_answer(tmp_path):
    async def main():
        rs = await pair(tmp_path)
        lhr = rs["lhr"]
        gate = None
        try:
            gate = GatedFlush(lhr.storage)
            first = asyncio.ensure_future(lhr.write_once("counters", "c", {"add": 1}, once("k1")))
            await until("the flush to start", gate.entered.is_set)
            retry = asyncio.ensure_future(lhr.write_once("counters", "c", {"add": 1}, once("k1")))
            with pytest.raises(IdempotencyKeyReused):
                await lhr.write_once("counters", "c", {"add": 9}, once("k1", b"add 9 to c"))
            await asyncio.sleep(0.2)  # time for a wrong implementation to apply the retry
            assert not retry.done() and lhr.storage.pending == 2  # the first's delta and record only
            gate.gate.set()
            assert await asyncio.wait_for(first, DEADLINE_S) == Answer(200, b"value=1")
            assert await asyncio.wait_for(retry, DEADLINE_S) == Answer(200, b"value=1", replayed=True)
            assert await lhr.read("counters", "c") == 1
            assert lhr.stats.idempotent_replays == 1 and len(lhr.ledger) == 1
            with pytest.raises(IdempotencyKeyReused):  # and once done, too
                await lhr.write_once("counters", "c", {"add": 9}, once("k1", b"add 9 to c"))
        finally:
            if gate is not None:
                gate.gate.set()
            for r in rs.values():
                await r.stop()

    run_async(main())


def test_a_keyed_write_refused_leaves_no_record_and_its_waiting_retry_applies_once(tmp_path):
    async def main():
        rs = await pair(tmp_path)
        lhr = rs["lhr"]
        gate = None
        try:
            gate = GatedFlush(lhr.storage)
            lhr.storage._conn = FailingConn(lhr.storage._conn, "COMMIT")
            first = asyncio.ensure_future(lhr.write_once("counters", "c", {"add": 1}, once("k1")))
            await until("the flush to start", gate.entered.is_set)
            retry = asyncio.ensure_future(lhr.write_once("counters", "c", {"add": 1}, once("k1")))
            await asyncio.sleep(0.05)  # let the retry find the first in flight
            gate.gate.set()
            with pytest.raises(StorageUnavailable):
                await asyncio.wait_for(first, DEADLINE_S)
            assert await asyncio.wait_for(retry, DEADLINE_S) == Answer(200, b"value=1")  # applied, not replayed
            assert await lhr.read("counters", "c") == 1
            again = await lhr.write_once("counters", "c", {"add": 1}, once("k1"))
            assert again.replayed and again.body == b"value=1"
        finally:
            if gate is not None:
                gate.gate.set()
            for r in rs.values():
                await r.stop()

    run_async(main())


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def test_idempotency_records_are_bounded_expire_and_outlive_a_restart(tmp_path):
    clock = Clock()

    async def main():
        rs = await pair(tmp_path, ledger=Ledger(ttl_ms=60_000, max_records=2), wall_clock=clock)
        lhr = rs["lhr"]
        try:
            for k in ("a", "b"):
                await lhr.write_once("counters", "c", {"add": 1}, once(k))
            with pytest.raises(IdempotencyTableFull) as full:
                await lhr.write_once("counters", "c", {"add": 1}, once("c"))
            assert 1 <= full.value.retry_after_s <= 60
            assert await lhr.write("counters", "c", {"add": 1}) == 3  # unkeyed writes are not limited
            assert (await lhr.write_once("counters", "c", {"add": 1}, once("a"))).replayed  # nor retries
        finally:
            for r in rs.values():
                await r.stop()

    run_async(main())

    async def later():
        # a new process: the records come back from the disk, and live on the wall clock
        rs = await pair(tmp_path, ledger=Ledger(ttl_ms=60_000, max_records=3), wall_clock=clock)
        lhr = rs["lhr"]
        try:
            assert len(lhr.ledger) == 2
            assert await lhr.write_once("counters", "c", {"add": 1}, once("b")) == Answer(200, b"value=2", True)
            clock.t += 61
            third = await lhr.write_once("counters", "c", {"add": 1}, once("c"))
            assert third == Answer(200, b"value=4")
            fresh = await lhr.write_once("counters", "c", {"add": 1}, once("a"))  # expired: a new write
            assert fresh == Answer(200, b"value=5")
            # a write that changes nothing keeps a record all the same
            nothing = Once("del", b"d", lambda v: repr(v.values).encode())
            assert await lhr.write_once("kv", "gone", {"delete": True, "context": None}, nothing) == Answer(200, b"[]")
            assert (await lhr.write_once("kv", "gone", {"delete": True, "context": None}, nothing)).replayed
        finally:
            for r in rs.values():
                await r.stop()

    run_async(later())
