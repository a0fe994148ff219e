"""`?wait_converged=MS` on key reads (app/web/converged.py): a read that waits, without blocking
anything else, until the key has the same value at every replica that is up, bounded by MS and by
the server's cap; `X-Converged` says which it was.

The cluster runs on a fake clock that a helper task moves forward while a read waits, so what
is checked is what the read answers once the cluster has (or has not) converged, never how long
anything took on this machine. (At the default speed over a real server: test_generated_client.)
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from live_helpers import FakeClock, is_error, make_client, make_live, ok, run_async

from app.dashboard.server import create_app
from app.processes.supervisor import free_port
from app.replica.service import create_replica_app
from app.web import converged
from replication.io.runner import ReplicaRunner
from test_runner import SECRET

KV = "/api/replicas/{}/kv/greeting"
DEADLINE_S = 60.0  # a read that never came back fails here, not by hanging the suite


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def _waiting(app, n: int = 1) -> None:
    """Until `n` reads are waiting for convergence (the server counts them)."""
    deadline = time.monotonic() + DEADLINE_S
    while getattr(app.state, "converged_waiting", 0) < n:
        assert time.monotonic() < deadline, "the read never started waiting"
        await asyncio.sleep(0.005)  # poll interval


async def _run_clock(clock: FakeClock, until: asyncio.Task, step_s: float = 0.01) -> None:
    """Move virtual time on while `until` runs (the read's own polls catch the cluster up)."""
    deadline = time.monotonic() + DEADLINE_S
    while not until.done():
        assert time.monotonic() < deadline, "the waiting read never answered"
        clock.advance(step_s)
        await asyncio.sleep(0.005)  # hand the loop to the waiting read


@pytest.mark.parametrize("bad", ["-1", "30001", "soon", "1.5", ""])
def test_a_bad_wait_is_422_and_changes_nothing(bad):
    live = make_live()
    client = make_client(live)
    ok(client.put(KV.format("lhr"), json={"value": "hello"}))
    before = live.digests()
    r = client.get(KV.format("lhr") + f"?wait_converged={bad}")
    is_error(r, 422, "validation_error")
    assert "wait_converged" in r.json()["error"]["message"]
    assert live.digests() == before


def test_a_read_at_sydney_waits_for_a_write_at_london_and_says_it_converged():
    clock = FakeClock()
    app = create_app(make_live(clock=clock))

    async def main():
        async with _client(app) as http:
            assert (await http.put(KV.format("lhr"), json={"value": "hello"})).status_code == 200
            assert (await http.get(KV.format("syd"))).status_code == 404  # not there yet: the WAN
            read = asyncio.create_task(http.get(KV.format("syd") + "?wait_converged=30000"))
            await _run_clock(clock, read)
            return read.result()

    r = run_async(main())
    assert r.status_code == 200, r.text
    assert r.headers["X-Converged"] == "true"
    assert r.json()["values"] == ["hello"]


def test_after_a_heal_the_read_waits_for_both_siblings():
    clock = FakeClock()
    live = make_live(clock=clock)
    app = create_app(live)

    async def main():
        async with _client(app) as http:
            await http.post("/api/faults/partition", json={"groups": [["lhr"]]})
            await http.put(KV.format("lhr"), json={"value": "from London"})
            await http.put(KV.format("syd"), json={"value": "from Sydney"})
            await http.delete("/api/faults/partition")
            read = asyncio.create_task(http.get(KV.format("jfk") + "?wait_converged=30000"))
            await _run_clock(clock, read)
            return read.result()

    r = run_async(main())
    assert r.headers["X-Converged"] == "true"
    assert sorted(r.json()["values"]) == ["from London", "from Sydney"]


def test_under_a_partition_a_read_waits_for_its_own_side_only():
    clock = FakeClock()
    app = create_app(make_live(clock=clock))

    async def main():
        async with _client(app) as http:
            await http.post("/api/faults/partition", json={"groups": [["lhr"]]})
            await http.put(KV.format("lhr"), json={"value": "from London"})
            await http.put(KV.format("syd"), json={"value": "from Sydney"})
            read = asyncio.create_task(http.get(KV.format("jfk") + "?wait_converged=30000"))
            await _run_clock(clock, read)
            return read.result()

    r = run_async(main())
    assert r.headers["X-Converged"] == "true"
    assert r.json()["values"] == ["from Sydney"]  # London's is across the partition


def test_the_wait_ends_at_its_bound_and_says_it_did_not_converge():
    live = make_live()  # its clock stands still: nothing can arrive
    app = create_app(live)

    async def main():
        async with _client(app) as http:
            await http.put(KV.format("lhr"), json={"value": "hello"})
            t0 = time.monotonic()
            r = await asyncio.wait_for(http.get(KV.format("syd") + "?wait_converged=200"), DEADLINE_S)
            return r, time.monotonic() - t0

    r, waited = run_async(main())
    is_error(r, 404, "not_found")
    assert r.headers["X-Converged"] == "false"
    assert waited >= 0.19, f"answered after {waited:.3f}s, before the 200 ms it was asked to wait"


def test_the_server_cap_bounds_a_longer_wait():
    app = create_app(make_live())
    app.state.wait_cap_ms = 20

    async def main():
        async with _client(app) as http:
            await http.post("/api/replicas/lhr/counters/hits", json={"add": 1})
            # asked for 30 s; the cap answers it long before the deadline
            return await asyncio.wait_for(http.get("/api/replicas/syd/counters/hits?wait_converged=30000"),
                                          DEADLINE_S)

    r = run_async(main())
    assert r.status_code == 200 and r.json()["value"] == 0
    assert r.headers["X-Converged"] == "false"


def test_a_waiting_read_blocks_no_other_request_and_returns_once_converged():
    clock = FakeClock()
    app = create_app(make_live(clock=clock))

    async def main():
        async with _client(app) as http:
            await http.post("/api/replicas/lhr/sets/tags", json={"add": ["edge"]})
            read = asyncio.create_task(http.get("/api/replicas/syd/sets/tags?wait_converged=30000"))
            await _waiting(app)  # it cannot finish while the clock stands still
            others = [await http.get("/healthz"),
                      await http.post("/api/replicas/jfk/counters/hits", json={"add": 1}),
                      await http.get("/api/replicas/lhr/sets/tags"),
                      await http.get("/api/convergence")]
            still_waiting = not read.done()
            await _run_clock(clock, read)
            return others, still_waiting, read.result()

    others, still_waiting, r = run_async(main())
    assert [o.status_code for o in others] == [200, 200, 200, 200]  # the jfk write: a 2nd key, still settles
    assert still_waiting, "the other requests were answered only after the waiting read"
    assert r.headers["X-Converged"] == "true"
    assert r.json()["members"] == ["edge"]


def test_too_many_waiting_reads_are_refused_with_retry_after(monkeypatch):
    monkeypatch.setattr(converged, "MAX_WAITING", 1)
    app = create_app(make_live())

    async def main():
        async with _client(app) as http:
            await http.post("/api/replicas/lhr/counters/hits", json={"add": 1})
            first = asyncio.create_task(http.get("/api/replicas/syd/counters/hits?wait_converged=2000"))
            await _waiting(app)
            second = await http.get("/api/replicas/jfk/counters/hits?wait_converged=2000")
            first.cancel()
            return second

    r = run_async(main())
    is_error(r, 503, "too_many_waiting")
    assert r.headers["Retry-After"] == "1"


def test_an_unknown_or_crashed_replica_answers_at_once():
    app = create_app(make_live())  # its clock stands still: a wait would last its whole bound

    async def main():
        async with _client(app) as http:
            await http.post("/api/replicas/lhr/counters/hits", json={"add": 1})
            unknown = await asyncio.wait_for(http.get("/api/replicas/nowhere/counters/hits?wait_converged=30000"),
                                             DEADLINE_S)
            await http.post("/api/replicas/syd/crash")
            down = await asyncio.wait_for(http.get("/api/replicas/syd/counters/hits?wait_converged=30000"),
                                          DEADLINE_S)
            return unknown, down

    unknown, down = run_async(main())
    is_error(unknown, 404, "unknown_replica")
    is_error(down, 503, "replica_down")


def test_a_single_replica_process_says_it_cannot_wait(tmp_path):
    async def main():
        lhr = ReplicaRunner("lhr", {}, data_dir=tmp_path / "lhr", secret=SECRET)
        app = create_replica_app(lhr, access_log=False)
        await lhr.start("127.0.0.1", free_port())
        try:
            async with _client(app) as http:
                await http.put(KV.format("lhr"), json={"value": 1})
                plain = await http.get(KV.format("lhr"))
                waited = await http.get(KV.format("lhr") + "?wait_converged=100")
        finally:
            await lhr.stop()
        return plain, waited

    plain, waited = run_async(main())
    assert plain.status_code == 200 and "X-Converged" not in plain.headers
    is_error(waited, 400, "wait_not_supported")
