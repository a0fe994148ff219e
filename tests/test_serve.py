"""`edgestate serve` as a real process: real sockets, real signals, real exit codes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from urllib.parse import quote

import httpx
import pytest

from serving import REPO, SHUTDOWN_DEADLINE_S, ServerProcess, edgestate_cmd, serving


edgestate = edgestate_cmd


@pytest.fixture
def server(tmp_path):
    with serving(tmp_path / "serve.log", "--pops", "lhr,syd", "--speed", "1") as srv:
        yield srv


def eventually(get, until, deadline_s: float = 10.0):
    """Poll `get()` until `until(result)`: a write reaches Sydney at the speed of light, not at once."""
    deadline = time.monotonic() + deadline_s
    while True:
        r = get()
        if until(r):
            return r
        assert time.monotonic() < deadline, f"not within {deadline_s}s: {r.text}"
        time.sleep(0.02)  # poll interval


def stop(srv: ServerProcess, sig: int) -> int:
    srv.proc.send_signal(sig)
    try:
        return srv.proc.wait(timeout=SHUTDOWN_DEADLINE_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"server still running {SHUTDOWN_DEADLINE_S}s after signal {sig}:\n{srv.output()}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_write_at_lhr_read_at_syd_then_stop_cleanly(server, sig):
    with httpx.Client(base_url=server.base_url, timeout=5.0) as http:
        assert http.get("/healthz").json() == {"status": "ok", "replicas": 2}

        w = http.put("/api/replicas/lhr/kv/greeting", json={"value": {"hello": "world"}})
        assert w.status_code == 200, w.text
        r = eventually(lambda: http.get("/api/replicas/syd/kv/greeting"), lambda r: r.status_code == 200)
        assert r.json()["values"] == [{"hello": "world"}]
        assert r.json()["replica"] == "syd"

        assert http.post("/api/replicas/lhr/counters/hits", json={"add": 2}).json()["value"] == 2
        assert http.post("/api/replicas/syd/counters/hits", json={"add": 3}).json()["value"] in (3, 5)
        c = eventually(lambda: http.get("/api/replicas/lhr/counters/hits"), lambda r: r.json()["value"] == 5)
        assert c.json()["value"] == 5
        assert http.post("/api/replicas/syd/sets/tags", json={"add": ["a"]}).json()["members"] == ["a"]
        eventually(lambda: http.get("/api/replicas/lhr/sets/tags"), lambda r: r.json()["members"] == ["a"])

        e = http.get("/api/replicas/jfk/kv/greeting")  # jfk is not in this cluster
        assert e.status_code == 404 and e.json()["error"]["code"] == "unknown_replica"

    assert stop(server, sig) == 0
    assert "Application shutdown complete" in server.output()
    assert "Traceback" not in server.output()


def test_percent_encoded_keys_round_trip_over_real_http(server):
    with httpx.Client(base_url=server.base_url, timeout=5.0) as http:
        for key in ["%2F literally", "a/b c", "ünï/cødé ✓", "100%"]:
            w = http.put(f"/api/replicas/lhr/kv/{quote(key, safe='')}", json={"value": key})
            assert w.status_code == 200 and w.json()["key"] == key, w.text
            r = eventually(lambda: http.get(f"/api/replicas/syd/kv/{quote(key, safe='/')}"),
                           lambda r: r.status_code == 200)
            assert r.json()["key"] == key and r.json()["values"] == [key], r.text

        # %2F decodes to "/", so it names the same key as a literal slash...
        assert http.put("/api/replicas/lhr/kv/x%2Fy", json={"value": "slash"}).status_code == 200
        eventually(lambda: http.get("/api/replicas/syd/kv/x/y"), lambda r: r.status_code == 200)
        assert http.get("/api/replicas/syd/kv/x/y").json()["values"] == ["slash"]
        # ...while an escaped percent sign is a different key.
        assert http.get("/api/replicas/syd/kv/x%252Fy").status_code == 404
    assert stop(server, signal.SIGINT) == 0


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(edgestate(*args), cwd=REPO, capture_output=True, text=True, timeout=60)


def test_unknown_pop_is_a_one_line_error_and_exit_2():
    p = run("serve", "--pops", "lhr,nope")
    assert p.returncode == 2
    err = p.stderr.strip()
    assert "nope" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert p.stdout == ""


def test_no_subcommand_prints_help_and_exits_2():
    p = run()
    assert p.returncode == 2
    assert "serve" in p.stdout + p.stderr and "usage:" in p.stdout + p.stderr


@pytest.mark.parametrize("flag", [["--data-dir", "d"], ["--strategy", "flood"], ["--speed", "0"], ["--speed", "nan"],
                                  ["--processes", "--strategy", "flood"]])
def test_unknown_or_bad_flags_are_refused(flag):
    p = run("serve", "--pops", "lhr", *flag)
    assert p.returncode == 2
    assert flag[0] in p.stderr


def test_python_m_app_cli_is_the_same_command():
    p = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--pops", "zzz"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 2 and "zzz" in p.stderr


# -- access control and limits, over real sockets ----------------------------------------------

TOKEN = "serve-write-token-0123456789"
ADMIN = "serve-admin-token-0123456789"


@pytest.fixture
def guarded(tmp_path):
    # the admin token comes from the environment, as it would to keep it out of `ps`
    with serving(tmp_path / "serve.log", "--pops", "lhr,syd", "--speed", "1", "--token", TOKEN,
                 env={"EDGESTATE_ADMIN_TOKEN": ADMIN}) as srv:
        yield srv


def test_serve_with_tokens_guards_writes_and_admin_but_not_reads(guarded):
    write = {"Authorization": f"Bearer {TOKEN}"}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=guarded.base_url, timeout=5.0) as http:
        assert http.get("/healthz").status_code == 200
        r = http.put("/api/replicas/lhr/kv/k", json={"value": 1})
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"]["code"] == "unauthorized"
        assert http.put("/api/replicas/lhr/kv/k", json={"value": 1}, headers=write).status_code == 200
        eventually(lambda: http.get("/api/replicas/syd/kv/k"), lambda r: r.status_code == 200)  # reads are open

        assert http.post("/api/replicas/syd/crash", headers=write).status_code == 401
        assert http.post("/api/replicas/syd/crash", headers=admin).json()["status"] == "down"
        assert http.get("/api/replicas/syd/kv/k").status_code == 503
        assert http.post("/api/replicas/syd/recover", headers=admin).json()["status"] == "up"
        assert http.get("/api/session", headers=write).json() == {"can_write": True, "can_admin": False,
                                                                    "audience": False, "signed_in": False,
                                                                    "can_sign_in": True}
        metrics = http.get("/metrics")
        assert metrics.status_code == 200 and "edgestate_writes_total" in metrics.text
    assert TOKEN not in guarded.output() and ADMIN not in guarded.output()
    assert stop(guarded, signal.SIGTERM) == 0


def test_serve_refuses_bodies_over_1_mib_with_or_without_content_length(server):
    big = b'{"value": "' + b"x" * (1024 * 1024) + b'"}'

    def chunks():
        for i in range(0, len(big), 64 * 1024):
            yield big[i : i + 64 * 1024]

    with httpx.Client(base_url=server.base_url, timeout=10.0) as http:
        for content in (big, chunks()):  # a declared length, then chunked with none
            r = http.put("/api/replicas/lhr/kv/k", content=content, headers={"content-type": "application/json"})
            assert r.status_code == 413, r.text
            assert r.json()["error"]["code"] == "body_too_large"
        assert http.get("/api/replicas/lhr/kv/k").status_code == 404  # nothing was written
        assert http.put("/api/replicas/lhr/kv/k", json={"value": "small"}).status_code == 200
    assert stop(server, signal.SIGINT) == 0


@pytest.mark.parametrize(
    "args, words",
    [
        (["--host", "0.0.0.0"], ["--host 0.0.0.0", "--token"]),
        (["--host", "192.0.2.1", "--admin-token", ADMIN], ["--token"]),
        (["--private"], ["--private", "--token"]),
        (["--token", TOKEN, "--admin-token", TOKEN], ["--admin-token", "differ"]),
        (["--token", "has space"], ["--token"]),
    ],
    ids=["public-host", "public-host-admin-only", "private", "same-tokens", "bad-token"],
)
def test_settings_that_leave_a_hole_exit_2_with_one_clear_line(args, words):
    p = run("serve", "--pops", "lhr", *args)
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err


@pytest.mark.parametrize("flag", [["--write-rate", "0"], ["--write-rate", "x"], ["--write-burst", "0"]])
def test_bad_rate_limit_flags_are_refused(flag):
    p = run("serve", "--pops", "lhr", "--audience", *flag)
    assert p.returncode == 2 and flag[0] in p.stderr
