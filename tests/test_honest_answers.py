"""Honest answers from real replica processes: a write answered 503 changed nothing, here or
at any peer, and an `Idempotency-Key` makes a write safe to retry, across restarts too.

A full disk is made with `RLIMIT_FSIZE`, set on the running replica from here with
`prlimit` (allowed between processes of one user): every write past the first byte of a file
then fails with EFBIG, as on a full disk (CPython ignores SIGXFSZ, so the process lives).
Raising the soft limit back is "freeing the space". Nothing in the replica knows about it.
"""

from __future__ import annotations

import contextlib
import re
import socket

import httpx
import pytest
from waiting import wait_for

from app.processes.supervisor import ProcessCluster

resource = pytest.importorskip("resource")
pytestmark = [
    pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs prlimit (Linux)"),
    pytest.mark.timeout(240),
]

KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"


@contextlib.contextmanager
def full_disk(c: ProcessCluster, rid: str):
    pid = c.replicas[rid].proc.pid
    _soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))
    try:
        yield
    finally:
        if c.replicas[rid].running:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))


def counter_url(c: ProcessCluster, rid: str, key: str) -> str:
    return f"{c.url(rid)}/api/replicas/{rid}/counters/{key}"


def counter(c: ProcessCluster, rid: str, key: str) -> int:
    r = httpx.get(counter_url(c, rid, key), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["value"]


def add(c: ProcessCluster, rid: str, key: str, n: int = 1, idem: str | None = None) -> httpx.Response:
    return httpx.post(counter_url(c, rid, key), json={"add": n}, headers={KEY: idem} if idem else None, timeout=30)


def status(c: ProcessCluster, rid: str) -> dict:
    return httpx.get(f"{c.url(rid)}/api/status", timeout=10).json()


def frames_in(c: ProcessCluster, rid: str) -> int:
    text = httpx.get(f"{c.url(rid)}/metrics", timeout=10).text
    return int(float(re.search(r'^edgestate_frames_total\{direction="in"\} (\S+)$', text, re.M).group(1)))


def refused(r: httpx.Response) -> bool:
    return r.status_code == 503 and r.json()["error"]["code"] == "storage_unavailable"


@pytest.fixture
def pair(tmp_path):
    c = ProcessCluster(["lhr", "jfk"], tmp_path, inject_latency=False)
    try:
        c.start()
        yield c
    finally:
        c.close()


@pytest.fixture
def single(tmp_path):
    c = ProcessCluster(["lhr"], tmp_path, inject_latency=False)
    try:
        c.start()
        yield c
    finally:
        c.close()


def test_writes_refused_for_a_full_disk_change_nothing_here_or_at_a_peer(pair):
    """The issue's report: five 503s on a full disk, then the counter read 5 once space was
    back, and a peer had them too. Now it reads exactly the number of 200s, everywhere."""
    c = pair
    assert add(c, "lhr", "retry").status_code == 200
    wait_for("jfk to have the first increment", lambda: counter(c, "jfk", "retry") == 1)
    with full_disk(c, "lhr"):
        answers = [add(c, "lhr", "retry") for _ in range(5)]
        assert all(refused(r) for r in answers), [r.text for r in answers]
        assert counter(c, "lhr", "retry") == 1
        # Had lhr kept them, a few anti-entropy rounds (one a second) would carry them to jfk.
        seen = frames_in(c, "jfk")
        wait_for("jfk to hear from lhr for a few anti-entropy rounds", lambda: frames_in(c, "jfk") >= seen + 10)
        assert counter(c, "jfk", "retry") == 1
        assert counter(c, "lhr", "retry") == 1
    # space is back: the next writes mint the refused writes' dots again, which is safe only
    # because no peer ever saw them (a peer holding them would ignore these, and diverge)
    oks = [add(c, "lhr", "retry") for _ in range(3)]
    assert [r.status_code for r in oks] == [200] * 3, [r.text for r in oks]
    assert [r.json()["value"] for r in oks] == [2, 3, 4]
    wait_for("jfk to agree on 4", lambda: counter(c, "jfk", "retry") == 4)
    wait_for("equal digests", lambda: status(c, "lhr")["digest"] == status(c, "jfk")["digest"])
    st = status(c, "lhr")
    assert st["rollbacks"] >= 1 and st["pending"] == 0 and st["held_outbound"] == 0
    assert st["actor"] == "lhr"  # no restart, no new actor: the same dots, minted once for real


def test_a_keyed_retry_after_a_503_applies_once_in_total(single):
    c = single
    with full_disk(c, "lhr"):
        assert refused(add(c, "lhr", "hits", 7, idem="order-1"))
    first = add(c, "lhr", "hits", 7, idem="order-1")
    assert first.status_code == 200 and REPLAYED not in first.headers  # nothing was kept: applied now
    again = add(c, "lhr", "hits", 7, idem="order-1")
    assert again.status_code == 200 and again.headers[REPLAYED] == "true"
    assert again.content == first.content
    assert counter(c, "lhr", "hits") == 7


def test_a_keyed_retry_after_the_client_gave_up_applies_once(single):
    """The client sent the write and gave up before the answer (a timeout): it landed anyway.
    Its retry is answered from the record, with the first answer's bytes."""
    c = single
    port = c.replicas["lhr"].http_port
    body = b'{"add": 3}'
    request = (f"POST /api/replicas/lhr/counters/gave-up HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{KEY}: pay-42\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        wait_for("the write to land", lambda: counter(c, "lhr", "gave-up") == 3)
    # closed without reading a byte of the answer
    retry = add(c, "lhr", "gave-up", 3, idem="pay-42")
    assert retry.status_code == 200 and retry.headers[REPLAYED] == "true"
    assert retry.json() == {"key": "gave-up", "replica": "lhr", "value": 3}
    assert counter(c, "lhr", "gave-up") == 3


def test_keyed_writes_are_applied_once_across_clean_and_unclean_restarts(single):
    c = single
    first = add(c, "lhr", "stock", -2, idem="take-1")
    put = httpx.put(f"{c.url('lhr')}/api/replicas/lhr/kv/profile", json={"value": {"name": "Ada"}},
                    headers={KEY: "profile-v1"}, timeout=30)
    assert first.status_code == 200 and put.status_code == 200
    for restart in ("clean", "SIGKILL"):
        if restart == "clean":
            assert c.stop("lhr") == 0
        else:
            c.kill("lhr")
        c.restart("lhr")
        again = add(c, "lhr", "stock", -2, idem="take-1")
        assert again.status_code == 200 and again.headers[REPLAYED] == "true", (restart, again.text)
        assert again.content == first.content
        put_again = httpx.put(f"{c.url('lhr')}/api/replicas/lhr/kv/profile", json={"value": {"name": "Ada"}},
                              headers={KEY: "profile-v1"}, timeout=30)
        assert put_again.headers[REPLAYED] == "true" and put_again.content == put.content
        assert counter(c, "lhr", "stock") == -2, restart
    assert status(c, "lhr")["actor"] == "lhr~1"  # the SIGKILL restart took a new actor; the record held
    other = add(c, "lhr", "stock", -5, idem="take-1")
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert counter(c, "lhr", "stock") == -2
