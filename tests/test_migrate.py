"""A data directory written by schema version 1 (before checksums and seals) opens as the
current version: migrated in place, the old files kept, the state the same (or, for a counter
version 1 had poisoned with two entries of one actor, the state the current join gives)."""

from __future__ import annotations

import sqlite3

import msgpack
import pytest

from replication import Replica
from replication.crdts import BY_NAMESPACE
from replication.errors import MigrationError
from replication.io.storage import DB_NAME, Storage

V1_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE keyspace (ns TEXT NOT NULL, key TEXT NOT NULL, store BLOB NOT NULL, PRIMARY KEY (ns, key)) WITHOUT ROWID;
CREATE TABLE dot_keys (replica TEXT NOT NULL, counter INTEGER NOT NULL, ns TEXT NOT NULL, key TEXT NOT NULL,
    PRIMARY KEY (replica, counter)) WITHOUT ROWID;
CREATE TABLE log (seq INTEGER PRIMARY KEY, delta BLOB NOT NULL);
"""


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def v1_delta(d) -> list:
    """A delta as version 1 put it on the wire and in its log."""
    only = next(iter(d.entries)) if len(d.entries) == 1 and not d.full else None
    hints = [[x[0], x[1], k[0], k[1]] for x, k in sorted(d.keys.items()) if k != only]
    entries = [[ns, key, BY_NAMESPACE[ns].to_wire(s)] for (ns, key), s in sorted(d.entries.items())]
    return [1, entries, d.ctx.to_wire(), d.applied.to_wire(), hints, None, d.full]


def write_v1(path, *, clean: bool):
    """The state version 1 left at `b` after a's counter deltas d1 and d3 (d2 lost): two entries
    of actor a in one counter, which it could no longer read back; one more delta in the log."""
    a = Replica("a", members="ab")
    d1, _d2, d3 = (a.add_counter("c", 1, now=i)[1] for i in range(3))
    _, dk = a.write_kv("k", {"v": 1}, now=5)
    _, d5 = a.add_counter("c", 1, now=6)
    poisoned = [["a", 1, 1, 0], ["a", 3, 3, 0]]
    ctx = {"a": 1}, [["a", 3], ["a", 4]]
    path.mkdir()
    db = sqlite3.connect(path / DB_NAME)
    db.executescript(V1_SCHEMA)
    (dot, (value, ts)), = dk.entries[("kv", "k")].items()
    db.executemany("INSERT INTO keyspace VALUES (?, ?, ?)", [
        ("counters", "c", pack(poisoned)),
        ("kv", "k", pack([[dot[0], dot[1], value, ts[0], ts[1]]])),
    ])
    db.executemany("INSERT INTO dot_keys VALUES (?, ?, ?, ?)", [("a", 3, "counters", "c"), ("a", 4, "kv", "k")])
    meta = {"schema": 1, "replica_id": "b", "actor": "b", "ctx": [ctx[0], ctx[1]], "applied": [ctx[0], ctx[1]],
            "hlc": [ts[0], ts[1]], "boots": 3, "clean": clean}
    db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, pack(v)) for k, v in meta.items()])
    db.execute("INSERT INTO log VALUES (1, ?)", (pack(v1_delta(d5)),))
    db.commit()
    db.close()
    return a


@pytest.mark.parametrize("clean", [True, False])
def test_a_version_1_directory_is_migrated_and_reads_right(tmp_path, clean):
    a = write_v1(tmp_path / "b", clean=clean)
    st = Storage.open(tmp_path / "b")
    b = st.restore("b")
    assert b.read_counter("c") == 4 == a.read_counter("c")  # a5's totals supersede a1 and a3
    assert b.read_kv("k").values == [{"v": 1}]
    assert b.actor == "b" and st.was_clean is clean
    assert st.count_boot() == 4
    st.close(b)
    kept = sorted(p.name for p in (tmp_path / "b").iterdir() if ".v1-" in p.name)
    assert kept and kept[0].startswith(f"{DB_NAME}.v1-")
    again = Storage.open(tmp_path / "b")  # now a current directory: nothing to migrate
    assert again.restore("b").read_counter("c") == 4
    again.close()
    assert sorted(p.name for p in (tmp_path / "b").iterdir() if ".v1-" in p.name) == kept


def test_a_version_1_directory_that_does_not_decode_is_refused_and_left_alone(tmp_path):
    write_v1(tmp_path / "b", clean=True)
    db = sqlite3.connect(tmp_path / "b" / DB_NAME)
    db.execute("UPDATE keyspace SET store=? WHERE key='k'", (b"\xc1 not msgpack",))
    db.commit()
    db.close()
    before = (tmp_path / "b" / DB_NAME).read_bytes()
    with pytest.raises(MigrationError, match="schema version 1"):
        Storage.open(tmp_path / "b")
    assert (tmp_path / "b" / DB_NAME).read_bytes() == before
    assert not any(".v1-" in p.name for p in (tmp_path / "b").iterdir())
