"""`edgestate serve --attach`: the dashboard over replicas it does not run, through their HTTP API.

Two replica processes stand in for replicas on other hosts: HTTPS on their API (a certificate
for 127.0.0.1 from a CA made here), a write token and an admin token. The dashboard reaches
them only as it would across a network: URL, CA, tokens. (`tests/test_netns_attach.py` does it
across real network namespaces; `tests/test_contract.py` holds `AttachedLive` to the contract.)
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest
from live_helpers import run_async
from serving import ServerProcess, serving
from waiting import wait_for

from app import cli
from app.attach.cluster import AttachedLive
from app.attach.config import Target, targets
from app.processes.supervisor import ProcessCluster
from app.replica import feed_http
from app.replica.events import EventFeed
from replication.errors import NotWithAttach
from replication.io import certs

pytestmark = pytest.mark.timeout(240)

TOKEN = "attach-test-write-token-0123"
ADMIN = "attach-test-admin-token-0123"
IDS = ["lhr", "jfk"]
DEADLINE_S = 30.0


# -- the cluster file and flags, checked at start -------------------------------------------------


def test_targets_from_flags_and_a_file_with_per_replica_settings(tmp_path):
    ca = certs.init_ca(tmp_path / "ca").cert
    (tmp_path / "cluster.toml").write_text(
        'token = "file-token-0123456789"\nca = "ca/ca.pem"\n'
        '[[replica]]\nid = "syd"\nurl = "https://10.0.0.3:8001"\n'
        '[[replica]]\nid = "syd-2"\nurl = "http://10.0.0.4:8001"\ntoken = "own-token-0123456789"\n')
    got = targets(["lhr=https://[::1]:9000", "jfk=http://example.org"], tmp_path / "cluster.toml",
                  token="flag-token-0123456789", admin_token="admin-0123456789")
    assert [(t.id, t.url, t.token) for t in got] == [
        ("lhr", "https://[::1]:9000", "flag-token-0123456789"), ("jfk", "http://example.org:80", "flag-token-0123456789"),
        ("syd", "https://10.0.0.3:8001", "file-token-0123456789"), ("syd-2", "http://10.0.0.4:8001", "own-token-0123456789")]
    assert got[2].ca == ca and got[3].ca is None  # the file's CA for https, relative to the file
    assert all(t.admin_token == "admin-0123456789" for t in got)
    (tmp_path / "cluster.json").write_text(json.dumps({"replica": [{"id": "fra", "url": "http://h:1"}]}))
    assert [t.id for t in targets([], tmp_path / "cluster.json")] == ["fra"]


@pytest.mark.parametrize("attach,message", [
    (["lhr"], "is not ID=URL"),
    (["xyz=http://h:1"], "names no POP"),
    (["lhr=http://h:1", "lhr=http://h:2"], "attached twice"),
    (["lhr=ftp://h:1"], "http:// or https://"),
    (["lhr=http://h:1/api"], "no path"),
    (["lhr=http://user:pw@h:1"], "credentials"),
    ([], "nothing to attach"),
])
def test_bad_attach_flags_are_refused_naming_what_to_fix(attach, message):
    with pytest.raises(ValueError, match=message):
        targets(attach)


def test_bad_files_and_tokens_are_refused(tmp_path):
    bad = tmp_path / "bad.toml"
    for text, message in (("[[replica]]\nid = 'lhr'\n", "needs an id and a url"),
                          ("replicas = []\n", "needs a list of replicas"),
                          ("colour = 'red'\n[[replica]]\nid='lhr'\nurl='http://h:1'\n", "unknown setting"),
                          ("[[replica\n", "bad.toml"),
                          ("[[replica]]\nid='lhr'\nurl='http://h:1'\nca='x.pem'\n", "not https")):
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            targets([], bad)
    with pytest.raises(ValueError, match="cannot read"):
        targets([], tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="printable ASCII"):
        targets(["lhr=http://h:1"], token="has a space")
    (tmp_path / "notacert.pem").write_text("hello")
    with pytest.raises(ValueError, match="cannot be used as a CA"):
        targets(["lhr=https://h:1"], ca=tmp_path / "notacert.pem")


def test_serve_refuses_bad_attach_arguments_with_exit_2():
    for argv, message in ((["--attach", "nowhere=http://127.0.0.1:1"], "names no POP"),
                          (["--attach", "lhr=http://127.0.0.1:1", "--processes"], "give one"),
                          (["--attach", "lhr=http://127.0.0.1:1", "--pops", "lhr"], "--pops does not go")):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert cli.main(["serve", *argv]) == 2
        assert message in err.getvalue(), err.getvalue()


# -- the replica's feed: bounded per reader -------------------------------------------------------


def test_a_reader_that_falls_behind_is_told_and_dropped_never_buffered_without_limit():
    async def run() -> list[bytes]:
        feed = EventFeed("lhr")  # not started: no status first
        reader = feed_http.Reader(limit=5)
        feed.subscribe(reader.put)
        for i in range(50):
            reader.put({"replica": "lhr", "type": "applied", "n": i})
        assert reader.queue.qsize() == 5 and reader.overflowed
        return [chunk async for chunk in feed_http.stream(feed, reader, keepalive_s=0.01)]

    chunks = run_async(run())
    # told at once (what it holds is stale: it starts again from the status when it reconnects), then the end
    assert len(chunks) == 1 and chunks[0].startswith(b"event: overflow\n"), chunks
    assert b"fell 5 events behind" in chunks[0] and b"reconnect" in chunks[0]


# -- over real replica processes with HTTPS and tokens ---------------------------------------------


class HttpsCluster(ProcessCluster):
    """Replicas whose HTTP API is HTTPS (a certificate for 127.0.0.1, from `ca`)."""

    def __init__(self, *args, ca: Path, **kw) -> None:
        super().__init__(*args, **kw)
        self.client_tls = ssl.create_default_context(cafile=str(ca))

    def url(self, rid: str) -> str:
        return f"https://{self.host}:{self.replicas[rid].http_port}"

    def healthy(self, rid: str) -> bool:
        try:
            with urllib.request.urlopen(self.url(rid) + "/healthz", timeout=1.0, context=self.client_tls) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    root = tmp_path_factory.mktemp("attach")
    ca = certs.init_ca(root / "https").cert
    web = certs.issue(root / "https", "web", hosts=["127.0.0.1"])
    procs = HttpsCluster(IDS, root / "replicas", inject_latency=False, ca=ca, extra_args=(
        "--token", TOKEN, "--admin-token", ADMIN, "--tls-cert", str(web.cert), "--tls-key", str(web.key)))
    procs.ca = ca
    try:
        procs.start()
        yield procs
    finally:
        procs.close()


def _get(remote, rid: str, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(remote.url(rid) + path, headers=headers, verify=remote.client_tls, timeout=10.0)


def test_the_event_feed_needs_the_replicas_token_and_starts_with_its_status(remote):
    for token in (None, "wrong-token-0123456789"):
        r = _get(remote, "lhr", "/api/events", token)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", r.text
    assert _get(remote, "lhr", "/api/status", None).status_code == 200, "other reads stay open"
    with httpx.stream("GET", remote.url("lhr") + "/api/events", headers={"Authorization": f"Bearer {ADMIN}"},
                      verify=remote.client_tls, timeout=10.0) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        first = next(line for line in r.iter_lines() if line.startswith("data: "))
    ev = json.loads(first.removeprefix("data: "))
    assert ev["type"] == "status" and ev["replica"] == "lhr" and "rtt_ms" in ev and "digest" in ev


def _attached(remote, **kw) -> list[Target]:
    return targets([f"{rid}={remote.url(rid)}" for rid in IDS], ca=remote.ca, **kw)


def test_a_partition_a_replica_refuses_is_refused_whole_and_undone(remote):
    """Without the admin token the replicas refuse: 409 naming why, and no replica is left cut."""
    async def run():
        live = AttachedLive(_attached(remote, token=TOKEN))
        await live.start()
        try:
            while live.down():
                await asyncio.sleep(0.05)  # bounded by the test's timeout; each pass yields the loop
            with pytest.raises(NotWithAttach, match="admin") as e:
                await live.partition([["lhr"]])
            assert "403 admin_disabled" in str(e.value) or "401 unauthorized" in str(e.value), str(e.value)
            assert live.partition_groups() is None
        finally:
            await live.close()

    run_async(asyncio.wait_for(run(), DEADLINE_S))
    for rid in IDS:
        assert _get(remote, rid, "/api/status", TOKEN).json()["partitioned_from"] == []


def test_a_replica_that_cannot_be_verified_shows_down_with_the_reason(remote):
    """An https replica whose certificate no trusted CA signed (no --attach-ca: the system's store)."""
    async def run():
        live = AttachedLive(targets([f"lhr={remote.url('lhr')}"], token=TOKEN))
        await live.start()
        try:
            while "lhr" not in live.unreachable() or live.unreachable()["lhr"] == "not reached yet":
                await asyncio.sleep(0.05)
            assert live.down() == ["lhr"] and live.state_of("lhr")["status"] == "down"
            return live.unreachable()["lhr"], await live.aunready()
        finally:
            await live.close()

    reason, unready = run_async(asyncio.wait_for(run(), DEADLINE_S))
    assert "certificate" in reason.lower(), reason
    assert unready is not None and "lhr unreachable" in unready


class Dashboard(ServerProcess):
    def call(self, method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, self.base_url + path, timeout=10.0, **kw)

    def ok(self, method: str, path: str, **kw) -> dict:
        r = self.call(method, path, **kw)
        assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def states(self) -> dict[str, dict]:
        return {r["id"]: r for r in self.ok("GET", "/api/replicas")["replicas"]}


def test_serve_attach_draws_remote_replicas_and_shows_one_that_goes_away(remote, tmp_path):
    args = [a for rid in IDS for a in ("--attach", f"{rid}={remote.url(rid)}")]
    env = {"EDGESTATE_ATTACH_TOKEN": TOKEN, "EDGESTATE_ATTACH_ADMIN_TOKEN": ADMIN}
    with serving(tmp_path / "serve.log", *args, "--attach-ca", str(remote.ca), env=env, cls=Dashboard) as dash:
        wait_for("both replicas up", lambda: all(s["status"] == "up" for s in dash.states().values()), DEADLINE_S)
        assert [r["id"] for r in dash.ok("GET", "/api/topology")["replicas"]] == IDS
        # a write relayed to lhr (with the token the dashboard holds), read back at jfk
        dash.ok("POST", "/api/replicas/lhr/counters/attached", json={"add": 2})
        wait_for("the write at jfk", lambda: dash.ok("GET", "/api/replicas/jfk/counters/attached")["value"] == 2,
                 DEADLINE_S)
        wait_for("converged", lambda: dash.ok("GET", "/api/convergence")["converged"], DEADLINE_S)
        assert dash.ok("GET", "/api/sim")["speed"] == 1.0
        # measured round trips beside the model's
        topo = wait_for("measured round trips", lambda: (t := dash.ok("GET", "/api/topology")).get(
            "measured_rtt_ms", {}).get("lhr", {}).get("jfk") is not None and t, DEADLINE_S)
        assert topo["rtt_ms"]["lhr"]["jfk"] > 0 and topo["measured_rtt_ms"]["lhr"]["jfk"] >= 0
        # crash is not this dashboard's to do; a partition goes through the replicas' admin API
        r = dash.call("POST", "/api/replicas/jfk/crash")
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_supported_with_attach", r.text
        assert dash.ok("POST", "/api/faults/partition", json={"groups": [["lhr"], ["jfk"]]})["partitioned"]
        assert _get(remote, "lhr", "/api/status", TOKEN).json()["partitioned_from"] == ["jfk"]
        dash.ok("DELETE", "/api/faults/partition")
        assert _get(remote, "lhr", "/api/status", TOKEN).json()["partitioned_from"] == []
        # jfk stops where it runs: down here, with why; /readyz says so; back when it is
        assert remote.stop("jfk") == 0
        jfk = wait_for("jfk down", lambda: (s := dash.states()["jfk"])["status"] == "down" and s, DEADLINE_S)
        assert jfk["reason"], jfk
        r = dash.call("GET", "/readyz")
        assert r.status_code == 503 and "jfk unreachable" in r.text, r.text
        r = dash.call("GET", "/api/replicas/jfk/counters/attached")
        assert r.status_code == 503 and r.json()["error"]["code"] == "replica_down", r.text
        assert dash.states()["lhr"]["status"] == "up"
        remote.restart("jfk")
        wait_for("jfk up again", lambda: dash.states()["jfk"]["status"] == "up", DEADLINE_S)
        assert "reason" not in dash.states()["jfk"]
        wait_for("/readyz again", lambda: dash.call("GET", "/readyz").status_code == 200, DEADLINE_S)
