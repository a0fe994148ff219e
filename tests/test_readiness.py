"""`/readyz` (may this server take writes?) beside `/healthz` (does the process answer?), and the
operations metrics: process, HTTP by route template, and a replica's flush latency.

A fresh replica with peers refuses writes until it has heard from them (`joining`): `/readyz`
answers 503 then, `/healthz` 200; once a peer answers it flips to 200. The join timer is pushed
out of the way so only hearing from the peer can open the gate: the flip is caused, not timed."""

from __future__ import annotations

import asyncio

import httpx
from live_helpers import make_client, make_live, run_async
from prometheus_client.parser import text_string_to_metric_families

from app.processes.supervisor import free_port
from app.replica.service import create_replica_app
from replication.io import runner as runner_module
from replication.io.runner import ReplicaRunner
from test_runner import SECRET, until


def samples(text: str) -> list:
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def test_readyz_flips_when_a_fresh_replica_hears_from_its_peer(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_module, "JOIN_TIMEOUT_S", 600.0)  # only the peer can open the gate

    async def main():
        ports = {"lhr": free_port(), "jfk": free_port()}
        addr = {rid: ("127.0.0.1", p) for rid, p in ports.items()}
        lhr = ReplicaRunner("lhr", {"jfk": addr["jfk"]}, data_dir=tmp_path / "lhr", secret=SECRET)
        jfk = ReplicaRunner("jfk", {"lhr": addr["lhr"]}, data_dir=tmp_path / "jfk", secret=SECRET)
        app = create_replica_app(lhr, access_log=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lhr") as http:
            try:
                assert lhr.unready() == "starting"
                await lhr.start(*addr["lhr"])
                r = await http.get("/readyz")
                assert r.status_code == 503, r.text
                assert r.json() == {"error": {"code": "not_ready", "reason": "joining",
                                              "message": "not ready to take writes: joining"}}
                assert (await http.get("/healthz")).status_code == 200  # the process answers meanwhile
                await jfk.start(*addr["jfk"])

                async def ready() -> bool:
                    return (await http.get("/readyz")).status_code == 200

                deadline = asyncio.get_running_loop().time() + 30.0
                while not await ready():
                    assert asyncio.get_running_loop().time() < deadline, "lhr never became ready"
                    await asyncio.sleep(0.05)  # poll interval
                assert (await http.get("/readyz")).json() == {"status": "ready"}
                w = await http.put("/api/replicas/lhr/kv/a", json={"value": 1})
                assert w.status_code == 200, w.text
            finally:
                await lhr.stop()
                await jfk.stop()
        assert lhr.unready() == "stopped"

    run_async(main())


def test_replica_metrics_have_process_http_by_route_and_flush_latency(tmp_path):
    async def main():
        lhr = ReplicaRunner("lhr", {}, data_dir=tmp_path / "lhr", secret=SECRET)
        app = create_replica_app(lhr, access_log=False)
        await lhr.start("127.0.0.1", free_port())
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lhr") as http:
                for key in ("a", "b", "c"):
                    assert (await http.put(f"/api/replicas/lhr/kv/{key}", json={"value": key})).status_code == 200
                assert (await http.get("/api/replicas/lhr/kv/nothing-here")).status_code == 404
                assert (await http.get("/no/such/path")).status_code == 404
                await until("flushes observed", lambda: lhr.storage.stats.flushes >= 1)
                text = (await http.get("/metrics")).text
        finally:
            await lhr.stop()
        got = samples(text)
        by = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in got}
        route = "/api/replicas/{replica_id}/kv/{key}"
        assert by[("edgestate_http_requests_total", (("method", "PUT"), ("route", route), ("status", "200")))] == 3
        assert by[("edgestate_http_requests_total", (("method", "GET"), ("route", route), ("status", "404")))] == 1
        assert by[("edgestate_http_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
        routes = {s.labels.get("route") for s in got if s.name.startswith("edgestate_http_")}
        assert not any("nothing-here" in r or "/a" == r[-2:] for r in routes), f"raw paths as labels: {routes}"
        assert by[("edgestate_http_request_duration_seconds_count", (("method", "PUT"), ("route", route)))] == 3
        flushes = by[("edgestate_storage_flush_seconds_count", ())]
        assert flushes >= 1 and flushes == lhr.storage.stats.flushes
        names = {s.name for s in got}
        assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"} <= names

    run_async(main())


def test_the_simulated_dashboard_is_ready_once_serving_and_counts_requests_by_route():
    with make_client(make_live("lhr,syd")) as client:
        assert client.get("/readyz").json() == {"status": "ready"}
        client.put("/api/replicas/lhr/kv/x", json={"value": 1})
        client.put("/api/replicas/syd/kv/y", json={"value": 2})
        got = samples(client.get("/metrics").text)
    puts = [s for s in got if s.name == "edgestate_http_requests_total" and s.labels["method"] == "PUT"]
    assert [(s.labels["route"], s.labels["status"], s.value) for s in puts] == [
        ("/api/replicas/{replica_id}/kv/{key}", "200", 2.0)]
    assert "process_resident_memory_bytes" in {s.name for s in got}


def test_readyz_needs_no_token_even_when_private():
    from app.web.security import Settings

    settings = Settings(token="t" * 32, admin_token="a" * 32, private=True)
    with make_client(make_live("lhr"), settings=settings) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/api/replicas").status_code == 401
