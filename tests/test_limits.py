"""The request body limit (1 MiB), counted as bytes arrive, and the token buckets behind the
audience rate limit. Streaming cases call the ASGI app directly: the test client would read
a body in one piece and fix its Content-Length."""

from __future__ import annotations

import json

import pytest

from app.web.limits import TokenBuckets
from app.dashboard.server import create_app
from app.web.security import AccessMiddleware, Settings
from live_helpers import FakeClock, is_error, make_client, make_live, ok, run_async, snapshot

MiB = 1024 * 1024
KV = "/api/replicas/lhr/kv/k"


@pytest.fixture
def live():
    return make_live("lhr,syd")


def json_body_of_size(n: int) -> bytes:
    """A valid kv write padded with whitespace to exactly `n` bytes."""
    core = b'{"value": "v"}'
    return core[:-1] + b" " * (n - len(core)) + b"}"


def test_a_body_of_exactly_the_limit_is_accepted(live):
    client = make_client(live)
    body = json_body_of_size(MiB)
    assert len(body) == MiB
    r = client.put(KV, content=body, headers={"content-type": "application/json"})
    assert ok(r)["values"] == ["v"]


def test_a_body_one_byte_over_the_limit_is_413_and_changes_nothing(live):
    client = make_client(live)
    ok(client.put(KV, json={"value": "before"}))
    before = snapshot(live)
    r = client.put(KV, content=json_body_of_size(MiB + 1), headers={"content-type": "application/json"})
    err = is_error(r, 413, "body_too_large")
    assert "1 MiB" in err["message"]
    assert snapshot(live) == before


def test_the_limit_holds_for_every_path_even_unknown_ones(live):
    client = make_client(live)
    is_error(client.post("/api/nowhere", content=b"x" * (MiB + 10)), 413, "body_too_large")
    is_error(client.post("/api/faults/partition", content=b"[" * (MiB + 10),
                         headers={"content-type": "application/json"}), 413, "body_too_large")


def test_the_limit_is_a_setting(live):
    client = make_client(live, Settings(max_body_bytes=100))
    ok(client.put(KV, content=json_body_of_size(100), headers={"content-type": "application/json"}))
    is_error(client.put(KV, content=json_body_of_size(101), headers={"content-type": "application/json"}),
             413, "body_too_large")


# -- straight at the ASGI app: chunked bodies, no or lying Content-Length --------------------------


def call(app, method: str, path: str, chunks: list[bytes], headers: dict[str, str]):
    """Run one request through the ASGI app; returns (status, headers, body, chunks the app read)."""
    pending = list(chunks)
    read = 0
    sent: list[dict] = []

    async def receive():
        nonlocal read
        if pending:
            body = pending.pop(0)
            read += 1
            return {"type": "http.request", "body": body, "more_body": bool(pending)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 40000), "server": ("testserver", 80),
    }
    run_async(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict((k.decode(), v.decode()) for k, v in start["headers"]), body, read


JSON_H = {"host": "testserver", "content-type": "application/json"}


def test_a_chunked_body_without_content_length_is_counted_as_it_streams(live):
    app = create_app(live)
    before = snapshot(live)
    chunks = [b'{"value": "' + b"x" * 1000] + [b"x" * (64 * 1024)] * 20 + [b'"}']
    status, headers, body, _ = call(app, "PUT", KV, chunks, JSON_H)
    assert status == 413 and json.loads(body)["error"]["code"] == "body_too_large"
    assert headers["content-type"] == "application/json"
    assert snapshot(live) == before


def test_a_small_chunked_body_is_put_back_together(live):
    app = create_app(live)
    status, _, body, read = call(app, "PUT", KV, [b'{"val', b'ue": [1, ', b"2]}"], JSON_H)
    assert status == 200, body
    assert json.loads(body)["values"] == [[1, 2]] and read == 3


def test_a_lying_content_length_does_not_get_more_through(live):
    app = create_app(live)
    before = snapshot(live)
    chunks = [b'{"value": "'] + [b"y" * (256 * 1024)] * 5 + [b'"}']
    status, _, body, _ = call(app, "PUT", KV, chunks, {**JSON_H, "content-length": "20"})
    assert status == 413 and json.loads(body)["error"]["code"] == "body_too_large"
    assert snapshot(live) == before


def test_a_declared_length_over_the_limit_is_refused_without_reading_it_all(live):
    app = create_app(live)
    chunks = [b"z" * (MiB // 4)] * 40  # 10 MiB on its way
    status, headers, body, read = call(app, "PUT", KV, chunks, {**JSON_H, "content-length": str(10 * MiB)})
    assert status == 413 and json.loads(body)["error"]["code"] == "body_too_large"
    assert headers["connection"] == "close"
    assert read < len(chunks)  # a bounded amount is drained, then the connection is closed


def test_without_a_token_the_body_is_never_read(live):
    app = create_app(live, settings=Settings(token="write-token-0123456789"))

    async def receive():
        raise AssertionError("the body of a refused request was read")

    sent = []

    async def send(m):
        sent.append(m)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PUT", "scheme": "http",
             "path": KV, "raw_path": KV.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"host", b"testserver"), (b"content-length", b"2")],
             "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    run_async(app(scope, receive, send))
    assert sent[0]["status"] == 401


def test_a_websocket_denied_by_a_server_without_denial_responses_is_closed_before_accept():
    sent = []

    async def never(scope, receive, send):
        raise AssertionError("the app ran")

    async def receive():
        return {"type": "websocket.connect"}

    async def send(m):
        sent.append(m)

    mw = AccessMiddleware(never, Settings(token="write-token-0123456789", private=True))
    scope = {"type": "websocket", "path": "/ws", "headers": [(b"host", b"localhost:8000")], "query_string": b"",
             "client": ("127.0.0.1", 1), "server": ("localhost", 8000)}
    run_async(mw(scope, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": ""}]  # servers answer this with 403


# -- token buckets ----------------------------------------------------------------------------


def test_token_bucket_burst_then_rate():
    clock = FakeClock()
    b = TokenBuckets(rate=5, burst=10, clock=clock)
    assert [b.take("a") for _ in range(10)] == [0.0] * 10
    assert b.take("a") == pytest.approx(0.2)
    clock.advance(0.1)
    assert b.take("a") == pytest.approx(0.1)  # half a token back; a refusal does not spend it
    clock.advance(0.1)
    assert b.take("a") == 0.0
    assert b.take("b") == 0.0  # clients are separate


def test_token_buckets_forget_the_least_recently_seen_clients():
    clock = FakeClock()
    b = TokenBuckets(rate=1, burst=1, clock=clock, max_clients=3)
    for c in "abcde":
        b.take(c)
    assert len(b) == 3
    assert b.take("e") > 0  # remembered: still empty
    assert b.take("a") == 0.0  # forgotten: a full bucket, as an idle client would have
