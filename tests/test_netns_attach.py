"""`edgestate serve --attach` across real network namespaces: three `edgestate replica` processes,
each in its own namespace, and a dashboard attached to them from a fourth (the client's), reaching
them only over 10.77.0.0/24 with their tokens. A replica's link is taken down at the bridge: the
dashboard shows it down, saying why, and keeps serving the others; the link comes back and so
does the replica, caught up. A partition goes through the replicas' admin API.

Needs root and `ip netns` (the `net` fixture of test_netns); skipped, saying why, otherwise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from test_netns import (  # noqa: F401 - `net` is a fixture
    CLIENT,
    CLIENT_OCTET,
    HTTP_PORT,
    READY_DEADLINE_S,
    REPLICAS,
    SUBNET,
    TOKEN,
    Net,
    net,
    start_replicas,
    stop_all,
    wait_ready,
)
from waiting import wait_for

from app.processes.supervisor import edgestate_cmd

pytestmark = pytest.mark.timeout(240)

ADMIN = "netns-attach-admin-token-0123456789"
DASH_PORT = 8200
DASH_TOKEN = "netns-dashboard-token-0123456789"
DASH_ADMIN = "netns-dashboard-admin-0123456789"
DEADLINE_S = 30.0


def dash(net: Net, method: str, path: str, body: dict | None = None, token: str | None = DASH_TOKEN) -> dict:  # noqa: F811 (the imported fixture, by name)
    """One request from the client namespace to the dashboard there: {"status", "body"}."""
    url = f"http://{SUBNET}.{CLIENT_OCTET}:{DASH_PORT}{path}"
    r = subprocess.run(["ip", "netns", "exec", net.client, sys.executable, "-I", "-c", CLIENT, method, url,
                        token or "", json.dumps(body) if body is not None else "", "5"],
                       check=False, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    if out["status"] and out["body"]:
        try:
            out["body"] = json.loads(out["body"])
        except ValueError:
            pass
    return out


def states(net: Net) -> dict[str, dict]:  # noqa: F811 (the imported fixture, by name)
    r = dash(net, "GET", "/api/replicas")
    return {s["id"]: s for s in r["body"]["replicas"]} if r["status"] == 200 else {}


def test_a_dashboard_attached_from_another_namespace_follows_a_link_down_and_back(net, tmp_path):  # noqa: F811 (the imported fixture, by name)
    procs = start_replicas(net, tmp_path, extra=("--admin-token", ADMIN))
    log = tmp_path / "serve.log"
    serve = None
    try:
        wait_ready(net, procs)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "EDGESTATE_ATTACH_TOKEN": TOKEN,
               "EDGESTATE_ATTACH_ADMIN_TOKEN": ADMIN}
        for k in ("EDGESTATE_TOKEN", "EDGESTATE_ADMIN_TOKEN"):
            env.pop(k, None)
        attach = [a for rid, octet in REPLICAS.items() for a in ("--attach", f"{rid}=http://{SUBNET}.{octet}:{HTTP_PORT}")]
        with log.open("wb") as out:
            serve = subprocess.Popen(
                ["ip", "netns", "exec", net.client, *edgestate_cmd(
                    "serve", "--host", f"{SUBNET}.{CLIENT_OCTET}", "--port", str(DASH_PORT), "--token", DASH_TOKEN,
                    "--admin-token", DASH_ADMIN, *attach)],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

        def all_up() -> bool:
            assert serve.poll() is None, f"serve exited ({serve.returncode}):\n{log.read_text(errors='replace')}"
            s = states(net)
            return len(s) == 3 and all(x["status"] == "up" for x in s.values())

        wait_for("every attached replica up", all_up, READY_DEADLINE_S)
        assert "crosses the network readable" in log.read_text(errors="replace"), "plain http with a token: warned"
        # a write through the dashboard at lhr reaches syd
        r = dash(net, "POST", "/api/replicas/lhr/counters/hits", {"add": 3})
        assert r["status"] == 200 and r["body"]["value"] == 3, r
        wait_for("the write at syd", lambda: dash(net, "GET", "/api/replicas/syd/counters/hits")["body"].get("value") == 3,
                 DEADLINE_S)

        # syd's cable is cut at the bridge: shown down, with why; the others serve on
        net.set_link("syd", up=False)
        syd = wait_for("syd down on the dashboard", lambda: (s := states(net).get("syd")) and s["status"] == "down" and s,
                       DEADLINE_S)
        assert syd["reason"], syd
        r = dash(net, "GET", "/readyz", token=None)
        assert r["status"] == 503 and "syd unreachable" in json.dumps(r["body"]), r
        r = dash(net, "POST", "/api/replicas/lhr/counters/hits", {"add": 1})
        assert r["status"] == 200 and r["body"]["value"] == 4, r
        assert states(net)["jfk"]["status"] == "up"

        # the link comes back: syd is followed again, and catches up
        net.set_link("syd", up=True)
        wait_for("syd up on the dashboard", lambda: states(net).get("syd", {}).get("status") == "up", DEADLINE_S)
        wait_for("syd caught up", lambda: dash(net, "GET", "/api/replicas/syd/counters/hits")["body"].get("value") == 4,
                 DEADLINE_S)
        wait_for("converged, all three", lambda: (c := dash(net, "GET", "/api/convergence")["body"])["converged"]
                 and len(c["digests"]) == 3, DEADLINE_S)

        # a partition through the replicas' admin API, and the heal
        r = dash(net, "POST", "/api/faults/partition", {"groups": [["syd"]]}, token=DASH_ADMIN)
        assert r["status"] == 200 and r["body"]["groups"] == [["syd"], ["lhr", "jfk"]], r
        assert net.http("GET", "lhr", "/api/status")["body"]["partitioned_from"] == ["syd"]
        r = dash(net, "DELETE", "/api/faults/partition", token=DASH_ADMIN)
        assert r["status"] == 200, r
        assert net.http("GET", "syd", "/api/status")["body"]["partitioned_from"] == []
        r = dash(net, "POST", "/api/replicas/syd/crash", token=DASH_ADMIN)
        assert r["status"] == 409 and r["body"]["error"]["code"] == "not_supported_with_attach", r
    finally:
        if serve is not None and serve.poll() is None:
            os.killpg(serve.pid, signal.SIGTERM)
            try:
                serve.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
                serve.wait()
        codes = stop_all(procs)
    assert serve.returncode in (0, -signal.SIGTERM), log.read_text(errors="replace")
    assert codes == {rid: 0 for rid in REPLICAS}, {rid: (c, procs[rid].output()) for rid, c in codes.items()}
