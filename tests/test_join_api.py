"""`/join`'s server side in-process: the time zone -> nearest POP mapping, the taps (what they
write, what they refuse and that a refused tap changes nothing), the journey on `/ws/join`, the
QR code's URL and `--public-url`'s checks.

Virtual time moves only when a test says so (`FakeClock`), so "the write is not everywhere
yet" is set up, never raced."""

from __future__ import annotations

import re

import orjson
import pytest

from app.cli import main as cli_main
from app.dashboard.join import CSP, talk, zones
from app.dashboard.join.qr import check_public_url, join_url, qr_svg
from app.dashboard.server import create_app
from fastapi.testclient import TestClient
from live_helpers import FakeClock, is_error, make_client, make_live, ok, snapshot
from replication.geo import place_replicas, select_pops

pytestmark = pytest.mark.timeout(120)

IDS = "lhr,fra,iad,sjc,gru,sin,nrt,syd"


# -- time zone -> POP ------------------------------------------------------------------------


@pytest.mark.parametrize("tz,offset,want", [
    ("Europe/Berlin", 60, "fra"),
    ("Europe/London", 0, "lhr"),
    ("America/New_York", -300, "iad"),
    ("America/Los_Angeles", -480, "sjc"),
    ("America/Sao_Paulo", -180, "gru"),
    ("Asia/Tokyo", 540, "nrt"),
    ("Australia/Sydney", 600, "syd"),
    ("Asia/Singapore", 480, "sin"),
    # not in the table: the area's latitude and the offset's longitude
    ("Europe/Vilnius", 120, "fra"),
    ("Asia/Yakutsk", 540, "nrt"),
    ("America/Cayenne", -180, "gru"),
    # no area: the offset alone
    ("Etc/GMT-9", 540, "nrt"),
    ("UTC", 0, "lhr|fra"),
    (None, -480, "sjc"),
])
def test_time_zone_picks_the_nearest_pop(tz, offset, want):
    placements = place_replicas(select_pops(IDS))
    assert zones.nearest(placements, tz, offset)[0].id in want.split("|")


def test_known_zone_wins_over_the_offset_and_nonsense_is_no_guess():
    placements = place_replicas(select_pops(IDS))
    # a zone in the table is its city, whatever offset (summer time) is sent with it
    assert zones.nearest(placements, "Europe/London", 60)[0].id == "lhr"
    for tz in ("", "../../etc/passwd", "x" * 500, "<script>", "Mars/Olympus"):
        assert zones.zone_point(tz, None) is None
    assert zones.zone_point(None, 99999) is None  # an offset out of range is ignored
    assert [p.id for p in zones.nearest(placements, None, None)] == IDS.split(",")  # no guess: the list's order


def test_every_pop_city_zone_maps_to_its_own_pop():
    """Each zone named for a POP's city picks that POP among all POPs (the table is right)."""
    cities = {"Europe/London": "lhr", "Europe/Paris": "cdg", "Europe/Madrid": "mad", "Asia/Tokyo": "nrt",
              "Asia/Singapore": "sin", "Africa/Johannesburg": "jnb", "Africa/Lagos": "los",
              "America/Chicago": "ord", "America/Mexico_City": "mex", "Pacific/Auckland": "akl"}
    placements = place_replicas(select_pops("all"))
    for tz, pop in cities.items():
        assert zones.nearest(placements, tz)[0].id == pop, tz


def test_pops_endpoint_orders_by_distance():
    with make_client(make_live(IDS)) as client:
        r = ok(client.get("/api/join/pops", params={"tz": "Asia/Tokyo", "offset": 540}))
        assert r["nearest"] == "nrt" and r["pops"][0]["city"] == "Tokyo"
        ids = [p["id"] for p in r["pops"]]
        assert sorted(ids) == sorted(IDS.split(",")) and ids.index("sin") < ids.index("lhr") < ids.index("sjc") \
            or ids.index("sin") < ids.index("fra")
        assert ok(client.get("/api/join/pops"))["nearest"] is None
        assert client.get("/api/join/pops", params={"offset": 100000}).status_code == 422
        assert client.get("/api/join/pops", params={"tz": "x" * 100}).status_code == 422


# -- taps ---------------------------------------------------------------------------------------


def test_vote_emoji_and_word_write_the_talk_keys():
    live = make_live(IDS)
    with make_client(live) as client:
        r = ok(client.post("/api/join/fra", json={"action": "vote"}))
        assert r["replica"] == "fra" and r["city"] == "Frankfurt" and r["value"] == 1
        assert re.match(r"^.+:\d+$", r["id"]) and r["answered_ms"] >= 0
        assert ok(client.post("/api/join/fra", json={"action": "emoji", "value": "🎉"}))["value"] == ["🎉"]
        assert ok(client.post("/api/join/fra", json={"action": "word", "value": "  hello  "}))["value"] == ["hello"]
        assert ok(client.get("/api/replicas/fra/counters/votes"))["value"] == 1
        assert ok(client.get("/api/replicas/fra/sets/audience-emoji"))["members"] == ["🎉"]
        assert ok(client.get("/api/replicas/fra/kv/audience-word"))["values"] == ["hello"]


@pytest.mark.parametrize("body,status,code", [
    ({"action": "word", "value": "x" * (talk.MAX_WORD_CHARS + 1)}, 422, "word_too_long"),
    ({"action": "word", "value": "bad\x00word"}, 422, "invalid_word"),
    ({"action": "word", "value": "line\nbreak"}, 422, "invalid_word"),
    ({"action": "word", "value": "zero\u200bwidth"}, 422, "invalid_word"),
    ({"action": "word", "value": "rtl\u202eflip"}, 422, "invalid_word"),
    ({"action": "word", "value": "   "}, 422, "invalid_word"),
    ({"action": "word"}, 422, "invalid_word"),
    ({"action": "emoji", "value": "💩💩"}, 422, "invalid_emoji"),
    ({"action": "emoji", "value": "<img src=x onerror=alert(1)>"}, 422, "invalid_emoji"),
    ({"action": "vote", "value": "2"}, 422, "invalid_operation"),
    ({"action": "delete"}, 422, "invalid_request"),
    ({"action": "vote", "extra": 1}, 422, "invalid_request"),
    ({"action": "word", "value": 5}, 422, "invalid_request"),
])
def test_hostile_taps_are_refused_and_change_nothing(body, status, code):
    live = make_live(IDS)
    with make_client(live) as client:
        before = snapshot(live)
        r = client.post("/api/join/fra", json=body)
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert set(err) == {"code", "message"} and err["message"]
        if code != "invalid_request":
            assert err["code"] == code
        assert snapshot(live) == before


def test_unknown_replica_is_404_and_html_word_is_kept_as_text():
    live = make_live(IDS)
    with make_client(live) as client:
        is_error(client.post("/api/join/nowhere", json={"action": "vote"}), 404, "unknown_replica")
        word = "<b>hi</b>"
        assert ok(client.post("/api/join/lhr", json={"action": "word", "value": word}))["value"] == [word]


def test_join_page_has_a_strict_csp_and_no_inline_script():
    with make_client(make_live(IDS)) as client:
        r = client.get("/join")
        assert r.status_code == 200 and r.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        html = r.text
        assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None  # no inline script
        assert re.search(r"\son[a-z]+=", html) is None  # no inline event handlers


# -- the join stream ------------------------------------------------------------------------------


class Phone:
    """What a phone knows from the stream so far: the latest totals and each journey's latest."""

    def __init__(self, ws) -> None:
        self.ws, self.totals, self.journeys, self.w = ws, {}, {}, None

    def until(self, cond, limit: int = 200):
        """Read messages until `cond(self)` holds (the stream sends at least one message per
        change, so a condition that never comes ends the test with the pytest timeout)."""
        for _ in range(limit):
            if cond(self):
                return
            msg = orjson.loads(self.ws.receive_text())
            self.w = msg["w"]
            self.totals = msg.get("totals", self.totals)
            for j in msg.get("journeys", ()):
                self.journeys[j["id"]] = j
        raise AssertionError("the condition never came on the stream")


def test_stream_carries_totals_and_this_phones_journey():
    clock = FakeClock()
    live = make_live(IDS, clock=clock)
    with make_client(live) as client, client.websocket_connect("/ws/join") as ws:
        phone = Phone(ws)
        r = ok(client.post("/api/join/fra", json={"action": "vote"}))
        ws.send_text(orjson.dumps({"watch": r["id"]}).decode())
        phone.until(lambda p: r["id"] in p.journeys)
        j = phone.journeys[r["id"]]
        assert j["origin"] == "fra" and j["of"] == 8 and 1 <= j["reached"] < 8 and "everywhere_ms" not in j
        clock.advance(2.0)  # two seconds of virtual time: the write reaches every POP
        live.catch_up()
        phone.until(lambda p: "everywhere_ms" in p.journeys[r["id"]])
        j = phone.journeys[r["id"]]
        assert j["reached"] == j["of"] == 8 and 0 < j["everywhere_ms"] < 2000
        phone.until(lambda p: p.totals.get("votes") == 1)
        assert phone.totals["replica"] == "lhr" and isinstance(phone.w, int)
        # a watch of a write the server does not know is answered as unknown; a malformed one is ignored
        ws.send_text(orjson.dumps({"watch": 12}).decode())
        ws.send_text("not json")
        ws.send_text(orjson.dumps({"watch": "lhr:999999"}).decode())
        phone.until(lambda p: p.journeys.get("lhr:999999", {}).get("unknown"))
        hub = client.app.state.join_hub
        assert r["id"] not in hub.watchers  # a finished journey is no longer followed


def test_the_hub_forgets_a_phones_writes_when_it_leaves_and_ticks_look_only_at_moved_writes():
    import asyncio

    from app.dashboard.join.stream import FULL_PASS_EVERY, JoinHub
    from live_helpers import run_async

    clock = FakeClock()
    live = make_live(IDS, clock=clock)

    async def go():
        hub = JoinHub(live, period_s=3600)
        c = hub.connect()
        await asyncio.sleep(0)
        await live.awrite("fra", "counters", "votes", {"add": 1})
        w = hub.latest_write("fra", "counters", "votes")
        hub.watch(c, w.id)
        assert hub.watchers == {w.id: {c}}
        looked = []
        real = hub._journey
        hub._journey = lambda c_, wid, up: looked.append(wid) or real(c_, wid, up)
        while hub._ticks % FULL_PASS_EVERY == FULL_PASS_EVERY - 1:  # not a full pass next
            await hub.tick()
        hub._up_before = hub._up()
        await hub.tick()  # nothing arrived since: nothing looked at
        assert looked == []
        while hub._ticks % FULL_PASS_EVERY == FULL_PASS_EVERY - 1:  # the next tick is not a full pass
            await hub.tick()
        looked.clear()
        clock.advance(0.05)
        live.catch_up()  # arrivals
        assert w.id in hub.moved
        await hub.tick()
        assert looked == [w.id]
        hub.disconnect(c)
        assert hub.watchers == {}
        hub._task.cancel()

    run_async(go())


def test_stream_messages_are_at_most_four_a_second_and_totals_once_a_second():
    """Whatever the number of writes, the hub sends a phone one message per period, and the
    totals in one tick of TOTALS_EVERY: counted over ticks, not wall time (the hub's `tick` is
    driven here by hand)."""
    import asyncio

    from app.dashboard.join.stream import TOTALS_EVERY, JoinHub

    live = make_live(IDS)

    async def go():
        hub = JoinHub(live, period_s=3600)  # the hub's own loop ticks once, at once, then sleeps
        c = hub.connect()
        deadline = asyncio.get_running_loop().time() + 30.0
        while hub._ticks == 0 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.001)
        assert c.take() is not None  # the totals as they were when it joined

        async def a_second_of_ticks():
            for _ in range(TOTALS_EVERY - 1):  # within the second: no totals
                await hub.tick()
                assert c.take() is None
            await hub.tick()
            return c.take()

        for _ in range(50):
            await live.awrite("lhr", "counters", "votes", {"add": 1})
        first = await a_second_of_ticks()
        for _ in range(50):
            await live.awrite("lhr", "counters", "votes", {"add": 1})
        second = await a_second_of_ticks()
        assert c.take() is None  # everything waiting went in one message: no backlog
        hub.disconnect(c)
        hub._task.cancel()
        return orjson.loads(first), orjson.loads(second)

    from live_helpers import run_async

    a, b = run_async(go())
    assert a["totals"]["votes"] == 50 and b["totals"]["votes"] == 100


# -- QR and --public-url ---------------------------------------------------------------------


def test_qr_encodes_the_host_it_was_reached_at_or_the_public_url():
    live = make_live(IDS)
    with make_client(live) as client:
        r = client.get("/join/qr.svg")
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
        assert r.content == qr_svg("http://testserver/join")
        assert ok(client.get("/api/join/info"))["url"] == "http://testserver/join"
    app = create_app(make_live(IDS), public_url=check_public_url("https://talk.example.org"))
    with TestClient(app) as client:
        assert ok(client.get("/api/join/info"))["url"] == "https://talk.example.org/join"
        assert client.get("/join/qr.svg").content == qr_svg("https://talk.example.org/join")


@pytest.mark.parametrize("url", ["ftp://x.org", "talk.example.org", "http://", "javascript:alert(1)",
                                 "http://a b.org", "http://user:pw@x.org/", "http://x.org:99999/", "x" * 600])
def test_public_url_is_checked(url, capsys):
    with pytest.raises(ValueError):
        check_public_url(url)
    assert cli_main(["serve", "--public-url", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgestate serve: error: --public-url") and err.count("\n") == 1


def test_public_url_keeps_a_path_and_adds_join_to_a_bare_host():
    assert check_public_url("https://x.org") == "https://x.org/join"
    assert check_public_url("https://x.org/") == "https://x.org/join"
    assert check_public_url("http://10.0.0.5:8000/join?room=1") == "http://10.0.0.5:8000/join?room=1"
    assert join_url(None, "https", "hall.local:8443") == "https://hall.local:8443/join"


def test_a_phone_that_does_not_read_is_dropped_and_the_others_keep_their_stream():
    """A phone whose send never completes (its socket's buffers full) is dropped once a send has
    waited the deadline; the other phone keeps getting messages and the server keeps answering."""
    import asyncio

    from app.dashboard.join.stream import JoinHub
    from live_helpers import run_async

    class Stuck:
        async def send_text(self, data):
            await asyncio.Event().wait()  # never returns: the client does not read

    class Reads:
        def __init__(self):
            self.got = []

        async def send_text(self, data):
            self.got.append(orjson.loads(data))

    live = make_live(IDS)

    async def go():
        hub = JoinHub(live, period_s=0.02, send_deadline_s=0.2)
        stuck, good = hub.connect(), hub.connect()
        reads = Reads()
        stuck.sender = asyncio.create_task(stuck.run(Stuck()))
        good.sender = asyncio.create_task(good.run(reads))
        n = 0
        deadline = asyncio.get_running_loop().time() + 30
        while not stuck.dropped:
            assert asyncio.get_running_loop().time() < deadline, "the phone that does not read was never dropped"
            n += 1
            await live.awrite("lhr", "counters", "votes", {"add": 1})  # the server still answers writes
            await asyncio.sleep(0.02)
        assert stuck not in hub.clients and hub.dropped_clients == 1
        await asyncio.wait({stuck.sender}, timeout=5)
        assert stuck.sender.cancelled()  # its sender was cancelled mid-send: nothing waits on it
        await live.awrite("lhr", "counters", "votes", {"add": 1})
        n += 1
        while not reads.got or reads.got[-1].get("totals", {}).get("votes") != n:
            assert asyncio.get_running_loop().time() < deadline, "the reading phone stopped getting totals"
            await asyncio.sleep(0.02)
        hub.disconnect(good)
        await asyncio.wait_for(good.sender, 5)
        return n

    assert run_async(go()) > 0


def test_the_join_stream_wakes_its_phones_a_group_per_loop_turn():
    """A hall's phones woken in one loop turn would hold the loop for tens of milliseconds: a
    tick wakes WAKE_GROUP of them per turn."""
    import asyncio

    from app.dashboard.join import stream as streammod

    live = make_live(IDS)
    n = 3 * streammod.WAKE_GROUP + 3

    async def go():
        loop = asyncio.get_running_loop()
        turns = WakeTurns()
        hub = streammod.JoinHub(live, period_s=3600)
        phones = [hub.connect() for _ in range(n)]
        for c in phones:  # woken by connecting; the hub's first tick has not run yet
            c.wake.clear()
        deadline = loop.time() + 30.0
        # the first tick, to its end: it wakes each phone for its totals a group per turn, and a
        # group still to wake would count as this test's (seen on a busy machine)
        while not all(c.wake.is_set() for c in phones) and loop.time() < deadline:
            await asyncio.sleep(0.001)
        assert hub._ticks == 1
        for c in phones:
            c.take()
        turns.watch(phones)
        await live.awrite("lhr", "counters", "votes", {"add": 1})
        for _ in range(streammod.TOTALS_EVERY):  # new totals for every phone within a second of ticks
            await hub.tick()
        hub._task.cancel()
        return turns

    from live_helpers import WakeTurns, run_async

    turns = run_async(go())
    assert len(turns.woke_at) == n, turns.woke_at
    per_turn = turns.per_turn()
    assert max(per_turn.values()) <= streammod.WAKE_GROUP and len(per_turn) == 4, per_turn
