"""Reading a data directory back without trusting it: every record checked, damage named.

SQLite keeps its own structure consistent, and says nothing when the bytes of a record
change under it (a flipped bit, a bad sector, an edit with the sqlite3 shell), when a
damaged WAL makes it drop committed transactions, or when a page goes missing from a
table. So each stored record carries a 64-bit BLAKE2b sum over its table, its identifying
columns and its blob (a value moved to another key fails too), and a data directory is
read like this, before anything is written to it:

1. the WAL is checked frame by frame (`sqlitewal`): lost committed transactions are damage;
2. the database is opened read-only (SQLite neither checkpoints nor deletes the WAL, so a
   refusal to start leaves the evidence exactly where it was), `PRAGMA quick_check` runs,
   and every row of every table is read and verified; a read error part-way through a
   table reads the rest of it backwards, to keep the rows beyond a damaged page;
3. the checkpoint is checked as a whole: the manifest written with it (count and sum of
   the keyspace and dot_keys rows) still matches, the contexts it needs are there, and they
   cover every live dot.

With no damage, the result is the state as it was stored. With damage, it is a *salvaged*
state: every record that verified and nothing else, under contexts that claim only what is
provably held, ctx = applied = the live dots of the valid keyspace rows, plus whatever the
valid log deltas bring when they are replayed. That is a valid lower state: anything the
replica lacks is neither applied (peers' anti-entropy sends it, a full state transfer if
need be) nor in its context (so nothing lacking can pass for "removed"). It holds whether
the damage dropped a row, a whole table, or mixed pages of different ages (each verified
row is some authentic past state of its key, and joins under the peers' contexts).
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

import msgpack

from ..clocks import CausalContext, Dot, Timestamp, check_replica_id, dot_from_wire
from ..crdts import BY_NAMESPACE
from ..delta import Delta, KeyRef
from ..errors import EdgeStateError
from ..seals import from_row
from .sqlitewal import check_wal, db_page_size
from ..values import check_key, check_namespace

SCHEMA_VERSION = 2
DB_NAME = "edgestate.db"
WAL_NAME = DB_NAME + "-wal"
REPAIR_MARK = DB_NAME + ".repairing"  # present while a repair rewrites the database (see storage)
SUM_MOD = 2**64

COLUMNS = {
    "meta": ("name", "value", "sum"),
    "keyspace": ("ns", "key", "store", "sum"),
    "dot_keys": ("replica", "counter", "ns", "key", "sum"),
    "log": ("seq", "delta", "sum"),
}
_ORDER = {"meta": "name", "keyspace": "ns, key", "dot_keys": "replica, counter", "log": "seq"}
_IDS = {"meta": 1, "keyspace": 2, "dot_keys": 4, "log": 1}  # identifying columns, before the blob (if any)
# what reading a damaged database may raise (SQLite's error text itself may not be UTF-8)
DB_ERRORS = (sqlite3.DatabaseError, UnicodeDecodeError)
CHECKPOINT_META = ("ctx", "applied", "hlc", "replica_id", "actor")  # written by every checkpoint


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(raw: bytes):
    return msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True)


def record_sum(table: str, ids: tuple, blob: bytes = b"") -> int:
    """The checksum stored with a record: BLAKE2b-64 of its table, identifying columns and blob."""
    h = hashlib.blake2b(pack([table, *ids]), digest_size=8, person=b"edgestate-rec")
    h.update(blob)
    return int.from_bytes(h.digest(), "big", signed=True)  # SQLite integers are signed 64-bit


def meta_row(name: str, value) -> tuple[str, bytes, int]:
    raw = pack(value)
    return name, raw, record_sum("meta", (name,), raw)


class Damage(NamedTuple):
    """One thing found wrong: the file, the record in it, and what is wrong with it."""

    file: str
    record: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.record}: {self.problem}"


@dataclass
class PersistedState:
    """What a data directory holds: the checkpoint, and the deltas logged after it (in order)."""

    replica_id: str | None
    actor: str | None
    entries: dict[KeyRef, object]
    ctx: CausalContext
    applied: CausalContext
    key_of: dict[Dot, KeyRef]
    hlc: Timestamp
    log: list[tuple[int, Delta]] = field(default_factory=list)
    clean: bool = True  # the previous session closed cleanly (nothing appended went unflushed)
    boots: int = 0
    salvaged: bool = False  # damage was found: only what verified, under contexts of live dots
    key_sums: dict[KeyRef, int] = field(default_factory=dict)  # the stored sum of each keyspace row
    dot_sums: dict[Dot, int] = field(default_factory=dict)  # ... and of each dot_keys row
    seals: dict[Dot, bytes] = field(default_factory=dict)  # of the live dots in `entries`

    @property
    def empty(self) -> bool:
        return not self.entries and not self.applied.vv and not self.ctx.vv and not self.log


@dataclass
class Inspection:
    """What `inspect` found in a data directory."""

    state: PersistedState
    damage: list[Damage] = field(default_factory=list)
    version: object = SCHEMA_VERSION  # a verified schema version other than ours: refuse, do not repair


def _show(x: object) -> str:
    r = repr(x)
    return r if len(r) <= 60 else r[:57] + "..."


def _ref(ns: object, key: object) -> str:
    return f"{ns if isinstance(ns, str) and ns in BY_NAMESPACE else _show(ns)}/{_show(key)}"


def empty_state() -> PersistedState:
    return PersistedState(None, None, {}, CausalContext(), CausalContext(), {}, Timestamp(0, 0))


# -- reading rows ---------------------------------------------------------------------------------


def _read_table(conn: sqlite3.Connection, table: str, damage: list[Damage]) -> list[tuple]:
    """Every row that reads. SQLite errors part-way through: the rest is read from the end
    backwards, down to the last row read forwards, so one bad page costs only its own rows."""
    cols, order = ", ".join(COLUMNS[table]), _ORDER[table]
    n_ids = len(order.split(","))
    rows: list[tuple] = []
    try:
        for row in conn.execute(f"SELECT {cols} FROM {table} ORDER BY {order}"):  # noqa: S608 - our own names
            rows.append(row)
    except DB_ERRORS as e:
        damage.append(Damage(DB_NAME, f"{table} table", f"rows after the {len(rows)} first do not read ({e})"))
        seen = {r[:n_ids] for r in rows}
        tail: list[tuple] = []
        try:
            for row in conn.execute(f"SELECT {cols} FROM {table} ORDER BY {order.replace(',', ' DESC,')} DESC"):  # noqa: S608
                if row[:n_ids] in seen:
                    break
                tail.append(row)
        except DB_ERRORS:
            pass
        rows += reversed(tail)
    return rows


def _verified(table: str, rows: list[tuple], damage: list[Damage], name) -> list[tuple]:
    """Rows whose stored sum matches, each once; the others are damage, named by `name(row)`."""
    ids, out, seen = _IDS[table], [], set()
    blob_at = ids if table != "dot_keys" else None
    for row in rows:
        *cols, stored = row
        blob = cols[blob_at] if blob_at is not None else b""
        if blob_at is not None and type(blob) is not bytes:
            damage.append(Damage(DB_NAME, name(row), f"its blob is a {type(blob).__name__}"))
            continue
        if type(stored) is not int or stored != record_sum(table, tuple(cols[:ids]), blob):
            damage.append(Damage(DB_NAME, name(row), "does not match its checksum"))
            continue
        key = tuple(cols[: len(_ORDER[table].split(","))])
        if key in seen:
            damage.append(Damage(DB_NAME, name(row), "appears twice"))
            continue
        seen.add(key)
        out.append(row)
    return out


def _text(raw: bytes) -> str | bytes:
    """TEXT as str, or as the bytes it is when they are not UTF-8 (then no checksum matches)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def read_state(conn: sqlite3.Connection, *, quick_check: bool = True) -> tuple[PersistedState, list[Damage], object]:
    """Read and verify everything in an open database. Returns the state (salvaged when there
    is damage), the damage, and the schema version found (ours, or a verified other one)."""
    saved = conn.text_factory
    conn.text_factory = _text
    try:
        return _read_state(conn, quick_check)
    finally:
        conn.text_factory = saved


def _read_state(conn: sqlite3.Connection, quick_check: bool) -> tuple[PersistedState, list[Damage], object]:
    damage: list[Damage] = []
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return empty_state(), damage, SCHEMA_VERSION
    usable = []
    for table, cols in COLUMNS.items():
        if table not in tables:
            damage.append(Damage(DB_NAME, f"{table} table", "is missing"))
            continue
        have = tuple(r[1] for r in conn.execute(f"PRAGMA table_info({table})"))
        if have != cols:
            if table == "meta" and "sum" not in have:
                try:  # a schema without record sums: an older version, to be migrated, not repaired
                    row = conn.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
                    version = unpack(row[0]) if row else None
                except (*DB_ERRORS, ValueError, msgpack.UnpackException, TypeError):
                    version = None
                if type(version) is int and version != SCHEMA_VERSION:
                    return empty_state(), [], version
            damage.append(Damage(DB_NAME, f"{table} table", f"has columns {have}, not {cols}"))
            continue
        usable.append(table)
    if quick_check:
        try:
            found = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
        except DB_ERRORS as e:
            found = [str(e)]
        if found != ["ok"]:
            damage.append(Damage(DB_NAME, "the database", "SQLite's quick_check: " + "; ".join(" ".join(str(f).split()) for f in found)))
    raw = {t: _read_table(conn, t, damage) if t in usable else [] for t in COLUMNS}

    meta: dict[str, object] = {}
    for name, value, _s in _verified("meta", raw["meta"], damage, lambda r: f"meta row {_show(r[0])}"):
        try:
            meta[name] = unpack(value)
        except (ValueError, msgpack.UnpackException) as e:
            damage.append(Damage(DB_NAME, f"meta row {_show(name)}", f"does not decode ({e})"))
    version = meta.get("schema")
    if version is None and ("meta" in usable or raw["keyspace"] or raw["log"]):
        damage.append(Damage(DB_NAME, "meta row 'schema'", "is missing"))
    elif version is not None and version != SCHEMA_VERSION:
        return empty_state(), [], version

    entries: dict[KeyRef, object] = {}
    key_sums: dict[KeyRef, int] = {}
    seals: dict[Dot, bytes] = {}
    for ns, key, store, s in _verified("keyspace", raw["keyspace"], damage, lambda r: f"keyspace row {_ref(r[0], r[1])}"):
        try:
            ref = (check_namespace(ns), check_key(key))
            entries[ref], row_seals = from_row(ns, key, unpack(store))  # every seal verified
            seals.update(row_seals)
            key_sums[ref] = s
        except (EdgeStateError, ValueError, TypeError, msgpack.UnpackException) as e:
            damage.append(Damage(DB_NAME, f"keyspace row {_ref(ns, key)}", f"does not decode ({_why(e)})"))
    key_of: dict[Dot, KeyRef] = {}
    dot_sums: dict[Dot, int] = {}
    for r, n, ns, key, s in _verified("dot_keys", raw["dot_keys"], damage, lambda r: f"dot_keys row ({_show(r[0])}, {_show(r[1])})"):
        try:
            d = dot_from_wire([r, n])
            key_of[d] = (check_namespace(ns), check_key(key))
            dot_sums[d] = s
        except EdgeStateError as e:
            damage.append(Damage(DB_NAME, f"dot_keys row ({_show(r)}, {_show(n)})", f"does not decode ({e.message})"))
    log: list[tuple[int, Delta]] = []
    for seq, blob, _s in _verified("log", raw["log"], damage, lambda r: f"log row {_show(r[0])}"):
        try:
            log.append((seq, Delta.from_wire(unpack(blob))))
        except (EdgeStateError, ValueError, TypeError, msgpack.UnpackException) as e:
            damage.append(Damage(DB_NAME, f"log row {seq}", f"does not decode ({_why(e)})"))

    def decoded(name: str, default, check):
        if name not in meta:
            return default
        try:
            return check(meta[name])
        except (EdgeStateError, ValueError, TypeError) as e:
            damage.append(Damage(DB_NAME, f"meta row {name!r}", f"does not decode ({_why(e)})"))
            return default

    ctx = decoded("ctx", CausalContext(), CausalContext.from_wire)
    applied = decoded("applied", CausalContext(), CausalContext.from_wire)
    hlc = decoded("hlc", None, _timestamp)
    rid = decoded("replica_id", None, check_replica_id)
    actor = decoded("actor", None, check_replica_id)
    clean = decoded("clean", False, _bool)
    boots = decoded("boots", 0, _count)
    manifest = decoded("manifest", None, _manifest)

    # the checkpoint as a whole
    bad_tables = {d.record.split()[0] for d in damage}
    if manifest is None:
        if entries or key_of or "keyspace" in bad_tables or "dot_keys" in bad_tables or any(
                n in meta for n in ("ctx", "applied", "hlc")):
            damage.append(Damage(DB_NAME, "meta row 'manifest'", "is missing, yet a checkpoint was written"))
    else:
        present = {r[0] for r in raw["meta"]}  # (a row there but damaged is named already)
        for n in CHECKPOINT_META:
            if n not in present:
                damage.append(Damage(DB_NAME, f"meta row {n!r}", "is missing from a written checkpoint"))
        if "keyspace" not in bad_tables and manifest[:2] != _tally(key_sums.values()):
            damage.append(Damage(DB_NAME, "keyspace table", f"holds {len(key_sums)} rows not matching the "
                                                            f"{manifest[0]} of the last checkpoint (rows lost or added)"))
        if "dot_keys" not in bad_tables and manifest[2:] != _tally(dot_sums.values()):
            damage.append(Damage(DB_NAME, "dot_keys table", f"holds {len(dot_sums)} rows not matching the "
                                                            f"{manifest[2]} of the last checkpoint (rows lost or added)"))
    if not damage:
        for (ns, key), store in entries.items():
            if not all(ctx.contains(d) for d in BY_NAMESPACE[ns].dots(store)):
                damage.append(Damage(DB_NAME, f"keyspace row {_ref(ns, key)}", "holds a dot its context lacks"))
                break
        if not ctx.covers(applied) or not all(applied.contains(d) for d in key_of):
            damage.append(Damage(DB_NAME, "meta rows 'ctx' and 'applied'", "do not cover what the checkpoint holds"))

    if hlc is None:
        hlc = Timestamp(0, 0)
    state = PersistedState(rid, actor, entries, ctx, applied, key_of, hlc, log, clean=clean, boots=boots,
                           key_sums=key_sums, dot_sums=dot_sums, seals=seals)
    if damage:
        state = salvage(state)
    return state, damage, SCHEMA_VERSION


def salvage(state: PersistedState) -> PersistedState:
    """The valid lower state: the verified rows, under contexts of their live dots only."""
    live: dict[Dot, KeyRef] = {}
    latest = state.hlc
    for (ns, key), store in state.entries.items():
        for d in BY_NAMESPACE[ns].dots(store):
            live[d] = (ns, key)
        for ts in BY_NAMESPACE[ns].timestamps(store):
            latest = max(latest, Timestamp(*ts))
    ctx = CausalContext.of(live)
    return PersistedState(state.replica_id, state.actor, dict(state.entries), ctx, ctx.copy(), live, latest,
                          list(state.log), clean=False, boots=state.boots, salvaged=True, seals=dict(state.seals))


def _why(e: Exception) -> str:
    return e.message if isinstance(e, EdgeStateError) else str(e)


def _timestamp(v) -> Timestamp:
    if not (isinstance(v, list) and len(v) == 2 and all(type(x) is int and x >= 0 for x in v)):
        raise ValueError(f"bad HLC timestamp {_show(v)}")
    return Timestamp(*v)


def _bool(v) -> bool:
    if type(v) is not bool:
        raise ValueError(f"not a boolean: {_show(v)}")
    return v


def _count(v) -> int:
    if type(v) is not int or v < 0:
        raise ValueError(f"not a count: {_show(v)}")
    return v


def _manifest(v) -> tuple[int, int, int, int]:
    if not (isinstance(v, list) and len(v) == 4 and all(type(x) is int and 0 <= x < SUM_MOD for x in v)):
        raise ValueError(f"bad manifest {_show(v)}")
    return tuple(v)


def _tally(sums) -> tuple[int, int]:
    n = total = 0
    for s in sums:
        n += 1
        total += s
    return n, total % SUM_MOD


def manifest(key_sums: dict, dot_sums: dict) -> list[int]:
    """What a checkpoint writes to be checked against: count and sum of each row set."""
    return [*_tally(key_sums.values()), *_tally(dot_sums.values())]


# -- a whole data directory ----------------------------------------------------------------------


def inspect(root: Path) -> Inspection:
    """Check the data directory `root` without writing to it (SQLite may create `-shm`)."""
    db, wal, mark = root / DB_NAME, root / WAL_NAME, root / REPAIR_MARK
    damage: list[Damage] = []
    if mark.exists():
        try:
            said = " ".join(mark.read_text(errors="replace").split())[:500]
        except OSError as e:
            said = f"(unreadable: {e})"
        damage.append(Damage(REPAIR_MARK, "an earlier repair", f"did not finish; {said}"))
    if not db.exists():
        check = check_wal(wal)
        if check.frames:
            damage.append(Damage(WAL_NAME, "the WAL", f"holds {check.frames} frames, and the database they "
                                                      "belong to is missing"))
        return Inspection(empty_state(), damage)
    check = check_wal(wal, db_page_size(db))
    damage += [Damage(WAL_NAME, d.record, d.problem) for d in check.damage]
    absent = [p for p in (wal, root / (DB_NAME + "-shm")) if not p.exists()]
    try:
        conn = sqlite3.connect(f"file:{quote(str(db.resolve()))}?mode=ro", uri=True)
    except (sqlite3.Error, UnicodeDecodeError) as e:
        return Inspection(empty_state(), [*damage, Damage(DB_NAME, "the database", f"does not open ({e})")])
    try:
        state, found, version = read_state(conn)
    except DB_ERRORS as e:  # not a database, or a schema that does not parse
        state, found, version = empty_state(), [Damage(DB_NAME, "the database", f"does not read ({e})")], SCHEMA_VERSION
    finally:
        conn.close()
        for p in absent:  # what the read-only look created (an empty WAL, its index) goes again
            if p.exists() and (p != wal or p.stat().st_size == 0):
                p.unlink()
    if version != SCHEMA_VERSION:
        return Inspection(state, [], version=version)
    if damage and not state.salvaged:
        state = salvage(state)  # the rows SQLite shows are an older, partial state
    return Inspection(state, damage + found)


__all__ = [
    "COLUMNS",
    "DB_NAME",
    "Damage",
    "Inspection",
    "PersistedState",
    "REPAIR_MARK",
    "SCHEMA_VERSION",
    "WAL_NAME",
    "inspect",
    "manifest",
    "meta_row",
    "read_state",
    "record_sum",
    "salvage",
]
