"""What a hostile `/ws` client may cost a real `edgestate serve` (issue 13, `app/dashboard/ws/limits.py`).

Measured on the code before the limits (uvicorn's defaults): 40 clients sending 4 x 15 MiB
frames grew the server by more than a GB; permessage-deflate was agreed, so 16 KB on the wire
inflated to 15 MiB; a client that never read absorbed megabytes of socket buffers and was closed
by uvicorn's keepalive (1011) after ~40 s. Every assertion here is an outcome (close codes,
bytes, RSS growth against the server's own RSS in the same run), not a speed.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from app.bench import ws_floods
from app.bench.ws_floods import MiB, FrameReader, PeakSampler, handshake, read_close
from app.dashboard.ws.limits import MAX_MESSAGE
from serving import serving
from waiting import wait_for

FRAME = 15 * MiB


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("ws-limits") / "serve.log"
    with serving(log, "--pops", "default", "--speed", "4", "--seed", "3") as srv:
        yield srv


def _host_port(srv) -> tuple[str, int]:
    return "127.0.0.1", srv.port


def test_an_oversized_frame_is_refused_from_its_header_with_1009(server):
    host, port = _host_port(server)
    sampler = PeakSampler(server.proc.pid)
    try:
        codes = ws_floods._in_threads(4, lambda i: ws_floods.send_big_frames(host, port, 2, FRAME))
        base, growth, _ = sampler.growth()
    finally:
        sampler.close()
    assert codes == ["1009"] * 4, codes  # message too big, read from the frame header
    # 8 frames of 15 MiB offered; the server never buffered one of them
    assert growth < FRAME / 1e6 / 2, f"server RSS grew {growth} MB (from {base} MB) for {4 * 2 * 15} MiB offered"
    assert server.proc.poll() is None


def test_a_message_just_under_the_limit_is_still_read(server):
    """The limit refuses what the protocol never needs, not a `select` message."""
    from websockets.sync.client import connect

    with connect(server.ws_url, max_size=None, compression=None, open_timeout=10) as ws:
        ws.recv(timeout=10)  # the snapshot
        ws.send(json.dumps({"select": "lhr", "pad": "x" * (MAX_MESSAGE - 40)}))
        wait_for("the selected replica's detail", lambda: any(
            e.get("kind") == "detail" for e in json.loads(ws.recv(timeout=10))), deadline_s=30, poll_s=0)


def test_compression_is_not_agreed_and_a_deflate_bomb_is_refused(server):
    host, port = _host_port(server)
    # small enough on the wire to pass the size check (3 MiB of zeros deflate to ~3 KB)
    bomb = ws_floods.deflate_bomb(3 * MiB)
    assert len(bomb) < MAX_MESSAGE
    sampler = PeakSampler(server.proc.pid)
    try:
        results = ws_floods._in_threads(4, lambda i: ws_floods.send_bombs(host, port, 2, bomb))
        base, growth, _ = sampler.growth()
    finally:
        sampler.close()
    assert [agreed for agreed, _ in results] == [False] * 4  # the server never offers permessage-deflate
    assert [code for _, code in results] == ["1002"] * 4, results  # a compressed frame is a protocol error
    assert growth < 3 * MiB / 1e6, f"server RSS grew {growth} MB (from {base} MB)"


def test_a_never_reading_client_is_dropped_with_1013_while_a_normal_one_keeps_its_stream(server):
    stop = threading.Event()
    writer = threading.Thread(target=ws_floods._writer, args=(server.base_url, 20.0, 1, stop), daemon=True)
    normal = ws_floods.NormalClient(server.ws_url)
    writer.start()
    normal.start()
    sock = None
    try:
        wait_for("the normal client's first message", lambda: normal.messages > 0, deadline_s=30)
        dropped_before = ws_floods._metric(server.base_url, "edgestate_websocket_clients_dropped_total")
        sock, _, rest = handshake("127.0.0.1", server.port)
        reader = FrameReader()
        reader.feed(rest)
        # the attacker reads nothing from here on. The deadline stays under uvicorn's keepalive
        # (20 s ping + 20 s timeout, closing with 1011), which was what closed it before.
        wait_for("the server to drop the client that does not read", lambda: (
            ws_floods._metric(server.base_url, "edgestate_websocket_clients_dropped_total") or 0) > dropped_before,
            deadline_s=30, poll_s=0.2)
        after_drop = normal.messages
        code = read_close(sock, reader, 10.0)  # reading at last: what it had waiting, then the close frame
        assert code == "1013", f"closed with {code} after {reader.bytes} bytes"
        # bounded send buffers: what waited for it is a few hundred KB, not the megabytes the
        # kernel's autotuned buffers held before
        assert reader.bytes < 1 * MiB, f"{reader.bytes} bytes were waiting for a client that did not read"
        assert normal.wait_for_more(after_drop, 30.0), "the normal client stopped receiving"
        assert normal.closed is None
    finally:
        stop.set()
        if sock is not None:
            sock.close()
        normal.stop()
        writer.join(timeout=15)


def test_bench_hostile_ws_short(tmp_path: Path):
    """`edgestate bench hostile --ws --short`: the campaign's short form, its outcomes bounded."""
    from app.bench import hostile

    out = tmp_path / "hostile.json"
    args = hostile.build_parser().parse_args(["--ws", "--short", "--json", str(out), "--quiet"])
    assert hostile.run(args) == 0
    r = json.loads(out.read_text())["ws"]
    assert r["server_alive"] and r["normal_client_closed"] is None
    frames, bomb, idle = r["frames"], r["bomb"], r["idle"]
    assert frames["close_codes"] == {"1009": frames["clients"]}, frames
    assert bomb["deflate_agreed"] == 0 and bomb["close_codes"] == {"1009": bomb["clients"]}, bomb
    assert idle["close_codes"] == {"1013": idle["clients"]}, idle
    for phase in (frames, bomb, idle):
        assert phase["normal_client_kept_stream"], phase
        assert phase["peak_rss_growth_mb"] < 50, phase  # the bound for the floods
    assert frames["peak_rss_growth_mb"] < frames["frame_mb"], frames
