"""Signing in from a browser (`POST`/`DELETE /api/session`, `app/web/sessions.py`): the cookie's
flags, what it grants on HTTP and `/ws`, wrong tokens and guessing, sign-out, tampering, and the
CSRF rule (a cookie-authorised change needs `X-Edgestate-CSRF: 1`)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from app.web.security import SESSION_COOKIE, Settings
from app.web.sessions import SIGN_IN_BURST
from live_helpers import FakeClock, is_error, ok, snapshot
from test_security import ADMIN, TOKEN, build

AUDIENCE = Settings(audience=True, admin_token=ADMIN)
CSRF = {"X-Edgestate-CSRF": "1"}
CUT = {"groups": [["lhr"], ["syd"]]}


def sign_in(client, token=ADMIN, **kw):
    return client.post("/api/session", json={"token": token}, **kw)


def set_cookie_header(r) -> str:
    [header] = [v for k, v in r.headers.multi_items() if k == "set-cookie"]
    return header


def test_signing_in_sets_a_strict_httponly_cookie_that_is_not_the_token():
    client, _ = build(AUDIENCE)
    r = sign_in(client)
    s = ok(r)
    assert s["can_admin"] is True and s["signed_in"] is True
    header = set_cookie_header(r)
    attrs = [a.strip().lower() for a in header.split(";")]
    name, _, value = header.split(";")[0].partition("=")
    assert name == SESSION_COOKIE
    assert ADMIN not in header and len(value) >= 40  # a random id of 256 bits, not the token
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs
    assert "max-age=43200" in attrs  # 12 hours
    assert "secure" not in attrs  # plain HTTP here; over HTTPS it is Secure (below)
    assert r.headers["cache-control"] == "no-store"


def test_over_https_the_cookie_is_secure():
    client, _ = build(AUDIENCE, base_url="https://testserver")
    assert "secure" in [a.strip().lower() for a in set_cookie_header(sign_in(client)).split(";")]


def test_the_cookie_grants_admin_on_http_and_the_page_sees_it():
    client, live = build(AUDIENCE)
    anon = TestClient(client.app)
    assert ok(anon.get("/api/session")) == {"can_write": True, "can_admin": False, "audience": True,
                                           "signed_in": False, "can_sign_in": True}
    is_error(anon.post("/api/faults/partition", json=CUT, headers=CSRF), 401, "unauthorized")
    ok(sign_in(client))
    assert ok(client.get("/api/session"))["can_admin"] is True
    assert ok(client.get("/api/session"))["signed_in"] is True
    assert not live.sim.partitioned
    ok(client.post("/api/faults/partition", json=CUT, headers=CSRF))
    assert live.sim.partitioned
    ok(client.delete("/api/faults/partition", headers=CSRF))
    assert not live.sim.partitioned


def test_the_cookie_grants_admin_on_the_websocket():
    client, _ = build(Settings(private=True, token=TOKEN, admin_token=ADMIN))
    with pytest.raises(WebSocketDenialResponse):
        with client.websocket_connect("/probe-ws"):
            pass
    ok(sign_in(client))
    with client.websocket_connect("/probe-ws") as ws:  # the cookie rides on the handshake
        assert ws.receive_json() == {"hello": "ws"}


def test_the_write_token_makes_a_session_that_writes_but_is_not_admin():
    client, _ = build(Settings(private=True, token=TOKEN, admin_token=ADMIN))
    s = ok(sign_in(client, TOKEN))
    assert (s["can_write"], s["can_admin"]) == (True, False)
    ok(client.get("/api/replicas"))  # private: the cookie lets a reader in
    ok(client.post("/api/replicas/lhr/counters/c", json={"add": 1}, headers=CSRF))
    is_error(client.post("/api/faults/partition", json=CUT, headers=CSRF), 401, "unauthorized")


@pytest.mark.parametrize("token", ["wrong-but-long-enough", "", ADMIN + "x", ADMIN[:-1]])
def test_a_wrong_token_is_401_and_sets_nothing(token):
    client, _ = build(AUDIENCE)
    r = sign_in(client, token)
    is_error(r, 401, "unauthorized")
    assert "set-cookie" not in r.headers
    assert ok(client.get("/api/session"))["can_admin"] is False


@pytest.mark.parametrize("kwargs, status, code", [
    ({"content": b'{"token": "x"}', "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
    ({"data": {"token": ADMIN}}, 415, "unsupported_media_type"),  # a form post, as a cross-site form would send
    ({"json": {"token": 5}}, 422, "invalid_body"),
    ({"json": {"token": ADMIN, "role": "root"}}, 422, "invalid_body"),
    ({"content": b"not json", "headers": {"Content-Type": "application/json"}}, 422, "invalid_body"),
])
def test_a_malformed_sign_in_is_refused_and_sets_nothing(kwargs, status, code):
    client, _ = build(AUDIENCE)
    r = client.post("/api/session", **kwargs)
    is_error(r, status, code)
    assert "set-cookie" not in r.headers


def test_guessing_is_bounded_per_address():
    wall = FakeClock()
    client, _ = build(AUDIENCE, wall_clock=wall, client=("10.0.0.9", 5000))
    for _ in range(SIGN_IN_BURST):
        is_error(sign_in(client, "guess-guess-guess"), 401, "unauthorized")
    r = sign_in(client, ADMIN)  # even the right token waits: the budget is per address, not per answer
    is_error(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1
    other = TestClient(client.app, client=("10.0.0.10", 5000))
    ok(sign_in(other))  # someone else's guesses do not lock the presenter out
    wall.advance(int(r.headers["retry-after"]))
    ok(sign_in(client))


def test_signing_out_clears_the_cookie_and_forgets_the_session():
    client, _ = build(AUDIENCE)
    ok(sign_in(client))
    stolen = client.cookies[SESSION_COOKIE]
    r = client.delete("/api/session", headers=CSRF)
    s = ok(r)
    assert s["signed_in"] is False and s["can_admin"] is False
    header = set_cookie_header(r).lower()
    assert header.startswith(SESSION_COOKIE + "=") and "max-age=0" in header
    assert SESSION_COOKIE not in client.cookies
    assert ok(client.get("/api/session"))["can_admin"] is False
    # a copy of the cookie taken before sign-out is dead too: the server forgot the session
    replay = TestClient(client.app, cookies={SESSION_COOKIE: stolen})
    assert ok(replay.get("/api/session"))["can_admin"] is False
    is_error(replay.post("/api/faults/partition", json=CUT, headers=CSRF), 401, "unauthorized")


@pytest.mark.parametrize("forge", [
    lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"),  # one character changed
    lambda v: v + "x",
    lambda v: "",
    lambda v: ADMIN,  # the raw token as a cookie is not a session
    lambda v: "admin",
])
def test_a_tampered_cookie_grants_nothing(forge):
    client, live = build(AUDIENCE)
    ok(sign_in(client))
    forged = TestClient(client.app, cookies={SESSION_COOKIE: forge(client.cookies[SESSION_COOKIE])})
    assert ok(forged.get("/api/session"))["can_admin"] is False
    before = snapshot(live)
    is_error(forged.post("/api/faults/partition", json=CUT, headers=CSRF), 401, "unauthorized")
    assert snapshot(live) == before


def test_sessions_expire_after_12_hours():
    wall = FakeClock()
    client, _ = build(AUDIENCE, wall_clock=wall)
    ok(sign_in(client))
    wall.advance(12 * 3600 - 1)
    assert ok(client.get("/api/session"))["can_admin"] is True
    wall.advance(1)
    assert ok(client.get("/api/session"))["can_admin"] is False


def test_sessions_are_bounded():
    client, _ = build(AUDIENCE)
    sessions = client.app.state.sessions
    for _ in range(sessions.max_sessions + 50):
        sessions.create("admin")
    assert len(sessions) == sessions.max_sessions


# -- CSRF --------------------------------------------------------------------------------------


def test_a_cookie_authorised_change_needs_the_csrf_header():
    client, live = build(AUDIENCE)
    ok(sign_in(client))
    before = snapshot(live)
    for method, path, body in [("POST", "/api/faults/partition", CUT), ("POST", "/api/reset", None),
                               ("POST", "/api/replicas/lhr/counters/c", {"add": 1})]:
        r = client.request(method, path, json=body)
        is_error(r, 403, "csrf_header_missing")
        assert "X-Edgestate-CSRF" in r.json()["error"]["message"]
    is_error(client.post("/api/faults/partition", json=CUT, headers={"X-Edgestate-CSRF": "0"}),
             403, "csrf_header_missing")
    assert snapshot(live) == before
    ok(client.get("/api/replicas"))  # reads need no header
    ok(client.post("/api/faults/partition", json=CUT, headers=CSRF))


def test_a_token_in_the_header_needs_no_csrf_header():
    client, _ = build(AUDIENCE)
    ok(client.post("/api/faults/partition", json=CUT, headers={"Authorization": f"Bearer {ADMIN}"}))


def test_signing_in_from_another_origin_is_refused():
    client, _ = build(AUDIENCE)
    r = sign_in(client, headers={"Origin": "http://evil.example"})
    is_error(r, 403, "origin_not_allowed")
    assert "set-cookie" not in r.headers
    ok(sign_in(client, headers={"Origin": "http://testserver"}))


def test_a_cookie_from_another_origin_changes_nothing():
    client, live = build(AUDIENCE)
    ok(sign_in(client))
    before = snapshot(live)
    r = client.post("/api/faults/partition", json=CUT, headers={**CSRF, "Origin": "http://evil.example"})
    is_error(r, 403, "origin_not_allowed")
    assert snapshot(live) == before
