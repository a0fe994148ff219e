"""A cluster of real `edgestate replica` processes on this host, on loopback ports.

Used by `serve --processes`, `bench replica` and the tests: it picks free ports, writes the
shared secret file (mode 600) and, by default, a throwaway CA with a certificate per replica
(peer links over mutual TLS), starts one process per replica with its data directory,
waits for each to answer `/healthz` (against a deadline), and stops, kills (SIGKILL) and
restarts them. A process's stdout and stderr go to `<root>/<id>.log`.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

STARTUP_DEADLINE_S = 30.0
STOP_DEADLINE_S = 15.0
POLL_S = 0.05


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


_handed_out: set[int] = set()
_pick = random.SystemRandom()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, chosen outside the kernel's ephemeral range.

    A port the kernel hands out for bind(0) is one it may also hand to any outgoing connection (a
    test's HTTP client, a replica dialling a peer) before our replica binds it, or while a killed
    replica is down: CI saw `address already in use` from exactly that. Ports below the ephemeral
    range are only ever taken by explicit listeners, and this process never hands one out twice.
    """
    lo, hi = _ephemeral_range()
    pool = range(max(1024, lo - 12000), lo) if lo - 1024 >= 2000 else range(hi + 1, 65536)
    for _ in range(200):
        port = _pick.choice(pool)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # a crowded range: fall back to the kernel's choice
        s.bind((host, 0))
        return s.getsockname()[1]


def edgestate_cmd(*args: str) -> list[str]:
    """The console script next to this Python when installed, else the module."""
    script = Path(sys.executable).with_name("edgestate")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "app.cli", *args]


@dataclass
class ReplicaProc:
    id: str
    peer_port: int
    http_port: int
    data_dir: Path
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class ProcessCluster:
    def __init__(
        self,
        ids: list[str],
        root: str | os.PathLike,
        *,
        host: str = "127.0.0.1",
        inject_latency: bool = True,
        strategy: str = "plumtree",
        secret: bytes | None = None,
        events: tuple[str, int] | None = None,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        tls: bool = True,
    ) -> None:
        """`tls`: make a throwaway CA and one certificate per replica under ROOT/certs, and run peer
        links over mutual TLS (what `serve --processes` does); False: frames tagged with the secret
        only. `cas` and `certs` say what each replica is started with (a rotation changes them)."""
        if len(set(ids)) != len(ids) or not ids:
            raise ValueError("replica ids must be distinct, and at least one")
        self.ids = list(ids)
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.secret_file = self.root / "secret"
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secret or secrets.token_hex(32).encode())
        self.replicas = {
            rid: ReplicaProc(rid, free_port(host), free_port(host), self.root / "data" / rid, self.root / f"{rid}.log")
            for rid in ids
        }
        self.cas: list[Path] = []
        self.certs: dict[str, tuple[Path, Path]] = {}
        if tls:
            from replication.io import certs

            ca_dir = self.root / "certs"
            self.cas = [certs.init_ca(ca_dir, force=True).cert]
            for rid in ids:
                issued = certs.issue(ca_dir, rid, force=True)
                self.certs[rid] = (issued.cert, issued.key)
        # replicas stop (cleanly) if this process dies without stopping them
        self._args = ["--secret-file", str(self.secret_file), "--strategy", strategy, "--parent-pid", str(os.getpid())]
        if inject_latency:
            self._args.append("--inject-latency")
        if events is not None:
            self._args += ["--events", f"{events[0]}:{events[1]}"]
        self._args += list(extra_args)
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._ever_ready = False

    def url(self, rid: str) -> str:
        return f"http://{self.host}:{self.replicas[rid].http_port}"

    def command(self, rid: str) -> list[str]:
        r = self.replicas[rid]
        peers = [f"--peer={p.id}={self.host}:{p.peer_port}" for p in self.replicas.values() if p.id != rid]
        tls: list[str] = []
        if rid in self.certs:
            cert, key = self.certs[rid]
            tls = [*(f"--ca={ca}" for ca in self.cas), f"--cert={cert}", f"--key={key}"]
        return edgestate_cmd(
            "replica", "--id", rid, "--listen", f"{self.host}:{r.peer_port}", "--http", f"{self.host}:{r.http_port}",
            "--data-dir", str(r.data_dir), *peers, *tls,
            # the dashboard polls each replica several times a second: a line per request would grow
            # <id>.log without bound; the start-up lines and warnings are what its log is for
            "--no-access-log", *self._args,
        )

    # -- starting and stopping ------------------------------------------------------------------

    def spawn(self, rid: str, extra: tuple[str, ...] = ()) -> None:
        """Start one replica process (not waiting for it). A running one is left alone."""
        r = self.replicas[rid]
        if r.running:
            return
        with r.log.open("ab") as out:
            r.proc = subprocess.Popen([*self.command(rid), *extra], stdout=out, stderr=subprocess.STDOUT, env=self._env,
                                      start_new_session=True)

    def wait_ready(self, ids: list[str] | None = None, deadline_s: float = STARTUP_DEADLINE_S) -> None:
        deadline = time.monotonic() + deadline_s
        for rid in ids or self.ids:
            r = self.replicas[rid]
            while True:
                if r.proc is None or r.proc.poll() is not None:
                    code = None if r.proc is None else r.proc.returncode
                    raise RuntimeError(f"replica {rid} exited ({code}):\n{self.output(rid)}")
                if self.healthy(rid):
                    self._ever_ready = True
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {rid}: no /healthz within {deadline_s}s:\n{self.output(rid)}")
                time.sleep(POLL_S)  # poll interval; readiness is the /healthz answer

    def healthy(self, rid: str) -> bool:
        try:
            with urllib.request.urlopen(self.url(rid) + "/healthz", timeout=1.0) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self, ids: list[str] | None = None) -> None:
        """Start replicas and wait for each to answer /healthz.

        The first start of the whole cluster picks fresh ports and tries again (twice at most) if
        another program bound one of ours between our choosing it and the replica binding it.
        """
        first_start = ids is None and not self._ever_ready
        for attempt in range(3):
            for rid in ids or self.ids:
                self.spawn(rid)
            try:
                self.wait_ready(ids)
                return
            except RuntimeError:
                if not (first_start and attempt < 2 and self._lost_a_port()):
                    raise
                self.close()
                for r in self.replicas.values():
                    r.peer_port, r.http_port, r.proc = free_port(self.host), free_port(self.host), None

    def _lost_a_port(self) -> bool:
        return any("address already in use" in self.output(rid) for rid in self.ids)

    def kill(self, rid: str) -> None:
        """SIGKILL: no flush, no checkpoint, no goodbye."""
        r = self.replicas[rid]
        if r.running:
            r.proc.send_signal(signal.SIGKILL)
            r.proc.wait(timeout=STOP_DEADLINE_S)

    def stop(self, rid: str) -> int | None:
        """SIGTERM and wait (a clean stop); SIGKILL if it will not go. Returns the exit code."""
        r = self.replicas[rid]
        if r.proc is None:
            return None
        if r.proc.poll() is None:
            r.proc.terminate()
            try:
                r.proc.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait(timeout=STOP_DEADLINE_S)
        return r.proc.returncode

    def restart(self, rid: str) -> None:
        self.spawn(rid)
        self.wait_ready([rid])

    def close(self) -> None:
        """Stop every replica cleanly: all are told at once, then each is waited for."""
        for r in self.replicas.values():
            if r.running:
                r.proc.terminate()
        for rid in self.ids:
            self.stop(rid)

    def output(self, rid: str) -> str:
        log = self.replicas[rid].log
        return log.read_text(errors="replace") if log.exists() else ""

    def __enter__(self) -> ProcessCluster:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["ProcessCluster", "ReplicaProc", "edgestate_cmd", "free_port"]
