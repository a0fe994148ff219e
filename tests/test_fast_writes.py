"""The replica's fast write path (`app/replica/fast_writes.py`) answers exactly as FastAPI does.

Two replica processes' apps side by side, each over its own runner and disk, one with the fast
path and one without, the runners' clocks frozen at the same instant so that the same requests
in the same order make the same dots, the same HLC stamps and the same context tokens. Every
request goes to both; status, every header (the request id is sent, so it is echoed, not made)
and the body bytes must be equal. The valid writes must have been taken by the fast path (else
the comparison compares FastAPI with itself); the hostile ones are answered by whichever path
the fast one hands them to, and must still match.
"""

from __future__ import annotations

import contextlib

import json
import types

import httpx
import pytest
from live_helpers import run_async
from test_runner import SECRET

from app.processes.supervisor import free_port
from app.replica import fast_writes
from app.replica.service import create_replica_app
from app.web.security import Settings
from replication.io import runner as runner_module
from replication.io.runner import ReplicaRunner
from replication.values import MAX_KEY_BYTES, MAX_VALUE_BYTES

RID = "lhr"
KV, CNT, SET = f"/api/replicas/{RID}/kv", f"/api/replicas/{RID}/counters", f"/api/replicas/{RID}/sets"
J = {"content-type": "application/json"}


def _frozen_time(monkeypatch) -> None:
    import time

    frozen = types.SimpleNamespace(monotonic=lambda: 5000.0, time=lambda: 1_790_000_000.0,
                                   perf_counter=time.perf_counter, sleep=time.sleep)
    monkeypatch.setattr(runner_module, "time", frozen)


def _taken(monkeypatch) -> list:
    """The requests the fast path answered itself."""
    seen: list = []
    real = fast_writes.FastWrites._write

    async def spy(scope, *args):
        seen.append((scope["method"], scope["path"]))
        await real(scope, *args)

    monkeypatch.setattr(fast_writes.FastWrites, "_write", staticmethod(spy))
    return seen


@contextlib.asynccontextmanager
async def _pair(tmp_path, settings: Settings | None = None):
    """Two replicas, one answering the hot writes on the fast path and one through FastAPI only:
    a client for each, stopped on the way out."""
    runners, clients = [], []
    try:
        for name, fast in (("fast", True), ("slow", False)):
            r = ReplicaRunner(RID, {}, data_dir=tmp_path / name, secret=SECRET)
            await r.start("127.0.0.1", free_port())
            runners.append(r)
            app = create_replica_app(r, access_log=False, settings=settings, fast_writes=fast)
            clients.append(httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"))
        yield clients
    finally:
        for c in clients:
            await c.aclose()
        for r in runners:
            await r.stop()


def _answer(r: httpx.Response) -> tuple:
    return r.status_code, sorted(r.headers.multi_items()), r.content


async def _both(clients, n: int, method: str, path: str, body: bytes | str | None = None,
                headers: dict | list | None = None) -> tuple:
    content = body.encode() if isinstance(body, str) else body
    hdrs = httpx.Headers(headers if headers is not None else J)
    hdrs["x-request-id"] = f"req-{n}"
    fast, slow = [_answer(await c.request(method, path, content=content, headers=hdrs)) for c in clients]
    assert fast == slow, f"{method} {path} {body!r}: the fast path answered\n{fast}\nthe slow one\n{slow}"
    return fast


def dumps(doc, ensure_ascii: bool = True) -> str:
    return json.dumps(doc, ensure_ascii=ensure_ascii)


VALID = [
    ("PUT", f"{KV}/a", dumps({"value": 1})),
    ("PUT", f"{KV}/a", dumps({"value": {"nested": [1, 2.5, "x", None, True]}, "context": None})),
    ("PUT", f"{KV}/floats", dumps({"value": [1e16, 0.1, -0.0, 1.5e-300, 2 ** 63 - 1, -(2 ** 63)]})),
    ("PUT", f"{KV}/text", dumps({"value": "é ☃ \u2028 \u0000 \x7f \"quoted\" \\ 𝄞"}, ensure_ascii=False)),
    ("PUT", f"{KV}/a%2Fb", dumps({"value": "slash, encoded"})),
    ("PUT", f"{KV}/a/b", dumps({"value": "slash, as is"})),
    ("PUT", f"{KV}/%C3%A9t%C3%A9", dumps({"value": "unicode key"})),
    ("PUT", f"{KV}/nothing", dumps({"value": None})),
    ("POST", f"{CNT}/c", dumps({"add": 5})),
    ("POST", f"{CNT}/c", dumps({"add": -3})),
    ("POST", f"{CNT}/c", dumps({"add": 0})),
    ("POST", f"{CNT}/big", dumps({"add": 2 ** 63 - 1})),
    ("POST", f"{SET}/s", dumps({"add": ["x", 1, {"m": [2]}]})),
    ("POST", f"{SET}/s", dumps({"remove": ["x"]})),
]

# each is refused, or not the fast path's to take; the answers must still be the same
HOSTILE = [
    ("PUT", f"{KV}/h", "{"),  # bad JSON
    ("PUT", f"{KV}/h", ""),  # no body
    ("PUT", f"{KV}/h", "null"),
    ("PUT", f"{KV}/h", "[1, 2]"),
    ("PUT", f"{KV}/h", '"text"'),
    ("PUT", f"{KV}/h", '{"value": 1, "value": 2}'),  # a member twice
    ("PUT", f"{KV}/h", dumps({"value": 1, "extra": 2})),  # unknown field
    ("PUT", f"{KV}/h", dumps({"value": 1, "context": None, "extra": 2})),
    ("PUT", f"{KV}/h", dumps({})),  # no value
    ("PUT", f"{KV}/h", dumps({"context": None})),
    ("PUT", f"{KV}/h", dumps({"value": 1, "context": 5})),  # wrong type
    ("PUT", f"{KV}/h", dumps({"value": 1, "context": ["x"]})),
    ("PUT", f"{KV}/h", dumps({"value": 1, "context": "not a token"})),  # bad_context, from the library
    ("PUT", f"{KV}/h", dumps({"value": "x" * (MAX_VALUE_BYTES + 1)})),  # value_too_large
    ("PUT", f"{KV}/h", dumps({"value": [2 ** 70]})),  # invalid_value, from the library
    ("PUT", f"{KV}/h", '{"value": NaN}'),  # not JSON (Python's parser takes it)
    ("PUT", f"{KV}/h", dumps({"value": "x" * (1024 * 1024)})),  # over the body limit
    ("PUT", f"{KV}/" + "k" * (MAX_KEY_BYTES + 1), dumps({"value": 1})),  # invalid_key
    ("PUT", f"{KV}/", dumps({"value": 1})),  # empty key
    ("PUT", f"{KV}/bad%01key", dumps({"value": 1})),  # a control character
    ("PUT", f"{KV}/bad%FEkey", dumps({"value": 1})),  # not UTF-8
    ("PUT", "/api/replicas/jfk/kv/h", dumps({"value": 1})),  # unknown_replica
    ("POST", f"{KV}/h", dumps({"value": 1})),  # wrong method
    ("PUT", f"{CNT}/h", dumps({"add": 1})),
    ("PATCH", f"{SET}/h", dumps({"add": ["x"]})),
    ("POST", f"{CNT}/h", dumps({"add": True})),
    ("POST", f"{CNT}/h", dumps({"add": 1.0})),
    ("POST", f"{CNT}/h", dumps({"add": "1"})),
    ("POST", f"{CNT}/h", dumps({"add": None})),
    ("POST", f"{CNT}/h", dumps({"add": 2 ** 63})),
    ("POST", f"{CNT}/h", dumps({"add": 2 ** 64 + 7})),
    ("POST", f"{CNT}/h", dumps({"add": 1, "more": 1})),
    ("POST", f"{CNT}/h", dumps({})),
    ("POST", f"{CNT}/big", dumps({"add": 2 ** 63 - 1})),  # counter_overflow, from the library
    ("POST", f"{SET}/h", dumps({"add": "x"})),
    ("POST", f"{SET}/h", dumps({"add": ["x"], "other": 1})),
    ("POST", f"{SET}/h", dumps({})),  # no verb: the library refuses it
    ("POST", f"{SET}/h", dumps({"add": ["x"], "remove": ["y"]})),  # both verbs
    ("POST", f"{SET}/h", dumps({"add": None})),
    ("POST", f"{SET}/h", dumps({"add": [1] * 20_000})),  # too_many_members
    ("POST", f"/api/replicas/{RID}/batch", dumps({"ops": [{"type": "kv", "key": "b", "value": 1}]})),
    ("POST", f"/api/replicas/{RID}/maps/m", dumps({"set": {"f": 1}})),  # another type: FastAPI's route
]


def test_valid_writes_take_the_fast_path_and_answer_as_fastapi_does(tmp_path, monkeypatch):
    _frozen_time(monkeypatch)
    taken = _taken(monkeypatch)

    async def main():
        async with _pair(tmp_path) as clients:
            for n, (method, path, body) in enumerate(VALID):
                status, _h, content = await _both(clients, n, method, path, body)
                assert status == 200, content
            # a context token from an answer, passed back: the same on both sides (frozen clocks)
            token = json.loads((await _both(clients, 100, "PUT", f"{KV}/ctx", dumps({"value": 1})))[2])["context"]
            status, _h, content = await _both(clients, 101, "PUT", f"{KV}/ctx", dumps({"value": 2, "context": token}))
            assert status == 200 and json.loads(content)["values"] == [2]

    run_async(main())
    assert len(taken) == len(VALID) + 2, taken


def test_hostile_writes_are_answered_as_fastapi_answers_them(tmp_path, monkeypatch):
    _frozen_time(monkeypatch)

    async def main():
        async with _pair(tmp_path) as clients:
            statuses = []
            for n, (method, path, body) in enumerate(HOSTILE):
                statuses.append((await _both(clients, n, method, path, body))[0])
            for n, headers in enumerate([
                {"content-type": "text/plain"},  # valid JSON, not sent as JSON: 415
                {},  # no content type at all
                {"content-type": "application/json; charset=utf-8"},  # fine: both take it
                {"content-type": "application/merge-patch+json"},
            ]):
                statuses.append((await _both(clients, 200 + n, "PUT", f"{KV}/ct", dumps({"value": n}), headers))[0])
        return statuses

    statuses = run_async(main())
    # the requests above must really be refused (else the list tests nothing hostile)
    assert sum(s >= 400 for s in statuses) >= len(HOSTILE) - 2, statuses


def test_idempotency_keys_replay_and_refuse_alike(tmp_path, monkeypatch):
    _frozen_time(monkeypatch)
    taken = _taken(monkeypatch)

    async def main():
        async with _pair(tmp_path) as clients:
            out = []
            steps = [
                ({"Idempotency-Key": "k1"}, f"{CNT}/i", {"add": 2}),  # applied
                ({"Idempotency-Key": "k1"}, f"{CNT}/i", {"add": 2}),  # replayed
                ({"Idempotency-Key": "k1"}, f"{CNT}/i", {"add": 3}),  # another request: 422
                ({"Idempotency-Key": "k2"}, f"{KV}/i", {"value": "v"}),
                ({"Idempotency-Key": "k2"}, f"{KV}/i", {"value": "v"}),
                ({"Idempotency-Key": "x" * 300}, f"{SET}/i", {"add": [1]}),  # invalid key: 400
                ({"Idempotency-Key": "tab\tin it"}, f"{SET}/i", {"add": [1]}),
                ({"Idempotency-Key": ""}, f"{SET}/i", {"add": [1]}),
                ({"Idempotency-Key": "k3"}, f"{KV}/i", {"value": "x" * (MAX_VALUE_BYTES + 1)}),  # error: no record
                ({"Idempotency-Key": "k3"}, f"{KV}/i", {"value": "ok now"}),
            ]
            for n, (hdr, path, body) in enumerate(steps):
                method = "PUT" if "/kv/" in path else "POST"
                out.append(await _both(clients, n, method, path, dumps(body), {**J, **hdr}))
            # the header twice: FastAPI's to decide
            twice = [("content-type", "application/json"), ("idempotency-key", "a"), ("idempotency-key", "b")]
            out.append(await _both(clients, 50, "POST", f"{CNT}/twice", dumps({"add": 1}), twice))
        return out

    out = run_async(main())
    assert [s for s, _h, _b in out[:3]] == [200, 200, 422]
    assert dict(out[1][1]).get("idempotent-replayed") == "true"
    assert [s for s, _h, _b in out[5:10]] == [400, 400, 400, 413, 200]
    assert len(taken) == 10, taken  # every step but the twice-keyed one


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Bearer write-token-123456", "Bearer admin-token-123456",
                                  "Basic " + "OndyaXRlLXRva2VuLTEyMzQ1Ng=="])
def test_tokens_are_checked_before_either_path(tmp_path, monkeypatch, auth):
    _frozen_time(monkeypatch)
    settings = Settings(host="127.0.0.1", token="write-token-123456", admin_token="admin-token-123456")

    async def main():
        async with _pair(tmp_path, settings) as clients:
            headers = {**J, **({"authorization": auth} if auth else {})}
            kv = await _both(clients, 1, "PUT", f"{KV}/t", dumps({"value": 1}), headers)
            cross = await _both(clients, 2, "POST", f"{CNT}/t", dumps({"add": 1}),
                                {**headers, "origin": "http://evil.example"})
            return kv[0], cross[0]

    kv, cross = run_async(main())
    assert kv == (401 if auth in (None, "Bearer wrong") else 200)
    assert cross == 403


def test_the_fast_path_reports_the_route_template_to_the_metrics(tmp_path, monkeypatch):
    _frozen_time(monkeypatch)

    async def main():
        async with _pair(tmp_path) as clients:
            for n, (method, path, body) in enumerate(VALID[:1] + VALID[8:9] + VALID[12:13]):
                await _both(clients, n, method, path, body)
            texts = [(await c.get("/metrics")).text for c in clients]
        return texts

    fast, slow = run_async(main())
    lines = lambda t: sorted(l for l in t.splitlines() if l.startswith("edgestate_http_requests_total{")
                             and "metrics" not in l)
    assert lines(fast) == lines(slow)
    assert any('route="/api/replicas/{replica_id}/kv/{key}"' in l for l in lines(fast)), lines(fast)
