"""The tap's lean path (`app.dashboard.join.lean`) answers exactly as the route does.

The same taps, ordinary and hostile, go to two servers on identical clusters: one answers ordinary
taps in the lean middleware, the other sends every tap through FastAPI's route. Every answer
(status, content type, body) and the clusters' states after each tap must be the same, and the
lean server must really have answered the ordinary taps itself (its route never ran for them).
Virtual time moves only by hand (`FakeClock`), so both clusters see the same instants."""

from __future__ import annotations

import pytest

import app.dashboard.join as join
from app.dashboard.join.lean import LeanTapMiddleware
from app.dashboard.join import talk
from live_helpers import make_client, make_live, snapshot
from replication.dissemination.plumtree import Plumtree  # noqa: F401  (the default strategy: same on both)

pytestmark = pytest.mark.timeout(120)

IDS = "lhr,fra,iad,sjc,gru,sin,nrt,syd"

TAPS = [
    ("fra", {"action": "vote"}),
    ("fra", {"action": "vote"}),
    ("lhr", {"action": "emoji", "value": "🎉"}),
    ("syd", {"action": "word", "value": "  hello  "}),
    ("syd", {"action": "word", "value": "<b>hi</b>"}),
    ("nrt", {"action": "vote", "value": None}),
    # refused by the route, whichever path: each must get the route's own answer
    ("fra", {"action": "vote", "value": "2"}),
    ("fra", {"action": "delete"}),
    ("fra", {"action": "vote", "extra": 1}),
    ("fra", {"action": "word", "value": 5}),
    ("fra", {"action": "word"}),
    ("fra", {"action": "word", "value": "x" * (talk.MAX_WORD_CHARS + 1)}),
    ("fra", {"action": "emoji", "value": "💩💩"}),
    ("fra", {}),
    ("fra", []),
    ("fra", "vote"),
    ("fra", {"action": True}),
    ("nowhere", {"action": "vote"}),
    ("fra%2Flhr", {"action": "vote"}),
    ("", {"action": "vote"}),
    ("pops", {"action": "vote"}),
]


def _route_calls(monkeypatch) -> list:
    """Counts the route's answers: `TapOut` is built by the route alone."""
    calls: list = []
    real = join.TapOut

    def counted(**kw):
        calls.append(kw)
        return real(**kw)

    monkeypatch.setattr(join, "TapOut", counted)
    return calls


def _answer(r) -> tuple:
    body = r.json()
    if isinstance(body, dict) and "answered_ms" in body:
        assert isinstance(body.pop("answered_ms"), float | int)  # the server's timing: not compared
    return r.status_code, r.headers["content-type"], body


def _post(client, pop: str, body, raw: bool = False):
    if raw:
        return client.post(f"/api/join/{pop}", content=body, headers={"content-type": "application/json"})
    return client.post(f"/api/join/{pop}", json=body)


def test_lean_and_route_answer_every_tap_alike_and_change_the_same(monkeypatch):
    calls = _route_calls(monkeypatch)
    lean_live, route_live = make_live(IDS), make_live(IDS)
    with make_client(lean_live) as lean, make_client(route_live) as route:
        route.app.user_middleware = [m for m in route.app.user_middleware if m.cls is not LeanTapMiddleware]
        route.app.middleware_stack = route.app.build_middleware_stack()
        assert any(m.cls is LeanTapMiddleware for m in lean.app.user_middleware)
        for n, (pop, body) in enumerate(TAPS):
            before = len(calls)
            a, b = _post(lean, pop, body), _post(route, pop, body)
            assert _answer(a) == _answer(b), (pop, body)
            if a.status_code == 200:  # the route ran for the route-only server alone
                assert len(calls) - before == 1, f"{pop} {body}: the lean server's route answered an ordinary tap"
            assert snapshot(lean_live) == snapshot(route_live), (pop, body)
            for live in (lean_live, route_live):
                live.step(7.0 + n)  # let the writes travel, alike on both
        # bodies the hygiene layer refuses or leaves unparsed (duplicate member, not JSON)
        for raw in (b'{"action": "vote", "action": "word"}', b"{nope", b""):
            assert _answer(_post(lean, "fra", raw, True)) == _answer(_post(route, "fra", raw, True)), raw
        assert snapshot(lean_live) == snapshot(route_live)
        # the access line and the request metrics name the route's template either way
        tapped = [line for line in lean.get("/metrics").text.splitlines()
                  if line.startswith("edgestate_http_requests_total") and 'status="200"' in line and "/api/join/" in line]
        routed = [line for line in route.get("/metrics").text.splitlines()
                  if line.startswith("edgestate_http_requests_total") and 'status="200"' in line and "/api/join/" in line]
        assert tapped == routed and any('route="/api/join/{replica_id}"' in line for line in tapped), tapped


def test_a_tap_at_a_crashed_replica_or_an_overloaded_network_gets_the_routes_error(monkeypatch):
    from app.dashboard import simulated

    lean_live, route_live = make_live(IDS), make_live(IDS)
    with make_client(lean_live) as lean, make_client(route_live) as route:
        route.app.user_middleware = [m for m in route.app.user_middleware if m.cls is not LeanTapMiddleware]
        route.app.middleware_stack = route.app.build_middleware_stack()
        for live in (lean_live, route_live):
            live.cluster.crash("sin")
        a, b = _post(lean, "sin", {"action": "vote"}), _post(route, "sin", {"action": "vote"})
        assert a.status_code >= 400 and _answer(a) == _answer(b)
        monkeypatch.setattr(simulated, "MAX_IN_FLIGHT", 0)
        a, b = _post(lean, "fra", {"action": "vote"}), _post(route, "fra", {"action": "vote"})
        assert a.status_code == 503 and _answer(a) == _answer(b)
        assert a.headers.get("retry-after") == b.headers.get("retry-after")
        assert snapshot(lean_live) == snapshot(route_live)
