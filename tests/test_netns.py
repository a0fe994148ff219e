"""Nothing assumes loopback: three `edgestate replica` processes, each in its own Linux network
namespace, joined by veth pairs to a bridge (itself in a namespace of its own, so the host's
network is never touched). Peer traffic and HTTP go over 10.77.0.0/24; a fourth namespace is the
client. Inside a namespace 127.0.0.1 reaches nobody else, so a replica that quietly dialled
loopback would never converge.

Peer links run over mutual TLS 1.3 with certificates from `edgestate certs` (a CA and one
certificate per replica, made here): the test checks every replica reports its links encrypted,
and that none refused a peer in the handshake.

A real partition too: the bridge port of one replica is taken down, a write reaches only the
other side, and after the link comes back up the cut-off replica catches up.

Needs root and `ip netns`; skipped (saying why) otherwise. Every wait is a condition polled
against a deadline."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from waiting import wait_for

from app.processes.supervisor import edgestate_cmd
from replication.io import certs

SUBNET = "10.77.0"
REPLICAS = {"lhr": 1, "jfk": 2, "syd": 3}  # id -> last octet
CLIENT_OCTET = 100
PEER_PORT = 7000
HTTP_PORT = 8000
TOKEN = "netns-test-token-0123456789"
READY_DEADLINE_S = 30.0

# Run inside the client namespace: one HTTP request with the standard library (fast to start).
CLIENT = r"""
import json, sys, urllib.error, urllib.request
method, url, token, body, timeout = sys.argv[1:6]
req = urllib.request.Request(url, method=method, data=body.encode() if body else None,
                             headers={"Content-Type": "application/json"})
if token:
    req.add_header("Authorization", "Bearer " + token)
try:
    with urllib.request.urlopen(req, timeout=float(timeout)) as r:
        status, text = r.status, r.read().decode()
except urllib.error.HTTPError as e:
    status, text = e.code, e.read().decode()
except OSError as e:
    status, text = 0, repr(e)
print(json.dumps({"status": status, "body": text}))
"""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], check=False, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r



@dataclass
class Net:
    prefix: str
    namespaces: list[str]

    def ns(self, name: str) -> str:
        return f"{self.prefix}{name}"

    @property
    def client(self) -> str:
        return self.ns("cl")

    @property
    def bridge(self) -> str:
        return self.ns("br")

    def http(self, method: str, rid: str, path: str, body: dict | None = None, token: str | None = TOKEN,
             timeout: float = 5.0) -> dict:
        """One request from the client namespace to replica `rid`: {"status": int (0: no answer), "body": ...}."""
        url = f"http://{SUBNET}.{REPLICAS[rid]}:{HTTP_PORT}{path}"
        cmd = ["ip", "netns", "exec", self.client, sys.executable, "-I", "-c", CLIENT, method, url, token or "",
               json.dumps(body) if body is not None else "", str(timeout)]
        r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        if out["status"] and out["body"]:
            try:
                out["body"] = json.loads(out["body"])
            except ValueError:
                pass
        return out

    def set_link(self, rid: str, up: bool) -> None:
        ip("-n", self.bridge, "link", "set", f"p{rid}", "up" if up else "down")


def _delete(namespaces: list[str]) -> list[str]:
    left = []
    for ns in namespaces:
        r = ip("netns", "del", ns, check=False)
        if r.returncode != 0 and ns in ip("netns", "list", check=False).stdout.split():
            left.append(f"{ns}: {r.stderr.strip()}")
    return left


@pytest.fixture
def net():
    """Namespaces <prefix>{lhr,jfk,syd,cl} each with eth0 = 10.77.0.N/24, cabled to bridge br0 in <prefix>br."""
    if sys.platform != "linux":
        pytest.skip("network namespaces are Linux only")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("the `ip` command (iproute2) is not installed")
    prefix = f"es{os.getpid()}-"
    made: list[str] = []
    probe = f"{prefix}br"
    r = ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        pytest.skip(f"`ip netns add` is not permitted here: {r.stderr.strip()}")
    made.append(probe)
    try:
        n = Net(prefix, made)
        r = ip("-n", n.bridge, "link", "add", "br0", "type", "bridge", check=False)
        if r.returncode != 0:
            pytest.skip(f"cannot create a bridge in a namespace: {r.stderr.strip()}")
        ip("-n", n.bridge, "link", "set", "br0", "up")
        hosts = {**REPLICAS, "cl": CLIENT_OCTET}
        for name, octet in hosts.items():
            ns = n.ns(name)
            ip("netns", "add", ns)
            made.append(ns)
            ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"p{name}", "netns", n.bridge)
            ip("-n", n.bridge, "link", "set", f"p{name}", "master", "br0")
            ip("-n", n.bridge, "link", "set", f"p{name}", "up")
            ip("-n", ns, "addr", "add", f"{SUBNET}.{octet}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield n
    finally:
        left = _delete(made)
        assert not left, f"namespaces not removed: {left}"


@dataclass
class Proc:
    rid: str
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_replicas(net: Net, root: Path, extra: tuple[str, ...] = ()) -> dict[str, Proc]:
    """`extra`: more arguments for every replica (test_netns_attach gives an admin token)."""
    secret = root / "secret"
    secret.write_bytes(os.urandom(16).hex().encode())
    secret.chmod(0o600)
    ca = certs.init_ca(root / "certs").cert
    procs: dict[str, Proc] = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("EDGESTATE_ADMIN_TOKEN", None)
    for rid, octet in REPLICAS.items():
        addr = f"{SUBNET}.{octet}"
        peers = [f"--peer={p}={SUBNET}.{o}:{PEER_PORT}" for p, o in REPLICAS.items() if p != rid]
        mine = certs.issue(root / "certs", rid)
        tls = [f"--ca={ca}", f"--cert={mine.cert}", f"--key={mine.key}"]
        cmd = ["ip", "netns", "exec", net.ns(rid), *edgestate_cmd(
            "replica", "--id", rid, "--listen", f"{addr}:{PEER_PORT}", "--http", f"{addr}:{HTTP_PORT}",
            "--data-dir", str(root / "data" / rid), "--secret-file", str(secret), "--token", TOKEN, *peers, *tls,
            *extra)]
        log = root / f"{rid}.log"
        with log.open("wb") as out:
            p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        procs[rid] = Proc(rid, p, log)
    return procs


def stop_all(procs: dict[str, Proc]) -> dict[str, int]:
    for p in procs.values():
        if p.proc.poll() is None:
            p.proc.terminate()
    codes = {}
    for rid, p in procs.items():
        try:
            codes[rid] = p.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.proc.pid, signal.SIGKILL)
            codes[rid] = p.proc.wait()
    return codes


def wait_ready(net: Net, procs: dict[str, Proc]) -> None:
    deadline = time.monotonic() + READY_DEADLINE_S
    for rid, p in procs.items():
        while True:
            assert p.proc.poll() is None, f"replica {rid} exited ({p.proc.returncode}):\n{p.output()}"
            if net.http("GET", rid, "/healthz")["status"] == 200:
                break
            assert time.monotonic() < deadline, f"replica {rid}: no /healthz within {READY_DEADLINE_S}s:\n{p.output()}"
            time.sleep(0.1)  # poll interval; readiness is the /healthz answer


def read_kv(net: Net, rid: str, key: str):
    r = net.http("GET", rid, f"/api/replicas/{rid}/kv/{key}")
    return r["body"]["values"] if r["status"] == 200 else None


def test_replicas_in_separate_namespaces_converge_and_repair_a_real_partition(net, tmp_path):
    procs = start_replicas(net, tmp_path)
    try:
        wait_ready(net, procs)

        # non-loopback HTTP: a write without the token is refused, with it accepted
        r = net.http("PUT", "lhr", "/api/replicas/lhr/kv/greeting", {"value": "nope"}, token=None)
        assert r["status"] == 401, r
        r = net.http("PUT", "lhr", "/api/replicas/lhr/kv/greeting", {"value": "hello from lhr"})
        assert r["status"] == 200, r
        assert r["body"]["values"] == ["hello from lhr"]
        for rid in ("jfk", "syd"):
            wait_for(f"the write at {rid}", lambda rid=rid: read_kv(net, rid, "greeting") == ["hello from lhr"])

        # a write at syd travels the other way
        r = net.http("POST", "syd", "/api/replicas/syd/counters/hits", {"add": 5})
        assert r["status"] == 200 and r["body"]["value"] == 5, r
        wait_for("the counter at lhr", lambda: net.http("GET", "lhr", "/api/replicas/lhr/counters/hits")
                 ["body"].get("value") == 5)

        # cut syd's cable at the bridge: a write at lhr reaches jfk but cannot reach syd
        net.set_link("syd", up=False)
        assert net.http("GET", "syd", "/healthz", timeout=1.0)["status"] == 0, "syd still reachable with its link down"
        r = net.http("PUT", "lhr", "/api/replicas/lhr/kv/during", {"value": "cut"})
        assert r["status"] == 200, r
        wait_for("the write at jfk during the cut", lambda: read_kv(net, "jfk", "during") == ["cut"])
        assert procs["syd"].proc.poll() is None

        # heal: syd catches up (dissemination retries or anti-entropy)
        net.set_link("syd", up=True)
        wait_for("syd catches up after the heal", lambda: read_kv(net, "syd", "during") == ["cut"])
        digests = wait_for("equal digests", lambda: (d := {rid: net.http("GET", rid, "/api/status")["body"]["digest"]
                                                           for rid in REPLICAS}) and len(set(d.values())) == 1 and d)
        assert len(digests) == 3
        # every byte of that went over TLS: links encrypted, none refused in the handshake
        for rid in REPLICAS:
            transport = net.http("GET", rid, "/api/status")["body"]["transport"]
            assert transport["encrypted"] is True, (rid, transport)
            assert not transport["refused"].get("handshake") and not transport["refused"].get("identity"), \
                (rid, transport)
            assert "not loopback" not in procs[rid].output(), procs[rid].output()
        for rid, p in procs.items():
            assert p.proc.poll() is None, f"{rid} exited:\n{p.output()}"
    finally:
        codes = stop_all(procs)
    assert codes == {rid: 0 for rid in REPLICAS}, {rid: (c, procs[rid].output()) for rid, c in codes.items()}


# -- the audience rate limit, from other hosts ------------------------------------------------------

# Run inside a namespace: one write per X-Forwarded-For value (argv[3:]); prints the statuses.
SPOOFER = r"""
import json, sys, urllib.error, urllib.request
url, token = sys.argv[1:3]
statuses = []
for xff in sys.argv[3:]:
    req = urllib.request.Request(url, method="POST", data=b'{"add": 1}', headers={
        "Content-Type": "application/json", "Authorization": "Bearer " + token, "X-Forwarded-For": xff})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            statuses.append(r.status)
    except urllib.error.HTTPError as e:
        statuses.append(e.code)
print(json.dumps(statuses))
"""
SERVE_PORT = 8100
BURST = 5
WRITES = 30


def spoof_from(net: Net, name: str, forwarded_for: list[str]) -> list[int]:
    url = f"http://{SUBNET}.{REPLICAS['lhr']}:{SERVE_PORT}/api/replicas/lhr/counters/spoof"
    r = subprocess.run(["ip", "netns", "exec", net.ns(name), sys.executable, "-I", "-c", SPOOFER, url, TOKEN,
                        *forwarded_for], check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_audience_rate_limit_holds_from_other_hosts_and_believes_only_the_named_proxy(net, tmp_path):
    """`serve --audience` in one namespace, `--forwarded-allow-ips` naming jfk's address as the proxy.
    Clients in two other namespaces spoof X-Forwarded-For: each gets its burst and no more. The proxy
    (jfk) relaying for many clients gets a bucket per client. The rate is one token per 1000 s, so the
    counts are exact however slow the machine."""
    server = f"{SUBNET}.{REPLICAS['lhr']}"
    proxy = f"{SUBNET}.{REPLICAS['jfk']}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("EDGESTATE_ADMIN_TOKEN", None)
    env.pop("EDGESTATE_TOKEN", None)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", net.ns("lhr"), *edgestate_cmd(
                "serve", "--pops", "lhr", "--host", server, "--port", str(SERVE_PORT), "--token", TOKEN,
                "--audience", "--write-rate", "0.001", "--write-burst", str(BURST), "--forwarded-allow-ips", proxy)],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        def ready() -> bool:
            assert proc.poll() is None, f"serve exited ({proc.returncode}):\n{log.read_text(errors='replace')}"
            url = f"http://{server}:{SERVE_PORT}/healthz"
            r = subprocess.run(["ip", "netns", "exec", net.client, sys.executable, "-I", "-c", CLIENT, "GET", url,
                                "", "", "2"], check=False, capture_output=True, text=True, timeout=30)
            return r.returncode == 0 and json.loads(r.stdout)["status"] == 200

        wait_for("serve answers /healthz from the client namespace", ready, deadline_s=READY_DEADLINE_S)
        spoofed = [f"203.0.113.{i + 1}" for i in range(WRITES)]
        for attacker in ("cl", "syd"):
            statuses = spoof_from(net, attacker, spoofed)
            assert statuses.count(200) == BURST and statuses.count(429) == WRITES - BURST, (attacker, statuses)
        # the named proxy relays for 30 clients: a bucket each
        assert spoof_from(net, "jfk", [f"198.51.100.{i + 1}" for i in range(WRITES)]) == [200] * WRITES
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode in (0, -signal.SIGTERM), log.read_text(errors="replace")
