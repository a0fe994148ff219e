"""The replica runner's ordering around the disk, in one process: two runners on loopback.

A flush that has not returned must hold back the write's answer, its dissemination, later
reads, and a remote delta's application. Each test blocks the flush on purpose and looks."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time

import pytest
from live_helpers import run_async

from app.processes import free_port
from replication.runner import ReplicaRunner, next_actor
from replication.storage import Storage

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


async def pair(tmp_path):
    ports = {"lhr": free_port(), "jfk": free_port()}
    peers = {rid: ("127.0.0.1", p) for rid, p in ports.items()}
    runners = {
        rid: ReplicaRunner(rid, {p: a for p, a in peers.items() if p != rid}, data_dir=tmp_path / rid, secret=SECRET)
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
