"""Durable state: what was flushed survives any crash, and the restored replica is the same.

A "crash" is either a copy of the database files taken while the storage is still open
(what a SIGKILL leaves behind: whatever reached the OS), or a real child process killed
with SIGKILL in the middle of a stream of acknowledged flushes.

Run `python tests/test_storage.py bench` for durable appends per second by batch size.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest

from replication import Replica
from replication.clocks import Dot
from replication.crdts import BY_NAMESPACE
from replication.idempotency import Record
from replication.bench.workload import Workload
from replication.errors import CorruptStorage, StorageError, StorageLocked, WrongReplica
from replication.io.storage import DB_NAME, Storage

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[1]


def crash_copy(src: Path, dst: Path) -> Path:
    """The files a killed process leaves: the database and its WAL (not the lock, not the
    shared-memory index, which SQLite rebuilds from the WAL)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in (DB_NAME, DB_NAME + "-wal"):
        if (src / name).exists():
            shutil.copyfile(src / name, dst / name)
    return dst


def restored(path: Path, rid: str = "lhr") -> tuple[Storage, Replica]:
    st = Storage.open(path)
    return st, st.restore(rid)


def same_state(a: Replica, b: Replica, *, forgot: bool = False) -> None:
    """`b` holds what `a` holds. With `forgot`, `a` dropped dot->key entries after its last
    checkpoint (that is not logged): `b` may still have them, and must agree on the rest."""
    assert a.digest() == b.digest()
    assert a.version_vector == b.version_vector
    assert a.store.ctx == b.store.ctx and a.store.applied == b.store.applied
    if forgot:
        assert a.store.key_of.items() <= b.store.key_of.items()
    else:
        assert dict(a.store.key_of) == dict(b.store.key_of)
    assert a.store.data == b.store.data


def reference_digests(seed: int, batches: int, batch: int = 10) -> list[str]:
    """digest after k batches, for k = 0..batches, without any storage."""
    w, lhr = Workload(seed, batch=batch), Replica("lhr")
    out = [lhr.digest()]
    for _ in range(batches):
        w.run_batch(lhr, None)
        out.append(lhr.digest())
    return out


# -- basics ---------------------------------------------------------------------------------------


def test_fresh_directory_gives_an_empty_replica_and_claims_the_id(tmp_path):
    st = Storage.open(tmp_path / "d")
    r = st.restore("lhr")
    assert r.id == r.actor == "lhr" and len(r.store) == 0 and r.digest() == Replica("lhr").digest()
    st.close()
    st = Storage.open(tmp_path / "d")
    with pytest.raises(WrongReplica):
        st.restore("fra")
    st.close()
    st = Storage.open(tmp_path / "d")
    state = st.load()
    assert (state.replica_id, state.actor, state.clean) == ("lhr", "lhr", True)
    st.close()


def test_wal_mode_and_full_sync(tmp_path):
    st = Storage.open(tmp_path)
    assert st._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert st._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    st.close()


def test_one_process_per_data_directory(tmp_path):
    st = Storage.open(tmp_path)
    with pytest.raises(StorageLocked):
        Storage.open(tmp_path)
    st.close()
    Storage.open(tmp_path).close()


def test_flushed_writes_survive_a_crash(tmp_path):
    st, lhr = restored(tmp_path / "a")
    w = Workload(seed=1)
    for _ in range(20):
        w.run_batch(lhr, st)
    assert st.pending == 0
    st2, back = restored(crash_copy(tmp_path / "a", tmp_path / "crash"))
    same_state(lhr, back)
    assert back.read_kv("k3").values == lhr.read_kv("k3").values
    assert {ns for ns, keys in back.store.data.items() if keys} == set(BY_NAMESPACE)  # every type went to disk
    assert st2.load().clean is False
    assert st2.stats.replayed == st.log_length > 0


def test_restore_after_checkpoints_equals_the_original(tmp_path):
    st, lhr = restored(tmp_path / "a")
    w = Workload(seed=2)
    copies = []
    for b in range(30):
        w.run_batch(lhr, st)
        if b % 7 == 3:
            st.checkpoint(lhr)
            assert st.log_length == 0  # everything flushed was applied: all of it truncated
        copies.append((crash_copy(tmp_path / "a", tmp_path / f"c{b}"), lhr.digest()))
    for path, digest in copies:
        s, back = restored(path)
        assert back.digest() == digest, path
        s.close()
    _s, back = restored(copies[-1][0])
    same_state(lhr, back)


def test_unflushed_tail_is_lost_cleanly(tmp_path):
    st, lhr = restored(tmp_path / "a")
    w = Workload(seed=3)
    for _ in range(5):
        w.run_batch(lhr, st)
    at_flush = lhr.digest()
    for i in range(50):  # applied in memory, appended, never flushed
        st.append(lhr.write_kv(f"late{i}", i, now=2e12)[1])
    assert st.pending == 50
    _s, back = restored(crash_copy(tmp_path / "a", tmp_path / "crash"))
    assert back.digest() == at_flush
    assert back.read_kv("late0").values == []


def test_clean_close_checkpoints_and_reopens(tmp_path):
    st, lhr = restored(tmp_path / "a")
    w = Workload(seed=4)
    for _ in range(10):
        w.run_batch(lhr, st)
    st.append(lhr.write_kv("last", 1, now=2e12)[1])  # flushed by close
    st.close(lhr)
    st, back = restored(tmp_path / "a")
    same_state(lhr, back)
    state = st.load()
    assert state.clean is True  # the previous session closed cleanly
    assert st.stats.replayed == 0  # close checkpointed everything


@pytest.mark.parametrize("seed", range(20))
def test_random_crash_points(tmp_path, seed):
    rng = random.Random(seed)
    st, lhr = restored(tmp_path / "a")
    w = Workload(seed=100 + seed, batch=rng.choice([1, 5, 20]))
    crash_at = rng.randrange(5, 25)
    lhr.members.add("fra")
    forgot = False
    for b in range(crash_at):
        w.run_batch(lhr, st)
        if rng.random() < 0.3:
            st.checkpoint(lhr)
            forgot = False
        if rng.random() < 0.3:
            lhr.observe_peer("fra", w.fra.applied_context)  # forget dot->key entries both hold
            forgot = True
    _s, back = restored(crash_copy(tmp_path / "a", tmp_path / "crash"))
    same_state(lhr, back, forgot=forgot)
    # and the restored replica carries on: its next dot is fresh, and its HLC is past every
    # timestamp it gave a value
    old_top = lhr.store.ctx.next_dot("lhr")
    view, d = back.write_kv("after", 1, now=0)
    assert min(d.applied.dots()) == old_top
    mine = [ts for s_ in lhr.store.data["kv"].values() for dot, (_v, ts) in s_.items() if dot[0] == "lhr"]
    sib = next(s_ for s_ in view.siblings if s_.replica == "lhr")
    assert all((sib.wall_ms, sib.logical) > tuple(ts) for ts in mine)


# -- the ordering contract: persisted before applied, and checkpoints never lose one ---------------


def test_a_checkpoint_between_flush_and_apply_keeps_the_delta(tmp_path):
    st, lhr = restored(tmp_path / "a")
    fra = Replica("fra")
    _, d = fra.write_kv("x", "from fra", now=1)
    st.append(d)
    st.flush()
    assert not lhr.store.holds(d)
    assert st.checkpoint(lhr) == 0  # not applied yet: it stays in the log
    lhr.apply(d)
    s, back = restored(crash_copy(tmp_path / "a", tmp_path / "c1"))
    assert back.read_kv("x").values == ["from fra"]
    s.close()
    assert st.checkpoint(lhr) == 1  # applied now: it goes, and its key is written with the state
    s, back = restored(crash_copy(tmp_path / "a", tmp_path / "c2"))
    assert s.stats.replayed == 0
    assert back.read_kv("x").values == ["from fra"]
    same_state(lhr, back)


def test_checkpoint_with_buffered_local_writes_is_consistent(tmp_path):
    """A local write is applied before it is appended; a checkpoint taken before the flush
    writes its key together with the contexts that already name its dot."""
    st, lhr = restored(tmp_path / "a")
    st.append(lhr.write_kv("k", "v1", now=1)[1])
    st.flush()
    st.checkpoint(lhr)  # the log is empty now: no logged delta names "other"
    st.append(lhr.write_kv("k", "v2", now=2)[1])  # buffered, not flushed
    st.append(lhr.write_kv("other", "o", now=3)[1])
    st.checkpoint(lhr)
    _s, back = restored(crash_copy(tmp_path / "a", tmp_path / "c"))
    same_state(lhr, back)  # the checkpoint made them durable along with the contexts naming them
    assert back.read_kv("k").values == ["v2"] and back.read_kv("other").values == ["o"]


def test_removed_keys_leave_the_keyspace_table(tmp_path):
    st, lhr = restored(tmp_path / "a")
    for k in ("a", "b", "c"):
        st.append(lhr.write_kv(k, k, now=1)[1])
    st.append(lhr.add_to_set("s", [1], now=1)[1])
    st.flush()
    st.checkpoint(lhr)
    st.append(lhr.delete_kv("b", now=2)[1])
    st.append(lhr.remove_from_set("s", [1], now=2)[1])
    st.flush()
    st.checkpoint(lhr)
    rows = st._conn.execute("SELECT ns, key FROM keyspace ORDER BY ns, key").fetchall()
    assert rows == [("kv", "a"), ("kv", "c")]
    _s, back = restored(crash_copy(tmp_path / "a", tmp_path / "c"))
    same_state(lhr, back)


def test_full_state_transfer_rewrites_the_keyspace(tmp_path):
    st, lhr = restored(tmp_path / "a")
    fra = Replica("fra")
    for k in ("a", "b"):
        d = lhr.write_kv(k, k, now=1)[1]
        st.append(d)
        fra.apply(d)
    st.flush()
    st.checkpoint(lhr)
    fra.delete_kv("a", now=2)
    full = fra.store.full_delta()
    st.append(full)
    st.flush()
    lhr.apply(full)
    assert lhr.read_kv("a").values == []
    st.checkpoint(lhr)
    assert st._conn.execute("SELECT key FROM keyspace").fetchall() == [("b",)]
    _s, back = restored(crash_copy(tmp_path / "a", tmp_path / "c"))
    same_state(lhr, back)


def test_forgotten_dot_keys_are_dropped_from_disk(tmp_path):
    st, lhr = restored(tmp_path / "a")
    lhr.members.add("fra")
    for i in range(5):
        st.append(lhr.write_kv(f"k{i}", i, now=1)[1])
    st.flush()
    st.checkpoint(lhr)
    assert st._conn.execute("SELECT COUNT(*) FROM dot_keys").fetchone()[0] == 5
    lhr.observe_peer("fra", lhr.applied_context)  # fra holds them all: the map forgets them
    assert not lhr.store.key_of
    st.checkpoint(lhr)
    assert st._conn.execute("SELECT COUNT(*) FROM dot_keys").fetchone()[0] == 0
    _s, back = restored(crash_copy(tmp_path / "a", tmp_path / "c"))
    same_state(lhr, back)


def test_group_commit_is_one_transaction(tmp_path):
    st, lhr = restored(tmp_path / "a")
    seqs = [st.append(lhr.add_counter("c", 1, now=i)[1]) for i in range(100)]
    assert seqs == list(range(1, 101)) and st.durable_seq == 0
    assert st.flush() == 100
    assert st.stats.flushes == 1 and st.stats.appended == 100
    assert st.flush() == 100 and st.stats.flushes == 1  # nothing pending: no transaction


class FailingConn:
    """The storage's connection, with one statement made to fail like a full disk. `after`:
    run the statement first and fail afterwards (a COMMIT whose fsync failed after the write)."""

    def __init__(self, real, prefix: str, *, after: bool = False, times: int = 1):
        self.real, self.prefix, self.after, self.left = real, prefix, after, times

    def __getattr__(self, name):
        return getattr(self.real, name)

    def _maybe_fail(self, sql: str) -> None:
        if self.left and sql.startswith(self.prefix):
            self.left -= 1
            raise sqlite3.OperationalError("disk I/O error")

    def execute(self, sql, *args):
        if not self.after:
            self._maybe_fail(sql)
        out = self.real.execute(sql, *args)
        if self.after:
            self._maybe_fail(sql)
        return out

    def executemany(self, sql, rows):
        self._maybe_fail(sql)
        return self.real.executemany(sql, rows)


def test_a_failed_flush_acknowledges_nothing_and_is_never_retried(tmp_path):
    """Deltas buffered behind a failed batch build on it (a counter's delta carries its actor's
    total), so neither it nor they may reach the disk: the driver reloads the durable state."""
    st, lhr = restored(tmp_path / "a")
    st.append(lhr.add_counter("c", 1, now=1)[1])
    assert st.flush() == 1
    real = st._conn
    st._conn = FailingConn(real, "INSERT INTO log")
    st.append(lhr.add_counter("c", 1, now=2)[1])  # the failed write: c = 2 in memory
    with pytest.raises(sqlite3.OperationalError):
        st.flush()
    assert st.in_doubt and st.durable_seq == 1 and not real.in_transaction
    behind = st.append(lhr.add_counter("c", 1, now=3)[1])  # its delta says c = 3
    for refused in (st.flush, lambda: st.checkpoint(lhr)):
        with pytest.raises(StorageError):
            refused()  # not before settle()
    assert st.settle() is False
    assert not st.in_doubt and st.stats.failed_flushes == 1
    for refused in (st.flush, lambda: st.checkpoint(lhr)):
        with pytest.raises(StorageError):
            refused()  # not before reload() and discard_pending()
    back = st.reload("lhr")
    assert back.read_counter("c") == 1 and lhr.read_counter("c") == 3
    assert st.discard_pending() == 1 and st.pending == 0
    _view, d = back.add_counter("c", 5, now=4)  # mints the failed write's dot again
    assert min(d.applied.dots()) == Dot("lhr", 2)
    assert st.append(d) > behind
    assert st.flush() == st.durable_seq and st.durable_seq > behind
    st.checkpoint(back)
    _s, after = restored(crash_copy(tmp_path / "a", tmp_path / "c"))
    assert after.read_counter("c") == 6
    same_state(back, after)


def test_a_commit_error_whose_rows_landed_counts_as_durable(tmp_path):
    st, lhr = restored(tmp_path / "a")
    real = st._conn
    st._conn = FailingConn(real, "COMMIT", after=True)
    st.append(lhr.write_kv("k", 1, now=1)[1])
    with pytest.raises(sqlite3.OperationalError):
        st.flush()
    assert st.durable_seq == 0
    assert st.settle() is True
    assert st.durable_seq == 1 and st.stats.landed_after_error == 1 and not st.in_doubt
    st.append(lhr.write_kv("k", 2, now=2)[1])
    assert st.flush() == 2  # flushes go on as usual
    _s, back = restored(crash_copy(tmp_path / "a", tmp_path / "c"))
    assert back.read_kv("k").values == [2]


def test_settle_that_cannot_read_the_disk_leaves_the_batch_in_doubt(tmp_path):
    st, lhr = restored(tmp_path / "a")
    real = st._conn
    st._conn = FailingConn(real, "INSERT INTO log")
    st.append(lhr.write_kv("k", 1, now=1)[1])
    with pytest.raises(sqlite3.OperationalError):
        st.flush()
    st._conn = FailingConn(real, "SELECT COUNT(*)")
    with pytest.raises(sqlite3.OperationalError):
        st.settle()
    assert st.in_doubt
    with pytest.raises(StorageError):
        st.flush()
    assert st.settle() is False


def record(key: str, at_ms: int, body: bytes = b"{}") -> Record:
    return Record(key, b"fingerprint of " + key.encode(), 200, body, at_ms)


def test_idempotency_records_are_durable_with_their_write_and_expire_at_checkpoints(tmp_path):
    st, lhr = restored(tmp_path / "a")
    st.append(lhr.write_kv("k", 1, now=1)[1], record=record("put-k", 1_000, b'{"values":[1]}'))
    st.remember(record("noop", 2_000))  # a keyed write that changed nothing
    st.append(lhr.write_kv("j", 1, now=3)[1])
    assert st.pending == 4  # rows: three deltas or records, and one record beside its delta
    top = st.flush()
    assert top == 3 and st.durable_seq == 3
    _s, back = restored(crash_copy(tmp_path / "a", tmp_path / "c"))
    assert _s.load_records(0) == [record("put-k", 1_000, b'{"values":[1]}'), record("noop", 2_000)]
    assert _s.load_records(1_500) == [record("noop", 2_000)]
    _s.close()
    st.checkpoint(lhr, expire_records_before=1_500)
    assert st.load_records(0) == [record("noop", 2_000)]
    st.close(lhr)
    # numbers go on above the records' after a restart: settle() looks for a batch by them
    st = Storage.open(tmp_path / "a")
    st.restore("lhr")
    assert st.remember(record("later", 3_000)) > 2


def test_a_failed_flush_keeps_none_of_its_records(tmp_path):
    st, lhr = restored(tmp_path / "a")
    real = st._conn
    st._conn = FailingConn(real, "INSERT OR REPLACE INTO idempotency")
    st.append(lhr.write_kv("k", 1, now=1)[1], record=record("put-k", 1_000))
    with pytest.raises(sqlite3.OperationalError):
        st.flush()
    assert st.settle() is False
    back = st.reload("lhr")
    st.discard_pending()
    assert back.read_kv("k").values == [] and st.load_records(0) == []
    st._conn = FailingConn(real, "COMMIT", after=True)
    st.remember(record("noop", 2_000))  # a batch of records alone is looked for in their table
    with pytest.raises(sqlite3.OperationalError):
        st.flush()
    assert st.settle() is True and st.load_records(0) == [record("noop", 2_000)]


def test_restore_runs_once(tmp_path):
    st, _ = restored(tmp_path)
    with pytest.raises(StorageError):
        st.restore("lhr")


def test_new_actor_is_recorded(tmp_path):
    st, lhr = restored(tmp_path / "a")
    st.append(lhr.write_kv("k", 1, now=1)[1])
    st.flush()
    st.close(lhr)
    st = Storage.open(tmp_path / "a")
    r = st.restore("lhr", actor="lhr~1")
    _, d = r.write_kv("k", 2, now=2)
    assert min(d.applied.dots()) == Dot("lhr~1", 1)
    st.append(d)
    st.close(r)
    st, r = restored(tmp_path / "a")
    assert r.actor == "lhr~1" and r.read_kv("k").values == [2]


# -- torn and corrupt files ------------------------------------------------------------------------


def _wal(path: Path) -> Path:
    return path / (DB_NAME + "-wal")


def test_a_commit_torn_mid_write_is_ignored(tmp_path):
    """Cut the WAL anywhere inside the frames of the last flush: that flush is lost whole,
    everything before it is intact."""
    st, lhr = restored(tmp_path / "a")
    w = Workload(seed=7)
    for _ in range(3):
        w.run_batch(lhr, st)
    before = lhr.digest()
    size_before = _wal(tmp_path / "a").stat().st_size
    db_before = (tmp_path / "a" / DB_NAME).read_bytes()
    for i in range(40):
        st.append(lhr.write_kv(f"torn{i}", "x" * 100, now=2e12)[1])
    st.flush()
    size_after = _wal(tmp_path / "a").stat().st_size
    assert size_after > size_before + 4096, "the last flush should have added WAL frames"
    assert (tmp_path / "a" / DB_NAME).read_bytes() == db_before, "no WAL checkpoint ran in between"
    wal = _wal(tmp_path / "a").read_bytes()
    for cut in sorted({size_before + 1, size_before + 24, size_before + 4000, (size_before + size_after) // 2,
                       size_after - 1}):
        dst = crash_copy(tmp_path / "a", tmp_path / f"cut{cut}")
        _wal(dst).write_bytes(wal[:cut])
        s, back = restored(dst)
        assert back.digest() == before, cut
        assert back.read_kv("torn0").values == []
        s.close()
    _s, back = restored(crash_copy(tmp_path / "a", tmp_path / "whole"))
    same_state(lhr, back)


def test_garbage_after_the_wal_is_ignored(tmp_path):
    st, lhr = restored(tmp_path / "a")
    w = Workload(seed=8)
    for _ in range(5):
        w.run_batch(lhr, st)
    dst = crash_copy(tmp_path / "a", tmp_path / "c")
    with open(_wal(dst), "ab") as f:
        f.write(random.Random(1).randbytes(10_000))
    _s, back = restored(dst)
    same_state(lhr, back)


def test_uncommitted_frames_in_the_wal_are_ignored(tmp_path):
    """A transaction that spilled pages into the WAL and never committed."""
    st, lhr = restored(tmp_path / "a")
    w = Workload(seed=9)
    for _ in range(5):
        w.run_batch(lhr, st)
    other = sqlite3.connect(tmp_path / "a" / DB_NAME, isolation_level=None)
    other.execute("PRAGMA cache_size=2")
    size = _wal(tmp_path / "a").stat().st_size
    other.execute("BEGIN IMMEDIATE")
    bogus = msgpack.packb(lhr.write_kv("ghost", 1, now=1)[1].to_wire())
    other.executemany("INSERT INTO log (seq, delta, sum) VALUES (?, ?, 0)", [(10_000 + i, bogus + b"\0" * 3000) for i in range(200)])
    assert _wal(tmp_path / "a").stat().st_size > size, "uncommitted pages should have spilled into the WAL"
    dst = crash_copy(tmp_path / "a", tmp_path / "c")
    other.execute("ROLLBACK")
    other.close()
    s, back = restored(dst)
    assert back.read_kv("ghost").values == []
    assert s.stats.replayed == st.log_length


def test_a_corrupt_log_row_is_a_typed_error(tmp_path):
    st, lhr = restored(tmp_path / "a")
    st.append(lhr.write_kv("k", 1, now=1)[1])
    st.flush()
    st.close()
    con = sqlite3.connect(tmp_path / "a" / DB_NAME)
    con.execute("UPDATE log SET delta = ?", (msgpack.packb([1, "nonsense"]),))
    con.commit()
    con.close()
    st = Storage.open(tmp_path / "a")
    with pytest.raises(CorruptStorage):
        st.restore("lhr")


def test_not_a_database_is_a_typed_error(tmp_path):
    junk = b"this is not sqlite" * 100
    (tmp_path / DB_NAME).write_bytes(junk)
    with Storage.open(tmp_path) as st:
        assert [d.record for d in st.damage] == ["the database"] and "not a database" in st.damage[0].problem
        with pytest.raises(CorruptStorage, match="edgestate.db: the database: does not read"):
            st.restore("lhr")
    assert (tmp_path / DB_NAME).read_bytes() == junk  # refused: left exactly as it was
    Storage.open(tmp_path / "ok").close()  # and nothing was left locked elsewhere


# -- a real process, killed with SIGKILL in the middle of acknowledged flushes ----------------------


CHILD = """
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
from replication.io.storage import Storage
from replication.bench.workload import Workload
st = Storage.open({path!r})
lhr = st.restore("lhr")
w = Workload(seed={seed}, batch={batch})
b = 0
while True:
    w.run_batch(lhr, st)  # returns after the flush: every write of the batch is durable
    b += 1
    if b % 5 == 0:
        st.checkpoint(lhr)
    print(b, lhr.digest(), flush=True)  # the acknowledgement
"""


@pytest.mark.parametrize("acks_before_kill", [3, 40])
def test_sigkill_mid_stream_loses_no_acknowledged_write(tmp_path, acks_before_kill):
    seed, batch = 11, 10
    code = CHILD.format(repo=str(REPO), tests=str(REPO / "tests"), path=str(tmp_path / "d"), seed=seed, batch=batch)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        acks = []
        while len(acks) < acks_before_kill:
            line = proc.stdout.readline()
            assert line, f"child died early: {proc.stderr.read()}"
            acks.append(line.split())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        acks += [line.split() for line in proc.stdout.read().splitlines()]  # printed before it died
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    last = int(acks[-1][0])
    ref = reference_digests(seed, last + 1, batch)
    for b, digest in acks:
        assert ref[int(b)] == digest  # the workload is deterministic
    st, back = restored(tmp_path / "d")  # the lock died with the child
    got = back.digest()
    assert got in (ref[last], ref[last + 1]), "the restored state is not the state after an acknowledged batch"
    assert st.load().clean is False


# -- measurement (not a test): durable appends per second by group-commit size --------------------


def bench(per_flush: int, total: int, path: Path) -> float:
    st, lhr = restored(path)
    deltas = [lhr.write_kv(f"k{i % 1000}", {"i": i}, now=1_700_000_000_000 + i)[1] for i in range(total)]
    t0 = time.perf_counter()
    for i in range(0, total, per_flush):
        for d in deltas[i : i + per_flush]:
            st.append(d)
        st.flush()
    dt = time.perf_counter() - t0
    st.close()
    return total / dt


if __name__ == "__main__" and sys.argv[1:] == ["bench"]:
    import tempfile

    for n in (1, 10, 100):
        runs = []
        for r in range(3):
            with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
                runs.append(bench(n, 2000 if n == 1 else 20_000, Path(d)))
        print(f"{n:4d} deltas/flush: median {statistics.median(runs):9.0f} durable appends/s  runs {[round(x) for x in runs]}")


def test_a_logged_delta_the_store_refuses_on_replay_is_skipped_not_fatal(tmp_path, monkeypatch):
    """Remote deltas are logged before they are applied; one the replica refused must not stop
    it from ever starting again."""
    from replication.errors import MalformedDelta
    from replication.store import Store

    src = Replica("fra")
    _v, good = src.write_kv("good", 1, now=1.0)
    _v, bad = src.write_kv("bad", 2, now=2.0)
    with Storage.open(tmp_path) as st:
        st.restore("lhr")
        st.append(good)
        st.append(bad)
        st.flush()
    real = Store.apply

    def refusing(self, delta):
        if ("kv", "bad") in delta.entries:
            raise MalformedDelta("refused, as when it arrived")
        return real(self, delta)

    monkeypatch.setattr(Store, "apply", refusing)
    with Storage.open(tmp_path) as st:
        rep = st.restore("lhr")
        assert rep.read_kv("good").values == [1] and rep.read_kv("bad").values == []
        assert st.stats.refused_skipped == 1 and st.stats.replayed == 2
