"""Moving a data directory written by schema version 1 to the current one.

Version 1 kept rows without checksums, key states without seals, and deltas in wire version 1;
a counter there may hold two entries of one actor (the join that over-counted deltas applied
out of order), which version 1 itself could no longer read back. The migration reads the old
database read-only, and writes the same state anew:

- each key's state, decoded leniently: of two entries of one actor in a counter, the newer
  dot's is kept (the totals it carries include the older one's), which is exactly what the
  current join keeps;
- seals minted for every live dot (by the migration: version 1 had none to carry over), and
  every row checksummed;
- the log's deltas, turned into current deltas with their seals, replayed on the next start
  as any log is;
- the replica id, actor, HLC, boot count, and whether the last session closed cleanly (an
  unclean one still makes the next start take a new actor).

The new database is written beside the old one and then swapped in; the old files are kept
as `edgestate.db.v1-<time>` (with `-wal`), never deleted. `Storage.open` runs it when it finds
version 1, and says so in the log.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

import msgpack

from ..clocks import CausalContext, Dot, Timestamp, check_replica_id, dot_from_wire
from ..crdts import BY_NAMESPACE
from ..delta import Delta, KeyRef
from ..errors import EdgeStateError, MigrationError
from ..replica import Replica
from ..seals import mint
from ..store import Snapshot
from ..values import check_key, check_namespace

log = logging.getLogger("edgestate.storage")

OLD_VERSION = 1


def _unpack(raw: bytes):
    return msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True)


def _store(ns: str, key: str, raw_store: object):
    """A version 1 key state as a current one (a counter's duplicate actors folded to the newest)."""
    mod = BY_NAMESPACE[ns]
    if ns == "counters" and isinstance(raw_store, list):
        newest: dict[str, list] = {}
        for item in raw_store:
            if isinstance(item, list) and len(item) == 4:
                cur = newest.get(item[0])
                if cur is None or item[1] > cur[1]:
                    newest[item[0]] = item
        raw_store = sorted(newest.values())
    return mod.from_wire(raw_store)


def _sealed(entries: dict[KeyRef, object]) -> dict[Dot, bytes]:
    seals: dict[Dot, bytes] = {}
    for (ns, key), state in entries.items():
        seals.update(mint(ns, key, BY_NAMESPACE[ns].contents(state)))
    return seals


def _delta(obj: object) -> Delta:
    """A version 1 delta ([1, [[ns, key, store]...], ctx, applied, hints, basis, full]) as a current one."""
    if not (isinstance(obj, list) and len(obj) == 7 and obj[0] == OLD_VERSION):
        raise MigrationError("a logged delta is not a version 1 delta")
    _v, raw_entries, raw_ctx, raw_applied, raw_hints, raw_basis, full = obj
    entries = {}
    for ns, key, raw_store in raw_entries:
        ref = (check_namespace(ns), check_key(key))
        entries[ref] = _store(ns, key, raw_store)
    keys = {dot_from_wire(h[:2]): (check_namespace(h[2]), check_key(h[3])) for h in raw_hints}
    delta = Delta(entries=entries, ctx=CausalContext.from_wire(raw_ctx), applied=CausalContext.from_wire(raw_applied),
                  keys=keys, basis=None if raw_basis is None else CausalContext.from_wire(raw_basis), full=bool(full),
                  seals=_sealed(entries))
    delta.check()
    return delta


def read_v1(db: Path) -> tuple[dict, Replica, list[Delta]]:
    """(meta, the checkpoint as a replica, the logged deltas) of a version 1 database."""
    conn = sqlite3.connect(f"file:{quote(str(db.resolve()))}?mode=ro", uri=True)
    try:
        meta = {name: _unpack(value) for name, value in conn.execute("SELECT name, value FROM meta")}
        if meta.get("schema") != OLD_VERSION:
            raise MigrationError(f"{db} is not a version 1 database")
        entries: dict[KeyRef, object] = {}
        for ns, key, raw in conn.execute("SELECT ns, key, store FROM keyspace ORDER BY ns, key"):
            entries[(check_namespace(ns), check_key(key))] = _store(ns, key, _unpack(raw))
        key_of = {dot_from_wire([r, n]): (check_namespace(ns), check_key(k))
                  for r, n, ns, k in conn.execute("SELECT replica, counter, ns, key FROM dot_keys")}
        logged = [_delta(_unpack(raw)) for (raw,) in conn.execute("SELECT delta FROM log ORDER BY seq")]
    finally:
        conn.close()
    rid = check_replica_id(meta.get("replica_id") or "unnamed")
    actor = check_replica_id(meta.get("actor") or rid)
    rep = Replica(rid, actor=actor)
    ctx = CausalContext.from_wire(meta.get("ctx", [{}, []]))
    applied = CausalContext.from_wire(meta.get("applied", [{}, []]))
    wall, logical = meta.get("hlc", [0, 0])
    rep.restore(Snapshot(entries, ctx, applied, key_of, _sealed(entries)), Timestamp(wall, logical))
    return meta, rep, logged


def migrate_v1(root: Path) -> Path:
    """Rewrite the version 1 data directory `root` in the current schema (the caller holds its
    lock). Returns where the old files were moved. Raises MigrationError, leaving `root` as it was."""
    from .integrity import DB_NAME, meta_row  # storage imports this module: import late
    from .storage import Storage

    db = root / DB_NAME
    try:
        meta, rep, logged = read_v1(db)
    except (EdgeStateError, ValueError, TypeError, KeyError, msgpack.UnpackException, sqlite3.Error) as e:
        msg = e.message if isinstance(e, EdgeStateError) else str(e)
        raise MigrationError(f"{db} (schema version 1) could not be migrated: {msg}; it is left as it was") from None
    work = root / "migrating"
    if work.exists():
        for p in work.iterdir():
            p.unlink()
    else:
        work.mkdir()
    new = Storage.open(work)
    try:
        new.restore(rep.id, members=[rep.id], actor=rep.actor)
        for d in logged:
            new.append(d)
        new.flush()
        new.checkpoint(rep, full=True)
        new.close(None)
    except BaseException:
        new.close(None)
        raise
    conn = sqlite3.connect(work / DB_NAME, isolation_level=None)
    try:  # what the old directory said of itself, kept
        conn.execute("INSERT OR REPLACE INTO meta (name, value, sum) VALUES (?, ?, ?)",
                     meta_row("boots", int(meta.get("boots", 0))))
        conn.execute("INSERT OR REPLACE INTO meta (name, value, sum) VALUES (?, ?, ?)",
                     meta_row("clean", bool(meta.get("clean", True))))
    finally:
        conn.close()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = root / f"{DB_NAME}.v1-{stamp}"
    for suffix in ("", "-wal", "-shm"):
        src = root / (DB_NAME + suffix)
        if src.exists():
            os.replace(src, f"{aside}{suffix}")
    os.replace(work / DB_NAME, db)
    for p in work.iterdir():
        p.unlink()
    work.rmdir()
    log.warning("%s: migrated from schema version 1 (%d keys, %d logged deltas); the old files are kept as %s",
                root, len(rep.store), len(logged), aside.name)
    return aside


__all__ = ["migrate_v1", "read_v1"]
