"""`edgestate serve --processes`: the same API, stream and page over real replica processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import orjson
import pytest
from live_helpers import run_async
from serving import ServerProcess, serving
from waiting import wait_for

pytestmark = pytest.mark.timeout(240)

POPS = ["lhr", "jfk", "syd"]
DEADLINE_S = 30.0



class Procs(ServerProcess):
    def call(self, method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, self.base_url + path, timeout=10.0, **kw)

    def ok(self, method: str, path: str, **kw) -> dict:
        r = self.call(method, path, **kw)
        assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def converged(self) -> bool:
        c = self.ok("GET", "/api/convergence")
        return c["converged"] and len(c["digests"]) == len(POPS)


@pytest.fixture(scope="module")
def procs(tmp_path_factory):
    root = tmp_path_factory.mktemp("procs")
    with serving(root / "serve.log", "--processes", "--pops", ",".join(POPS), "--data-dir", str(root / "data"),
                 cls=Procs) as srv:
        srv.root = root
        wait_for("every replica reporting", lambda: all(
            r["status"] == "up" for r in srv.ok("GET", "/api/replicas")["replicas"]))
        yield srv


def test_scenarios_are_refused_over_processes_and_change_nothing(procs):
    # First in the module, on replicas that hold nothing yet: a dashboard's view of a process
    # is its latest status report, which can lag a write by a report period, so "before" and
    # "after" digests taken while earlier tests' writes still travel would compare stale views.
    assert {s["name"] for s in procs.ok("GET", "/api/scenarios")["scenarios"]} >= {"hello-world"}
    r = procs.call("POST", "/api/scenarios/hello-world")  # it would write hello-<run> at lhr first
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_supported_with_processes", r.text
    procs.ok("PUT", "/api/replicas/lhr/kv/after-the-refusal", json={"value": 1})

    # lhr's report that counts this write counts every write lhr made before it as well
    def lhr_counts_it():
        reps = {x["id"]: x for x in procs.ok("GET", "/api/replicas")["replicas"]}
        return sum(reps["lhr"]["version_vector"].values()) >= 1 and reps

    reps = wait_for("lhr to report the write after the refusal", lhr_counts_it)
    assert sum(reps["lhr"]["version_vector"].values()) == 1, reps["lhr"]  # the marker, nothing else
    wait_for("convergence", procs.converged)


def test_a_write_at_one_process_is_read_at_another_and_all_converge(procs):
    w = procs.ok("PUT", "/api/replicas/lhr/kv/hello", json={"value": {"from": "london"}})
    assert w["values"] == [{"from": "london"}] and w["siblings"][0]["replica"] == "lhr"
    r = wait_for("syd to have it", lambda: (x := procs.call("GET", "/api/replicas/syd/kv/hello")).status_code == 200
                 and x.json())
    assert r["values"] == [{"from": "london"}] and r["context"] == w["context"]
    procs.ok("POST", "/api/replicas/jfk/counters/hits", json={"add": 3})
    procs.ok("POST", "/api/replicas/syd/counters/hits", json={"add": -1})
    wait_for("lhr counts 2", lambda: procs.ok("GET", "/api/replicas/lhr/counters/hits")["value"] == 2)
    assert procs.ok("POST", "/api/replicas/lhr/sets/s", json={"add": ["a", "b"]})["members"] == ["a", "b"]
    wait_for("convergence", procs.converged)
    r = procs.call("GET", "/api/replicas/syd/kv/never-written")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = procs.call("PUT", "/api/replicas/nowhere/kv/x", json={"value": 1})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_replica"
    r = procs.call("PUT", "/api/replicas/lhr/kv/x", json={"value": 1, "unknown": 1})
    assert r.status_code == 422
    r = procs.call("PUT", "/api/replicas/lhr/kv/x", json={"value": 1, "context": "not a token"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_context", r.text


def test_a_read_waits_until_a_write_at_another_process_has_arrived(procs):
    procs.ok("PUT", "/api/replicas/lhr/kv/waited-for", json={"value": "here"})
    # relayed reads of every process until they agree; the bound is far above a LAN's milliseconds
    r = httpx.get(f"{procs.base_url}/api/replicas/syd/kv/waited-for?wait_converged=20000", timeout=60.0)
    assert r.status_code == 200, r.text
    assert r.headers["X-Converged"] == "true" and r.json()["values"] == ["here"]
    for rid in POPS:  # it said so because it was so
        assert procs.ok("GET", f"/api/replicas/{rid}/kv/waited-for")["values"] == ["here"]


def test_crash_is_sigkill_and_recover_catches_up(procs):
    procs.ok("POST", "/api/replicas/syd/crash")
    r = procs.call("PUT", "/api/replicas/syd/kv/while", json={"value": 1})
    assert r.status_code == 503 and r.json()["error"]["code"] == "replica_down"
    procs.ok("PUT", "/api/replicas/lhr/kv/while", json={"value": "written while syd was down"})
    states = {s["id"]: s for s in procs.ok("GET", "/api/replicas")["replicas"]}
    assert states["syd"]["status"] == "down"
    procs.ok("POST", "/api/replicas/syd/recover")
    wait_for("syd up again", lambda: {s["id"]: s for s in procs.ok("GET", "/api/replicas")["replicas"]}["syd"]
             ["status"] == "up")
    wait_for("syd catches up", lambda: procs.call("GET", "/api/replicas/syd/kv/while").status_code == 200)
    wait_for("convergence", procs.converged)
    states = {s["id"]: s for s in procs.ok("GET", "/api/replicas")["replicas"]}
    assert states["syd"]["incarnation"] >= 1  # a SIGKILL is an unclean stop: a new actor


def test_a_crash_that_loses_state_comes_back_under_a_new_actor(procs):
    procs.ok("POST", "/api/replicas/jfk/counters/lost", json={"add": 5})
    wait_for("convergence", procs.converged)
    before = {s["id"]: s for s in procs.ok("GET", "/api/replicas")["replicas"]}["jfk"]["incarnation"]
    procs.ok("POST", "/api/replicas/jfk/crash", json={"lose_state": True})
    procs.ok("POST", "/api/replicas/jfk/recover")
    wait_for("jfk up", lambda: {s["id"]: s for s in procs.ok("GET", "/api/replicas")["replicas"]}["jfk"]
             ["status"] == "up")
    wait_for("jfk has its counter back from its peers",
             lambda: procs.ok("GET", "/api/replicas/jfk/counters/lost")["value"] == 5)
    assert procs.ok("POST", "/api/replicas/jfk/counters/lost", json={"add": 1})["value"] == 6
    wait_for("lhr counts 6", lambda: procs.ok("GET", "/api/replicas/lhr/counters/lost")["value"] == 6)
    after = {s["id"]: s for s in procs.ok("GET", "/api/replicas")["replicas"]}["jfk"]["incarnation"]
    assert after == before + 1


def test_a_partition_makes_siblings_and_heal_converges(procs):
    g = procs.ok("POST", "/api/faults/partition", json={"groups": [["lhr"], ["jfk", "syd"]]})
    assert g["groups"] == [["lhr"], ["jfk", "syd"]]
    procs.ok("PUT", "/api/replicas/lhr/kv/split", json={"value": "east"})
    procs.ok("PUT", "/api/replicas/syd/kv/split", json={"value": "west"})
    wait_for("jfk sees west", lambda: procs.call("GET", "/api/replicas/jfk/kv/split").status_code == 200)
    assert procs.ok("GET", "/api/replicas/jfk/kv/split")["values"] == ["west"]
    assert not procs.ok("GET", "/api/convergence")["converged"]
    procs.ok("DELETE", "/api/faults/partition")
    wait_for("convergence", procs.converged)
    assert sorted(procs.ok("GET", "/api/replicas/lhr/kv/split")["values"]) == ["east", "west"]


def test_the_coordination_figures_follow_the_processes(procs):
    """Arrivals come from the replicas' own events; the local write runs (durably) in another
    process, so it is not timed here, and the answer says so."""
    procs.ok("PUT", "/api/replicas/syd/kv/coordination", json={"value": "g'day"})
    got = wait_for("the write everywhere", lambda: (c := procs.ok("GET", "/api/coordination"))["pops"]["syd"]
                   ["everywhere_ms"] is not None and c)
    syd = got["pops"]["syd"]
    assert got["local_writes_timed"] is False and syd["local_us"] is None
    assert syd["last_write"]["reached"] == syd["last_write"]["of"] == len(POPS)
    assert syd["everywhere_ms"] > 0 and syd["consensus_commit_ms"] > syd["rtt_to_leader_ms"]
    procs.ok("POST", "/api/faults/partition", json={"groups": [["lhr"], ["jfk", "syd"]]})
    try:
        got = procs.ok("GET", "/api/coordination")
        side = next(g for g in [["lhr"], ["jfk", "syd"]] if got["leader"] in g)
        assert got["writers"]["crdt"] == POPS
        assert got["writers"]["consensus"] == (side if len(side) >= got["quorum"] else [])
    finally:
        procs.ok("DELETE", "/api/faults/partition")
    assert procs.ok("GET", "/api/coordination")["writers"]["consensus"] == POPS


@pytest.mark.parametrize(("method", "path", "body"), [
    ("PUT", "/api/sim/speed", {"speed": 1}), ("PUT", "/api/sim/loss", {"loss": 0.1}),
    ("PUT", "/api/sim/strategy", {"strategy": "gossip"}), ("POST", "/api/sim/pause", None),
    ("POST", "/api/sim/step", {"ms": 10}), ("POST", "/api/reset", None),
])
def test_the_simulators_own_controls_answer_409(procs, method, path, body):
    r = procs.call(method, path, json=body)
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_supported_with_processes", r.text
    assert procs.ok("GET", "/api/sim")["paused"] is False


def test_the_stream_carries_real_events(procs):
    from websockets.asyncio.client import connect

    async def main():
        async with connect(procs.ws_url, max_size=None) as ws:
            snap = orjson.loads(await ws.recv())[0]
            assert snap["kind"] == "snapshot" and snap["clock"]["processes"] is True
            assert {r["node"] for r in snap["replicas"]} == set(POPS)
            await ws.send(orjson.dumps({"select": "syd"}).decode())
            await asyncio.to_thread(procs.ok, "PUT", "/api/replicas/lhr/kv/streamed", json={"value": "yes"})
            kinds, detail = set(), None
            end = time.monotonic() + DEADLINE_S
            while not ({"sent", "applied"} <= kinds and detail):
                assert time.monotonic() < end, f"saw only {kinds}"
                for ev in orjson.loads(await asyncio.wait_for(ws.recv(), DEADLINE_S)):
                    kinds.add(ev["kind"])
                    if ev["kind"] == "detail" and any(k["key"] == "streamed" for k in ev["kv"]):
                        detail = ev
            assert detail["node"] == "syd"

    run_async(main())


def test_the_page_draws_the_processes_and_animates_their_messages(procs, browser, artifacts):
    from playwright.sync_api import expect

    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, service_workers="block")
    foreign, errors = [], []

    def route(r):
        if r.request.url.split("/")[2] == procs.host:
            r.continue_()
        else:
            foreign.append(r.request.url)
            r.abort()

    try:
        ctx.route("**/*", route)
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(procs.base_url + "/")
        page.wait_for_function("n => document.querySelectorAll('.scattergeo .point').length === n", arg=len(POPS),
                               timeout=DEADLINE_S * 1000)
        expect(page.locator("#conn")).to_have_text("live", timeout=DEADLINE_S * 1000)
        expect(page.locator("[data-testid=mode]")).to_have_text("real processes", timeout=DEADLINE_S * 1000)
        assert not page.locator("[data-testid=speed]").is_visible()  # the simulator's controls are hidden
        # and so are the scenario picker and Reset (simulator only), rather than failing with a toast
        for testid in ("scenario-select", "scenario-run", "scenario-concurrent", "reset"):
            assert not page.locator(f"[data-testid={testid}]").is_visible(), testid
        procs.ok("PUT", "/api/replicas/syd/kv/on-the-map", json={"value": "from sydney"})
        page.wait_for_function("window.__edgestate.map.flights.size > 0", timeout=DEADLINE_S * 1000)
        page.screenshot(path=str(artifacts / "dashboard-processes.png"))
        expect(page.locator("[data-testid=convergence]")).to_have_text("converged", timeout=DEADLINE_S * 1000)
        assert foreign == [] and errors == [], (foreign, errors)
    finally:
        ctx.close()


def test_keys_with_any_characters_are_relayed_intact(procs):
    for key in ("a/b", "with space", "per%cent", "ünïcødé", "q?x=1&y", "#hash"):
        w = procs.ok("PUT", f"/api/replicas/lhr/kv/{quote(key, safe='')}", json={"value": key})
        assert w["key"] == key, w
        r = wait_for(f"{key!r} at syd", lambda key=key: (x := procs.call(
            "GET", f"/api/replicas/syd/kv/{quote(key, safe='')}")).status_code == 200 and x.json())
        assert r["values"] == [key] and r["key"] == key


def test_an_idempotency_key_is_relayed_to_the_replica_process_that_keeps_the_record(procs):
    key = {"Idempotency-Key": "relay-1"}
    first = procs.call("POST", "/api/replicas/jfk/counters/keyed", json={"add": 4}, headers=key)
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers, first.text
    again = procs.call("POST", "/api/replicas/jfk/counters/keyed", json={"add": 4}, headers=key)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content and again.json() == {"key": "keyed", "replica": "jfk", "value": 4}
    assert procs.ok("GET", "/api/replicas/jfk/counters/keyed")["value"] == 4
    other = procs.call("POST", "/api/replicas/jfk/counters/keyed", json={"add": 5}, headers=key)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    bad = procs.call("PUT", "/api/replicas/jfk/kv/k", json={"value": 1}, headers={"Idempotency-Key": "x" * 256})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_idempotency_key"
    put = procs.call("PUT", "/api/replicas/lhr/kv/keyed", json={"value": [1]}, headers=key)  # per replica
    assert put.status_code == 200 and "Idempotent-Replayed" not in put.headers
    assert procs.call("PUT", "/api/replicas/lhr/kv/keyed", json={"value": [1]}, headers=key).content == put.content


def test_a_map_is_written_at_one_process_relayed_and_read_at_another(procs):
    path = "/api/replicas/{}/maps/cart%2F1"
    w = procs.ok("POST", path.format("lhr"), json={"set": {"colour": "red"}})
    assert w == {"key": "cart/1", "replica": "lhr", "fields": {"colour": "red"}, "conflicts": {}}
    key = {"Idempotency-Key": "map-1"}
    first = procs.call("POST", path.format("syd"), json={"add": {"qty": 2}}, headers=key)
    again = procs.call("POST", path.format("syd"), json={"add": {"qty": 2}}, headers=key)
    assert first.status_code == 200 and again.headers["Idempotent-Replayed"] == "true" and again.content == first.content
    got = wait_for("jfk to hold both fields", lambda: (x := procs.ok("GET", path.format("jfk")))["fields"]
                   == {"colour": "red", "qty": 2} and x)
    assert got["key"] == "cart/1" and got["conflicts"] == {}
    r = procs.call("POST", path.format("jfk"), json={"set": {"qty": 1}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_operation", r.text
    assert procs.ok("GET", path.format("jfk"))["fields"] == {"colour": "red", "qty": 2}


def _replica_pid(root, rid: str) -> int:
    """The pid of the replica process `rid` that the dashboard under `root` started."""
    under = str(root).encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"replica" in argv and (b"--id", rid.encode()) in zip(argv, argv[1:]) and any(under in a for a in argv):
                return int(entry)
    raise AssertionError(f"no replica process {rid} under {root}")


def test_a_fault_that_waits_on_an_unanswering_replica_does_not_hold_the_server(procs):
    """syd is stopped (SIGSTOP): telling it of a partition waits for the control timeout. The
    partition is recorded first; the dashboard must answer other requests meanwhile, so a
    reader sees the new groups while the partition request is still waiting on syd."""
    pid = _replica_pid(procs.root, "syd")
    os.kill(pid, signal.SIGSTOP)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            cut = pool.submit(procs.call, "POST", "/api/faults/partition", json={"groups": [["lhr"]]})
            answered = 0  # reads that saw the new groups while the partition still waited on syd
            while not cut.done():
                if procs.ok("GET", "/api/coordination")["groups"] == [["lhr"], ["jfk", "syd"]] and not cut.done():
                    answered += 1
            # A server that blocks on syd answers a queued read only once the partition returns:
            # one read at most, never several, could land in between.
            assert answered >= 3, f"{answered} reads answered while the partition waited on a stopped replica"
            assert cut.result().status_code == 200
    finally:
        os.kill(pid, signal.SIGCONT)
    procs.ok("DELETE", "/api/faults/partition")
    wait_for("convergence", procs.converged)
