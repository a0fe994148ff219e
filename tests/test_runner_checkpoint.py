"""Checkpoints off the event loop: a replica keeps answering writes while one is written.

The checkpoint's packing (CPU, in a worker thread) is held open on purpose (`SlowPacking`),
and sometimes its transaction (`Disk`), and the tests look at what goes on meanwhile: writes
answered, flushes failing, a stop, a crash (a copy of the data directory taken mid-way), a
checkpoint failing. Every wait has a deadline; nothing is timed by sleeping."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
from live_helpers import run_async

from replication import Replica
from replication.errors import StorageError, StorageUnavailable
from replication.io import checkpoint as checkpoint_mod
from replication.io.runner import ReplicaRunner
from replication.io.storage import Storage
from test_content_ae import damaged_on_disk
from test_runner import DEADLINE_S, SECRET, until
from test_storage import FailingConn, crash_copy, restored


class SlowPacking:
    """Packing a checkpoint's key rows waits for the test. `waiting`: a packing is held now."""

    def __init__(self, monkeypatch) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.waiting = False
        real = checkpoint_mod.to_row

        def to_row(*args):
            if not self.gate.is_set():
                self.waiting = True
                self.entered.set()
                try:
                    assert self.gate.wait(DEADLINE_S), "the test never opened the gate"
                finally:
                    self.waiting = False
            return real(*args)

        monkeypatch.setattr(checkpoint_mod, "to_row", to_row)


class Disk:
    """The storage's connection, told apart by transaction: a flush's (it inserts log rows) or a
    checkpoint's (it writes key rows). Either kind's next COMMIT can be held for the test, and
    a flush's made to fail once, like a full disk."""

    def __init__(self, storage: Storage) -> None:
        self.real = storage._conn
        storage._conn = self
        self.kind: str | None = None
        self.hold: dict[str, threading.Event] = {}  # kind -> released by the test
        self.held = {"flush": threading.Event(), "checkpoint": threading.Event()}
        self.fail_flush = False

    def __getattr__(self, name):
        return getattr(self.real, name)

    def execute(self, sql, *args):
        if sql == "BEGIN IMMEDIATE":
            self.kind = None
        elif sql == "COMMIT" and self.kind is not None:
            gate = self.hold.pop(self.kind, None)
            if gate is not None:
                self.held[self.kind].set()
                assert gate.wait(DEADLINE_S), "the test never released the COMMIT"
            elif self.kind == "flush" and self.fail_flush:
                self.fail_flush = False
                raise sqlite3.OperationalError("disk I/O error")
        return self.real.execute(sql, *args)

    def executemany(self, sql, rows):
        if sql.startswith("INSERT INTO log"):
            self.kind = "flush"
        elif sql.startswith("INSERT OR REPLACE INTO keyspace"):
            self.kind = "checkpoint"
        return self.real.executemany(sql, rows)


async def single(tmp_path) -> ReplicaRunner:
    """One replica, no peers (so no gate: it takes writes at once)."""
    r = ReplicaRunner("lhr", {}, data_dir=tmp_path / "lhr", secret=SECRET)
    await r.start("127.0.0.1", 0)
    return r


def due(r: ReplicaRunner) -> None:
    r._last_checkpoint = float("-inf")  # the next group commit starts one


async def packing(r: ReplicaRunner, slow: SlowPacking, key: str, value) -> None:
    """Write `key`: its group commit starts a checkpoint, which the worker is then packing."""
    due(r)
    await write(r, key, value)
    await until("the checkpoint to be packing", slow.entered.is_set)


async def write(r: ReplicaRunner, key: str, value) -> None:
    await asyncio.wait_for(r.write("kv", key, {"value": value}), DEADLINE_S)


def values(rep: Replica, keys) -> dict:
    return {k: rep.read_kv(k).values for k in keys}


def checkpoint_errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "checkpoint failed" in r.getMessage()]


def test_writes_are_answered_and_flushed_while_a_checkpoint_is_written(tmp_path, monkeypatch, caplog):
    """The checkpoint ran on the event loop: every write waited for all of it (240 ms seen
    under load). Now the loop only captures the state; while the worker is held in its
    packing, writes are answered, each after its own group commit."""
    slow = SlowPacking(monkeypatch)

    async def main():
        r = await single(tmp_path)
        try:
            await write(r, "a", 1)
            await packing(r, slow, "b", 2)
            flushes = r.storage.stats.flushes
            for i in range(10):
                await write(r, f"c{i}", i)
            assert slow.waiting, "the writes waited for the checkpoint"
            assert r.storage.stats.checkpoints == 0 and r.storage.stats.flushes >= flushes + 10
            slow.gate.set()
            await until("the checkpoint to commit", lambda: r.storage.stats.checkpoints == 1)
            # the log keeps what was flushed after the capture: the checkpoint does not hold it
            assert r.storage.log_length == 10
        finally:
            slow.gate.set()
            await r.stop()

    run_async(main())
    assert not checkpoint_errors(caplog)
    st, back = restored(tmp_path / "lhr")
    st.close()
    assert values(back, ["a", "b", "c0", "c9"]) == {"a": [1], "b": [2], "c0": [0], "c9": [9]}


def test_a_capture_holding_a_buffered_write_is_dropped_when_that_write_fails(tmp_path):
    """A write applied but not yet flushed when the state is captured is in the capture. Its
    flush then fails: the write is refused, so the checkpoint must never be written (it would
    make the refused write durable, and a rollback would reload it). The checkpoint that ran on
    the loop wrote it at once, before the flush."""

    async def main():
        r = await single(tmp_path)
        try:
            await write(r, "a", 1)
            disk = Disk(r.storage)
            disk.hold["flush"] = release = threading.Event()
            b = asyncio.ensure_future(write(r, "b", 2))
            await until("b's flush to be committing", disk.held["flush"].is_set)
            due(r)
            c = asyncio.ensure_future(write(r, "c", 3))
            await until("c to be buffered behind it", lambda: r.storage.pending == 1)
            disk.fail_flush = True  # c's flush: the next one
            release.set()
            await b
            with pytest.raises(StorageUnavailable):
                await c
            assert r.stats.rollbacks == 1
            assert (await r.read("kv", "c")).values == []
            assert r._ckpt is None and r._ckpt_task is None and r.storage.stats.checkpoints == 0
            await write(r, "d", 4)
        finally:
            await r.stop()

    run_async(main())
    st, back = restored(tmp_path / "lhr")
    st.close()
    assert values(back, "abcd") == {"a": [1], "b": [2], "c": [], "d": [4]}


def test_a_flush_failing_while_a_checkpoint_is_packed_cancels_the_checkpoint(tmp_path, monkeypatch, caplog):
    """The flush fails while the worker packs: the rollback reloads the durable state, and the
    checkpoint, captured from the state before, is refused when it reaches its transaction.
    The next one is written as usual."""
    slow = SlowPacking(monkeypatch)

    async def main():
        r = await single(tmp_path)
        try:
            await write(r, "a", 1)
            await packing(r, slow, "b", 2)
            r.storage._conn = FailingConn(r.storage._conn, "COMMIT")  # the next COMMIT: c's flush
            with pytest.raises(StorageUnavailable):
                await write(r, "c", 3)
            assert r.stats.rollbacks == 1 and slow.waiting
            slow.gate.set()
            await until("the checkpoint to end", lambda: r._ckpt_task is None)
            assert r.storage.stats.checkpoints == 0
            assert checkpoint_errors(caplog) and "cancelled" in checkpoint_errors(caplog)[0]
            await write(r, "d", 4)
            due(r)
            await write(r, "e", 5)
            await until("the next checkpoint", lambda: r.storage.stats.checkpoints == 1)
        finally:
            slow.gate.set()
            await r.stop()

    run_async(main())
    st, back = restored(tmp_path / "lhr")
    st.close()
    assert values(back, "abcde") == {"a": [1], "b": [2], "c": [], "d": [4], "e": [5]}


def test_stop_waits_for_a_checkpoint_being_written_then_closes_cleanly(tmp_path, monkeypatch, caplog):
    slow = SlowPacking(monkeypatch)

    async def main():
        r = await single(tmp_path)
        stop = None
        try:
            await write(r, "a", 1)
            await packing(r, slow, "b", 2)
            await write(r, "c", 3)
            stop = asyncio.ensure_future(r.stop())
            await until("stop to have ended the committer", lambda: all(t.done() for t in r._tasks))
            assert not stop.done() and slow.waiting  # waiting for the checkpoint's thread
            slow.gate.set()
            await asyncio.wait_for(stop, DEADLINE_S)
            assert r.storage.stats.checkpoints == 2  # the worker's, then the clean stop's own
        finally:
            slow.gate.set()
            if stop is None:
                await r.stop()

    run_async(main())
    assert not checkpoint_errors(caplog)
    st, back = restored(tmp_path / "lhr")
    try:
        assert st.was_clean and st.log_length == 0
        assert values(back, "abc") == {"a": [1], "b": [2], "c": [3]}
    finally:
        st.close()


def test_a_crash_at_any_point_of_a_checkpoint_loses_no_acknowledged_write(tmp_path, monkeypatch):
    """Copies of the data directory (what SIGKILL leaves) taken while the checkpoint is packed,
    while its transaction is open, and after it committed: each restores every write
    answered before it was taken. A write made during the transaction waits for it (the flush
    shares its connection): that wait is what is left of a checkpoint's stall."""
    slow = SlowPacking(monkeypatch)
    copies = tmp_path / "copies"

    async def main():
        r = await single(tmp_path)
        try:
            for i in range(50):
                await write(r, f"k{i}", i)
            disk = Disk(r.storage)
            disk.hold["checkpoint"] = release = threading.Event()
            await packing(r, slow, "a", 1)
            await write(r, "b", 2)
            crash_copy(tmp_path / "lhr", copies / "packing")
            slow.gate.set()
            await until("its transaction to be open", disk.held["checkpoint"].is_set)
            c = asyncio.ensure_future(write(r, "c", 3))
            await until("c to be appended", lambda: r.storage.pending == 1)
            crash_copy(tmp_path / "lhr", copies / "committing")
            assert not c.done()
            release.set()
            await c
            assert r.storage.stats.checkpoints == 1
            crash_copy(tmp_path / "lhr", copies / "committed")
        finally:
            slow.gate.set()
            await r.stop()

    run_async(main())
    expect = {f"k{i}": [i] for i in range(50)}
    for name, more in (("packing", {"a": [1], "b": [2]}), ("committing", {"a": [1], "b": [2]}),
                       ("committed", {"a": [1], "b": [2], "c": [3]})):
        st, back = restored(copies / name)
        st.close()
        assert values(back, [*expect, *more]) == {**expect, **more}, name


def test_a_checkpoint_that_fails_is_retried_and_writes_go_on(tmp_path, caplog):
    async def main():
        r = await single(tmp_path)
        try:
            await write(r, "a", 1)
            r.storage._conn = FailingConn(r.storage._conn, "INSERT OR REPLACE INTO keyspace")
            due(r)
            await write(r, "b", 2)
            await until("the checkpoint to fail", lambda: checkpoint_errors(caplog))
            await until("the task to end", lambda: r._ckpt_task is None)
            assert r.storage.stats.checkpoints == 0
            await write(r, "c", 3)  # the connection is out of the failed transaction
            due(r)
            await write(r, "d", 4)
            await until("the retry to commit", lambda: r.storage.stats.checkpoints == 1)
            assert r.storage.log_length == 0 and r.stats.rollbacks == 0
        finally:
            await r.stop()

    run_async(main())
    st, back = restored(tmp_path / "lhr")
    st.close()
    assert values(back, "abcd") == {"a": [1], "b": [2], "c": [3], "d": [4]}


def test_one_checkpoint_at_a_time(tmp_path, monkeypatch):
    slow = SlowPacking(monkeypatch)

    async def main():
        r = await single(tmp_path)
        prepared = []
        real = r.storage.prepare_checkpoint
        r.storage.prepare_checkpoint = lambda *a, **kw: prepared.append(1) or real(*a, **kw)
        try:
            await packing(r, slow, "a", 1)
            for i in range(5):
                due(r)
                await write(r, f"b{i}", i)
            assert len(prepared) == 1
            with pytest.raises(StorageError, match="one at a time"):
                real(r.node.replica)
            slow.gate.set()
            await until("it to commit", lambda: r.storage.stats.checkpoints == 1)
            await until("its task to end", lambda: r._ckpt_task is None)
            due(r)
            await write(r, "c", 1)
            await until("the next one", lambda: r.storage.stats.checkpoints == 2)
            assert len(prepared) == 2
        finally:
            slow.gate.set()
            await r.stop()

    run_async(main())


# -- the storage's two halves ---------------------------------------------------------------------------


def test_a_capture_is_written_as_it_was_and_the_log_keeps_what_came_after(tmp_path):
    st, a = restored(tmp_path)
    for v in (1, 2):
        _, d = a.write_kv("k", v, now=v)
        st.append(d)
        st.flush()
        if v == 1:
            cap = st.prepare_checkpoint(a)
    assert st.write_checkpoint(cap) == 1  # the first write's log row; the second's stays
    assert st.log_length == 1
    st.close()
    st, back = restored(tmp_path)
    st.close()
    assert back.read_kv("k").values == [2]


def test_a_capture_waits_for_the_writes_it_may_hold(tmp_path):
    st, a = restored(tmp_path)
    _, d = a.write_kv("k", 1, now=1)
    st.append(d)  # applied, not durable
    cap = st.prepare_checkpoint(a)
    with pytest.raises(StorageError, match="flush first"):
        st.write_checkpoint(cap)
    st.flush()
    cap = st.prepare_checkpoint(a)
    assert st.write_checkpoint(cap) == 1 and st.stats.checkpoints == 1
    st.close()


def test_a_reload_or_a_newer_capture_cancels_a_capture(tmp_path):
    st, a = restored(tmp_path)
    _, d = a.write_kv("k", 1, now=1)
    st.append(d)
    st.flush()
    old = st.prepare_checkpoint(a)
    newer = st.prepare_checkpoint(a)
    with pytest.raises(StorageError, match="cancelled"):
        st.write_checkpoint(old)
    st._conn = FailingConn(st._conn, "COMMIT")
    _, d = a.write_kv("k", 2, now=2)
    st.append(d)
    with pytest.raises(sqlite3.OperationalError):
        st.flush()
    assert st.settle() is False
    a = st.reload("lhr")
    st.discard_pending()
    with pytest.raises(StorageError, match="cancelled"):
        st.write_checkpoint(newer)
    st.checkpoint(a)
    st.close()
    st, back = restored(tmp_path)
    st.close()
    assert back.read_kv("k").values == [1]


def test_a_repair_captured_by_a_checkpoint_that_failed_is_written_by_the_next(tmp_path):
    """A repair is logged nowhere: the capture takes its key from the store, so the storage
    must keep it until a checkpoint holding it commits."""
    st, a, b = damaged_on_disk(tmp_path)
    assert a.store.repair(b.store.repair_delta([("kv", "k")]), b.store.applied, "fra") == [("kv", "k")]
    real = st._conn
    st._conn = FailingConn(real, "INSERT OR REPLACE INTO keyspace")
    with pytest.raises(sqlite3.OperationalError):
        st.checkpoint(a)
    assert not a.store.rewritten  # taken by the capture
    st._conn = real
    st.checkpoint(a)
    st.close()
    st = Storage.open(tmp_path)
    back = st.restore("lhr", members=["lhr", "fra"])
    st.close()
    assert back.read_kv("k").values == ["real"]


def test_a_worker_writing_a_checkpoint_holds_off_another(tmp_path, monkeypatch):
    slow = SlowPacking(monkeypatch)
    st, a = restored(tmp_path)
    _, d = a.write_kv("k", 1, now=1)
    st.append(d)
    st.flush()
    cap = st.prepare_checkpoint(a)
    worker = threading.Thread(target=st.write_checkpoint, args=(cap,))
    worker.start()
    try:
        assert slow.entered.wait(DEADLINE_S)
        with pytest.raises(StorageError, match="one at a time"):
            st.prepare_checkpoint(a)
    finally:
        slow.gate.set()
        worker.join(DEADLINE_S)
    st.checkpoint(a)
    st.close()
    assert st.stats.checkpoints == 2

