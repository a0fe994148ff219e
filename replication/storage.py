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

On open, the checkpoint is loaded and the log replayed through `Store.apply` (deltas are
idempotent, so replaying one the checkpoint already holds changes nothing).

Group commit: `append(delta)` only buffers, in memory; `flush()` writes every buffered
delta in one transaction and returns once SQLite has fsynced it, so a caller can answer a
whole batch of writes after one fsync. Durability: `synchronous=FULL` in WAL mode fsyncs the
WAL on every commit. (NORMAL would survive a process crash but not a power cut or kernel
panic: its commits reach the disk only at WAL checkpoints, and "acknowledged" must mean on
disk.) A commit cut short by a crash is a torn WAL tail that SQLite ignores on open (WAL
frames are checksummed and only a commit frame makes a transaction count).

How a driver uses it (single-threaded, as the sans-IO core is):

    storage = Storage.open(data_dir)
    replica = storage.restore("lhr", secret=secret, members=peers)
    # local write: apply, append, and answer only after a flush
    view, delta = replica.write(...); storage.append(delta); ...; storage.flush(); answer
    # remote delta: append and flush, then apply
    storage.append(delta); storage.flush(); replica.apply(delta)
    # now and then, between flushes
    storage.checkpoint(replica)

Checkpoints are safe whenever they run: a logged delta is dropped from the log only once
the replica's state provably holds it (its contexts cover the delta's, which is exactly when
`Store.apply` itself treats a delta as already known), so a delta flushed but not yet
applied when a checkpoint runs stays in the log.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from .clocks import CausalContext, Dot, Timestamp, check_replica_id, dot_from_wire
from .delta import Delta, KeyRef
from .errors import EdgeStateError, StaleDelta
from .replica import DEV_SECRET, Replica
from .seals import from_row, to_row
from .values import check_key, check_namespace

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system: no cross-process lock
    fcntl = None  # type: ignore[assignment]

SCHEMA_VERSION = 1
DB_NAME = "edgestate.db"
LOCK_NAME = "LOCK"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS keyspace (
    ns TEXT NOT NULL, key TEXT NOT NULL, store BLOB NOT NULL, PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dot_keys (
    replica TEXT NOT NULL, counter INTEGER NOT NULL, ns TEXT NOT NULL, key TEXT NOT NULL,
    PRIMARY KEY (replica, counter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, delta BLOB NOT NULL);
"""


class StorageError(EdgeStateError):
    code = "storage_error"


class StorageLocked(StorageError):
    """Another process (or Storage object) holds this data directory."""

    code = "storage_locked"


class WrongReplica(StorageError):
    """The data directory belongs to another replica."""

    code = "wrong_replica"


class CorruptStorage(StorageError):
    """Stored state that does not decode: a bug or tampering, never a crash (SQLite covers those)."""

    code = "corrupt_storage"


def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(raw: bytes):
    return msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True)


@dataclass
class PersistedState:
    """What `load()` finds: the checkpoint, and the deltas logged after it (in order)."""

    replica_id: str | None
    actor: str | None
    entries: dict[KeyRef, object]
    ctx: CausalContext
    applied: CausalContext
    key_of: dict[Dot, KeyRef]
    hlc: Timestamp
    log: list[tuple[int, Delta]] = field(default_factory=list)
    clean: bool = True  # the previous session closed cleanly (nothing appended went unflushed)
    seals: dict[Dot, bytes] = field(default_factory=dict)  # of the live dots in `entries`

    @property
    def empty(self) -> bool:
        return not self.entries and not self.applied.vv and not self.ctx.vv and not self.log


@dataclass
class StorageStats:
    flushes: int = 0
    appended: int = 0  # deltas made durable by flushes
    checkpoints: int = 0
    truncated: int = 0  # log rows dropped by checkpoints
    replayed: int = 0  # log rows replayed by restore
    stale_skipped: int = 0  # replayed anti-entropy replies that no longer applied
    refused_skipped: int = 0  # replayed deltas the store refused (as it did when they first arrived)


def _delta_keys(delta: Delta) -> tuple[set[KeyRef], bool]:
    return set(delta.entries), delta.full


def _latest_kv_ts(delta: Delta) -> Timestamp | None:
    latest = None
    for (ns, _key), store in delta.entries.items():
        if ns == "kv":
            for _value, ts in store.values():
                if latest is None or ts > latest:
                    latest = ts
    return None if latest is None else Timestamp(*latest)


def subsumed(store, delta: Delta) -> bool:
    """The store already holds everything `delta` says (Store.apply's own duplicate test)."""
    return store.applied.covers(delta.applied) and store.ctx.covers(delta.ctx)


class Storage:
    """One replica's durable state. Not thread-safe apart from `append` racing `flush`:
    a driver may run `flush` in a worker thread while its event loop keeps appending."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock_fd: int | None) -> None:
        self.path = path
        self._conn = conn
        self._lock_fd = lock_fd
        self._buf: list[tuple[int, Delta, bytes]] = []
        self._buf_lock = threading.Lock()  # append vs the buffer swap in flush
        self._io_lock = threading.Lock()  # one transaction at a time
        row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM log").fetchone()
        self._next_seq = row[0] + 1
        self.durable_seq = row[0]
        # deltas in the log, kept to decide at a checkpoint which ones the state already holds
        self._retained: list[tuple[int, Delta]] = []
        self._dirty: set[KeyRef] = set()
        self._dirty_all = False
        self._persisted_dots: set[Dot] | None = None  # dot_keys rows, once known
        self.stats = StorageStats()
        self._closed = False
        self._restored = False
        self._was_clean = True

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike, *, synchronous: str = "FULL") -> Storage:
        """Open (creating if needed) the data directory `path`. Holds it until `close()`."""
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
            conn = sqlite3.connect(root / DB_NAME, isolation_level=None, check_same_thread=False)
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StorageError(f"SQLite refused WAL mode for {root} (got {mode!r})")
                conn.execute(f"PRAGMA synchronous={synchronous}")
                conn.execute("PRAGMA journal_size_limit=67108864")  # shrink the WAL file back after checkpoints
                conn.executescript(_SCHEMA)
                version = conn.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
                if version is None:
                    conn.execute("INSERT INTO meta VALUES ('schema', ?)", (_pack(SCHEMA_VERSION),))
                elif _unpack(version[0]) != SCHEMA_VERSION:
                    raise StorageError(f"{root} holds schema version {_unpack(version[0])!r}; expected {SCHEMA_VERSION}")
                clean = conn.execute("SELECT value FROM meta WHERE name='clean'").fetchone()
                # 'clean' is cleared for as long as we run; close() sets it once all is flushed
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('clean', ?)", (_pack(False),))
            except BaseException:
                conn.close()
                raise
        except sqlite3.DatabaseError as e:
            if lock_fd is not None:
                os.close(lock_fd)
            raise StorageError(f"cannot open {root / DB_NAME}: {e}") from None
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        st = cls(root, conn, lock_fd)
        st._was_clean = clean is None or bool(_unpack(clean[0]))
        return st

    # -- reading what is there ------------------------------------------------------------------

    def _meta(self, name: str, default=None):
        row = self._conn.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return default if row is None else _unpack(row[0])

    @property
    def was_clean(self) -> bool:
        """The previous session closed cleanly: everything it appended reached the disk.
        After an unclean stop, state it showed (or sent) may not have, so a replica must
        come back under a new actor rather than mint its old dots again."""
        return self._was_clean

    def stored_actor(self) -> str | None:
        return self._meta("actor")

    def set_actor(self, actor: str) -> None:
        """Record a new actor before its first dot (a replica that learnt it had lost its state)."""
        check_replica_id(actor)
        with self._io_lock:
            self._check_open()
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('actor', ?)", (_pack(actor),))

    def count_boot(self) -> int:
        """Record one more start; returns the count including it (durable before it returns).
        A membership incarnation that rises with every start, so peers take the new one."""
        with self._io_lock:
            self._check_open()
            boots = self._meta("boots", 0)
            if type(boots) is not int or boots < 0:
                raise CorruptStorage(f"stored boot count in {self.path} is {boots!r}")
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('boots', ?)", (_pack(boots + 1),))
            return boots + 1

    def load(self) -> PersistedState:
        """The checkpoint and the log after it, decoded and checked. Raises CorruptStorage."""
        try:
            entries: dict[KeyRef, object] = {}
            seals: dict[Dot, bytes] = {}
            for ns, key, raw in self._conn.execute("SELECT ns, key, store FROM keyspace ORDER BY ns, key"):
                ref = (check_namespace(ns), check_key(key))
                entries[ref], row_seals = from_row(ns, key, _unpack(raw))
                seals.update(row_seals)
            key_of: dict[Dot, KeyRef] = {}
            for r, n, ns, key in self._conn.execute("SELECT replica, counter, ns, key FROM dot_keys"):
                key_of[dot_from_wire([r, n])] = (check_namespace(ns), check_key(key))
            ctx = CausalContext.from_wire(self._meta("ctx", [{}, []]))
            applied = CausalContext.from_wire(self._meta("applied", [{}, []]))
            wall, logical = self._meta("hlc", [0, 0])
            if type(wall) is not int or type(logical) is not int:
                raise StorageError("bad HLC timestamp")
            rid = self._meta("replica_id")
            actor = self._meta("actor")
            for x in (rid, actor):
                if x is not None:
                    check_replica_id(x)
            log = []
            for seq, raw in self._conn.execute("SELECT seq, delta FROM log ORDER BY seq"):
                log.append((seq, Delta.from_wire(_unpack(raw))))
        except (EdgeStateError, ValueError, TypeError, msgpack.UnpackException, sqlite3.DatabaseError) as e:
            msg = e.message if isinstance(e, EdgeStateError) else str(e)
            raise CorruptStorage(f"stored state in {self.path} does not decode: {msg}") from None
        self._persisted_dots = set(key_of)
        return PersistedState(rid, actor, entries, ctx, applied, key_of, Timestamp(wall, logical), log,
                              clean=self._was_clean, seals=seals)

    def restore(
        self,
        replica_id: str,
        *,
        secret: bytes = DEV_SECRET,
        members: Iterable[str] = (),
        actor: str | None = None,
    ) -> Replica:
        """A Replica holding exactly the durable state. A fresh directory is claimed for
        `replica_id` (and `actor`, default the id); a directory of another replica is refused.
        `actor` given for an existing directory replaces the stored one (a new incarnation)."""
        check_replica_id(replica_id)
        with self._buf_lock:
            self._check_open()
            if self._restored or self._buf or self._retained:
                raise StorageError("restore() runs once, before anything is appended")
            self._restored = True
        state = self.load()
        if state.replica_id is not None and state.replica_id != replica_id:
            raise WrongReplica(f"data directory {self.path} belongs to replica {state.replica_id!r}, not {replica_id!r}")
        actor = actor or state.actor or replica_id
        rep = Replica(replica_id, secret=secret, members=members, actor=actor)
        if state.replica_id is None or state.actor != actor:
            with self._io_lock:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('replica_id', ?)", (_pack(replica_id),))
                self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('actor', ?)", (_pack(actor),))
                self._conn.execute("COMMIT")
        store = rep.store
        if state.entries or state.ctx.vv or state.ctx.cloud or state.applied.vv or state.applied.cloud:
            # The checkpoint as one full delta into the empty store, through the Store's public
            # join (which keeps its digest right). It walks every dot of the applied context:
            # O(writes ever made), ~1.5 s for 100k. A `Store.restore(...)` would make it O(keys).
            store.apply(Delta(entries=state.entries, ctx=state.ctx, applied=state.applied,
                              keys=state.key_of, full=True, seals=state.seals))
        hlc = state.hlc
        for seq, delta in state.log:
            try:
                store.apply(delta)
            except StaleDelta:
                self.stats.stale_skipped += 1  # it failed the same way when it first arrived
            except EdgeStateError:
                # a logged delta the replica refused when it arrived (it is logged before it is
                # applied): refused again, never a replica that cannot start
                self.stats.refused_skipped += 1
            ts = _latest_kv_ts(delta)
            if ts is not None and ts > hlc:
                hlc = ts
            self._retain(seq, delta)
            self.stats.replayed += 1
        rep.hlc.last = max(rep.hlc.last, hlc)
        return rep

    # -- the write-ahead log ----------------------------------------------------------------------

    def _retain(self, seq: int, delta: Delta) -> None:
        self._retained.append((seq, delta))
        keys, full = _delta_keys(delta)
        self._dirty |= keys
        self._dirty_all |= full

    def append(self, delta: Delta) -> int:
        """Buffer a delta for the next flush. Returns its sequence number; it is durable once
        `durable_seq` reaches it (when the flush that wrote it returns)."""
        if not isinstance(delta, Delta):
            raise TypeError("append takes a Delta")
        raw = _pack(delta.to_wire())
        with self._buf_lock:
            self._check_open()
            seq = self._next_seq
            self._next_seq += 1
            self._buf.append((seq, delta, raw))
        return seq

    @property
    def pending(self) -> int:
        """Deltas appended and not yet flushed."""
        return len(self._buf)

    @property
    def log_length(self) -> int:
        """Deltas in the log since the last checkpoint (flushed or not): a cue to checkpoint."""
        return len(self._retained) + len(self._buf)

    def flush(self) -> int:
        """Make every appended delta durable in one transaction (one fsync). Returns the highest
        durable sequence number. On an error nothing of the batch is durable and it stays
        buffered, so the caller may retry or give up; either way it must not acknowledge."""
        with self._io_lock:
            with self._buf_lock:
                self._check_open()
                batch, self._buf = self._buf, []
            if not batch:
                return self.durable_seq
            try:
                conn = self._conn
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany("INSERT INTO log (seq, delta) VALUES (?, ?)", [(s, raw) for s, _d, raw in batch])
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except BaseException:
                with self._buf_lock:
                    self._buf[:0] = batch
                raise
            for seq, delta, _raw in batch:
                self._retain(seq, delta)
            self.durable_seq = batch[-1][0]
            self.stats.flushes += 1
            self.stats.appended += len(batch)
            return self.durable_seq

    # -- checkpoints ------------------------------------------------------------------------------

    def checkpoint(self, replica: Replica, *, full: bool = False) -> int:
        """Write the replica's state (changed keys only, or every key with `full`) and drop the
        log rows it now holds. Call it on the thread that drives the replica. Returns how many
        log rows went."""
        with self._io_lock:
            self._check_open()
            store = replica.store
            conn = self._conn
            # What to write, captured before any I/O: keys touched by logged deltas, and by
            # buffered ones (a local write is applied before it is appended, so the state
            # written here may already hold it: its key must be written with the contexts).
            dirty, dirty_all = set(self._dirty), self._dirty_all or full
            rewritten = set(store.rewritten)  # changed by repairs or dropped damaged dots: in no logged delta
            dirty |= rewritten
            with self._buf_lock:
                for _seq, d, _raw in self._buf:
                    keys, full = _delta_keys(d)
                    dirty |= keys
                    dirty_all |= full
            if dirty_all:
                rows = [(ns, key, _pack(to_row(ns, key, s, store.seals))) for ns, m in store.data.items() for key, s in m.items()]
                gone: list[KeyRef] = []
            else:
                rows, gone = [], []
                for ns, key in sorted(dirty):
                    s = store.data[ns].get(key)
                    if s:
                        rows.append((ns, key, _pack(to_row(ns, key, s, store.seals))))
                    else:
                        gone.append((ns, key))
            if self._persisted_dots is None:
                self._persisted_dots = {Dot(r, n) for r, n in conn.execute("SELECT replica, counter FROM dot_keys")}
            current = store.key_of
            new_dots = [(d[0], d[1], k[0], k[1]) for d, k in current.items() if d not in self._persisted_dots]
            old_dots = [d for d in self._persisted_dots if d not in current]
            done = [seq for seq, d in self._retained if subsumed(store, d)]
            kept = [(seq, d) for seq, d in self._retained if not subsumed(store, d)]
            meta = [
                ("ctx", _pack(store.ctx.to_wire())),
                ("applied", _pack(store.applied.to_wire())),
                ("hlc", _pack(list(replica.hlc.last))),
                ("replica_id", _pack(replica.id)),
                ("actor", _pack(replica.actor)),
            ]
            conn.execute("BEGIN IMMEDIATE")
            try:
                if dirty_all:
                    conn.execute("DELETE FROM keyspace")
                conn.executemany("INSERT OR REPLACE INTO keyspace (ns, key, store) VALUES (?, ?, ?)", rows)
                conn.executemany("DELETE FROM keyspace WHERE ns=? AND key=?", gone)
                conn.executemany("INSERT OR REPLACE INTO dot_keys VALUES (?, ?, ?, ?)", new_dots)
                conn.executemany("DELETE FROM dot_keys WHERE replica=? AND counter=?", [tuple(d) for d in old_dots])
                conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta)
                if done and not kept:
                    conn.execute("DELETE FROM log WHERE seq <= ?", (done[-1],))
                else:
                    conn.executemany("DELETE FROM log WHERE seq = ?", [(s,) for s in done])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._persisted_dots = None  # re-read next time
                raise
            store.rewritten -= rewritten
            self._persisted_dots.difference_update(old_dots)
            self._persisted_dots.update(Dot(r, n) for r, n, _ns, _k in new_dots)
            # keys stay dirty while a delta touching them is still in the log (flushed but not
            # applied yet) or still buffered: the next checkpoint must write them again
            self._retained = kept
            self._dirty, self._dirty_all = set(), False
            for _seq, d in kept:
                keys, full = _delta_keys(d)
                self._dirty |= keys
                self._dirty_all |= full
            with self._buf_lock:
                for _seq, d, _raw in self._buf:
                    keys, full = _delta_keys(d)
                    self._dirty |= keys
                    self._dirty_all |= full
            self.stats.checkpoints += 1
            self.stats.truncated += len(done)
            return len(done)

    # -- closing ----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("storage is closed")

    def close(self, replica: Replica | None = None) -> None:
        """Flush, checkpoint `replica` if given, mark the directory cleanly closed, release it."""
        if self._closed:
            return
        try:
            self.flush()
            if replica is not None:
                self.checkpoint(replica)
            with self._io_lock:
                self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('clean', ?)", (_pack(True),))
        finally:
            self._closed = True
            self._conn.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> Storage:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = [
    "CorruptStorage",
    "PersistedState",
    "Storage",
    "StorageError",
    "StorageLocked",
    "StorageStats",
    "WrongReplica",
    "subsumed",
]
