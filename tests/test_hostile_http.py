"""Hostile HTTP clients against real processes (`edgestate serve`, `edgestate replica`) over real
sockets: keys that are not UTF-8, JSON bodies that repeat a member, HEAD, what uvicorn answers
before the app, and the audience rate limit against spoofed X-Forwarded-For headers.

The rate-limit tests run over loopback: a client on 127.0.0.1 is exactly the one uvicorn trusted
by default, so it is where spoofing worked. The rate is tiny (one token per 1000 s) so that the
count of accepted writes is the burst exactly, however slow the machine."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from app.processes.supervisor import free_port
from serving import serving
from test_replica_cli import spawn, stop, wait_healthy, write_secret

WRITES = 30
BURST = 5
LIMITED = ("--audience", "--write-rate", "0.001", "--write-burst", str(BURST))


def spoofed_writes(base_url: str, forwarded_for: list[str]) -> list[int]:
    """One counter write per header value, all at once; the statuses."""
    def write(xff: str) -> int:
        return httpx.post(f"{base_url}/api/replicas/lhr/counters/spoof", json={"add": 1},
                          headers={"X-Forwarded-For": xff}, timeout=30.0).status_code

    with ThreadPoolExecutor(max_workers=len(forwarded_for)) as pool:
        return list(pool.map(write, forwarded_for))


def distinct_addresses(n: int) -> list[str]:
    return [f"203.0.113.{i + 1}" for i in range(n)]


def test_spoofed_forwarded_for_from_loopback_does_not_bypass_the_rate_limit(tmp_path):
    with serving(tmp_path / "serve.log", "--pops", "lhr", *LIMITED) as srv:
        statuses = spoofed_writes(srv.base_url, distinct_addresses(WRITES))
        accepted = statuses.count(200)
        # before: all 30 accepted, each spoofed address with a bucket of its own
        assert accepted == BURST and statuses.count(429) == WRITES - BURST, \
            f"{accepted} of {WRITES} writes with distinct X-Forwarded-For accepted; the burst is {BURST}: {statuses}"
        value = httpx.get(f"{srv.base_url}/api/replicas/lhr/counters/spoof").json()["value"]
        assert value == BURST


def test_forwarded_for_is_believed_from_a_proxy_named_by_forwarded_allow_ips(tmp_path):
    with serving(tmp_path / "serve.log", "--pops", "lhr", *LIMITED, "--forwarded-allow-ips", "127.0.0.1") as srv:
        # a trusted proxy relaying for 30 clients: a bucket each
        assert spoofed_writes(srv.base_url, distinct_addresses(WRITES)) == [200] * WRITES
        # one client behind it is limited like any other, whatever it put in the header itself
        # (the proxy appends the address it saw: that last one is the client)
        statuses = spoofed_writes(srv.base_url, [f"{a}, 198.51.100.7" for a in distinct_addresses(WRITES)])
        assert statuses.count(200) == BURST, statuses


@pytest.mark.parametrize("value", ["*", "proxy.example", "10.0.0.300"])
def test_forwarded_allow_ips_takes_addresses_and_networks_only(value):
    import subprocess

    from serving import REPO, edgestate_cmd

    p = subprocess.run(edgestate_cmd("serve", "--pops", "lhr", "--forwarded-allow-ips", value),
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--forwarded-allow-ips" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_serve_help_says_who_is_trusted():
    import subprocess

    from serving import REPO, edgestate_cmd

    p = subprocess.run(edgestate_cmd("serve", "--help"), cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "--forwarded-allow-ips" in p.stdout and "not even loopback" in " ".join(p.stdout.split())


# -- request hygiene over real HTTP, on both servers ---------------------------------------------


def check_hygiene(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=10.0) as http:
        # %FE and %FF: before, both were "coll\ufffdx" and the read found the write
        for method, path in (("PUT", "/api/replicas/lhr/kv/coll%FEx"), ("GET", "/api/replicas/lhr/kv/coll%FFx"),
                             ("POST", "/api/replicas/lhr/counters/coll%FFx")):
            body = {"value": "fe"} if method == "PUT" else {"add": 1} if method == "POST" else None
            r = http.request(method, path, json=body)
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_key", (path, r.text)
        assert http.get("/api/replicas/lhr/kv/coll%EF%BF%BDx").status_code == 404  # nothing was written

        r = http.post("/api/replicas/lhr/counters/d", content=b'{"add":1,"add":100}',
                      headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "duplicate_member", r.text
        assert http.get("/api/replicas/lhr/counters/d").json()["value"] == 0  # before: 100

        for path in ("/healthz", "/api/replicas/lhr/counters/d"):
            got, head = http.get(path), http.head(path)
            assert head.status_code == 200 and head.content == b"", (path, head.status_code)  # before: 405
            assert head.headers["content-length"] == got.headers["content-length"]

        r = http.request("PATCH", "/api/replicas/lhr/counters/d", json={"add": 1})
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
        assert {"GET", "HEAD", "POST"} <= set(r.headers["allow"].replace(" ", "").split(","))


def raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10.0) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def check_what_uvicorn_answers_itself(port: int) -> None:
    """A request HTTP cannot parse never reaches the app: the server's protocol answers it, 400
    `bad_request` in the documented error shape (uvicorn's own answer was plain text)."""
    for request in (
        b"POST /api/replicas/lhr/counters/d HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: abc\r\n\r\n{\"add\":1}",
        b"FROB /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ):
        answer = raw_request(port, request)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"content-type: application/json" in head.lower(), answer[:400]
        err = json.loads(body)["error"]
        assert err["code"] == "bad_request" and "Invalid HTTP request" in err["message"], err


def check_head_bound(port: int) -> None:
    """The measured attack: 10 clients x a 16 MiB header grew serve by 92 MB and got 200 each. Now a
    head over MAX_HEAD_BYTES is 431 in the error shape, read no further; one just under passes, and
    two requests on one kept-alive connection are each counted afresh."""
    from app.web.http_head import MAX_HEAD_BYTES

    big = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Junk: " + b"j" * (16 * 1024 * 1024) + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10.0) as s:
        try:
            s.sendall(big)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it stopped reading: the answer is already waiting
        answer = b"".join(iter(lambda: s.recv(65536), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), answer[:300]
    err = json.loads(body)["error"]
    assert err["code"] == "head_too_large" and err["limit"] == {"name": "max_head_bytes", "value": MAX_HEAD_BYTES}
    under = b"X-Fine: " + b"f" * (MAX_HEAD_BYTES // 2) + b"\r\n"
    one = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + under + b"\r\n"
    last = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + under + b"Connection: close\r\n\r\n"
    answer = raw_request(port, one + last)
    assert answer.count(b"HTTP/1.1 200 ") == 2, answer[:400]


def test_serve_refuses_bad_keys_and_duplicate_members_and_answers_head(tmp_path):
    with serving(tmp_path / "serve.log", "--pops", "lhr") as srv:
        check_hygiene(srv.base_url)
        check_what_uvicorn_answers_itself(srv.port)
        check_head_bound(srv.port)


def test_replica_refuses_bad_keys_and_duplicate_members_and_answers_head(tmp_path):
    secret = write_secret(tmp_path / "secret")
    port = free_port()
    proc, err = spawn(["--id", "lhr", "--listen", f"127.0.0.1:{free_port()}", "--http", f"127.0.0.1:{port}",
                       "--data-dir", str(tmp_path / "data"), "--secret-file", str(secret)], tmp_path)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(proc, base_url, err)
        check_hygiene(base_url)
        check_what_uvicorn_answers_itself(port)
        check_head_bound(port)
    finally:
        assert stop(proc) == 0, err.read_text()
