"""Corruption at rest is never silent and never served.

Every stored record carries a checksum; the WAL is read before SQLite opens the database;
damage found names its file and record, a refusal leaves the files exactly as they were,
and a repair keeps every record that verifies under contexts that claim only what is held.
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

import pytest
from waiting import wait_for
from test_storage import Workload, crash_copy

from replication import Replica
from replication.bench import disk_faults
from replication.clocks import CausalContext
from replication.crdts import BY_NAMESPACE
from replication.io.integrity import meta_row, record_sum
from replication.errors import CorruptStorage, MigrationError, StorageError
from replication.io.sqlitewal import FRAME_HEADER, HEADER, check_wal, read_frames
from replication.io.storage import DB_NAME, Storage

pytestmark = pytest.mark.timeout(300)

WAL = DB_NAME + "-wal"


def written(path: Path, n: int = 10) -> Replica:
    """A directory holding n kv keys, cleanly closed (no WAL left: all in the database file)."""
    st = Storage.open(path)
    lhr = st.restore("lhr")
    for i in range(n):
        st.append(lhr.write_kv(f"k{i}", f"value-of-k{i}-abcdefgh", now=1_700_000_000_000 + i)[1])
    st.flush()
    st.close(lhr)
    return lhr


def edit_file(path: Path, old: bytes, new: bytes) -> None:
    raw = path.read_bytes()
    assert raw.count(old) == 1, f"{old!r} is in {path} {raw.count(old)} times"
    path.write_bytes(raw.replace(old, new))


def live_dots(rep: Replica) -> CausalContext:
    return CausalContext.of(d for ns, m in rep.store.data.items() for s in m.values() for d in BY_NAMESPACE[ns].dots(s))


def joined_is(lower: Replica, upper: Replica) -> bool:
    """lower ⊔ upper == upper: `lower` holds nothing `upper` does not, and lacks nothing it
    could pass off as removed."""
    return disk_faults._joined_is(lower, upper)


def files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.name.startswith(DB_NAME)}


# -- records in the database ------------------------------------------------------------------------


def test_a_value_changed_on_disk_is_found_and_not_served(tmp_path):
    before = written(tmp_path / "d")
    edit_file(tmp_path / "d" / DB_NAME, b"value-of-k3-abcdefgh", b"value-of-k3-abcdXfgh")
    st = Storage.open(tmp_path / "d")
    try:
        assert [str(d) for d in st.damage] == ["edgestate.db: keyspace row kv/'k3': does not match its checksum"]
        with pytest.raises(CorruptStorage, match=r"edgestate.db: keyspace row kv/'k3': does not match its checksum"):
            st.restore("lhr")
        rep = st.restore("lhr", actor="lhr~1.test", repair=True)
        assert rep.read_kv("k3").values == []  # never the edited value
        assert all(rep.read_kv(f"k{i}").values == [f"value-of-k{i}-abcdefgh"] for i in range(10) if i != 3)
        # it claims only what it holds: k3's dot is neither applied nor known as removed
        assert rep.store.ctx == rep.store.applied == live_dots(rep)
        assert not rep.store.ctx.contains(next(iter(before.store.data["kv"]["k3"])))
        assert joined_is(rep, before)
        assert sorted(p.name for p in st.repair.moved_aside) == [f for f in files(tmp_path / "d") if ".corrupt-" in f]
        assert st.repair.keys_kept == 9
        st.close(rep)
    finally:
        st.close()
    aside = next(p for p in (tmp_path / "d").iterdir() if p.name.startswith(DB_NAME + ".corrupt-"))
    assert b"value-of-k3-abcdXfgh" in aside.read_bytes()  # kept as found, for whoever looks into it
    with Storage.open(tmp_path / "d") as st:  # the repaired directory verifies, and keeps the new actor
        assert st.damage == []
        again = st.restore("lhr")
        assert again.actor == "lhr~1.test" and again.digest() == rep.digest()


def test_a_value_moved_to_another_key_is_found(tmp_path):
    written(tmp_path / "d")
    con = sqlite3.connect(tmp_path / "d" / DB_NAME)
    (a_store, a_sum), (b_store, b_sum) = con.execute(
        "SELECT store, sum FROM keyspace WHERE key IN ('k1', 'k2') ORDER BY key").fetchall()
    con.execute("UPDATE keyspace SET store=?, sum=? WHERE key='k1'", (b_store, b_sum))
    con.execute("UPDATE keyspace SET store=?, sum=? WHERE key='k2'", (a_store, a_sum))
    con.commit()
    con.close()
    with Storage.open(tmp_path / "d") as st:
        assert sorted(d.record for d in st.damage) == ["keyspace row kv/'k1'", "keyspace row kv/'k2'"]


def test_a_row_gone_from_a_table_is_found_by_the_checkpoint_manifest(tmp_path):
    before = written(tmp_path / "d")
    con = sqlite3.connect(tmp_path / "d" / DB_NAME)
    con.execute("DELETE FROM keyspace WHERE key='k4'")  # a lost page does this, without a word from SQLite
    con.commit()
    con.close()
    with Storage.open(tmp_path / "d") as st:
        assert [str(d) for d in st.damage] == [
            "edgestate.db: keyspace table: holds 9 rows not matching the 10 of the last checkpoint (rows lost or added)"]
        rep = st.restore("lhr", actor="lhr~1.test", repair=True)
    # with the old contexts k4's dot would read as removed, and a peer's copy of k4 be ignored
    peer = Replica("fra")
    peer.apply(before.store.full_delta())
    rep.apply(peer.deltas_since(rep.applied_context))
    assert rep.read_kv("k4").values == ["value-of-k4-abcdefgh"]
    assert rep.digest() == before.digest()


def test_damaged_contexts_and_log_rows_are_found(tmp_path):
    st = Storage.open(tmp_path / "d")
    lhr = st.restore("lhr")
    st.append(lhr.write_kv("a", "in the checkpoint", now=1)[1])
    st.flush()
    st.checkpoint(lhr)
    st.append(lhr.write_kv("b", "in the log", now=2)[1])
    st.flush()
    st.close()  # no checkpoint: "b" stays a log row
    con = sqlite3.connect(tmp_path / "d" / DB_NAME)
    (raw,) = con.execute("SELECT value FROM meta WHERE name='ctx'").fetchone()
    con.execute("UPDATE meta SET value=? WHERE name='ctx'", (raw[:-1] + bytes([raw[-1] ^ 1]),))
    (seq, raw) = con.execute("SELECT seq, delta FROM log").fetchone()
    con.execute("UPDATE log SET delta=? WHERE seq=?", (raw.replace(b"in the log", b"in the lag"), seq))
    con.commit()
    con.close()
    with Storage.open(tmp_path / "d") as st:
        assert sorted(map(str, st.damage)) == [
            f"edgestate.db: log row {seq}: does not match its checksum",
            "edgestate.db: meta row 'ctx': does not match its checksum"]
        rep = st.restore("lhr", actor="lhr~1.test", repair=True)
        assert rep.read_kv("a").values == ["in the checkpoint"] and rep.read_kv("b").values == []
        assert rep.store.ctx == rep.store.applied == live_dots(rep)


def test_a_refusal_leaves_every_file_as_it_was(tmp_path):
    written(tmp_path / "d")
    edit_file(tmp_path / "d" / DB_NAME, b"value-of-k7-abcdefgh", b"value-of-k7-abcdefgH")
    before = files(tmp_path / "d")
    for _ in range(2):  # and so the next start finds the same
        with Storage.open(tmp_path / "d") as st:
            assert [d.record for d in st.damage] == ["keyspace row kv/'k7'"]
            with pytest.raises(CorruptStorage):
                st.restore("lhr")
            with pytest.raises(CorruptStorage):
                st.append(Replica("lhr").write_kv("x", 1, now=1)[1]) and st.flush()
    after = files(tmp_path / "d")
    assert {k: v for k, v in after.items() if k != DB_NAME + "-shm"} == before


def test_an_unreadable_database_is_moved_aside_and_the_replica_starts_empty(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"this is not sqlite" * 300)
    with Storage.open(tmp_path) as st:
        assert [d.record for d in st.damage] == ["the database"]
        rep = st.restore("lhr", actor="lhr~1.test", repair=True)
        assert len(rep.store) == 0 and rep.actor == "lhr~1.test"
        assert [p.name.split(".corrupt-")[0] for p in st.repair.moved_aside] == ["edgestate.db"]
        st.append(rep.write_kv("after", 1, now=1)[1])
        st.flush()
    with Storage.open(tmp_path) as st:
        assert st.damage == [] and st.restore("lhr").read_kv("after").values == [1]


def test_a_repair_cut_short_is_found_at_the_next_start(tmp_path, monkeypatch):
    """A crash after the damaged files were moved aside and before the new database took their
    place: the directory must not then pass for a healthy (empty, or older) one."""
    import os

    import replication.io.storage as storage_mod

    before = written(tmp_path / "d")
    edit_file(tmp_path / "d" / DB_NAME, b"value-of-k1-abcdefgh", b"value-of-k1-abcdefgX")
    real = os.replace

    def crash_on_the_swap(src, dst):
        if str(src).endswith(".rebuild"):
            raise OSError("the power went")
        return real(src, dst)

    monkeypatch.setattr(storage_mod.os, "replace", crash_on_the_swap)
    with Storage.open(tmp_path / "d") as st, pytest.raises(OSError, match="the power went"):
        st.restore("lhr", actor="lhr~1.test", repair=True)
    monkeypatch.setattr(storage_mod.os, "replace", real)
    assert not (tmp_path / "d" / DB_NAME).exists()
    with Storage.open(tmp_path / "d") as st:
        [d] = st.damage
        assert d.file == "edgestate.db.repairing" and "did not finish" in d.problem and "kv/'k1'" in d.problem
        rep = st.restore("lhr", actor="lhr~1.test", repair=True)
        assert joined_is(rep, before)
    with Storage.open(tmp_path / "d") as st:
        assert st.damage == []


def test_a_truncated_database_or_a_wal_without_its_database_is_damage(tmp_path):
    written(tmp_path / "t", n=200)
    db = tmp_path / "t" / DB_NAME
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    with Storage.open(tmp_path / "t") as st:
        assert [d.record for d in st.damage] == ["the database"]
    image, _lhr = crashed(tmp_path / "w")
    (image / DB_NAME).unlink()
    with Storage.open(image) as st:
        assert [str(d) for d in st.damage] == [
            f"edgestate.db-wal: the WAL: holds {check_wal(image / WAL).frames} frames, and the database they belong "
            "to is missing"]


def test_a_failed_checkpoint_leaves_the_manifest_true(tmp_path):
    """The manifest counts the rows a checkpoint writes; one that fails half-way must not leave
    the next checkpoint counting rows that never landed (a false alarm at the next start)."""
    st = Storage.open(tmp_path / "d")
    lhr = st.restore("lhr")
    for i in range(5):
        st.append(lhr.write_kv(f"k{i}", i, now=1)[1])
    st.flush()
    st.checkpoint(lhr)
    real = st._conn

    class Failing:
        def __getattr__(self, name):
            return getattr(real, name)

        def executemany(self, sql, rows):
            if sql.startswith("INSERT OR REPLACE INTO dot_keys"):
                raise sqlite3.OperationalError("disk I/O error")
            return real.executemany(sql, rows)

    for i in range(5, 9):
        st.append(lhr.write_kv(f"k{i}", i, now=2)[1])
    lhr.store.key_of.clear()  # and dot_keys rows to delete, too
    st.flush()
    st._conn = Failing()
    with pytest.raises(sqlite3.OperationalError):
        st.checkpoint(lhr)
    st._conn = real
    st.close(lhr)  # a checkpoint that succeeds
    with Storage.open(tmp_path / "d") as st:
        assert st.damage == []
        assert st.restore("lhr").digest() == lhr.digest()


def test_a_schema_version_1_directory_it_cannot_migrate_is_refused_with_a_clear_message(tmp_path):
    """Version 1 directories are migrated (tests/test_migrate.py); one missing its tables is not."""
    con = sqlite3.connect(tmp_path / DB_NAME)
    con.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID")
    con.execute("INSERT INTO meta VALUES ('schema', ?)", (b"\x01",))
    con.commit()
    con.close()
    with pytest.raises(MigrationError, match=r"schema version 1\) could not be migrated: no such table: keyspace"):
        Storage.open(tmp_path)
    with pytest.raises(MigrationError):  # the lock was let go: a second try gets as far again
        Storage.open(tmp_path)


def test_an_unknown_schema_version_is_refused_with_a_clear_message(tmp_path):
    con = sqlite3.connect(tmp_path / DB_NAME)
    con.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL, sum INTEGER NOT NULL) WITHOUT ROWID")
    con.execute("INSERT INTO meta VALUES (?, ?, ?)", meta_row("schema", 9))
    con.commit()
    con.close()
    with pytest.raises(StorageError, match=r"holds schema version 9; this edgestate reads version 2"):
        Storage.open(tmp_path)


def test_a_record_sum_covers_the_table_the_key_and_the_blob():
    sums = {record_sum("keyspace", ("kv", "a"), b"x"), record_sum("keyspace", ("kv", "b"), b"x"),
            record_sum("keyspace", ("kv", "a"), b"y"), record_sum("log", ("kv", "a"), b"x"),
            record_sum("keyspace", ("kv", "ax"), b"")}
    assert len(sums) == 5


# -- the WAL -----------------------------------------------------------------------------------------


def crashed(path: Path, batches: int = 30, seed: int = 3) -> tuple[Path, Replica]:
    """A crash copy (database and WAL as SIGKILL leaves them) of a replica's directory."""
    st = Storage.open(path / "live")
    lhr = st.restore("lhr")
    w = Workload(seed=seed, batch=3)
    for b in range(batches):
        w.run_batch(lhr, st)
        if b == batches // 2:
            st.checkpoint(lhr)
    image = crash_copy(path / "live", path / "image")
    st.close()
    return image, lhr


def flip(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x20
    path.write_bytes(bytes(raw))


def test_a_flipped_byte_in_the_wal_is_found_and_the_evidence_kept(tmp_path):
    image, lhr = crashed(tmp_path)
    frames = read_frames((image / WAL).read_bytes(), 4096)
    assert sum(1 for f in frames if f.commit) > 5
    target = frames[len(frames) // 2]
    flip(image / WAL, target.offset + FRAME_HEADER + 100)
    damaged = files(image)
    for _ in range(2):  # refused twice: SQLite never got to drop (and forget) the frames
        with Storage.open(image) as st:
            [d] = st.damage
            assert (d.file, d.record) == (WAL, f"WAL frame {target.index} (offset {target.offset})")
            assert f"SQLite would silently drop every transaction from frame {target.index} on" in d.problem
            with pytest.raises(CorruptStorage, match=f"WAL frame {target.index}"):
                st.restore("lhr")
    assert {k: v for k, v in files(image).items() if not k.endswith("-shm")} == damaged
    with Storage.open(image) as st:
        rep = st.restore("lhr", actor="lhr~1.test", repair=True)
        assert any(p.name.endswith("-wal") for p in st.repair.moved_aside)
        assert rep.store.ctx == rep.store.applied and rep.store.applied != lhr.store.applied
        assert joined_is(rep, lhr)


def test_a_flipped_byte_in_the_last_commit_frame_is_reported_as_cut_short_or_corrupt(tmp_path):
    image, _lhr = crashed(tmp_path)
    frames = read_frames((image / WAL).read_bytes(), 4096)
    assert frames[-1].commit
    flip(image / WAL, frames[-1].offset + FRAME_HEADER + 7)
    [d] = check_wal(image / WAL).damage
    assert d.frame == len(frames) and "a crash cut that write short" in d.problem


def test_a_damaged_wal_header_with_frames_behind_it_is_found(tmp_path):
    image, _lhr = crashed(tmp_path)
    flip(image / WAL, 17)  # a salt
    [d] = check_wal(image / WAL).damage
    assert d.record == "the WAL header" and "SQLite ignores the whole WAL" in d.problem
    header_only = tmp_path / "header-only-wal"
    header_only.write_bytes((image / WAL).read_bytes()[:HEADER])
    assert check_wal(header_only).damage == []  # nothing behind it to lose


def test_old_generation_frames_and_torn_tails_are_not_damage(tmp_path):
    """After a WAL restart the file still holds the previous generation's frames (other salts)
    beyond the current ones: SQLite ignores them, and a flip there changes nothing."""
    st = Storage.open(tmp_path / "live")
    lhr = st.restore("lhr")
    w = Workload(seed=5, batch=5)
    for _ in range(40):
        w.run_batch(lhr, st)
    st._conn.execute("PRAGMA wal_checkpoint(RESTART)")
    for _ in range(2):
        w.run_batch(lhr, st)
    image = crash_copy(tmp_path / "live", tmp_path / "image")
    st.close()
    raw = (image / WAL).read_bytes()
    frames = read_frames(raw, 4096)
    salts = frames[0].salts
    old = [f for f in frames if f.salts != salts]
    assert old and all(f.index > frames.index(old[0]) for f in old[1:]), "expected old frames after the new"
    for at in (old[0].offset + 30, old[-1].offset + FRAME_HEADER + 5, len(raw) - 1):
        copy = crash_copy(image, tmp_path / f"c{at}")
        flip(copy / WAL, at)
        with Storage.open(copy) as st2:
            assert st2.damage == [], at
            assert st2.restore("lhr").digest() == lhr.digest()
    torn = crash_copy(image, tmp_path / "torn")
    (torn / WAL).write_bytes(raw[: frames[len(frames) - len(old) - 1].offset + 100])  # the last frame cut short
    assert check_wal(torn / WAL).damage == []


def test_the_wal_checksum_is_sqlites():
    """Checked against SQLite itself: a WAL it wrote verifies end to end."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        con = sqlite3.connect(Path(d) / "x.db", isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE t (v BLOB)")
        for i in range(20):
            con.execute("INSERT INTO t VALUES (?)", (struct.pack(">I", i) * 300,))
        check = check_wal(Path(d) / "x.db-wal")
        con.close()
    assert check.frames > 20 and check.replayed == check.frames and check.damage == []


# -- the campaign, short ----------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "trials"), [("db-flip", 10), ("value-edit", 5), ("wal-flip", 2)])
def test_disk_fault_campaign_short(kind, trials):
    report = disk_faults.run(trials, 11, kind)
    assert report.detected + report.harmless + report.silent + report.bad_repair == trials
    assert report.silent == 0 and report.bad_repair == 0, report.failures
    if kind != "db-flip":
        assert report.detected > 0


# -- the replica: refuse, or repair from peers behind a 503 --------------------------------------------


def test_actors_after_lost_or_repaired_state_carry_a_lineage_tag():
    from replication.node import incarnation_of, parse_actor
    from replication.io.runner import fresh_actor, next_actor

    a, b = fresh_actor("lhr", 2), fresh_actor("lhr", 2)
    assert a != b and a.startswith("lhr~3.") and incarnation_of("lhr", a) == 3
    assert parse_actor("lhr", "lhr~3.9f2a") == (3, "9f2a") and parse_actor("lhr", "lhr~3") == (3, None)
    assert next_actor("lhr", "lhr~3.9f2a") == "lhr~4.9f2a"  # an unclean stop stays in its lineage
    for odd in ("lhr~3.", "lhr~3.XYZ", "lhr~²", "lhr~", "lhrx~1", "lhr~1.9f.2a"):
        assert incarnation_of("lhr", odd) is None, odd


async def _runners(tmp_path, ids, *, down=(), **kw):
    from app.processes.supervisor import free_port
    from replication.io.runner import ReplicaRunner

    ports = {rid: free_port() for rid in [*ids, *down]}
    addrs = {rid: ("127.0.0.1", p) for rid, p in ports.items()}
    out = {}
    for rid in ids:
        r = ReplicaRunner(rid, {p: a for p, a in addrs.items() if p != rid}, data_dir=tmp_path / rid,
                          secret=b"a test cluster secret, 32 bytes!", **kw)
        await r.start("127.0.0.1", ports[rid])
        out[rid] = r
    return out, ports


def test_a_replica_with_damaged_storage_repairs_from_its_peer_and_answers_503_meanwhile(tmp_path):
    import asyncio

    from live_helpers import run_async
    from test_runner import until

    from replication.node import parse_actor
    from replication.errors import Recovering
    from replication.io.runner import ReplicaRunner

    async def main():
        rs, ports = await _runners(tmp_path, ["lhr", "jfk"])
        lhr, jfk = rs["lhr"], rs["jfk"]
        try:
            for i in range(5):
                await lhr.write("kv", f"k{i}", {"value": f"value-of-k{i}-abcdefgh"})
            await until("jfk has them", lambda: len(jfk.node.replica.store) == 5)
            await lhr.stop()
            edit_file(tmp_path / "lhr" / DB_NAME, b"value-of-k2-abcdefgh", b"value-of-k2-abcdefgX")
            lhr = rs["lhr"] = ReplicaRunner("lhr", {"jfk": ("127.0.0.1", ports["jfk"])}, data_dir=tmp_path / "lhr",
                                            secret=b"a test cluster secret, 32 bytes!")
            await lhr.start("127.0.0.1", ports["lhr"])
            assert [str(d) for d in lhr.damage] == ["edgestate.db: keyspace row kv/'k2': does not match its checksum"]
            assert lhr.recovering and lhr.status()["recovering"]
            answers = []
            while True:  # every answer is the right value or "recovering", never the edited one
                try:
                    answers.append((await lhr.read("kv", "k2")).values)
                except Recovering as e:
                    assert e.code == "recovering"
                    answers.append("503")
                if answers[-1] != "503":
                    break
                with pytest.raises(Recovering):
                    await lhr.write("kv", "during", {"value": 1})
                await asyncio.sleep(0.01)  # poll interval
            assert answers[0] == "503" and answers[-1] == ["value-of-k2-abcdefgh"]
            assert set(map(str, answers)) <= {"503", "['value-of-k2-abcdefgh']"}
            n, tag = parse_actor("lhr", lhr.node.replica.actor)
            assert n >= 1 and tag, lhr.node.replica.actor
            assert lhr.recovered["reason"] == "repairing" and not lhr.recovered["not_heard"]
            view = await lhr.write("kv", "after", {"value": "repaired"})
            assert view.siblings[0].replica == lhr.node.replica.actor
            await until("converged", lambda: lhr.node.replica.digest() == jfk.node.replica.digest())
        finally:
            for r in rs.values():
                await r.stop()

    run_async(main())


def test_damaged_storage_with_no_peer_is_refused_unless_the_loss_is_accepted(tmp_path):
    from live_helpers import run_async

    from replication.node import parse_actor

    written(tmp_path / "lhr")
    edit_file(tmp_path / "lhr" / DB_NAME, b"value-of-k5-abcdefgh", b"value-of-k5-abcdefgX")
    before = files(tmp_path / "lhr")

    async def main(accept: bool):
        rs, _ports = await _runners(tmp_path, ["lhr"], accept_data_loss=accept)
        lhr = rs["lhr"]
        try:
            assert not lhr.recovering  # no one to wait for
            assert (await lhr.read("kv", "k5")).values == [] and (await lhr.read("kv", "k6")).values
            assert parse_actor("lhr", lhr.node.replica.actor)[1]
        finally:
            await lhr.stop()

    with pytest.raises(CorruptStorage, match=r"no peer to repair it from: edgestate.db: keyspace row kv/'k5'"):
        run_async(main(False))
    assert {k: v for k, v in files(tmp_path / "lhr").items() if not k.endswith("-shm")} == before
    run_async(main(True))


def test_an_empty_replica_whose_peer_is_down_takes_an_actor_no_one_can_hold(tmp_path, monkeypatch):
    """lhr wrote as lhr~1 (fra has those dots) and then as lhr~2 (only jfk has those, and jfk
    is down), then lost its data directory. Taking "the actor after the highest any peer
    reported", lhr~2, would mint dots jfk already holds with other values."""
    import replication.io.runner as runner_mod
    from live_helpers import run_async
    from test_runner import until

    from replication.messages import Envelope, Gossip
    from replication.node import parse_actor

    monkeypatch.setattr(runner_mod, "JOIN_TIMEOUT_S", 1.0)  # jfk will not answer: do not wait long for it

    async def scenario():
        from app.processes.supervisor import free_port
        from replication.io.runner import ReplicaRunner

        ports = {rid: free_port() for rid in ("lhr", "fra", "jfk")}  # nothing ever listens on jfk's
        addrs = {rid: ("127.0.0.1", p) for rid, p in ports.items()}
        mk = lambda rid: ReplicaRunner(rid, {p: a for p, a in addrs.items() if p != rid}, data_dir=tmp_path / rid,
                                       secret=b"a test cluster secret, 32 bytes!")
        fra, lhr = mk("fra"), mk("lhr")
        await fra.start("127.0.0.1", ports["fra"])
        try:
            old = Replica("lhr", actor="lhr~1")
            _v, d = old.write_kv("x", "from lhr~1", now=1.0)
            fra._on_envelope(Envelope("lhr", "fra", Gossip(next(iter(d.applied.dots())), "lhr", d)))
            await until("fra holds lhr~1's write", lambda: fra.node.replica.read_kv("x").values == ["from lhr~1"])
            await lhr.start("127.0.0.1", ports["lhr"])
            view = await lhr.write("kv", "y", {"value": "new"})  # waits for the join
            actor = lhr.node.replica.actor
            assert actor != "lhr~2" and parse_actor("lhr", actor)[0] == 2 and parse_actor("lhr", actor)[1], actor
            assert view.siblings[0].replica == actor and lhr.rejoined_as == actor
            assert lhr.recovered["not_heard"] == ["jfk"]
        finally:
            await lhr.stop()
            await fra.stop()

    run_async(scenario())


# -- real `edgestate replica` processes --------------------------------------------------------------


def _poll_until_right(url: str, rid: str, expected: dict[str, object], deadline_s: float = 90.0) -> list[str]:
    """Read every key at `rid` until all answer their expected value. Each answer on the way
    must be that value or a 503 `recovering` (or no answer: the process is still starting).
    Returns what was seen, in order, for the record."""
    import time

    import httpx

    seen: list[str] = []
    pending = dict(expected)
    end = time.monotonic() + deadline_s
    with httpx.Client(base_url=url, timeout=5) as http:
        while pending:
            assert time.monotonic() < end, f"not repaired within {deadline_s}s; pending {sorted(pending)}; seen {seen[-5:]}"
            for key, value in list(pending.items()):
                try:
                    r = http.get(f"/api/replicas/{rid}/kv/{key}")
                except httpx.TransportError:
                    seen.append("down")
                    break
                if r.status_code == 503:
                    assert r.json()["error"]["code"] == "recovering", r.text
                    seen.append("503")
                    break
                assert r.status_code == 200 and r.json()["values"] == [value], (key, r.status_code, r.text)
                seen.append("right")
                del pending[key]
            time.sleep(0.02)  # poll interval
    return seen


def _metric(url: str, name: str) -> float | None:
    import httpx

    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_replica_process_with_an_edited_value_logs_it_never_serves_it_and_repairs_it(tmp_path):
    import httpx
    from test_replica_process import converged

    from app.processes.supervisor import ProcessCluster

    values = {f"k{i}": f"value-of-k{i}-{i * 7919:06d}" for i in range(10)}
    with ProcessCluster(["lhr", "fra", "jfk"], tmp_path, inject_latency=False) as c:
        c.start()
        for key, value in values.items():
            r = httpx.put(f"{c.url('fra')}/api/replicas/fra/kv/{key}", json={"value": value}, timeout=10)
            assert r.status_code == 200, r.text
        wait_for("convergence", lambda: converged(c))
        assert c.stop("lhr") == 0
        edit_file(c.replicas["lhr"].data_dir / DB_NAME, values["k3"].encode(), values["k3"].encode()[:-1] + b"X")
        c.spawn("lhr")
        seen = _poll_until_right(c.url("lhr"), "lhr", values)
        assert seen.count("right") == len(values)  # and nothing else but "down" and "503" on the way
        out = c.output("lhr")
        assert "stored state is damaged: edgestate.db: keyspace row kv/'k3': does not match its checksum" in out, out
        assert "repaired from its peers" in out, out
        st = httpx.get(f"{c.url('lhr')}/api/status", timeout=5).json()
        assert st["damage"] == ["edgestate.db: keyspace row kv/'k3': does not match its checksum"]
        assert st["recovering"] is False and st["recovered"]["reason"] == "repairing", st
        assert _metric(c.url("lhr"), 'edgestate_storage_corrupt_records_total{file="edgestate.db"}') == 1.0
        assert _metric(c.url("lhr"), "edgestate_storage_repairs_total") == 1.0
        assert _metric(c.url("lhr"), "edgestate_recovering") == 0.0
        assert _metric(c.url("lhr"), 'edgestate_content_checks_total{finding="bad_seals"}') == 0.0
        wait_for("convergence after the repair", lambda: converged(c))


def test_a_sigkilled_replica_with_a_flipped_wal_byte_says_so_and_gets_its_writes_back(tmp_path):
    import httpx
    from test_replica_process import converged

    from app.processes.supervisor import ProcessCluster

    values = {f"w{i}": f"acknowledged {i}" for i in range(40)}
    with ProcessCluster(["lhr", "fra", "jfk"], tmp_path, inject_latency=False) as c:
        c.start()
        for key, value in values.items():
            r = httpx.put(f"{c.url('lhr')}/api/replicas/lhr/kv/{key}", json={"value": value}, timeout=10)
            assert r.status_code == 200, r.text  # acknowledged: durable at lhr
        wait_for("the others have them", lambda: all(
            httpx.get(f"{c.url(p)}/api/replicas/{p}/kv/w39", timeout=5).status_code == 200 for p in ("fra", "jfk")))
        c.kill("lhr")
        wal = c.replicas["lhr"].data_dir / WAL
        frames = read_frames(wal.read_bytes(), 4096)
        commits = [f for f in frames if f.commit]
        assert len(commits) > 20, "expected the acknowledged writes in the WAL"
        target = commits[len(commits) // 3]  # committed, with many committed transactions behind it
        flip(wal, target.offset + FRAME_HEADER + 2000)
        c.spawn("lhr")
        _poll_until_right(c.url("lhr"), "lhr", values)
        out = c.output("lhr")
        assert f"edgestate.db-wal: WAL frame {target.index} (offset {target.offset}): does not verify" in out, out
        st = httpx.get(f"{c.url('lhr')}/api/status", timeout=5).json()
        assert st["restarted_unclean"] is False and st["recovered"]["reason"] == "repairing", st
        assert _metric(c.url("lhr"), 'edgestate_storage_corrupt_records_total{file="edgestate.db-wal"}') == 1.0
        wait_for("convergence after the repair", lambda: converged(c))


def test_the_replica_command_refuses_damaged_storage_without_peers_unless_told(tmp_path):
    from test_replica_cli import assert_refused, base, run_replica, spawn, stop, wait_healthy, write_secret

    from app.processes.supervisor import free_port

    written(tmp_path / "data")
    edit_file(tmp_path / "data" / DB_NAME, b"value-of-k5-abcdefgh", b"value-of-k5-abcdefgX")
    secret = write_secret(tmp_path / "secret")
    rc, err = run_replica(base(tmp_path, secret), tmp_path)
    assert_refused(rc, err, 1, f"stored state in {tmp_path / 'data'} is damaged and there is no peer to repair it from",
                   "edgestate.db: keyspace row kv/'k5': does not match its checksum", "--accept-data-loss")
    http = free_port()
    proc, err_path = spawn([*base(tmp_path, secret), "--http", f"127.0.0.1:{http}", "--accept-data-loss"], tmp_path,
                           "accepted")
    try:
        wait_healthy(proc, f"http://127.0.0.1:{http}", err_path)
        import httpx

        assert httpx.get(f"http://127.0.0.1:{http}/api/replicas/lhr/kv/k5", timeout=5).status_code == 404
        assert httpx.get(f"http://127.0.0.1:{http}/api/replicas/lhr/kv/k6", timeout=5).json()["values"] == [
            "value-of-k6-abcdefgh"]
    finally:
        assert stop(proc) == 0, err_path.read_text()
    assert "stored state is damaged: edgestate.db: keyspace row kv/'k5'" in err_path.read_text()


@pytest.mark.parametrize("argv, said", [(["x"], "not an integer"), (["0"], "at least 1"),
                                        (["2", "1", "bogus"], "unknown damage bogus")])
def test_the_campaign_command_refuses_bad_arguments_clearly(argv, said, capsys):
    with pytest.raises(SystemExit) as e:
        disk_faults.main(argv)
    assert e.value.code == 2
    assert said in capsys.readouterr().err
