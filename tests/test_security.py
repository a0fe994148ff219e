"""Access control: tokens for writes and for the admin controls, private mode, the Origin and Host
checks, audience mode. All of it lives in one ASGI middleware, so it also covers routes this
test adds itself (a WebSocket probe standing in for the dashboard's `/ws`)."""

from __future__ import annotations

import base64

import pytest
from fastapi import WebSocket
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from app.web import security
from app.dashboard.server import create_app
from app.web.security import Settings, grant, is_loopback, origin_matches
from live_helpers import FakeClock, is_error, make_live, ok, snapshot

TOKEN = "write-token-0123456789"
ADMIN = "admin-token-9876543210"
WRITE = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}


def build(settings: Settings, *, wall_clock=None, **client_kwargs):
    live = make_live("lhr,syd")
    app = create_app(live, settings=settings, wall_clock=wall_clock)

    async def probe(ws: WebSocket) -> None:  # a route the access middleware knows nothing about
        await ws.accept()
        await ws.send_json({"hello": "ws"})
        await ws.close()

    app.add_api_websocket_route("/probe-ws", probe)
    return TestClient(app, **client_kwargs), live


# every request that changes state, and what it needs
WRITES = [
    ("PUT", "/api/replicas/lhr/kv/k", {"value": 1}),
    ("DELETE", "/api/replicas/lhr/kv/k", None),
    ("POST", "/api/replicas/lhr/counters/c", {"add": 1}),
    ("POST", "/api/replicas/lhr/sets/s", {"add": ["x"]}),
    ("POST", "/api/not-a-route", {}),  # default deny: an unknown write is still a write
]
ADMINS = [
    ("POST", "/api/faults/partition", {"groups": [["lhr"]]}),
    ("DELETE", "/api/faults/partition", None),
    ("POST", "/api/replicas/syd/crash", None),
    ("POST", "/api/replicas/syd/recover", None),
    ("PUT", "/api/sim/strategy", {"strategy": "gossip"}),
    ("PUT", "/api/sim/speed", {"speed": 0.5}),
    ("PUT", "/api/sim/loss", {"loss": 0.1}),
    ("POST", "/api/sim/pause", None),
    ("POST", "/api/sim/resume", None),
    ("POST", "/api/sim/step", {"ms": 10}),
]
READS = ["/api/replicas/lhr/kv/k", "/api/replicas", "/api/topology", "/api/convergence", "/api/sim",
         "/api/session", "/api/coordination", "/metrics", "/docs", "/openapi.json"]


def send(client, method, path, body, headers=None):
    if body is None:
        return client.request(method, path, headers=headers)
    return client.request(method, path, json=body, headers=headers)


def unauthorized(r) -> None:
    is_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")


# -- the write token --------------------------------------------------------------------------


@pytest.mark.parametrize("method, path, body", WRITES, ids=[f"{m} {p}" for m, p, _ in WRITES])
def test_with_a_token_writes_need_it(method, path, body):
    client, live = build(Settings(token=TOKEN))
    before = snapshot(live)
    unauthorized(send(client, method, path, body))
    unauthorized(send(client, method, path, body, {"Authorization": "Bearer wrong-token-0123456789"}))
    assert snapshot(live) == before
    r = send(client, method, path, body, WRITE)
    assert r.status_code != 401, r.text
    if path.startswith("/api/replicas"):
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", READS)
def test_with_a_token_reads_stay_open(path):
    client, _ = build(Settings(token=TOKEN))
    ok(client.put("/api/replicas/lhr/kv/k", json={"value": 1}, headers=WRITE))
    assert client.get(path).status_code == 200


def test_with_a_token_the_websocket_stays_open():
    client, _ = build(Settings(token=TOKEN))
    with client.websocket_connect("/probe-ws") as ws:
        assert ws.receive_json() == {"hello": "ws"}


def test_a_refusal_says_nothing_that_helps_guess():
    client, _ = build(Settings(token=TOKEN, admin_token=ADMIN))
    path = "/api/replicas/lhr/kv/k"
    attempts = [
        None,
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},  # all but the last character
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN.upper()}"},
        {"Authorization": f"Token {TOKEN}"},
        {"Authorization": "Basic !!!not base64"},
        {"Authorization": "Basic " + base64.b64encode(b"user:nope").decode()},
    ]
    answers = {(r.status_code, r.text, r.headers["www-authenticate"])
               for r in (client.put(path, json={"value": 1}, headers=h) for h in attempts)}
    assert len(answers) == 1, answers
    status, text, _ = answers.pop()
    assert status == 401 and TOKEN not in text and ADMIN not in text


def test_tokens_are_compared_in_constant_time(monkeypatch):
    calls = []
    real = security.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    client, _ = build(Settings(token=TOKEN, admin_token=ADMIN))
    unauthorized(client.put("/api/replicas/lhr/kv/k", json={"value": 1}, headers={"Authorization": "Bearer guess"}))
    assert (b"guess", TOKEN.encode()) in calls and (b"guess", ADMIN.encode()) in calls


def test_the_token_can_be_the_password_of_basic_credentials():
    client, _ = build(Settings(token=TOKEN))
    basic = {"Authorization": "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()}
    ok(client.put("/api/replicas/lhr/kv/k", json={"value": 1}, headers=basic))


# -- the admin token ------------------------------------------------------------------------


@pytest.mark.parametrize("method, path, body", ADMINS, ids=[f"{m} {p}" for m, p, _ in ADMINS])
def test_admin_controls_need_the_admin_token(method, path, body):
    client, live = build(Settings(token=TOKEN, admin_token=ADMIN))
    before = snapshot(live)
    unauthorized(send(client, method, path, body))
    unauthorized(send(client, method, path, body, WRITE))  # the write token is not enough
    assert snapshot(live) == before
    ok(send(client, method, path, body, ADMIN_H))


@pytest.mark.parametrize("method, path, body", ADMINS, ids=[f"{m} {p}" for m, p, _ in ADMINS])
def test_with_only_a_write_token_the_admin_controls_are_off(method, path, body):
    client, live = build(Settings(token=TOKEN))
    before = snapshot(live)
    err = is_error(send(client, method, path, body, WRITE), 403, "admin_disabled")
    assert "--admin-token" in err["message"]
    assert snapshot(live) == before


def test_the_admin_token_also_writes():
    client, _ = build(Settings(token=TOKEN, admin_token=ADMIN))
    ok(client.put("/api/replicas/lhr/kv/k", json={"value": 1}, headers=ADMIN_H))


def test_an_admin_token_alone_guards_only_the_admin_controls():
    client, _ = build(Settings(host="127.0.0.1", admin_token=ADMIN), base_url="http://localhost:8000")
    ok(client.put("/api/replicas/lhr/kv/k", json={"value": 1}))
    unauthorized(client.post("/api/sim/pause"))
    ok(client.post("/api/sim/pause", headers=ADMIN_H))


@pytest.mark.parametrize(
    "settings, headers, expected",
    [
        (Settings(), None, (True, True)),
        (Settings(token=TOKEN), None, (False, False)),
        (Settings(token=TOKEN), WRITE, (True, False)),
        (Settings(token=TOKEN, admin_token=ADMIN), WRITE, (True, False)),
        (Settings(token=TOKEN, admin_token=ADMIN), ADMIN_H, (True, True)),
        (Settings(token=TOKEN, admin_token=ADMIN), {"Authorization": "Bearer wrong-but-long-enough"}, (False, False)),
        (Settings(audience=True), None, (True, False)),
        (Settings(audience=True, admin_token=ADMIN), ADMIN_H, (True, True)),
        (Settings(audience=True, token=TOKEN, admin_token=ADMIN), WRITE, (True, False)),
    ],
)
def test_session_tells_the_page_what_the_caller_may_do(settings, headers, expected):
    client, _ = build(settings)
    s = ok(client.get("/api/session", headers=headers))
    assert (s["can_write"], s["can_admin"]) == expected
    assert s["audience"] is settings.audience


# -- private mode ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", READS + ["/", "/static/app.js", "/anything"])
def test_private_mode_closes_reads_the_page_and_docs(path):
    client, _ = build(Settings(token=TOKEN, admin_token=ADMIN, private=True))
    unauthorized(client.get(path))
    for h in (WRITE, ADMIN_H):
        assert client.get(path, headers=h).status_code != 401


def test_private_mode_keeps_healthz_open():
    client, _ = build(Settings(token=TOKEN, private=True))
    assert ok(client.get("/healthz"))["status"] == "ok"


def test_a_page_load_that_needs_a_token_gets_a_basic_challenge_too():
    client, _ = build(Settings(token=TOKEN, private=True))
    r = client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    challenges = r.headers.get_list("www-authenticate")
    assert r.status_code == 401
    assert challenges[0].startswith("Bearer") and any(c.startswith("Basic") for c in challenges)
    assert client.get("/api/replicas").headers.get_list("www-authenticate") == [f'Bearer realm="{security.REALM}"']


def test_private_websocket_needs_a_token_before_the_handshake_is_accepted():
    client, _ = build(Settings(token=TOKEN, private=True))
    with pytest.raises(WebSocketDenialResponse) as denied:
        with client.websocket_connect("/probe-ws"):
            pass
    assert denied.value.status_code == 401
    assert denied.value.json()["error"]["code"] == "unauthorized"
    with pytest.raises(WebSocketDenialResponse):
        with client.websocket_connect("/probe-ws?access_token=wrong-token-0123456789"):
            pass
    with client.websocket_connect("/probe-ws", headers=dict(WRITE)) as ws:
        assert ws.receive_json() == {"hello": "ws"}
    with client.websocket_connect(f"/probe-ws?access_token={TOKEN}") as ws:  # browsers cannot set headers
        assert ws.receive_json() == {"hello": "ws"}


def test_access_token_in_the_query_is_only_for_websockets():
    client, _ = build(Settings(token=TOKEN, private=True))
    unauthorized(client.get(f"/api/replicas?access_token={TOKEN}"))


# -- Origin and Host ------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://testserver:8080", "https://testserver.evil.example",
                                    "file://", "chrome-extension://abc"])
def test_websocket_from_another_origin_is_refused(origin):
    client, _ = build(Settings())
    with pytest.raises(WebSocketDenialResponse) as denied:
        with client.websocket_connect("/probe-ws", headers={"Origin": origin}):
            pass
    assert denied.value.status_code == 403
    assert denied.value.json()["error"]["code"] == "origin_not_allowed"


@pytest.mark.parametrize("headers", [{}, {"Origin": "http://testserver"}, {"Origin": "https://TestServer"}])
def test_websocket_from_this_origin_or_no_browser_is_accepted(headers):
    client, _ = build(Settings())
    with client.websocket_connect("/probe-ws", headers=headers) as ws:
        assert ws.receive_json() == {"hello": "ws"}


def test_cross_site_requests_cannot_change_anything():
    client, live = build(Settings())
    before = snapshot(live)
    evil = {"Origin": "http://evil.example"}
    is_error(client.post("/api/sim/pause", headers=evil), 403, "origin_not_allowed")
    is_error(client.post("/api/replicas/lhr/counters/c", json={"add": 1}, headers=evil), 403, "origin_not_allowed")
    assert snapshot(live) == before
    assert client.get("/api/sim", headers=evil).status_code == 200  # reading is harmless
    ok(client.post("/api/sim/pause", headers={"Origin": "http://testserver"}))


def test_origin_matching_rules():
    assert origin_matches("http://localhost:8000", ("localhost", "8000"))
    assert origin_matches("https://demo.example", ("demo.example", None))
    assert origin_matches("http://[::1]:8000", ("[::1]", "8000"))
    assert not origin_matches("http://localhost:8001", ("localhost", "8000"))
    assert not origin_matches("http://localhost", ("localhost", "8000"))
    assert not origin_matches("null", ("localhost", "8000"))
    assert not origin_matches("http://localhost:8000", None)


def test_an_open_loopback_server_answers_only_loopback_host_names():
    # a page elsewhere can point its own name at 127.0.0.1 (DNS rebinding); with no token, refuse it
    settings = Settings(host="127.0.0.1")
    rebound, live = build(settings, base_url="http://evil.example:8000")
    is_error(rebound.get("/api/replicas"), 403, "host_not_allowed")
    is_error(rebound.post("/api/sim/pause"), 403, "host_not_allowed")
    assert not live.paused
    assert rebound.get("/healthz").status_code == 200
    for base in ("http://localhost:8000", "http://127.0.0.1:8000", "http://[::1]:8000"):
        local, _ = build(settings, base_url=base)
        ok(local.get("/api/replicas"))
    with_token, _ = build(Settings(host="127.0.0.1", token=TOKEN), base_url="http://demo.example")
    ok(with_token.get("/api/replicas"))


def test_loopback_names():
    for h in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST.", "app.localhost"):
        assert is_loopback(h), h
    for h in ("0.0.0.0", "::", "10.0.0.1", "example.com", "localhost.example.com", ""):
        assert not is_loopback(h), h


# -- settings checked at start ----------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, words",
    [
        (Settings(host="0.0.0.0"), ["--token"]),
        (Settings(host="192.168.1.5", admin_token=ADMIN), ["--token"]),
        (Settings(private=True), ["--private", "--token"]),
        (Settings(token=TOKEN, admin_token=TOKEN), ["--admin-token", "differ"]),
        (Settings(token="has space"), ["--token"]),
        (Settings(token=""), ["--token"]),
        (Settings(admin_token="tab\there"), ["--admin-token"]),
    ],
)
def test_settings_that_would_leave_a_hole_are_refused(settings, words):
    assert settings.problems()
    with pytest.raises(ValueError) as e:
        create_app(make_live("lhr"), settings=settings)
    for w in words:
        assert w in str(e.value)


def test_non_loopback_with_a_token_is_fine():
    assert Settings(host="0.0.0.0", token=TOKEN).problems() == []


def test_grant_is_never_weaker_for_admin_than_for_writes():
    for s in (Settings(), Settings(token=TOKEN), Settings(admin_token=ADMIN), Settings(token=TOKEN, admin_token=ADMIN),
              Settings(audience=True), Settings(token=TOKEN, private=True)):
        for presented in (None, "", TOKEN, ADMIN, "other-token-0123456789"):
            a = grant(s, presented)
            assert not a.admin or a.write, (s, presented)
            assert not a.write or a.read, (s, presented)


# -- audience mode ----------------------------------------------------------------------------


def test_audience_writes_are_rate_limited_per_client_with_retry_after():
    wall = FakeClock()
    client, live = build(Settings(audience=True), wall_clock=wall, client=("10.0.0.1", 5000))
    for i in range(10):  # the burst
        ok(client.post("/api/replicas/lhr/counters/c", json={"add": 1}))
    before = snapshot(live)
    r = client.post("/api/replicas/lhr/counters/c", json={"add": 1})
    err = is_error(r, 429, "rate_limited")
    assert r.headers["retry-after"] == "1" and "5" in err["message"]
    assert snapshot(live) == before
    for _ in range(20):  # reads are not limited
        ok(client.get("/api/replicas/lhr/counters/c"))

    other = TestClient(client.app, client=("10.0.0.2", 5000))  # another phone in the room
    ok(other.post("/api/replicas/lhr/counters/c", json={"add": 1}))

    wall.advance(0.2)  # 5 per second: one more token
    ok(client.post("/api/replicas/lhr/counters/c", json={"add": 1}))
    is_error(client.post("/api/replicas/lhr/counters/c", json={"add": 1}), 429, "rate_limited")
    wall.advance(10)  # the bucket refills to the burst, no further
    for _ in range(10):
        ok(client.post("/api/replicas/lhr/counters/c", json={"add": 1}))
    is_error(client.post("/api/replicas/lhr/counters/c", json={"add": 1}), 429, "rate_limited")
    assert ok(client.get("/api/replicas/lhr/counters/c"))["value"] == 22


def test_retry_after_is_whole_seconds_rounded_up():
    wall = FakeClock()
    client, _ = build(Settings(audience=True, write_rate=0.3, write_burst=1), wall_clock=wall)
    ok(client.put("/api/replicas/lhr/kv/k", json={"value": 1}))
    r = client.put("/api/replicas/lhr/kv/k", json={"value": 2})
    assert r.status_code == 429 and r.headers["retry-after"] == "4"  # 1 / 0.3 = 3.33 s


def test_audience_mode_hides_and_closes_the_admin_controls_without_the_admin_token():
    client, live = build(Settings(audience=True))
    s = ok(client.get("/api/session"))
    assert s == {"can_write": True, "can_admin": False, "audience": True, "signed_in": False, "can_sign_in": False}
    is_error(client.post("/api/sim/pause"), 403, "admin_disabled")
    assert not live.paused


# -- scenarios: running one is an admin control; the list and a run's progress are reads ---------


@pytest.mark.parametrize("method, path, need", [
    ("POST", "/api/scenarios/hello-world", "admin"),
    ("POST", "/api/scenarios/../faults/partition", "admin"),
    ("GET", "/api/scenarios", "read"),
    ("GET", "/api/scenarios/runs/1", "read"),
    ("DELETE", "/api/scenarios/runs/1", "admin"),
])
def test_what_scenarios_need(method, path, need):
    assert security.need_of({"type": "http", "method": method, "path": path}) == need


def test_starting_a_scenario_needs_the_admin_token():
    client, live = build(Settings(token=TOKEN, admin_token=ADMIN))
    with client:
        before = snapshot(live)
        unauthorized(client.post("/api/scenarios/hello-world"))
        unauthorized(client.post("/api/scenarios/hello-world", headers=WRITE))  # the write token is not enough
        assert snapshot(live) == before and ok(client.get("/api/scenarios"))["running"] is None
        assert ok(client.get("/api/scenarios", headers=WRITE))["scenarios"]  # reading the list is not
        r = client.post("/api/scenarios/hello-world", headers=ADMIN_H)
        assert r.status_code == 202, r.text


@pytest.mark.parametrize("settings", [Settings(token=TOKEN), Settings(audience=True)], ids=["token", "audience"])
def test_without_an_admin_token_scenarios_are_off(settings):
    client, live = build(settings)
    before = snapshot(live)
    err = is_error(client.post("/api/scenarios/hello-world", headers=WRITE), 403, "admin_disabled")
    assert "--admin-token" in err["message"]
    assert snapshot(live) == before


def test_the_presenter_with_the_admin_token_is_not_rate_limited():
    wall = FakeClock()
    client, _ = build(Settings(audience=True, token=TOKEN, admin_token=ADMIN), wall_clock=wall)
    for _ in range(30):
        ok(client.post("/api/replicas/lhr/counters/c", json={"add": 1}, headers=ADMIN_H))
    assert ok(client.get("/api/session", headers=ADMIN_H))["can_admin"] is True
    for _ in range(10):
        ok(client.post("/api/replicas/lhr/counters/c", json={"add": 1}, headers=WRITE))
    is_error(client.post("/api/replicas/lhr/counters/c", json={"add": 1}, headers=WRITE), 429, "rate_limited")


def test_without_audience_mode_there_is_no_rate_limit():
    client, _ = build(Settings(), wall_clock=FakeClock())
    for _ in range(30):
        ok(client.post("/api/replicas/lhr/counters/c", json={"add": 1}))


def test_refused_writes_do_not_spend_the_rate_budget_of_others():
    wall = FakeClock()
    client, _ = build(Settings(audience=True, token=TOKEN, admin_token=ADMIN), wall_clock=wall)
    for _ in range(30):  # no token: refused before the rate limit is consulted
        unauthorized(client.post("/api/replicas/lhr/counters/c", json={"add": 1}))
    ok(client.post("/api/replicas/lhr/counters/c", json={"add": 1}, headers=WRITE))


# -- log hygiene ----------------------------------------------------------------------------


def test_query_tokens_are_redacted_from_logs():
    import logging

    rec = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                            '%s - "%s %s HTTP/%s" %d', ("1.2.3.4:5", "GET", f"/ws?x=1&access_token={TOKEN}&y=2",
                                                       "1.1", 101), None)
    assert security.RedactTokens().filter(rec)
    assert TOKEN not in rec.getMessage() and "access_token=REDACTED&y=2" in rec.getMessage()
