"""The page's timeline in a real browser: record, scrub back, replay to the live edge, export a
run, load it back offline, and save the convergence chart as a PNG.

The timeline records the page's own stream; it never pauses the simulation. Waits are
conditions with deadlines (`expect`, `wait_for_function`), never fixed sleeps.
"""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.timeout(180)

DEADLINE_MS = 20_000
N_POPS = 22
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def expect():
    from playwright.sync_api import expect as _expect

    return _expect


def open_dashboard(make_page):
    page = make_page()
    page.goto(page.server.base_url + "/")
    page.wait_for_function(
        "n => document.querySelectorAll('.scattergeo .point').length === n", arg=N_POPS, timeout=DEADLINE_MS)
    expect()(page.locator("#conn")).to_have_text("live", timeout=DEADLINE_MS)
    expect()(page.locator("[data-testid=timeline-mode]")).to_have_text("Live", timeout=DEADLINE_MS)
    return page


def live_now(page) -> float:
    return page.evaluate("window.__edgestate.timeline.rec.liveNow()")


def scrub_to(page, t_ms: float) -> None:
    """Move the scrubber as a user would: set its value, fire input and change."""
    page.locator("[data-testid=timeline-scrub]").evaluate(
        """(el, t) => { el.value = String(t);
             el.dispatchEvent(new Event('input', {bubbles: true}));
             el.dispatchEvent(new Event('change', {bubbles: true})); }""", t_ms)


def view_time(page) -> float:
    return page.evaluate("window.__edgestate.clock.now()")


def has_write(page, key: str) -> bool:
    return page.evaluate("k => [...window.__edgestate.writes.values()].some(w => w.keys.some(x => x[1] === k))", key)


def digest_on_page(page, rid: str) -> str:
    return page.evaluate("id => window.__edgestate.replicas[id].digest", rid)


def record_a_partitioned_write(page, key: str):
    """Before: converged, whole. After: partitioned, a write at lhr, diverged. Returns (t0, lhr digest before)."""
    srv = page.server
    srv.wait_converged()
    badge = page.locator("[data-testid=convergence]")
    expect()(badge).to_have_text("converged", timeout=DEADLINE_MS)
    before = {r["id"]: r["digest"] for r in srv.api("GET", "/api/replicas").json()["replicas"]}
    page.wait_for_function(f"window.__edgestate.replicas.lhr.digest === {json.dumps(before['lhr'])}", timeout=DEADLINE_MS)
    t0 = live_now(page)
    # the cut comes well after t0: a replay from t0 at 0.1x then needs many wall seconds to reach
    # it, however long a busy machine takes over the checks made on the way
    page.wait_for_function(f"window.__edgestate.timeline.rec.liveNow() > {t0 + 1500}", timeout=DEADLINE_MS)
    srv.api("POST", "/api/faults/partition", json={"groups": [["lhr", "fra", "mad"]]})
    srv.api("PUT", f"/api/replicas/lhr/kv/{key}", json={"value": "from the past"})
    expect()(badge).to_have_text("diverged", timeout=DEADLINE_MS)
    expect()(page.locator("#partition-banner")).to_be_visible(timeout=DEADLINE_MS)
    page.wait_for_function(f"[...window.__edgestate.writes.values()].some(w => w.keys.some(x => x[1] === {json.dumps(key)}))",
                           timeout=DEADLINE_MS)
    # let the recording run on a little past the write
    t1 = live_now(page)
    page.wait_for_function(f"window.__edgestate.timeline.rec.liveNow() > {t1 + 1000}", timeout=DEADLINE_MS)
    return t0, before["lhr"]


def test_scrub_back_shows_the_past_and_replay_returns_to_live(make_page, artifacts):
    page = open_dashboard(make_page)
    key = f"timeline-{time.monotonic_ns()}"
    t0, lhr_before = record_a_partitioned_write(page, key)
    live_digest = digest_on_page(page, "lhr")
    assert live_digest != lhr_before
    badge = page.locator("[data-testid=convergence]")
    mode = page.locator("[data-testid=timeline-mode]")

    # slow replay, then scrub back to before the partition
    page.select_option("[data-testid=timeline-speed]", "0.1")
    scrub_to(page, t0)
    expect()(mode).to_have_text("Replay", timeout=DEADLINE_MS)
    page.wait_for_function(f"window.__edgestate.clock.now() < {t0 + 400}", timeout=DEADLINE_MS)
    # the page shows the cluster as it was then: converged, whole, no such write, lhr's old state
    expect()(badge).to_have_text("converged", timeout=DEADLINE_MS)
    expect()(page.locator("#partition-banner")).to_be_hidden()
    assert not has_write(page, key)
    assert digest_on_page(page, "lhr") == lhr_before
    page.wait_for_function(  # and the map's marker for lhr wears the old state's colour
        """d => { const S = window.__edgestate, i = S.ids.indexOf('lhr');
                  return document.getElementById('map').data[0].marker.color[i] === S.colours.of(d); }""",
        arg=lhr_before, timeout=DEADLINE_MS)
    page.screenshot(path=str(artifacts / "timeline-replay.png"))
    # meanwhile the live cluster is partitioned and still recorded
    n = page.evaluate("window.__edgestate.timeline.rec.seqEnd")
    page.server.api("PUT", f"/api/replicas/syd/kv/{key}-later", json={"value": 2})
    page.wait_for_function(f"window.__edgestate.timeline.rec.seqEnd > {n}", timeout=DEADLINE_MS)
    assert not has_write(page, key + "-later")

    # pause: the view's clock stops
    page.click("[data-testid=timeline-play]")
    expect()(page.locator("[data-testid=timeline-play]")).to_have_text("▶ Play")
    a = view_time(page)
    page.wait_for_function(f"window.__edgestate.timeline.rec.liveNow() > {live_now(page) + 200}", timeout=DEADLINE_MS)
    assert view_time(page) == a
    # play fast: the past replays through the partition and the write, and catches up with live
    page.select_option("[data-testid=timeline-speed]", "8")
    page.click("[data-testid=timeline-play]")
    page.wait_for_function(f"[...window.__edgestate.writes.values()].some(w => w.keys.some(x => x[1] === {json.dumps(key)}))",
                           timeout=DEADLINE_MS)
    expect()(mode).to_have_text("Live", timeout=DEADLINE_MS)
    expect()(badge).to_have_text("diverged", timeout=DEADLINE_MS)
    expect()(page.locator("#partition-banner")).to_be_visible()
    assert has_write(page, key + "-later")
    assert digest_on_page(page, "lhr") == page.server.api("GET", "/api/replicas").json()["replicas"][
        [r["id"] for r in page.server.api("GET", "/api/replicas").json()["replicas"]].index("lhr")]["digest"]
    # live again: the page follows the cluster
    page.server.api("DELETE", "/api/faults/partition")
    expect()(badge).to_have_text("converged", timeout=DEADLINE_MS)

    # the Live button leaves a replay at once
    page.select_option("[data-testid=timeline-speed]", "0.1")
    scrub_to(page, t0)
    expect()(mode).to_have_text("Replay", timeout=DEADLINE_MS)
    expect()(badge).to_have_text("converged")
    assert not has_write(page, key)
    page.click("[data-testid=timeline-live]")
    expect()(mode).to_have_text("Live", timeout=DEADLINE_MS)
    assert has_write(page, key)
    page.locator(".map-card").screenshot(path=str(artifacts / "timeline.png"))
    assert page.errors == []


def export_run(page, tmp_path):
    with page.expect_download(timeout=DEADLINE_MS) as dl:
        page.click("[data-testid=timeline-export]")
    d = dl.value
    assert d.suggested_filename.startswith("edgestate-run-") and d.suggested_filename.endswith(".json")
    path = tmp_path / d.suggested_filename
    d.save_as(str(path))
    return path


def offline_page(make_page):
    """The page with its server's stream and API out of reach: only the page and its files load."""
    page = make_page()
    sockets: list[str] = []
    page.route("**/api/**", lambda route: route.abort())
    page.route_web_socket("**/ws", lambda ws: (sockets.append(ws.url), ws.close()))
    page.goto(page.server.base_url + "/")
    expect()(page.locator("[data-testid=timeline]")).to_be_visible(timeout=DEADLINE_MS)
    page.wait_for_function("window.__edgestate && window.__edgestate.timeline", timeout=DEADLINE_MS)
    assert page.locator(".scattergeo .point").count() == 0
    return page, sockets


def test_export_then_replay_the_file_offline(make_page, tmp_path):
    page = open_dashboard(make_page)
    key = f"exported-{time.monotonic_ns()}"
    t0, lhr_before = record_a_partitioned_write(page, key)
    page.server.api("DELETE", "/api/faults/partition")
    expect()(page.locator("[data-testid=convergence]")).to_have_text("converged", timeout=DEADLINE_MS)
    t_healed = live_now(page)
    path = export_run(page, tmp_path)
    run = json.loads(path.read_text())
    assert run["format"] == "edgestate-timeline" and run["version"] == 1
    assert len(run["topology"]["replicas"]) == N_POPS
    assert run["snapshot"]["kind"] == "snapshot" and run["start_ms"] <= t0 <= run["end_ms"]
    kinds = {ev["kind"] for _, ev in run["events"]}
    assert {"sent", "applied", "state", "partition", "heal", "convergence"} <= kinds
    assert any(ev["kind"] == "applied" and ev["via"] == "local" and ev["keys"][0][1] == key for _, ev in run["events"])
    page.close()

    # a talk without network: no stream, no API; the file is all there is
    page, sockets = offline_page(make_page)
    page.set_input_files("[data-testid=timeline-import]", str(path))
    page.wait_for_function(
        "n => document.querySelectorAll('.scattergeo .point').length === n", arg=N_POPS, timeout=DEADLINE_MS)
    mode = page.locator("[data-testid=timeline-mode]")
    expect()(mode).to_have_text("Replay")
    expect()(page.locator("#conn")).to_contain_text("offline")
    expect()(page.locator("[data-testid=timeline-error]")).to_be_hidden()
    opened = len(sockets)
    # the view starts at the file's start: before the write
    assert not has_write(page, key)
    assert page.evaluate("window.__edgestate.clock.now()") == pytest.approx(run["start_ms"], abs=1)
    # scrub to before the partition: lhr as it was; to after the write: diverged
    scrub_to(page, t0)
    page.wait_for_function(f"Math.abs(window.__edgestate.clock.now() - {t0}) < 400", timeout=DEADLINE_MS)
    assert digest_on_page(page, "lhr") == lhr_before
    expect()(page.locator("[data-testid=convergence]")).to_have_text("converged")
    # replay from there: the partition, the write and the heal play out from the file.
    # What the page shows is sampled every frame, so that a short moment is not missed.
    page.evaluate("""() => { const seen = window.__seen = {banner: false, flights: 0, diverged: false};
        const look = () => { const S = window.__edgestate;
            seen.banner ||= !document.getElementById('partition-banner').hidden;
            seen.flights = Math.max(seen.flights, S.map.flights.size);
            seen.diverged ||= document.querySelector('[data-testid=convergence]').textContent === 'diverged';
            requestAnimationFrame(look); };
        look(); }""")
    page.select_option("[data-testid=timeline-speed]", "0.1")
    expect()(page.locator("[data-testid=timeline-play]")).to_have_text("▶ Play")  # loaded paused
    page.click("[data-testid=timeline-play]")
    page.wait_for_function("window.__seen.banner && window.__seen.flights > 0", timeout=DEADLINE_MS)
    # messages fly at 0.1x (the server ran at --speed 5); then on at 8x to the end of the file
    page.select_option("[data-testid=timeline-speed]", "8")
    page.wait_for_function("window.__seen.diverged", timeout=DEADLINE_MS)
    page.wait_for_function(f"[...window.__edgestate.writes.values()].some(w => w.keys.some(x => x[1] === {json.dumps(key)}))",
                           timeout=DEADLINE_MS)
    # at the end of the file, the replay stops there (no live edge offline)
    expect()(page.locator("[data-testid=timeline-play]")).to_have_text("▶ Play", timeout=DEADLINE_MS)
    assert page.evaluate("window.__edgestate.clock.now()") == pytest.approx(run["end_ms"], abs=1)
    assert page.evaluate("window.__edgestate.clock.now()") >= t_healed
    expect()(page.locator("#partition-banner")).to_be_hidden()
    expect()(mode).to_have_text("Replay")
    # nothing tried to reach the stream once the file was loaded
    assert len(sockets) == opened
    assert page.foreign == []
    errors = [e for e in page.errors if "WebSocket" not in e and "Failed to load resource" not in e]
    assert errors == []


def test_a_bad_or_foreign_file_is_refused_and_changes_nothing(make_page, tmp_path):
    page = open_dashboard(make_page)
    page.wait_for_function("window.__edgestate.timeline.rec.seqEnd > 0", timeout=DEADLINE_MS)
    good = json.loads(export_run(page, tmp_path).read_text())
    error = page.locator("[data-testid=timeline-error]")
    mode = page.locator("[data-testid=timeline-mode]")

    def bad(name: str, content: bytes, says: str):
        before = page.evaluate("window.__edgestate.timeline.rec.start")
        page.set_input_files("[data-testid=timeline-import]",
                             files=[{"name": name, "mimeType": "application/json", "buffer": content}])
        expect()(error).to_be_visible(timeout=DEADLINE_MS)
        expect()(error).to_contain_text(says)
        expect()(error).to_contain_text("Nothing was changed")
        expect()(mode).to_have_text("Live")
        expect()(page.locator("#conn")).to_have_text("live")
        assert page.evaluate("window.__edgestate.timeline.source") == "live"
        assert page.evaluate("window.__edgestate.timeline.rec.start") == before
        assert page.locator(".scattergeo .point").count() == N_POPS

    bad("broken.json", b'{"format": "edgestate-timeline", "version": 1, "events": [', "not JSON")
    bad("foreign.json", json.dumps({"format": "har", "log": {}}).encode(), "not an edgestate run")
    bad("future.json", json.dumps({**good, "version": 99}).encode(), "version")
    evil_city = json.loads(json.dumps(good))
    evil_city["topology"]["replicas"][0]["city"] = '<img src=x onerror="window.__xss=1">'
    bad("evil-city.json", json.dumps(evil_city).encode(), "topology.replicas[0].city")
    evil_kind = json.loads(json.dumps(good))
    evil_kind["events"].append([good["end_ms"], {"kind": '<img src=x onerror="window.__xss=2">'}])
    bad("evil-kind.json", json.dumps(evil_kind).encode(), "unknown event kind")
    stranger = json.loads(json.dumps(good))
    stranger["events"].append([good["end_ms"], {"kind": "applied", "t": good["end_ms"], "node": "atlantis",
                                                "dots": [["atlantis", 1]], "keys": [["kv", "x"]], "via": "local"}])
    bad("stranger.json", json.dumps(stranger).encode(), "not a POP")
    # what the server tells the page (bounds, strategies, cuts) is checked like the rest
    assert {"bounds", "strategies", "cuts"} <= set(good["snapshot"])
    for field, value, says in [
        ("bounds", {"recent_writes": -1, "in_flight": 4000}, "snapshot.bounds.recent_writes"),
        ("strategies", ['<img src=x onerror="window.__xss=3">'], "snapshot.strategies[0]"),
        ("cuts", {"named": {"atlantic": [["atlantis"], ["lhr"]]}, "regions": {}}, "not a POP"),
    ]:
        wrong = json.loads(json.dumps(good))
        wrong["snapshot"][field] = value
        bad(f"wrong-{field}.json", json.dumps(wrong).encode(), says)
    # the file's text reaches the page as text only
    assert page.evaluate("window.__xss") is None
    assert page.locator("[data-testid=timeline-error] *").count() == 0
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    assert page.errors == []


VALIDATE = """async (text) => {
    const m = await import('/static/js/timeline.js');
    try { m.validateRun(JSON.parse(text)); return null; } catch (e) { return e.message; }
}"""  # from the file's text, as the page reads a file (JSON.parse keeps a "__proto__" key as data)


def test_a_map_in_a_recorded_detail_is_checked_by_its_type_and_the_file_loads(make_page, tmp_path):
    """The file validator checks each type's summary as types.js draws it, the map's too; a
    file recorded before maps existed (no `maps` list) still loads."""
    page = open_dashboard(make_page)
    page.select_option("#pop-select", "nrt")
    key = f"cart-{time.monotonic_ns()}"
    page.server.api("POST", f"/api/replicas/nrt/maps/{key}", json={"set": {"colour": "red", "constructor": "c"}})
    row = page.locator("[data-testid=map-row]", has_text=key)
    expect()(row.locator("[data-field=constructor]")).to_contain_text('"c"', timeout=DEADLINE_MS)
    page.wait_for_function(f"window.__edgestate.timeline.rec.liveNow() > {live_now(page) + 500}", timeout=DEADLINE_MS)
    path = export_run(page, tmp_path)
    run = json.loads(path.read_text())
    j = max(n for n, (_t, ev) in enumerate(run["events"])  # the last detail of nrt's keys that lists the map
            if ev["kind"] == "detail" and any(m["key"] == key for m in ev.get("maps", [])))
    maps = run["events"][j][1]["maps"]
    i = next(n for n, m in enumerate(maps) if m["key"] == key)
    assert maps[i]["fields"] == {"colour": "red", "constructor": "c"}
    assert page.evaluate(VALIDATE, json.dumps(run)) is None

    def broken(change) -> str | None:
        r = json.loads(json.dumps(run))
        change(r["events"][j][1])
        return page.evaluate(VALIDATE, json.dumps(r))

    at = f"events[{j}][1]"
    assert broken(lambda d: d["maps"][i].update(fields="red")) == f"{at}.maps[{i}].fields: must be an object"
    assert broken(lambda d: d["maps"][i].update(conflicts={"colour": "red"})) == \
        f"{at}.maps[{i}].conflicts.colour: must be a list"
    assert broken(lambda d: d["maps"][i].pop("size")) == f"{at}.maps[{i}].size: must be a number"
    assert broken(lambda d: d.update(maps={})) == f"{at}.maps: must be a list"
    assert broken(lambda d: d.update({"__proto__": [None]})) == f"{at}.__proto__[0]: must be an object"
    assert broken(lambda d: d.update(other=[{"key": 1}])) == f"{at}.other[0].key: must be a string"
    assert broken(lambda d: d.pop("maps")) is None  # a file from before the type
    page.set_input_files("[data-testid=timeline-import]", str(path))
    expect()(page.locator("[data-testid=timeline-mode]")).to_have_text("Replay", timeout=DEADLINE_MS)
    expect()(page.locator("[data-testid=timeline-error]")).to_be_hidden()
    assert page.errors == []


def test_a_key_in_a_loaded_file_is_shown_as_text(make_page, tmp_path):
    page = open_dashboard(make_page)
    key = '<img src=x onerror="window.__xss=3">'
    page.server.api("PUT", "/api/replicas/lhr/kv/" + key, json={"value": 1})
    page.wait_for_function("[...window.__edgestate.writes.values()].some(w => w.keys.some(x => x[1].startsWith('<img')))",
                           timeout=DEADLINE_MS)
    path = export_run(page, tmp_path)
    page.close()
    page, _ = offline_page(make_page)
    page.set_input_files("[data-testid=timeline-import]", str(path))
    page.wait_for_function("n => document.querySelectorAll('.scattergeo .point').length === n", arg=N_POPS,
                           timeout=DEADLINE_MS)
    page.click("[data-testid=timeline-play]")
    expect()(page.locator("[data-testid=log]")).to_contain_text(key, timeout=DEADLINE_MS)
    assert page.evaluate("window.__xss") is None
    assert page.evaluate("document.querySelectorAll('img').length") == 0


def test_the_convergence_chart_saves_as_png(make_page, tmp_path, artifacts):
    page = open_dashboard(make_page)
    key = f"png-{time.monotonic_ns()}"
    page.server.api("PUT", f"/api/replicas/syd/kv/{key}", json={"value": "chart me"})
    page.wait_for_function(
        "k => document.getElementById('conv-chart').data && document.getElementById('conv-chart').data.length >= 2"
        " && [...window.__edgestate.writes.values()].some(w => w.keys.some(x => x[1] === k))", arg=key,
        timeout=DEADLINE_MS)
    with page.expect_download(timeout=DEADLINE_MS) as dl:
        page.click("[data-testid=convergence-png]")
    d = dl.value
    name = d.suggested_filename
    assert name.startswith("edgestate-convergence-") and name.endswith(".png")
    assert key.lower() in name  # it says what it shows
    path = tmp_path / name
    d.save_as(str(path))
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    # a real image: IHDR with the size asked for (1200 x 600 at scale 2)
    assert data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (2400, 1200)
    assert len(data) > 20_000
    (artifacts / "convergence-export.png").write_bytes(data)
    assert page.errors == []


def test_the_recording_is_bounded_and_a_run_survives_the_round_trip(make_page):
    """timeline.js on its own, in the browser: a long run keeps a bounded window that starts at a
    keyframe, and its export validates and loads back to the same events."""
    page = make_page()
    page.goto(page.server.base_url + "/")
    page.wait_for_function("window.__edgestate && window.__edgestate.timeline", timeout=DEADLINE_MS)
    out = page.evaluate("""async () => {
        const m = await import('/static/js/timeline.js');
        const topo = {replicas: [{id: 'a', city: 'A', region: 'R', lat: 0, lon: 0},
                                 {id: 'b', city: 'B', region: 'R', lat: 10, lon: 10}], rtt_ms: {a: {b: 10}}};
        const st = (node, d) => ({kind: 'state', node, status: 'up', digest: d, version_vector: {a: 0}, keys: 1});
        const rec = new m.Recording();
        rec.snapshot({kind: 'snapshot', topology: topo, replicas: [st('a', 'd0'), st('b', 'd0')],
            convergence: {kind: 'convergence', converged: true},
            clock: {kind: 'clock', now_ms: 0, speed: 1, paused: false, strategy: 'direct', loss: 0},
            counters: {kind: 'counters'}, groups: null, writes: [], in_flight: [], animated: [], frame_ms: 50}, false);
        const N = 120000;
        for (let i = 1; i <= N; i++) {
            // a state placed after its replica's event, though it arrives after the clock
            rec.ingest([{kind: 'applied', t: i * 10, node: 'a', dots: [['a', i]], keys: [['kv', 'k' + i]], via: 'local'},
                        {kind: 'clock', now_ms: i * 10 + 5, speed: 1, paused: false, strategy: 'direct', loss: 0},
                        st('a', 'd' + i)], false);
        }
        // and a long quiet run: bounded by virtual time (15 minutes) instead
        const quiet = new m.Recording();
        quiet.snapshot(rec.keyframes[0].snap, false);
        for (let i = 1; i <= 20000; i++) quiet.ingest([{kind: 'heal', t: i * 100}], false);
        const quietSpan = quiet.end - quiet.start, quietEvents = quiet.events.length;
        const kf = rec.keyframes[0];
        const run = JSON.parse(JSON.stringify(rec.toRun('test')));
        m.validateRun(run);
        const back = m.Recording.fromRun(run);
        let bad = null;
        try { m.validateRun({...run, events: [[run.end_ms + 1, {kind: 'heal', t: 0}]]}); } catch (e) { bad = e.message; }
        const stateAfterApplied = rec.events.findIndex(([vt, ev]) => ev.kind === 'state') ===
            rec.events.findIndex(([vt, ev]) => ev.kind === 'applied') + 1;
        return {
            events: rec.events.length, span: rec.end - rec.start, end: rec.end, keyframes: rec.keyframes.length,
            startsAtKeyframe: kf.seq === rec.offset, kfDigest: kf.snap.replicas[0].digest,
            kfVt: kf.vt, backEvents: back.events.length, backStart: back.start, backEnd: back.end,
            writes: kf.snap.writes.length, bad, stateAfterApplied, quietSpan, quietEvents,
        };
    }""")
    assert out["end"] == 120000 * 10 + 5
    assert out["events"] <= 150_000 * 1.1 and out["span"] <= 15 * 60 * 1000 * 1.1
    assert out["events"] >= 150_000 * 0.9  # trimmed to the bound, not emptied
    assert out["startsAtKeyframe"] and out["keyframes"] > 10
    # the first kept keyframe holds the state at its time: a's digest of the last write before it
    assert out["kfDigest"] == f"d{int((out['kfVt'] - 5) // 10)}"
    assert out["writes"] == 12
    assert 14 * 60 * 1000 <= out["quietSpan"] <= 15 * 60 * 1000 * 1.1 and out["quietEvents"] < 10_000
    assert out["stateAfterApplied"]
    assert (out["backEvents"], out["backStart"], out["backEnd"]) == (out["events"], out["kfVt"], out["end"])
    assert out["bad"] and "after end_ms" in out["bad"]


def test_the_live_button_leaves_a_loaded_file_for_the_stream(make_page, tmp_path):
    page = open_dashboard(make_page)
    page.wait_for_function("window.__edgestate.timeline.rec.seqEnd > 0", timeout=DEADLINE_MS)
    path = export_run(page, tmp_path)
    mode = page.locator("[data-testid=timeline-mode]")
    page.set_input_files("[data-testid=timeline-import]", str(path))
    expect()(mode).to_have_text("Replay", timeout=DEADLINE_MS)
    expect()(page.locator("#conn")).to_contain_text("offline", timeout=DEADLINE_MS)
    expect()(page.locator("#toolbar")).to_be_hidden()  # nothing to drive offline
    assert page.evaluate("window.__edgestate.ws.readyState") in (2, 3)  # closing or closed
    page.click("[data-testid=timeline-live]")
    expect()(page.locator("#conn")).to_have_text("live", timeout=DEADLINE_MS)
    expect()(mode).to_have_text("Live")
    expect()(page.locator("#toolbar")).to_be_visible()
    key = f"back-online-{time.monotonic_ns()}"
    page.server.api("PUT", f"/api/replicas/lhr/kv/{key}", json={"value": 1})
    page.wait_for_function(f"[...window.__edgestate.writes.values()].some(w => w.keys.some(x => x[1] === {json.dumps(key)}))",
                           timeout=DEADLINE_MS)
    assert page.errors == []


def small_run() -> dict:
    """A hand-written run on two POPs of its own: a write at London reaches Sydney."""
    topo = {"replicas": [{"id": "lon", "city": "London", "region": "Europe", "lat": 51.5, "lon": -0.1},
                         {"id": "syd", "city": "Sydney", "region": "Oceania", "lat": -33.9, "lon": 151.2}],
            "rtt_ms": {"lon": {"syd": 212.0}, "syd": {"lon": 212.0}}}

    def state(node, digest, n):
        return {"kind": "state", "node": node, "status": "up", "digest": digest, "version_vector": {"lon": n}, "keys": n}

    clock = {"kind": "clock", "now_ms": 1000.0, "speed": 0.1, "paused": False, "strategy": "direct", "loss": 0.0}
    snap = {"kind": "snapshot", "topology": topo, "replicas": [state("lon", "aa", 0), state("syd", "aa", 0)],
            "convergence": {"kind": "convergence", "converged": True}, "clock": clock, "counters": {"kind": "counters"},
            "groups": None, "writes": [], "in_flight": [], "animated": ["payload"], "frame_ms": 50}
    events = [
        [1100.0, {"kind": "applied", "t": 1100.0, "node": "lon", "dots": [["lon", 1]], "keys": [["kv", "hello"]], "via": "local"}],
        [1100.0, state("lon", "bb", 1)],
        [1100.0, {"kind": "sent", "t": 1100.0, "src": "lon", "dst": "syd", "msg": "payload", "mid": 1, "deliver_at": 1206.0}],
        [1100.0, {"kind": "convergence", "converged": False}],
        [1206.0, {"kind": "applied", "t": 1206.0, "node": "syd", "dots": [["lon", 1]], "keys": [["kv", "hello"]], "via": "payload"}],
        [1206.0, state("syd", "bb", 1)],
        [1206.0, {"kind": "convergence", "converged": True}],
    ]
    return {"format": "edgestate-timeline", "version": 1, "start_ms": 1000.0, "end_ms": 1500.0, "topology": topo,
            "snapshot": snap, "detail": None, "events": events}


def test_a_file_with_other_pops_redraws_the_map(make_page, tmp_path):
    page = open_dashboard(make_page)
    path = tmp_path / "two-pops.json"
    path.write_text(json.dumps(small_run()))
    page.set_input_files("[data-testid=timeline-import]", str(path))
    page.wait_for_function("document.querySelectorAll('.scattergeo .point').length === 2", timeout=DEADLINE_MS)
    expect()(page.locator("[data-testid=timeline-error]")).to_be_hidden()
    assert page.evaluate("window.__edgestate.ids") == ["lon", "syd"]
    badge = page.locator("[data-testid=convergence]")
    expect()(badge).to_have_text("converged")
    scrub_to(page, 1150)  # the write is on its way to Sydney
    expect()(badge).to_have_text("diverged", timeout=DEADLINE_MS)
    page.wait_for_function("window.__edgestate.map.flights.size === 1", timeout=DEADLINE_MS)
    assert page.evaluate("window.__edgestate.replicas.syd.digest") == "aa"
    scrub_to(page, 1300)  # it has landed
    expect()(badge).to_have_text("converged", timeout=DEADLINE_MS)
    assert page.evaluate("window.__edgestate.replicas.syd.digest") == "bb"
    assert page.evaluate("window.__edgestate.map.flights.size") == 0
    assert page.locator("#pop-select option").count() == 3  # the prompt and the file's two POPs
    assert page.errors == []


def test_a_scenario_is_recorded_and_its_chart_is_named_after_it(make_page, tmp_path):
    page = open_dashboard(make_page)
    page.server.api("POST", "/api/scenarios/hello-world")
    expect()(page.locator("[data-testid=scenario-status]")).to_contain_text("✓", timeout=60_000)
    page.wait_for_function("window.__edgestate.scenario && window.__edgestate.scenario.name === 'hello-world'",
                           timeout=DEADLINE_MS)
    with page.expect_download(timeout=DEADLINE_MS) as dl:
        page.click("[data-testid=convergence-png]")
    assert dl.value.suggested_filename.startswith("edgestate-convergence-hello-world-")
    # the run, with the scenario's progress in it, loads back
    path = export_run(page, tmp_path)
    run = json.loads(path.read_text())
    assert any(ev["kind"] == "scenario" and ev["status"] == "passed" for _, ev in run["events"])
    page.set_input_files("[data-testid=timeline-import]", str(path))
    expect()(page.locator("#conn")).to_contain_text("offline", timeout=DEADLINE_MS)
    expect()(page.locator("[data-testid=timeline-error]")).to_be_hidden()
    scrub_to(page, run["end_ms"])
    page.wait_for_function("window.__edgestate.scenario && window.__edgestate.scenario.status === 'passed'",
                           timeout=DEADLINE_MS)
