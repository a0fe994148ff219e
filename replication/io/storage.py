"""Durable replica state in SQLite (WAL mode): a write is acknowledged once it is durable.

What is kept, under a data directory (one replica per directory, held by a lock file):

- `log`: every delta this replica applied since the last checkpoint, in wire form, in the
  order it was appended. This is the write-ahead part: a local write's delta, or a remote
  delta, is appended and flushed *before* the write is acknowledged or the remote delta is
  counted as applied.
- a checkpoint: the keyspace (one row per key: its dot store in wire form and the seals of
  its live dots, checked on load: `seals.to_row`), the join and applied contexts, the dot
  -> key map, the HLC's last timestamp, and the replica's id and actor. Rows are rewritten
  only for keys that changed since the last checkpoint (by logged deltas, or by content
  repairs: `Store.rewritten`).
- `idempotency`: a record per `Idempotency-Key` of a recent keyed write (the request's
  fingerprint and the answer given), written in the same transaction as the write's delta,
  so a retry after any restart is answered from it. Expired ones go at checkpoints. A
  repair of damaged storage starts with none (they are not salvaged).

On open, the checkpoint is loaded and the log replayed through `Store.apply` (deltas are
idempotent, so replaying one the checkpoint already holds changes nothing).

Group commit: `append(delta)` only buffers, in memory; `flush()` writes every buffered
delta in one transaction and returns once SQLite has fsynced it, so a caller can answer a
whole batch of writes after one fsync. Durability: `synchronous=FULL` in WAL mode fsyncs the
WAL on every commit. (NORMAL would survive a process crash but not a power cut or kernel
panic: its commits reach the disk only at WAL checkpoints, and "acknowledged" must mean on
disk.) A commit cut short by a crash is a torn WAL tail that SQLite ignores on open (WAL
frames are checksummed and only a commit frame makes a transaction count).

A flush that fails (a full disk) is never retried: the deltas buffered behind it were
computed from a state that holds it (a counter's delta carries its actor's total, a kv
write's context covers the dots it saw), so none of them may reach the disk either. The
driver asks `settle()` whether the batch landed after all (SQLite can report an fsync error
from a COMMIT whose rows are on disk); if not, it takes the durable state back with
`reload()` and drops what is buffered with `discard_pending()`, and the storage refuses
flushes and checkpoints in between. One window is left: a COMMIT whose fsync failed after
its frames were written but before SQLite counted them, then a crash before any later
commit overwrote them; WAL recovery may bring such a transaction back on the next open.

How a driver uses it (single-threaded, as the sans-IO core is):

    storage = Storage.open(data_dir)
    replica = storage.restore("lhr", secret=secret, members=peers)
    # local write: apply, append, and answer only after a flush
    view, delta = replica.write(...); storage.append(delta); ...; storage.flush(); answer
    # remote delta: append and flush, then apply
    storage.append(delta); storage.flush(); replica.apply(delta)
    # now and then, between flushes
    storage.checkpoint(replica, expire_records_before=wall_ms - ttl_ms)
    # ... or without holding the driver's thread: capture there, write in a worker once
    # every write the capture may hold is durable (storage.durable_seq >= cap.need)
    cap = storage.prepare_checkpoint(replica, expire_records_before=wall_ms - ttl_ms)
    storage.write_checkpoint(cap)  # in a worker thread; flushes wait only for its transaction
    # when flush() raised: nothing of it may be acknowledged
    if not storage.settle():  # (raises while the disk cannot even be read: ask again)
        replica = storage.reload("lhr", ...); storage.discard_pending()

Checkpoints are safe whenever they run: a logged delta is dropped from the log only once
the replica's state (as captured: `checkpoint.py`) provably holds it (`Store.holds`: its
contexts cover the delta's, which is exactly when `Store.apply` itself treats a delta as
already known), so a delta flushed but not yet applied when a checkpoint runs stays in the
log, and so does one flushed after the capture.

Integrity (schema 2): every row carries a checksum, and each checkpoint a manifest of its
rows; `open` checks the WAL and reads everything back read-only before it writes a byte
(see `integrity`). Damage found is in `storage.damage`, and `restore` refuses it unless
told to repair: then the damaged files are moved aside (`edgestate.db.corrupt-<time>`,
with their `-wal` and `-shm`), a new database is written holding the salvaged state (every
record that verified, under contexts of its live dots only), and that is restored. What to
do about it (refuse to start, or repair from peers under a new actor) is the caller's call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..clocks import Dot, check_replica_id
from ..delta import Delta, KeyRef
from ..errors import CorruptStorage, EdgeStateError, StaleDelta, StorageError, StorageLocked, WrongReplica
from .integrity import (
    DB_ERRORS,
    DB_NAME,
    REPAIR_MARK,
    SCHEMA_VERSION,
    Damage,
    Inspection,
    PersistedState,
    inspect,
    meta_row,
    read_state,
    record_sum,
    unpack,
)
from .integrity import pack as _pack
from ..idempotency import Record
from .migrate import OLD_VERSION, migrate_v1
from ..replica import DEV_SECRET, Replica
from ..store import Snapshot
from .checkpoint import Capture, Packed, capture, let_go, pack_capture, pause

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system: no cross-process lock
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = "LOCK"

# `sum` in every table: integrity.record_sum of the row (checked on every load)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL, sum INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS keyspace (
    ns TEXT NOT NULL, key TEXT NOT NULL, store BLOB NOT NULL, sum INTEGER NOT NULL, PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dot_keys (
    replica TEXT NOT NULL, counter INTEGER NOT NULL, ns TEXT NOT NULL, key TEXT NOT NULL, sum INTEGER NOT NULL,
    PRIMARY KEY (replica, counter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, delta BLOB NOT NULL, sum INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, seq INTEGER NOT NULL, at_ms INTEGER NOT NULL,
    request BLOB NOT NULL, status INTEGER NOT NULL, body BLOB NOT NULL, sum INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_at ON idempotency (at_ms);
"""
_PUT_META = "INSERT OR REPLACE INTO meta (name, value, sum) VALUES (?, ?, ?)"


def describe(damage: list[Damage], limit: int = 5) -> str:
    """The damage in one line: the first few, and how many more."""
    shown = "; ".join(map(str, damage[:limit]))
    return shown + (f"; and {len(damage) - limit} more" if len(damage) > limit else "")


@dataclass
class Repair:
    """What `restore(repair=True)` did."""

    moved_aside: list[Path]
    keys_kept: int
    log_rows_kept: int


def _log_row(seq: int, raw: bytes) -> tuple[int, bytes, int]:
    return seq, raw, record_sum("log", (seq,), raw)


def _record_row(seq: int, r: Record) -> tuple:
    blob = _pack([r.at_ms, r.request, r.status, r.body])
    return r.key, seq, r.at_ms, r.request, r.status, r.body, record_sum("idempotency", (r.key, seq), blob)


def _connect(db: Path, synchronous: str) -> sqlite3.Connection:
    """The read-write connection: WAL mode, the schema, and 'clean' cleared while we run."""
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StorageError(f"SQLite refused WAL mode for {db} (got {mode!r})")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA journal_size_limit=67108864")  # shrink the WAL file back after checkpoints
        conn.executescript(_SCHEMA)
        if conn.execute("SELECT 1 FROM meta WHERE name='schema'").fetchone() is None:
            conn.execute(_PUT_META, meta_row("schema", SCHEMA_VERSION))
        # 'clean' is cleared for as long as we run; close() sets it once all is flushed
        conn.execute(_PUT_META, meta_row("clean", False))
    except BaseException:
        conn.close()
        raise
    return conn


@dataclass
class StorageStats:
    flushes: int = 0
    appended: int = 0  # deltas made durable by flushes
    checkpoints: int = 0
    truncated: int = 0  # log rows dropped by checkpoints
    replayed: int = 0  # log rows replayed by restore
    stale_skipped: int = 0  # replayed anti-entropy replies that no longer applied
    refused_skipped: int = 0  # replayed deltas the store refused (as it did when they first arrived)
    failed_flushes: int = 0  # flushes that did not land (their batches were dropped)
    landed_after_error: int = 0  # flushes that raised, yet whose rows were found on disk
    bad_records: int = 0  # idempotency records that failed their checksum on load (dropped)


def _spent(state: PersistedState) -> PersistedState:
    """The state once restored: who it was, without the data (now the replica's)."""
    return dataclasses.replace(state, entries={}, log=[], key_of={}, key_sums={}, dot_sums={}, seals={})


def _fsync(path: Path) -> None:
    """Make a file's bytes durable, or (for a directory) the renames in it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _delta_keys(delta: Delta) -> tuple[set[KeyRef], bool]:
    return set(delta.entries), delta.full


class Storage:
    """One replica's durable state. Not thread-safe apart from `append` racing `flush`:
    a driver may run `flush` in a worker thread while its event loop keeps appending."""

    def __init__(self, path: Path, lock_fd: int | None, synchronous: str, inspection: Inspection) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock_fd = lock_fd
        self._synchronous = synchronous
        self._inspection = inspection
        self._buf: list[tuple[int, Delta, bytes]] = []
        self._recs: list[tuple[int, Record]] = []  # idempotency records, flushed with the deltas
        self._buf_lock = threading.Lock()  # append vs the buffer swap in flush
        self._io_lock = threading.RLock()  # one transaction at a time (reload holds it through restore)
        self._ckpt_lock = threading.Lock()  # one checkpoint at a time, from its capture's packing to its commit
        self._planned: Capture | None = None  # the checkpoint captured last, until written or cancelled
        # keys repairs changed, taken from the store by a capture and not yet in a checkpoint that committed
        self._rewriting: set[KeyRef] = set()
        self._next_seq = 1
        self.durable_seq = 0
        self._doubt: tuple[list, list] | None = None  # a batch whose flush raised: landed or not?
        self._tainted = False  # a flush failed: buffered deltas may build on it; nothing more is written
        # deltas in the log, kept to decide at a checkpoint which ones the state already holds
        self._retained: list[tuple[int, Delta]] = []
        self._dirty: set[KeyRef] = set()
        self._dirty_all = False
        # the stored sum of every keyspace and dot_keys row (the keys are the rows on disk):
        # what the manifest of the next checkpoint is made of. None: read them again.
        self._key_sums: dict[KeyRef, int] | None = dict(inspection.state.key_sums)
        self._dot_sums: dict[Dot, int] | None = dict(inspection.state.dot_sums)
        self.stats = StorageStats()
        self._closed = False
        self._restored = False
        self._was_clean = inspection.state.clean
        self.repair: Repair | None = None

    def _attach(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM log").fetchone()
        # records share the log's sequence: a failed flush is looked for by its numbers (settle)
        top = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM idempotency").fetchone()
        self._next_seq = max(self._next_seq, row[0] + 1, top[0] + 1)
        self.durable_seq = self._next_seq - 1

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike, *, synchronous: str = "FULL") -> Storage:
        """Open (creating if needed) the data directory `path`. Holds it until `close()`.

        Everything stored is checked first, read-only. Damage does not raise here: it is in
        `damage`, the database is left untouched, and `restore` refuses it unless asked to
        repair. A schema version other than ours raises StorageError."""
        if synchronous not in ("FULL", "EXTRA", "NORMAL"):
            raise ValueError("synchronous must be FULL, EXTRA or NORMAL")
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        lock_fd = None
        if fcntl is not None:
            lock_fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(lock_fd)
                raise StorageLocked(f"data directory {root} is in use by another replica process") from None
        try:
            found = inspect(root)
            if found.version == OLD_VERSION:
                migrate_v1(root)
                found = inspect(root)
            if found.version != SCHEMA_VERSION:
                raise StorageError(f"{root / DB_NAME} holds schema version {found.version!r}; this edgestate reads "
                                   f"version {SCHEMA_VERSION} (and migrates version {OLD_VERSION})")
            st = cls(root, lock_fd, synchronous, found)
            if not found.damage:
                st._attach(_connect(root / DB_NAME, synchronous))
        except sqlite3.DatabaseError as e:
            if lock_fd is not None:
                os.close(lock_fd)
            raise StorageError(f"cannot open {root / DB_NAME}: {e}") from None
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        return st

    # -- reading what is there ------------------------------------------------------------------

    @property
    def damage(self) -> list[Damage]:
        """What `open` found wrong, each naming its file and record (empty: all verified)."""
        return list(self._inspection.damage)

    def _meta(self, name: str, default=None):
        row = self._conn.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return default if row is None else unpack(row[0])

    @property
    def was_clean(self) -> bool:
        """The previous session closed cleanly: everything it appended reached the disk.
        After an unclean stop, state it showed (or sent) may not have, so a replica must
        come back under a new actor rather than mint its old dots again."""
        return self._was_clean

    def stored_actor(self) -> str | None:
        if self._conn is None:
            return self._inspection.state.actor
        return self._meta("actor")

    def set_actor(self, actor: str) -> None:
        """Record a new actor before its first dot (a replica that learnt it had lost its state)."""
        check_replica_id(actor)
        with self._io_lock:
            self._check_open()
            self._planned = None  # a checkpoint captured before would write the old actor back
            self._conn.execute(_PUT_META, meta_row("actor", actor))

    def count_boot(self) -> int:
        """Record one more start; returns the count including it (durable before it returns).
        A membership incarnation that rises with every start, so peers take the new one."""
        with self._io_lock:
            self._check_open()
            boots = self._meta("boots", 0)
            if type(boots) is not int or boots < 0:
                raise CorruptStorage(f"stored boot count in {self.path} is {boots!r}")
            self._conn.execute(_PUT_META, meta_row("boots", boots + 1))
            return boots + 1

    def load(self) -> PersistedState:
        """The checkpoint and the log after it, read again and checked. Raises CorruptStorage."""
        self._check_open()
        try:
            state, damage, _version = read_state(self._conn, quick_check=False)
        except DB_ERRORS as e:
            damage = [Damage(DB_NAME, "the database", f"does not read ({e})")]
        if damage:
            raise CorruptStorage(f"stored state in {self.path} is damaged: {describe(damage)}", damage)
        state.clean = self._was_clean
        self._key_sums, self._dot_sums = dict(state.key_sums), dict(state.dot_sums)
        return state

    def restore(
        self,
        replica_id: str,
        *,
        secret: bytes = DEV_SECRET,
        members: Iterable[str] = (),
        actor: str | None = None,
        repair: bool = False,
    ) -> Replica:
        """A Replica holding exactly the durable state. A fresh directory is claimed for
        `replica_id` (and `actor`, default the id); a directory of another replica is refused.
        `actor` given for an existing directory replaces the stored one (a new incarnation).

        Damaged storage raises CorruptStorage, unless `repair`: then the damaged files are
        moved aside and the salvaged state is written anew and restored (`self.repair` says
        what was done). The caller must give a new actor: the salvaged contexts are partial."""
        check_replica_id(replica_id)
        with self._buf_lock:
            if self._closed:
                raise StorageError("storage is closed")
            if self._restored or self._buf or self._retained:
                raise StorageError("restore() runs once, before anything is appended")
        damage = self._inspection.damage
        if damage and not repair:
            raise CorruptStorage(f"stored state in {self.path} is damaged: {describe(damage)}", damage)
        state = self._inspection.state
        if state.replica_id is not None and state.replica_id != replica_id:
            raise WrongReplica(f"data directory {self.path} belongs to replica {state.replica_id!r}, not {replica_id!r}")
        self._restored = True
        self._inspection = Inspection(state=_spent(state), damage=damage)
        if damage:
            return self._rebuild(state, replica_id, secret, members, actor)
        return self._restore(state, replica_id, secret, members, actor)

    def _restore(self, state: PersistedState, replica_id: str, secret: bytes, members: Iterable[str],
                 actor: str | None) -> Replica:
        actor = actor or state.actor or replica_id
        rep = Replica(replica_id, secret=secret, members=members, actor=actor)
        if state.replica_id is None or state.actor != actor:
            with self._io_lock:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(_PUT_META, [meta_row("replica_id", replica_id), meta_row("actor", actor)])
                self._conn.execute("COMMIT")
        rep.restore(Snapshot(state.entries, state.ctx, state.applied, state.key_of, state.seals), state.hlc)
        for seq, delta in state.log:
            try:
                rep.replay(delta)
            except StaleDelta:
                self.stats.stale_skipped += 1  # it failed the same way when it first arrived
            except EdgeStateError:
                # a logged delta the replica refused when it arrived (it is logged before it is
                # applied): refused again, never a replica that cannot start
                self.stats.refused_skipped += 1
            self._retain(seq, delta)
            self.stats.replayed += 1
        return rep

    def _rebuild(self, state: PersistedState, replica_id: str, secret: bytes, members: Iterable[str],
                 actor: str | None) -> Replica:
        """Write the salvaged state to a new database beside the damaged one, then swap them.
        A mark on disk from first to last says a repair is under way: a crash half-way (with
        the damaged WAL moved aside, say, and the older database file back in place) is found
        at the next start as damage, never taken for a healthy directory."""
        root = self.path
        mark = root / REPAIR_MARK
        mark.write_text(f"repairing since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}: "
                        f"{describe(self._inspection.damage, limit=20)}\n")
        _fsync(mark)
        _fsync(root)
        tmp = root / (DB_NAME + ".rebuild")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)  # a rebuild a crash cut short
        self._key_sums, self._dot_sums = {}, {}
        conn = _connect(tmp, self._synchronous)
        try:
            self._attach(conn)
            if state.log:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT INTO log (seq, delta, sum) VALUES (?, ?, ?)",
                                 [_log_row(seq, _pack(d.to_wire())) for seq, d in state.log])
                conn.execute("COMMIT")
            self._attach(conn)
            rep = self._restore(state, replica_id, secret, members, actor)
            self.checkpoint(rep, full=True)
            conn.execute(_PUT_META, meta_row("boots", state.boots))
        finally:
            conn.close()  # folds its WAL into the file and removes it
            self._conn = None
        if Path(f"{tmp}-wal").exists():
            raise StorageError(f"the repaired database {tmp} kept a WAL on close; left as it is")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = root / f"{DB_NAME}.corrupt-{stamp}"
        n = 1
        while any(Path(f"{aside}{s}").exists() for s in ("", "-wal", "-shm")):
            n += 1
            aside = root / f"{DB_NAME}.corrupt-{stamp}.{n}"
        moved = []
        for suffix in ("", "-wal", "-shm"):
            src = root / (DB_NAME + suffix)
            if src.exists():
                os.replace(src, f"{aside}{suffix}")
                moved.append(Path(f"{aside}{suffix}"))
        os.replace(tmp, root / DB_NAME)
        _fsync(root)
        mark.unlink()
        _fsync(root)
        self._attach(_connect(root / DB_NAME, self._synchronous))
        self.repair = Repair(moved, len(rep.store), len(state.log))
        return rep

    # -- the write-ahead log ----------------------------------------------------------------------

    def _retain(self, seq: int, delta: Delta) -> None:
        self._retained.append((seq, delta))
        self._mark_dirty(delta)

    def _mark_dirty(self, delta: Delta) -> None:
        keys, whole = _delta_keys(delta)
        self._dirty |= keys
        self._dirty_all |= whole

    def append(self, delta: Delta, *, record: Record | None = None) -> int:
        """Buffer a delta for the next flush. Returns its sequence number; it is durable once
        `durable_seq` reaches it (when the flush that wrote it returns). `record`: the
        idempotency record of the write that made it, written in the same transaction."""
        if not isinstance(delta, Delta):
            raise TypeError("append takes a Delta")
        raw = _pack(delta.to_wire())
        with self._buf_lock:
            self._check_open()
            seq = self._next_seq
            self._next_seq += 1
            self._buf.append((seq, delta, raw))
            if record is not None:
                self._recs.append((seq, record))
        return seq

    def append_many(self, deltas: list[Delta], *, record: Record | None = None) -> int:
        """Buffer deltas together: the next flush takes all of them or none (one transaction),
        `record` with the last. Returns the last one's sequence number."""
        if not deltas or not all(isinstance(d, Delta) for d in deltas):
            raise TypeError("append_many takes a non-empty list of Deltas")
        packed = [(d, _pack(d.to_wire())) for d in deltas]
        with self._buf_lock:
            self._check_open()
            for d, raw in packed:
                seq = self._next_seq
                self._next_seq += 1
                self._buf.append((seq, d, raw))
            if record is not None:
                self._recs.append((seq, record))
        return seq

    def remember(self, record: Record) -> int:
        """Buffer an idempotency record alone (a keyed write that changed nothing). Returns
        its sequence number, durable as `append`'s are."""
        if not isinstance(record, Record):
            raise TypeError("remember takes a Record")
        with self._buf_lock:
            self._check_open()
            seq = self._next_seq
            self._next_seq += 1
            self._recs.append((seq, record))
        return seq

    def load_records(self, since_ms: int) -> list[Record]:
        """The idempotency records answered at or after `since_ms`, oldest first. A record that
        fails its checksum is dropped and counted: a retry of it then applies again, which is
        the lesser harm than answering from a damaged record."""
        with self._io_lock:
            self._check_open()
            rows = self._conn.execute(
                "SELECT key, seq, at_ms, request, status, body, sum FROM idempotency WHERE at_ms >= ? "
                "ORDER BY at_ms, seq", (since_ms,)).fetchall()
        out = []
        for key, seq, at_ms, request, status, body, stored in rows:
            if not (isinstance(key, str) and type(seq) is int and isinstance(request, bytes) and type(status) is int
                    and isinstance(body, bytes) and type(at_ms) is int):
                self.stats.bad_records += 1
                continue
            rec = Record(key, request, status, body, at_ms)
            if _record_row(seq, rec)[-1] != stored:
                self.stats.bad_records += 1
                continue
            out.append(rec)
        return out

    @property
    def pending(self) -> int:
        """Deltas and records appended and not yet flushed."""
        return len(self._buf) + len(self._recs)

    @property
    def log_length(self) -> int:
        """Deltas in the log since the last checkpoint (flushed or not): a cue to checkpoint."""
        return len(self._retained) + len(self._buf)

    def flush(self) -> int:
        """Make every appended delta and record durable in one transaction (one fsync). Returns
        the highest durable sequence number. When it raises, the batch is in doubt: the caller
        must not acknowledge anything of it, and must call `settle()` before anything else."""
        with self._io_lock:
            with self._buf_lock:
                self._check_usable()
                batch, self._buf = self._buf, []
                recs, self._recs = self._recs, []
            if not batch and not recs:
                return self.durable_seq
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT INTO log (seq, delta, sum) VALUES (?, ?, ?)",
                                 [_log_row(s, raw) for s, _d, raw in batch])
                conn.executemany(
                    "INSERT OR REPLACE INTO idempotency (key, seq, at_ms, request, status, body, sum) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", [_record_row(s, r) for s, r in recs])
                conn.execute("COMMIT")
            except BaseException:
                self._doubt = (batch, recs)
                with contextlib.suppress(sqlite3.Error):  # settle() tries again
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                raise
            self._made_durable(batch, recs)
            return self.durable_seq

    def _made_durable(self, batch: list, recs: list) -> None:
        for seq, delta, _raw in batch:
            self._retain(seq, delta)
        self.durable_seq = max(batch[-1][0] if batch else 0, recs[-1][0] if recs else 0)
        self.stats.flushes += 1
        self.stats.appended += len(batch)

    @property
    def in_doubt(self) -> bool:
        """A flush raised and `settle()` has not yet said whether its batch landed."""
        return self._doubt is not None

    def settle(self) -> bool:
        """After `flush` raised: did its batch land after all? SQLite may report an error from
        a COMMIT whose rows are on disk (an fsync error after the write), so the log is read.
        True: it landed, and counts as durable as if `flush` had returned. False: it did not;
        the batch is dropped, and this storage writes nothing more (anything buffered since may
        build on what was dropped) until `reload()` and `discard_pending()`. Raises when the
        disk cannot even be read: still in doubt, ask again later."""
        with self._io_lock:
            self._check_open()
            if self._doubt is None:
                raise StorageError("settle() follows a flush that raised")
            batch, recs = self._doubt
            conn = self._conn
            if conn.in_transaction:
                conn.execute("ROLLBACK")  # our own uncommitted rows must not count as landed
            # This session's numbers are above every row older sessions left, so rows with
            # them can only be this batch's; the transaction is atomic, so one table says it.
            table, seqs = ("log", batch) if batch else ("idempotency", recs)
            lo, hi = seqs[0][0], seqs[-1][0]
            found = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE seq BETWEEN ? AND ?", (lo, hi)).fetchone()[0]  # noqa: S608
            if found not in (0, len(seqs)):
                raise CorruptStorage(f"{found} of the {len(seqs)} rows of one transaction are in {self.path}")
            self._doubt = None
            if found:
                self._made_durable(batch, recs)
                self.stats.landed_after_error += 1
                return True
            self._tainted = True
            self.stats.failed_flushes += 1
            return False

    def reload(
        self, replica_id: str, *, secret: bytes = DEV_SECRET, members: Iterable[str] = (), actor: str | None = None
    ) -> Replica:
        """After a flush that did not land (`settle()` said False): a Replica holding exactly
        the durable state again, read (and checked) from the checkpoint and the log as `restore`
        does. May run in a worker thread while the driver keeps appending; what it appends
        meanwhile is dropped by `discard_pending()`, which the driver calls when it takes the
        new replica."""
        with self._io_lock:
            self._check_open()
            if not self._tainted:
                raise StorageError("reload() follows a flush that did not land")
            self._retained, self._dirty, self._dirty_all = [], set(), False
            self._planned, self._rewriting = None, set()  # what a checkpoint captured is not what the disk holds
            return self._restore(self.load(), replica_id, secret, members, actor)

    def discard_pending(self) -> int:
        """Drop everything buffered and not durable, and take flushes again. Returns how many
        deltas and records went."""
        with self._buf_lock:
            n = len(self._buf) + len(self._recs)
            self._buf, self._recs = [], []
            self._tainted = False
        return n

    # -- checkpoints ------------------------------------------------------------------------------

    def checkpoint(self, replica: Replica, *, full: bool = False, expire_records_before: int | None = None) -> int:
        """Write the replica's state (changed keys only, or every key with `full`) and drop the
        log rows it now holds, and the idempotency records answered before
        `expire_records_before` (wall ms), all at once on the caller's thread (which drives the
        replica). The state written may hold buffered local writes: they reach the disk with it.
        Returns how many log rows went. Waits for a checkpoint a worker thread is writing.

        A driver that must keep serving meanwhile uses the two halves instead:
        `prepare_checkpoint` on its own thread, `write_checkpoint` in a worker."""
        with self._ckpt_lock:
            with self._io_lock:
                self._check_usable()
                self._planned = cap = self._capture(replica, full, expire_records_before)
            return self._write(cap, only_durable=False)

    def prepare_checkpoint(self, replica: Replica, *, full: bool = False,
                           expire_records_before: int | None = None) -> Capture:
        """What a checkpoint of the replica's state now writes, captured on the thread that drives
        the replica (milliseconds: references and copies, no packing, no I/O). Write it with
        `write_checkpoint` once `durable_seq` reaches its `need`: the state may hold local writes
        still buffered, and a checkpoint must not make durable what a failed flush then refuses.
        A newer capture, a `reload` or a `set_actor` cancels it."""
        if self._ckpt_lock.locked():
            raise StorageError("a checkpoint is being written: one at a time")
        with self._io_lock:
            self._check_usable()
            self._planned = cap = self._capture(replica, full, expire_records_before)
        return cap

    def write_checkpoint(self, cap: Capture) -> int:
        """Write a prepared checkpoint: pack it (no lock held: flushes go on meanwhile), then one
        transaction, during which flushes wait. For a worker thread. Returns how many log rows
        went. Raises StorageError, writing nothing, if it was cancelled (see `prepare_checkpoint`),
        if a flush failed since, or if a write it may hold is not durable yet."""
        with self._ckpt_lock:
            return self._write(cap, only_durable=True)

    def _capture(self, replica: Replica, full: bool, expire_records_before: int | None) -> Capture:
        """Keys touched by logged deltas, and by buffered ones (a local write is applied before
        it is appended, so the state written may already hold it), and keys repairs changed (in
        no logged delta). Called holding `_io_lock`: the log does not move meanwhile."""
        store = replica.store
        dirty, everything = set(self._dirty), self._dirty_all or full
        fresh = set(store.rewritten)
        store.mark_written(fresh)  # from now on in `_rewriting`, until a checkpoint holding them commits
        self._rewriting |= fresh
        dirty |= self._rewriting
        with self._buf_lock:
            for _seq, d, _raw in self._buf:
                keys, whole = _delta_keys(d)
                dirty |= keys
                everything |= whole
            need = self._next_seq - 1
        return capture(store, dirty, everything, hlc=list(replica.hlc.last), replica_id=replica.id,
                       actor=replica.actor, retained=self._retained, rewritten=self._rewriting,
                       expire_records_before=expire_records_before, need=need)

    def _write(self, cap: Capture, *, only_durable: bool) -> int:
        """Pack, commit and account for `cap`; the caller holds `_ckpt_lock`. A worker's
        (`only_durable`) yields the GIL every few rows: the driver's thread comes first."""
        packed = None
        step = pause if only_durable else None
        try:
            if self._planned is not cap:
                raise StorageError("this checkpoint was cancelled (the state was reloaded, or captured again)")
            if self._key_sums is None or self._dot_sums is None:  # after a failed checkpoint: read them again
                with self._io_lock:
                    conn = self._conn
                    self._key_sums = {(ns, k): s for ns, k, s in conn.execute("SELECT ns, key, sum FROM keyspace")}
                    self._dot_sums = {Dot(r, n): s for r, n, s in
                                      conn.execute("SELECT replica, counter, sum FROM dot_keys")}
            key_sums, dot_sums = self._key_sums, self._dot_sums
            try:
                # the sums as they will be once this commits; from here on, any failure has them
                # read again from the database, so the manifest never counts rows that are not there
                packed = pack_capture(cap, key_sums, dot_sums, step)
                with self._io_lock:
                    self._check_usable()
                    if self._planned is not cap or self._key_sums is not key_sums or self._dot_sums is not dot_sums:
                        raise StorageError("this checkpoint was cancelled while it was packed (the state was reloaded, "
                                           "or captured again)")
                    if only_durable and self.durable_seq < cap.need:
                        raise StorageError(f"this checkpoint may hold writes up to {cap.need}, durable only up to "
                                           f"{self.durable_seq}: flush first")
                    self._commit(cap, packed)
                    self._checkpointed(cap, packed)
            except BaseException:
                self._key_sums = self._dot_sums = None  # re-read next time
                raise
            return len(packed.done)
        finally:
            if self._planned is cap:
                self._planned = None
            let_go(cap, packed, step)

    def _commit(self, cap: Capture, p: Packed) -> None:
        """The checkpoint's one transaction: rows, dot map, meta and manifest, the log rows the
        state holds, expired idempotency records."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if cap.refs is None:
                conn.execute("DELETE FROM keyspace")
            conn.executemany("INSERT OR REPLACE INTO keyspace (ns, key, store, sum) VALUES (?, ?, ?, ?)", p.rows)
            conn.executemany("DELETE FROM keyspace WHERE ns=? AND key=?", p.gone)
            conn.executemany("INSERT OR REPLACE INTO dot_keys VALUES (?, ?, ?, ?, ?)", p.new_dots)
            conn.executemany("DELETE FROM dot_keys WHERE replica=? AND counter=?", [tuple(d) for d in p.old_dots])
            conn.executemany(_PUT_META, p.meta)
            if p.done and not p.kept:
                # every row up to the last it holds: those flushed since the capture are above it
                conn.execute("DELETE FROM log WHERE seq <= ?", (p.done[-1],))
            else:
                conn.executemany("DELETE FROM log WHERE seq = ?", [(s,) for s in p.done])
            if cap.expire_records_before is not None:
                conn.execute("DELETE FROM idempotency WHERE at_ms < ?", (cap.expire_records_before,))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # else the next flush finds it still open, and settles
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            raise

    def _checkpointed(self, cap: Capture, p: Packed) -> None:
        """After the commit: the log is what the state did not hold, and what was flushed since
        the capture. Keys stay dirty while a delta touching them is still in the log (flushed
        but not applied yet, or flushed after the capture) or still buffered: the next
        checkpoint writes them again."""
        self._retained = p.kept + self._retained[len(cap.retained):]
        self._dirty, self._dirty_all = set(), False
        for _seq, d in self._retained:
            self._mark_dirty(d)
        with self._buf_lock:
            for _seq, d, _raw in self._buf:
                self._mark_dirty(d)
        self._rewriting -= cap.rewritten
        self.stats.checkpoints += 1
        self.stats.truncated += len(p.done)

    # -- closing ----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("storage is closed")
        if self._conn is None:
            raise CorruptStorage(f"stored state in {self.path} is damaged: restore(repair=True) first, "
                                 f"or leave it as it is: {describe(self.damage)}", self.damage)

    def _check_usable(self) -> None:
        """Open, and not after a failed flush: then the caller's state may hold what the disk
        refused, and writing it (a later batch, a checkpoint) would make that durable."""
        self._check_open()
        if self._doubt is not None:
            raise StorageError("a failed flush is not settled yet (settle())")
        if self._tainted:
            raise StorageError("a flush failed; reload() and discard_pending() before writing again")

    def close(self, replica: Replica | None = None) -> None:
        """Flush, checkpoint `replica` if given, mark the directory cleanly closed, release it."""
        if self._closed:
            return
        try:
            if self._conn is not None:  # else damaged and never repaired: left exactly as found
                self.flush()
                if replica is not None:
                    self.checkpoint(replica)
                with self._io_lock:
                    self._conn.execute(_PUT_META, meta_row("clean", True))
        finally:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> Storage:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = [
    "Damage",
    "PersistedState",
    "Repair",
    "Storage",
    "StorageStats",
]
