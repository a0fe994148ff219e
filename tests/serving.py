"""A real `edgestate serve` process for tests: a free loopback port, readiness by polling
/healthz against a deadline, and cleanup that never leaves a server behind. With `tls` (an
`ssl.SSLContext` that trusts the server's CA) it is reached over https:// and wss://."""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import time
from pathlib import Path

import httpx

from app.processes.supervisor import edgestate_cmd, free_port

REPO = Path(__file__).resolve().parents[1]
STARTUP_DEADLINE_S = 30.0
SHUTDOWN_DEADLINE_S = 15.0


class ServerProcess:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path, tls: ssl.SSLContext | None = None) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.host = f"127.0.0.1:{port}"
        self.tls = tls
        self.base_url = f"{'https' if tls else 'http'}://{self.host}"
        self.ws_url = f"{'wss' if tls else 'ws'}://{self.host}/ws"
        self.verify: ssl.SSLContext | bool = tls or True  # for httpx

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def serving(log: Path, *args: str, env: dict[str, str] | None = None, cls=ServerProcess, port: int | None = None,
            tls: ssl.SSLContext | None = None):
    """Start `edgestate serve --port <port, or a free one> *args`, wait for /healthz, and stop it at
    the end (SIGTERM, then SIGKILL if it does not go within the deadline). `tls`: the server was
    given --tls-cert/--tls-key; reach it over HTTPS trusting this client context."""
    port = port or free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            edgestate_cmd("serve", "--port", str(port), *args),
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    srv = cls(proc, port, log, tls)
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while True:
            assert proc.poll() is None, f"server exited with {proc.returncode}:\n{srv.output()}"
            try:
                if httpx.get(f"{srv.base_url}/healthz", timeout=1.0, verify=srv.verify).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no /healthz within {STARTUP_DEADLINE_S}s:\n{srv.output()}"
            time.sleep(0.05)  # poll interval, not a wait for readiness
        yield srv
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=SHUTDOWN_DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=SHUTDOWN_DEADLINE_S)
