"""The cluster contract (`replication.contract`), held to by every implementation.

Twice over: the type checker (mypy, on the contract, the implementations and
`contract_types.py`, which says who plays which role), and one conformance test run
against each implementation: the simulated `LiveCluster`, `ProcessLive` over real replica
processes, and `ReplicaService` (one replica runner, in this process). It calls every
member of every role the implementation plays, on the implementation's own event loop
thread as the app does, and checks the shapes of the answers and the codes of the errors.
Where an answer comes from other processes or from virtual time catching up, it waits on a
condition with a deadline.
"""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import get_type_hints

import pytest
from waiting import wait_for

from app.dashboard.simulated import MAX_SPEED, build_live
from app.processes.cluster import ProcessLive
from app.attach.cluster import AttachedLive
from app.attach.config import targets
from app.processes.supervisor import ProcessCluster, free_port
from app.replica.service import ReplicaService
import orjson

from app.web import api
from replication import batch, contract, derived
from replication.contract import (
    ClusterData,
    ClusterFaults,
    ClusterLifecycle,
    ClusterObserver,
    CoordinationInputs,
    SimulationControls,
)
from replication.crdts.ormap import MapView
from replication.errors import UnknownReplica
from replication.geo import LatencyModel, Placement, place_replicas, select_pops
from replication.idempotency import Answer, Once, request_fingerprint
from replication.listing import Page
from replication.replica import KvView
from replication.io.runner import ReplicaRunner

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parent.parent
SECRET = b"contract test secret, 32 bytes.."
DEADLINE_S = 30.0
POPS = "lhr,syd,jfk"

ROLES = {
    "data": ClusterData,
    "observe": ClusterObserver,
    "coordination": CoordinationInputs,
    "faults": ClusterFaults,
    "simulation": SimulationControls,
    "lifecycle": ClusterLifecycle,
}
EVERY_ROLE = set(ROLES)


class OnLoop:
    """An implementation driven from the test's thread; every call runs on its own event
    loop's thread, one at a time, as the app calls it."""

    def __init__(self, name: str, roles: set[str]) -> None:
        self.name = name
        self.roles = roles
        self.impl = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=f"loop-{name}", daemon=True)
        self._thread.start()

    def call(self, fn, *args, **kw):
        async def run():
            got = fn(*args, **kw)
            return await got if inspect.isawaitable(got) else got

        return self.wait(run())

    def wait(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(DEADLINE_S)

    def error(self, fn, *args, **kw) -> BaseException:
        """What calling `fn` raised (it must raise)."""
        try:
            got = self.wait(fn(*args, **kw)) if inspect.iscoroutinefunction(fn) else self.call(fn, *args, **kw)
        except Exception as e:  # noqa: BLE001 - the test looks at it
            return e
        raise AssertionError(f"{self.name}: {fn.__name__}{args} answered {got!r} instead of raising")

    def code(self, fn, *args, **kw) -> str:
        """The stable code of the typed error `fn` raised (a relayed replica's error keeps it)."""
        e = self.error(fn, *args, **kw)
        assert isinstance(getattr(e, "code", None), str), f"{self.name}: {fn.__name__} raised {e!r}, no code"
        return e.code

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(DEADLINE_S)
        self.loop.close()


# -- the implementations -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulated():
    """The simulated cluster on the wall clock at 20x: virtual time catches up whenever it is asked."""
    h = OnLoop("simulated", EVERY_ROLE)
    h.impl = h.call(build_live, place_replicas(select_pops(POPS)), seed=3, speed=20.0, secret=SECRET)
    h.wait(h.impl.start())
    yield h
    h.wait(h.impl.close())
    h.close()


@pytest.fixture(scope="module")
def processes(tmp_path_factory):
    """`serve --processes` without the web server: three replica processes on loopback."""
    h = OnLoop("processes", EVERY_ROLE)
    h.impl = ProcessLive(place_replicas(select_pops(POPS)), tmp_path_factory.mktemp("contract-procs"),
                         inject_latency=False)
    try:
        h.wait(h.impl.start())
        wait_for("every replica reporting", lambda: h.call(h.impl.down) == [], DEADLINE_S)
        yield h
    finally:
        h.wait(h.impl.close())
        h.close()


ATTACH_TOKEN = "attach-write-token-0123456789"
ATTACH_ADMIN = "attach-admin-token-0123456789"


@pytest.fixture(scope="module")
def attached(tmp_path_factory):
    """`serve --attach` without the web server: three replica processes started here stand in for
    replicas on other hosts, each with a write and an admin token; the dashboard reaches them
    only through their HTTP API and event feed, as it would across the network."""
    h = OnLoop("attached", EVERY_ROLE)
    procs = ProcessCluster(POPS.split(","), tmp_path_factory.mktemp("contract-attached"), inject_latency=False,
                           extra_args=("--token", ATTACH_TOKEN, "--admin-token", ATTACH_ADMIN))
    try:
        procs.start()
        h.impl = h.call(AttachedLive, targets([f"{rid}={procs.url(rid)}" for rid in procs.ids], token=ATTACH_TOKEN,
                                              admin_token=ATTACH_ADMIN))
        h.wait(h.impl.start())
        wait_for("every attached replica followed", lambda: h.call(h.impl.down) == [], DEADLINE_S)
        yield h
    finally:
        if h.impl is not None:
            h.wait(h.impl.close())
        procs.close()
        h.close()


@pytest.fixture(scope="module")
def one_replica(tmp_path_factory):
    """One replica runner, no peers, in this process: what `edgestate replica`'s API calls."""
    h = OnLoop("one-replica", {"data"})
    runner = ReplicaRunner("lhr", {}, data_dir=tmp_path_factory.mktemp("contract-one") / "lhr", secret=SECRET)
    h.wait(runner.start("127.0.0.1", free_port()))
    h.impl = ReplicaService(runner)
    yield h
    h.wait(runner.stop())
    h.close()


@pytest.fixture
def cluster(request):
    return request.getfixturevalue(request.param)


# -- the roles, one check each ----------------------------------------------------------------------


def members(role) -> dict[str, bool]:
    """A role's members (inherited ones too), each with whether it is a coroutine function."""
    out = {}
    for cls in role.__mro__:
        if cls is object or cls.__name__ in ("Protocol", "Generic"):
            continue
        for name, v in vars(cls).items():
            if not name.startswith("_"):
                out.setdefault(name, inspect.iscoroutinefunction(v))
    return out


def check_members(h: OnLoop) -> None:
    for role_name in sorted(h.roles):
        for name, is_async in members(ROLES[role_name]).items():
            assert hasattr(h.impl, name), f"{h.name} plays {role_name} but has no {name}"
            if is_async:
                assert inspect.iscoroutinefunction(getattr(h.impl, name)), f"{h.name}.{name} must be async"
            elif callable(getattr(type(h.impl), name, None)) and not isinstance(
                    inspect.getattr_static(type(h.impl), name), property):
                assert not inspect.iscoroutinefunction(getattr(h.impl, name)), f"{h.name}.{name} must not be async"


def check_data(h: OnLoop) -> str:
    """Reads and writes at one replica: values by namespace, keyed writes, error codes."""
    c = h.impl
    ids = h.call(lambda: c.ids)
    assert isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids) and ids == h.call(lambda: c.ids)
    r = ids[0]
    view = h.wait(c.awrite(r, "kv", "greeting", {"value": {"hello": "world"}, "context": None}))
    assert isinstance(view, KvView) and view.values == [{"hello": "world"}] and isinstance(view.context, str)
    assert view.siblings[0].replica == r.split("~")[0]
    again = h.wait(c.aread(r, "kv", "greeting"))
    assert isinstance(again, KvView) and again.values == [{"hello": "world"}] and again.context == view.context
    assert h.wait(c.awrite(r, "counters", "hits", {"add": 3})) == 3
    assert h.wait(c.awrite(r, "counters", "hits", {"add": -1})) == 2
    assert h.wait(c.aread(r, "counters", "hits")) == 2
    assert sorted(h.wait(c.awrite(r, "sets", "tags", {"add": ["a", "b"]}))) == ["a", "b"]
    assert h.wait(c.awrite(r, "sets", "tags", {"remove": ["a"]})) == ["b"]
    assert h.wait(c.aread(r, "sets", "tags")) == ["b"]
    m = h.wait(c.awrite(r, "maps", "cart", {"set": {"colour": "red"}}))
    assert isinstance(m, MapView) and m == MapView({"colour": "red"}, {})
    assert h.wait(c.awrite(r, "maps", "cart", {"add": {"qty": 2}})) == MapView({"colour": "red", "qty": 2}, {})
    assert h.wait(c.aread(r, "maps", "cart")) == MapView({"colour": "red", "qty": 2}, {})
    assert h.code(c.awrite, r, "maps", "cart", {"set": {"qty": 1}}) == "invalid_operation"  # qty counts
    # never written: empty, not an error
    nothing = h.wait(c.aread(r, "kv", "never"))
    assert isinstance(nothing, KvView) and nothing.siblings == () and nothing.context is None
    assert h.wait(c.aread(r, "counters", "never")) == 0 and h.wait(c.aread(r, "sets", "never")) == []
    assert h.wait(c.aread(r, "maps", "never")) == MapView({}, {})
    # a keyed write: applied once, the first answer's bytes again
    op = {"add": 4}

    def once(op: dict) -> Once:
        return Once("conformance-1", request_fingerprint("POST", r, "counters", "keyed", op),
                    render=lambda value: f'{{"value":{value}}}'.encode())

    first = h.wait(c.awrite_once(r, "counters", "keyed", op, once(op)))
    assert isinstance(first, Answer) and first.status == 200 and first.body and not first.replayed
    replay = h.wait(c.awrite_once(r, "counters", "keyed", op, once(op)))
    assert replay.replayed and replay.body == first.body and replay.status == 200
    assert h.wait(c.aread(r, "counters", "keyed")) == 4
    assert h.code(c.awrite_once, r, "counters", "keyed", {"add": 5}, once({"add": 5})) == "idempotency_key_reused"
    # errors keep their codes, and change nothing
    assert h.code(c.aread, "nowhere", "kv", "x") == "unknown_replica"
    assert h.code(c.awrite, "nowhere", "counters", "x", {"add": 1}) == "unknown_replica"
    assert h.code(c.awrite, r, "kv", "greeting", {"value": 1, "context": "not a token"}) == "bad_context"
    assert h.wait(c.aread(r, "kv", "greeting")).values == [{"hello": "world"}]
    # a batch: applied in order, one result each, a refused op alone changes nothing; keyed once
    ops = batch.check([{"type": "counter", "key": "batched", "add": 2}, {"type": "map", "key": "cart", "set": {"qty": 1}},
                       {"type": "counter", "key": "batched", "add": 3}])
    render = api._render_batch(r, ops)
    out = orjson.loads(h.wait(c.abatch(r, ops, render, None)).body)
    assert [x["status"] for x in out["results"]] == [200, 422, 200] and out["results"][2]["value"] == 5
    b_once = Once("conformance-batch", b"fingerprint", render=render)
    b1 = h.wait(c.abatch(r, ops, render, b_once))
    b2 = h.wait(c.abatch(r, ops, render, b_once))
    assert b2.replayed and b2.body == b1.body and h.wait(c.aread(r, "counters", "batched")) == 10
    assert h.code(c.abatch, "nowhere", ops, render, None) == "unknown_replica"
    # listing keys, a page at a time: every type, a prefix, a cursor, the end
    assert h.wait(c.alist(r, "counters", "", None, 1000)) == Page(["batched", "hits", "keyed"], None)
    first_page = h.wait(c.alist(r, "counters", "", None, 2))
    assert first_page.keys == ["batched", "hits"] and first_page.cursor
    assert h.wait(c.alist(r, "counters", "", first_page.cursor, 2)) == Page(["keyed"], None)
    assert h.wait(c.alist(r, "kv", "gr", None, 10)) == Page(["greeting"], None)
    assert h.wait(c.alist(r, "sets", "x", None, 10)) == Page([], None)
    assert h.wait(c.alist(r, "maps", "", None, 10)) == Page(["cart"], None)
    assert h.code(c.alist, r, "kv", "", "not a cursor", 10) == "invalid_cursor"
    assert h.code(c.alist, r, "kv", "", None, 0) == "invalid_limit"
    assert h.code(c.alist, "nowhere", "kv", "", None, 10) == "unknown_replica"
    return r


def parse_sse(raw: bytes) -> list[dict]:
    """Server-Sent Events as dicts: `event` (default "message"), `id`, `data` (parsed); comments skipped."""
    out = []
    for block in raw.decode().split("\n\n"):
        ev: dict = {"event": "message"}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if name in ("event", "id"):
                ev[name] = value
            elif name == "data":
                ev["data"] = orjson.loads(value)
        if "data" in ev:
            out.append(ev)
    return out


def watch_events(h: OnLoop, replica: str, n: int, *, prefix: str = "", types=None, cursor=None) -> list[dict]:
    """Open a watch, take its first `n` events (within the deadline), close it."""
    async def take():
        stream = await h.impl.awatch(replica, prefix, types, cursor)
        got: list[dict] = []
        buf = b""
        chunks = aiter(stream)

        async def clock():  # the app's pump does this: the simulator's time moves on
            while hasattr(h.impl, "catch_up"):
                h.impl.catch_up()
                await asyncio.sleep(0.02)

        ticking = asyncio.create_task(clock())
        try:
            async with asyncio.timeout(DEADLINE_S):
                while len(got) < n:
                    buf += await anext(chunks)
                    whole, _, buf = buf.rpartition(b"\n\n")
                    if whole:
                        got += parse_sse(whole + b"\n\n")
        finally:
            ticking.cancel()
            await chunks.aclose()
            stream.close()
        return got

    return h.wait(take())


def check_watch(h: OnLoop, r: str) -> None:
    """A watch: every change at `r` from its cursor on, filtered, resumable; typed errors before it starts."""
    c = h.impl
    assert h.code(c.awatch, "nowhere", "", None, None) == "unknown_replica"
    assert h.code(c.awatch, r, "", None, "not a cursor") == "invalid_cursor"

    async def opened():  # from now: a reset-free hello, then nothing until a write
        stream = await c.awatch(r, "w/", frozenset({"kv", "counters"}), None)
        first = await anext(aiter(stream))
        stream.close()
        return first

    assert h.wait(opened()).startswith(b":")
    # resume: the first change's id gives every later one exactly once
    start = h.wait(_cursor_now(h, r))
    h.wait(c.awrite(r, "kv", "w/a", {"value": "A", "context": None}))
    h.wait(c.awrite(r, "sets", "w/skip", {"add": ["x"]}))  # filtered out by type
    h.wait(c.awrite(r, "counters", "w/b", {"add": 2}))
    h.wait(c.awrite(r, "kv", "other", {"value": 1, "context": None}))  # filtered out by prefix
    h.wait(c.awrite(r, "counters", "w/b", {"add": 3}))
    got = watch_events(h, r, 3, prefix="w/", types=frozenset({"kv", "counters"}), cursor=start)
    assert [(e["data"]["type"], e["data"]["key"]) for e in got] == [("kv", "w/a"), ("counters", "w/b"), ("counters", "w/b")]
    assert got[0]["data"]["view"]["values"] == ["A"] and got[0]["data"]["origin"].split("~")[0] == r.split("~")[0]
    assert got[2]["data"]["view"]["value"] == 5 and got[0]["data"]["version_vector"]
    again = watch_events(h, r, 2, prefix="w/", types=frozenset({"kv", "counters"}), cursor=got[0]["id"])
    assert [e["id"] for e in again] == [e["id"] for e in got[1:]]
    # a cursor of another run: reset, with a cursor that resumes from now
    reset = watch_events(h, r, 1, cursor="0ther.1")
    assert reset[0]["event"] == "reset" and reset[0]["id"] == reset[0]["data"]["cursor"]


async def _cursor_now(h: OnLoop, r: str) -> str:
    """A cursor at the present: a reset from a foreign cursor carries one."""
    stream = await h.impl.awatch(r, "", None, "0ther.1")
    chunks = aiter(stream)
    try:
        async with asyncio.timeout(DEADLINE_S):
            ev = parse_sse(await anext(chunks))
    finally:
        await chunks.aclose()
        stream.close()
    assert ev[0]["event"] == "reset"
    return ev[0]["id"]


def check_watch_remote(h: OnLoop, r: str) -> None:
    """A write at another replica arrives on this one's watch (dissemination or anti-entropy)."""
    other = next(i for i in h.call(lambda: h.impl.ids) if i != r)
    start = h.wait(_cursor_now(h, r))
    h.wait(h.impl.awrite(other, "counters", "w/remote", {"add": 7}))
    got = watch_events(h, r, 1, prefix="w/remote", cursor=start)
    assert got[0]["data"]["key"] == "w/remote" and got[0]["data"]["via"] != "local"
    assert got[0]["data"]["view"]["value"] == 7 and got[0]["data"]["origin"].split("~")[0] == other


def eventually(h: OnLoop, what: str, cond):
    """Wait for `cond()`, run on the loop (after bringing the cluster to now)."""
    def ask():
        h.call(h.impl.catch_up)
        return h.call(cond)

    return wait_for(f"{h.name}: {what}", ask, DEADLINE_S, poll_s=0.05)


def check_observe(h: OnLoop, written_at: str) -> None:
    """What the hub, /metrics and the read-only admin routes read: shapes, and the stream."""
    c = h.impl
    ids = c.ids
    assert h.call(c.has, ids[0]) and not h.call(c.has, "nowhere")
    for rid in ids:
        st = h.call(c.state_of, rid)
        assert set(st) == set(get_type_hints(contract.ReplicaStatus)), st
        assert st["status"] == "up" and isinstance(st["digest"], str) and isinstance(st["keys"], int)
        assert isinstance(st["incarnation"], int) and all(isinstance(n, int) for n in st["version_vector"].values())
    states = h.call(c.replica_states)
    assert [s["id"] for s in states] == ids and all(set(s) == set(get_type_hints(contract.ReplicaState))
                                                     for s in states)
    digests = h.call(c.digests)
    assert list(digests) == ids and all(isinstance(d, str) for d in digests.values())
    conv = eventually(h, "convergence", lambda: (x := c.convergence())["converged"] and x)
    assert set(conv) == {"converged", "digests", "in_flight"} and list(conv["digests"]) == ids
    assert isinstance(conv["in_flight"], int)
    assert conv == derived.convergence(conv["digests"], conv["in_flight"])
    topo = h.call(c.topology)
    assert topo == derived.topology(c.placements, c.model)
    assert [r["id"] for r in topo["replicas"]] == ids
    assert all(set(topo["rtt_ms"][a]) == set(ids) - {a} for a in ids)
    assert h.call(c.partition_groups) is None and h.call(c.down) == []
    assert isinstance(h.call(c.now_ms), float)
    clock = h.call(c.clock_info)
    assert {"now_ms", "speed", "paused", "strategy", "loss"} <= set(clock) <= set(get_type_hints(contract.ClockInfo))
    sim = h.call(c.sim_info)
    assert set(sim) == set(get_type_hints(contract.SimInfo))
    assert sim["strategy"] == clock["strategy"] and sim["speed"] == clock["speed"]
    stats = eventually(h, "messages counted by kind", lambda: (s := c.stats())["sent"] and s)
    assert set(stats) == set(get_type_hints(contract.TrafficStats))
    for by_kind in ("sent", "delivered", "dropped", "dropped_by_reason"):
        assert all(isinstance(k, str) and isinstance(n, int) for k, n in stats[by_kind].items()), (by_kind, stats)
    assert stats["writes"] >= 1 and isinstance(stats["in_flight"], int)
    # the side panel's detail, and its identity
    hash(h.call(c.detail_ident, written_at))

    def listed():  # asking for the identity too is how the hub asks (processes poll what is watched)
        c.detail_ident(written_at)
        d = c.detail(written_at, [("kv", "greeting")])
        return d["kv"] and d

    detail = eventually(h, "the detail of the written replica", listed)
    assert {"status", "digest", "version_vector", "kv", "counters", "sets", "keys", "truncated"} <= set(detail)
    assert detail["kv"][0]["key"] == "greeting" and detail["status"] == "up"
    # the event stream: subscribe, see a write's own apply, unsubscribe
    seen: list[dict] = []
    stop = h.call(c.bus.subscribe, seen.append)
    h.wait(c.awrite(written_at, "counters", "streamed", {"add": 1}))
    eventually(h, "the write's applied event", lambda: any(
        e["kind"] == "applied" and e["node"] == written_at and e.get("via") == "local" for e in seen))
    assert all({"t", "kind", "node"} <= set(e) for e in seen)
    h.call(stop)
    n = len(seen)
    h.wait(c.awrite(written_at, "counters", "streamed", {"add": 1}))
    h.call(c.catch_up)
    assert len(seen) == n, "an unsubscribed function still got events"


def check_coordination(h: OnLoop, written_at: str, *, timed: bool) -> None:
    c = h.impl
    placements = h.call(lambda: c.placements)
    assert all(isinstance(p, Placement) for p in placements) and [p.id for p in placements] == c.ids
    assert isinstance(h.call(lambda: c.model), LatencyModel)
    assert h.call(lambda: c.local_writes_timed) is timed
    report = eventually(h, "the latest write at its origin reaching every replica",
                        lambda: (x := c.last_writes.report(written_at, c.ids)) and x["reached"] == len(c.ids) and x)
    assert {"id", "t_ms", "local_us", "everywhere_ms", "reached", "of"} <= set(report)
    assert (report["local_us"] is not None) is timed


def refused_code(h: OnLoop) -> str:
    return "not_supported_with_attach" if h.name == "attached" else "not_supported_with_processes"


def check_simulation(h: OnLoop, *, simulated: bool) -> None:
    c = h.impl
    assert isinstance(h.call(c.target), float)
    before = h.call(c.sim_info)
    if not simulated:
        for fn, arg in ((c.set_speed, 2.0), (c.set_loss, 0.5), (c.set_strategy, "gossip"), (c.pause, None),
                        (c.resume, None), (c.step, 10.0)):
            args = () if arg is None else (arg,)
            assert h.code(fn, *args) == refused_code(h), fn.__name__
        after = h.call(c.sim_info)
        assert {k: after[k] for k in ("strategy", "speed", "loss", "paused")} == \
               {k: before[k] for k in ("strategy", "speed", "loss", "paused")}
        assert h.call(lambda: (c.speed, c.paused)) == (1.0, False)
        return
    for fn, bad in ((c.set_speed, 0), (c.set_speed, MAX_SPEED * 2), (c.set_loss, 1.5), (c.set_strategy, "nope"),
                    (c.step, 0), (c.step, float("nan"))):
        assert isinstance(h.error(fn, bad), ValueError), (fn.__name__, bad)
    settings = ("strategy", "speed", "loss", "paused")
    assert {k: h.call(c.sim_info)[k] for k in settings} == {k: before[k] for k in settings}, "refused: no change"
    try:
        h.call(c.set_speed, 2.0)
        h.call(c.set_loss, 0.25)
        h.call(c.set_strategy, "gossip")
        assert {k: h.call(c.sim_info)[k] for k in ("speed", "loss", "strategy")} == \
               {"speed": 2.0, "loss": 0.25, "strategy": "gossip"}
        assert h.call(lambda: c.speed) == 2.0
        h.call(c.pause)
        assert h.call(lambda: c.paused) and h.call(c.sim_info)["paused"]
        t0 = h.call(c.now_ms)
        h.call(c.step, 10.0)
        assert h.call(c.now_ms) == pytest.approx(t0 + 10.0)
    finally:
        h.call(c.resume)
        h.call(c.set_loss, 0.0)
        h.call(c.set_strategy, before["strategy"])
        h.call(c.set_speed, before["speed"])
    assert not h.call(lambda: c.paused)


def check_faults(h: OnLoop) -> None:
    c = h.impl
    ids = c.ids
    seen: list[dict] = []
    stop = h.call(c.bus.subscribe, seen.append)
    try:
        # refused partitions change nothing
        assert h.code(c.partition, [[ids[0]], ["nowhere"]]) == "unknown_replica"
        assert isinstance(h.error(c.partition, [[ids[0]], [ids[0]]]), ValueError)
        assert h.call(c.partition_groups) is None
        # unlisted replicas form one more group, each group reported in `ids` order
        got = h.call(c.partition, [[ids[2], ids[0]]])
        assert got == [[ids[2], ids[0]], [ids[1]]] == derived.partition_groups([[ids[2], ids[0]]], ids)
        assert h.call(c.partition_groups) == [[ids[0], ids[2]], [ids[1]]]
        assert any(e["kind"] == "partition" for e in seen)
        h.call(c.heal)
        assert h.call(c.partition_groups) is None and any(e["kind"] == "heal" for e in seen)
        if h.name == "attached":
            check_attached_faults(h, seen)
            return
        # crash and recover, losing state on the way: a write only the victim held is gone
        victim = ids[1]
        inc = h.call(c.state_of, victim)["incarnation"]
        assert h.code(c.crash, "nowhere") == "unknown_replica" and h.code(c.recover, "nowhere") == "unknown_replica"
        h.call(c.partition, [[victim]])
        h.wait(c.awrite(victim, "kv", "only-at-the-victim", {"value": "lost with it", "context": None}))
        h.call(c.crash, victim)
        assert h.call(c.state_of, victim)["status"] == "down" and h.call(c.down) == [victim]
        assert victim not in h.call(c.digests)
        assert any(e["kind"] == "crash" and e["node"] == victim for e in seen)
        assert h.code(c.aread, victim, "kv", "greeting") == "replica_down"
        assert h.code(c.awrite, victim, "counters", "x", {"add": 1}) == "replica_down"
        h.call(c.crash, victim, lose_state=True)  # a crashed replica: only adds losing its state
        assert h.call(c.down) == [victim]
        h.call(c.recover, victim)
        h.call(c.heal)
        eventually(h, "the victim up again", lambda: c.state_of(victim)["status"] == "up")
        eventually(h, "the victim under a new actor", lambda: c.state_of(victim)["incarnation"] > inc)
        assert any(e["kind"] == "recover" and e["node"] == victim for e in seen)
        h.call(c.recover, victim)  # one that is up stays as it is
        eventually(h, "the victim back with its peers' state",
                   lambda: (x := c.convergence())["converged"] and len(x["digests"]) == len(ids))
        assert h.wait(c.aread(victim, "kv", "greeting")).values == [{"hello": "world"}]
        assert all(h.wait(c.aread(r, "kv", "only-at-the-victim")).siblings == () for r in ids)
    finally:
        h.call(stop)


def check_attached_faults(h: OnLoop, seen: list[dict]) -> None:
    """Crash and recover are not this dashboard's to do (it does not run the processes): refused,
    nothing changed. A partition is real, at each replica: a write on one side stays there until
    the heal."""
    c = h.impl
    ids = c.ids
    for fn in (c.crash, c.recover):
        assert h.code(fn, ids[1]) == "not_supported_with_attach"
        assert h.code(fn, "nowhere") == "unknown_replica"
    assert h.call(c.down) == [] and not any(e["kind"] in ("crash", "recover") for e in seen)
    h.call(c.partition, [[ids[1]]])
    h.wait(c.awrite(ids[1], "counters", "cut-off", {"add": 1}))
    h.wait(c.awrite(ids[0], "counters", "heard", {"add": 1}))
    wait_for("the write inside the majority", lambda: h.wait(c.aread(ids[2], "counters", "heard")) == 1, DEADLINE_S)
    assert h.wait(c.aread(ids[0], "counters", "cut-off")) == 0, "a write crossed the partition"
    h.call(c.heal)
    wait_for("the cut-off write after the heal", lambda: h.wait(c.aread(ids[0], "counters", "cut-off")) == 1,
             DEADLINE_S)
    eventually(h, "converged after the heal", lambda: (x := c.convergence())["converged"] and len(x["digests"]) == 3)


def check_lifecycle(h: OnLoop) -> None:
    """`start` and `close` ran in the fixture; `pump` runs until cancelled."""
    c = h.impl

    async def pump_a_moment():
        task = asyncio.get_running_loop().create_task(c.pump())
        await asyncio.sleep(0.05)  # a chance to run (it must not end by itself)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    h.wait(pump_a_moment())


def check_reset(h: OnLoop) -> None:
    """Last, as it wipes what the other checks wrote: a fresh cluster with the same replicas, or a
    refusal that changes nothing (processes)."""
    c = h.impl
    ids = h.call(lambda: c.ids)
    keep = ("strategy", "speed", "loss", "paused")
    before = h.call(c.sim_info)
    if h.name != "simulated":
        assert h.code(c.reset) == refused_code(h)
        assert h.wait(c.aread(ids[0], "counters", "hits")) == 2  # its data stays
        return
    start = {k: before[k] for k in keep}
    h.call(c.set_loss, 0.25)
    h.call(c.set_strategy, "gossip")
    h.call(c.pause)
    h.wait(c.partition([[ids[0]]]))
    h.wait(c.crash(ids[-1], lose_state=False))
    h.call(c.reset)
    assert h.call(lambda: c.ids) == ids
    assert {k: h.call(c.sim_info)[k] for k in keep} == start
    assert h.call(c.partition_groups) is None and h.call(c.down) == []
    for rid in ids:
        assert h.wait(c.aread(rid, "counters", "hits")) == 0
        assert h.wait(c.aread(rid, "kv", "greeting")).siblings == ()
        assert h.call(c.state_of, rid)["status"] == "up"
    assert h.call(c.last_writes.report, ids[0], ids) is None
    # a keyed write's record went with the data: the same key is a first write again
    op = {"add": 1}
    once = Once("conformance-1", request_fingerprint("POST", ids[0], "counters", "keyed", op),
                render=lambda value: f'{{"value":{value}}}'.encode())
    assert not h.wait(c.awrite_once(ids[0], "counters", "keyed", op, once)).replayed


# -- the test -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cluster", ["simulated", "processes", "attached", "one_replica"], indirect=True)
def test_every_implementation_keeps_the_contract_of_every_role_it_plays(cluster):
    h = cluster
    check_members(h)
    written_at = check_data(h)
    check_watch(h, written_at)
    if len(h.call(lambda: h.impl.ids)) > 1:
        check_watch_remote(h, written_at)
    if "observe" in h.roles:
        check_observe(h, written_at)
    if "coordination" in h.roles:
        check_coordination(h, written_at, timed=h.name == "simulated")
    if "simulation" in h.roles:
        check_simulation(h, simulated=h.name == "simulated")
    if "lifecycle" in h.roles:
        check_lifecycle(h)
    if "faults" in h.roles:
        check_faults(h)
    if "simulation" in h.roles:
        check_reset(h)


def test_derived_partition_groups_refuse_before_anything():
    ids = ["a", "b", "c"]
    assert derived.partition_groups([["c"], [], ["a"]], ids) == [["c"], ["a"], ["b"]]
    assert derived.partition_groups([["a", "b", "c"]], ids) == [["a", "b", "c"]]
    for bad in ("a", [["a"], "b"], [["a", "a"]], [["a"], ["a"]]):
        with pytest.raises(ValueError):
            derived.partition_groups(bad, ids)
    with pytest.raises(UnknownReplica, match="'z'"):
        derived.partition_groups([["z"]], ids)


def test_the_type_checker_agrees():
    """mypy over the contract, the implementations and who plays which role (`[tool.mypy]`)."""
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, f"mypy found problems ({time.monotonic() - started:.0f} s):\n{r.stdout}{r.stderr}"
    assert "contract_types.py" in " ".join(open(REPO / "pyproject.toml").read().split()), "the role file is checked"
