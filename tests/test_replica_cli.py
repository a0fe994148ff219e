"""`edgestate replica` refuses bad input: exit 2 for usage, 1 for what goes wrong at run time,
one clear line on stderr, no traceback, and no process left behind.

Each run is a real subprocess in its own session with a timeout; after it exits, its process
group must be empty. Readiness is /healthz polled against a deadline, never a sleep."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from app.processes.supervisor import edgestate_cmd, free_port

RUN_TIMEOUT_S = 30.0
READY_DEADLINE_S = 30.0
SECRET = b"0123456789abcdef"  # exactly the 16-byte minimum
ENV = {k: v for k, v in os.environ.items() if k not in ("EDGESTATE_TOKEN", "EDGESTATE_ADMIN_TOKEN")}
ENV["PYTHONUNBUFFERED"] = "1"


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def spawn(args: list[str], tmp_path: Path, name: str = "replica") -> tuple[subprocess.Popen, Path]:
    """Start `edgestate replica ARGS` in its own session; stdout and stderr go to one file each."""
    err = tmp_path / f"{name}.stderr"
    with (tmp_path / f"{name}.stdout").open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(edgestate_cmd("replica", *args), stdout=o, stderr=e, env=ENV,
                                start_new_session=True)
    return proc, err


def run_replica(args: list[str], tmp_path: Path, name: str = "refused") -> tuple[int, str]:
    """Run to completion (timeout: a replica that should have refused but runs is a failure)."""
    proc, err = spawn(args, tmp_path, name)
    try:
        rc = proc.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"edgestate replica {args} still running after {RUN_TIMEOUT_S}s:\n{err.read_text()}")
    assert _group_gone(proc.pid), "a process of the refused replica's group is still running"
    return rc, err.read_text(errors="replace")


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def wait_healthy(proc: subprocess.Popen, url: str, err: Path) -> None:
    deadline = time.monotonic() + READY_DEADLINE_S
    while True:
        assert proc.poll() is None, f"replica exited ({proc.returncode}):\n{err.read_text()}"
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"no /healthz within {READY_DEADLINE_S}s:\n{err.read_text()}"
        time.sleep(0.05)  # poll interval; readiness is the /healthz answer


def write_secret(path: Path, data: bytes = SECRET + b"\n", mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


@pytest.fixture
def secret(tmp_path) -> Path:
    return write_secret(tmp_path / "secret")


def base(tmp_path: Path, secret: Path, rid: str = "lhr", data: str = "data") -> list[str]:
    return ["--id", rid, "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / data),
            "--secret-file", str(secret)]


def assert_refused(rc: int, err: str, code: int, *phrases: str) -> None:
    assert rc == code, f"exit {rc}, wanted {code}; stderr:\n{err}"
    assert "Traceback" not in err, err
    assert "edgestate replica: error:" in err, err
    for phrase in phrases:
        assert phrase in err, f"{phrase!r} not in stderr:\n{err}"


# -- usage errors (exit 2): refused before anything is created ---------------------------------------


def test_a_missing_secret_file_is_refused(tmp_path):
    missing = tmp_path / "no-such-secret"
    rc, err = run_replica(base(tmp_path, missing), tmp_path)
    assert_refused(rc, err, 2, "--secret-file", "cannot read", str(missing), "No such file")
    assert not (tmp_path / "data").exists()


def test_a_secret_one_byte_short_is_refused(tmp_path):
    short = write_secret(tmp_path / "short", SECRET[:-1] + b"\n")  # 15 bytes once the newline is stripped
    rc, err = run_replica(base(tmp_path, short), tmp_path)
    assert_refused(rc, err, 2, "--secret-file", "holds 15 bytes", "at least 16")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(("peer", "phrases"), [
    ("fra127.0.0.1:7002", ["argument --peer", "'fra127.0.0.1:7002' is not ID=HOST:PORT"]),
    ("=127.0.0.1:7002", ["argument --peer", "is not ID=HOST:PORT"]),
    ("fra=127.0.0.1:99999", ["argument --peer", "port must be in 0..65535"]),
    ("fra=127.0.0.1:http", ["argument --peer", "port 'http' is not a number"]),
    ("fra=127.0.0.1", ["argument --peer", "is not host:port"]),
], ids=["no-equals", "no-id", "port-out-of-range", "port-not-a-number", "no-port"])
def test_a_malformed_peer_is_refused(tmp_path, secret, peer, phrases):
    rc, err = run_replica([*base(tmp_path, secret), "--peer", peer], tmp_path)
    assert rc == 2, err
    assert "Traceback" not in err and "edgestate replica: error:" in err, err
    for phrase in phrases:
        assert phrase in err, err
    assert not (tmp_path / "data").exists()


def test_one_peer_id_with_two_addresses_is_refused(tmp_path, secret):
    args = [*base(tmp_path, secret), "--peer", "fra=127.0.0.1:7002", "--peer", "fra=127.0.0.1:7003"]
    rc, err = run_replica(args, tmp_path)
    assert_refused(rc, err, 2, "--peer fra is given twice with different addresses")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(("rid", "peers", "unknown"), [
    ("nowhere", ["fra=127.0.0.1:7002"], "nowhere"),
    ("lhr", ["fra=127.0.0.1:7002", "atlantis=127.0.0.1:7003"], "atlantis"),
], ids=["own-id", "a-peer"])
def test_inject_latency_needs_pop_ids(tmp_path, secret, rid, peers, unknown):
    args = [*base(tmp_path, secret, rid=rid), "--inject-latency", *(f"--peer={p}" for p in peers)]
    rc, err = run_replica(args, tmp_path)
    assert_refused(rc, err, 2, "--inject-latency needs POP ids", f"not POPs: {unknown}")
    assert "fra" not in err.split("not POPs:")[1], err  # a real POP is not named
    assert not (tmp_path / "data").exists()


def test_http_off_loopback_without_a_token_is_refused(tmp_path, secret):
    rc, err = run_replica([*base(tmp_path, secret), "--http", "0.0.0.0:0"], tmp_path)
    assert_refused(rc, err, 2, "--http 0.0.0.0", "--token")
    assert not (tmp_path / "data").exists()


# -- run-time errors (exit 1): something else holds what the replica needs -------------------------


def test_a_data_dir_held_by_a_running_replica_is_refused(tmp_path, secret):
    data = tmp_path / "data"
    http = free_port()
    first, first_err = spawn([*base(tmp_path, secret), "--http", f"127.0.0.1:{http}"], tmp_path, "first")
    try:
        wait_healthy(first, f"http://127.0.0.1:{http}", first_err)
        rc, err = run_replica(base(tmp_path, secret), tmp_path, "second")
        assert_refused(rc, err, 1, f"data directory {data} is in use by another replica process")
        # the holder is untouched: still up, still writing to its directory
        r = httpx.put(f"http://127.0.0.1:{http}/api/replicas/lhr/kv/k", json={"value": 1}, timeout=10)
        assert r.status_code == 200, r.text
        assert first.poll() is None
    finally:
        assert stop(first) == 0, first_err.read_text()
    assert _group_gone(first.pid)


def test_a_listen_port_in_use_is_refused_naming_the_address(tmp_path, secret):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        args = ["--id", "lhr", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data"),
                "--secret-file", str(secret)]
        rc, err = run_replica(args, tmp_path)
    assert_refused(rc, err, 1, f"cannot listen on 127.0.0.1:{port}")


def test_an_http_port_in_use_is_refused_naming_the_address(tmp_path, secret):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        rc, err = run_replica([*base(tmp_path, secret), "--http", f"127.0.0.1:{port}"], tmp_path)
    assert_refused(rc, err, 1, f"cannot serve HTTP on 127.0.0.1:{port}")


# -- a secret others can read: it starts, with a warning ------------------------------------------


@pytest.mark.parametrize(("mode", "warned"), [(0o640, True), (0o604, True), (0o600, False)],
                         ids=["group-readable", "world-readable", "owner-only"])
def test_a_secret_readable_by_others_starts_with_a_warning(tmp_path, mode, warned):
    secret = write_secret(tmp_path / "secret", mode=mode)  # 16 bytes and a newline: the minimum is enough
    http = free_port()
    proc, err = spawn([*base(tmp_path, secret), "--http", f"127.0.0.1:{http}"], tmp_path)
    try:
        wait_healthy(proc, f"http://127.0.0.1:{http}", err)
    finally:
        rc = stop(proc)
    text = err.read_text(errors="replace")
    assert rc == 0, text
    assert _group_gone(proc.pid)
    assert "error" not in text.lower(), text
    warning = f"edgestate replica: warning: {secret} is readable by others (chmod 600 it)"
    assert (warning in text) == warned, text
