"""Logs, one format for `edgestate serve` and `edgestate replica` (`app/web/logs.py`): JSON lines
parsed from a real server's stderr, the access line found by the request's X-Request-ID, ids
checked (printable ASCII, at most 128 characters, else replaced), the access log switched off,
and a replica's start-up line naming what it listens on and its peers."""

from __future__ import annotations

import io
import json
import logging
import re

import httpx
import pytest
from serving import serving
from test_replica_cli import SECRET, spawn, stop
from waiting import wait_for

from app.processes.supervisor import free_port
from app.web import logs

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def json_lines(text: str) -> list[dict]:
    """Every line must be one JSON object (no stray text lines in JSON mode)."""
    out = []
    for line in text.splitlines():
        if line.strip():
            obj = json.loads(line)
            assert isinstance(obj, dict), line
            out.append(obj)
    return out


def test_serve_json_logs_carry_the_request_id_in_the_access_line(tmp_path):
    with serving(tmp_path / "serve.log", "--pops", "lhr,fra", "--log-format", "json") as srv:
        r = httpx.put(f"{srv.base_url}/api/replicas/lhr/kv/greeting", json={"value": "hi"},
                      headers={"X-Request-ID": "test-req-0001"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "test-req-0001"

        def access_line():
            return next((o for o in json_lines(srv.output()) if o.get("request_id") == "test-req-0001"), None)

        line = wait_for("the access line with the request id", access_line, deadline_s=30)
    assert line["logger"] == "edgestate.access" and line["level"] == "info"
    assert TS.match(line["ts"]), line["ts"]
    assert line["method"] == "PUT" and line["status"] == 200 and line["path"] == "/api/replicas/lhr/kv/greeting"
    assert line["route"] == "/api/replicas/{replica_id}/kv/{key}"
    assert isinstance(line["duration_ms"], float) and line["client"] == "127.0.0.1"
    for obj in json_lines(srv.output()):  # every line, uvicorn's own too
        assert {"ts", "level", "logger", "msg"} <= set(obj), obj
        assert TS.match(obj["ts"])


def test_no_access_log_and_a_level_above_info(tmp_path):
    with serving(tmp_path / "serve.log", "--pops", "lhr", "--no-access-log") as srv:
        r = httpx.get(f"{srv.base_url}/healthz", headers={"X-Request-ID": "quiet-please"})
        assert r.headers["x-request-id"] == "quiet-please"
        # a second request whose line would follow the first: wait for the server to have logged startup
        wait_for("the start-up line", lambda: "replica(s)" in srv.output(), deadline_s=30)
    assert "quiet-please" not in srv.output()
    assert "edgestate.access" not in srv.output()


@pytest.mark.parametrize(("given", "kept"), [
    ("abc-123", True),
    ("x" * 128, True),
    ("x" * 129, False),
    ("has space inside", True),
    (" leading", False),
    ("tab\there", False),
    ("ünïcode", False),
    ("", False),
    (None, False),
])
def test_request_ids_are_printable_ascii_of_at_most_128(given, kept):
    got = logs.check_request_id(given)
    assert (got == given) is kept
    assert got.isascii() and got.isprintable() and 0 < len(got) <= logs.MAX_REQUEST_ID


def test_text_format_has_an_iso_utc_timestamp_and_the_request_id():
    buf = io.StringIO()
    logs.configure("info", "text", stream=buf)
    try:
        token = logs.request_id_var.set("rid-7")
        logging.getLogger("edgestate.test").info("hello %s", "world")
        logs.request_id_var.reset(token)
        logging.getLogger("edgestate.test").debug("not at info")
    finally:
        logging.getLogger().handlers.clear()
    line, = buf.getvalue().splitlines()
    ts, level, rest = line.split(" ", 2)
    assert TS.match(ts) and level == "INFO" and rest == "edgestate.test: hello world [id=rid-7]"


def test_a_text_line_cannot_be_split_or_forged_by_what_a_client_sends():
    """A path is logged decoded: %0A, %0D or %00 in it must not start a line of its own."""
    buf = io.StringIO()
    logs.configure("info", "text", stream=buf)
    try:
        logging.getLogger("edgestate.access").info("%s %s %d", "GET", "/x\n2026-01-01T00:00:00Z INFO forged\r\x00\x1b[2J", 404)
    finally:
        logging.getLogger().handlers.clear()
    line, = buf.getvalue().splitlines()
    assert "forged" in line and "\\x0a" in line and "\\x1b" in line and "\x1b" not in line


def test_a_replica_says_what_it_listens_on_and_who_its_peers_are(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    peer, http = free_port(), free_port()
    proc, err = spawn(["--id", "lhr", "--listen", f"127.0.0.1:{peer}", "--http", f"127.0.0.1:{http}",
                       "--peer", "fra=127.0.0.1:1", "--data-dir", str(tmp_path / "d"), "--secret-file", str(secret),
                       "--log-format", "json"], tmp_path)
    try:
        def started():
            lines = json_lines(err.read_text()) if err.read_text().strip() else []
            return next((o for o in lines if o["logger"] == "edgestate.replica" and "listening" in o["msg"]), None)

        line = wait_for("the replica's start-up line", started, deadline_s=30)
        def answers():
            try:
                return httpx.get(f"http://127.0.0.1:{http}/readyz", headers={"X-Request-ID": "replica-req"})
            except httpx.TransportError:
                return None  # the start-up line comes before the HTTP server is up

        wait_for("the replica's HTTP API", answers, deadline_s=30)
        access = wait_for("the replica's access line",
                          lambda: next((o for o in json_lines(err.read_text()) if o.get("request_id") == "replica-req"),
                                       None), deadline_s=30)
    finally:
        stop(proc)
    assert line["level"] == "info"
    assert f"peers on 127.0.0.1:{peer}" in line["msg"] and f"http://127.0.0.1:{http}" in line["msg"]
    assert "fra=127.0.0.1:1" in line["msg"]
    # fra never answers: joining (503) until the join timer opens the gate
    assert access["route"] == "/readyz" and access["status"] in (200, 503)
