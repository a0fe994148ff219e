"""A capture of peer traffic between two real replica processes shows no written value under TLS.

jfk is told lhr's peer address is a relay's: a thread that accepts, dials lhr's real peer port, and
forwards bytes both ways, keeping a copy of every one. Connections carry frames one way (see
`replication.io.net`), so everything jfk sends lhr, a new write included, passes the relay. A
distinctive value written at jfk is waited for at lhr; then the recording must not contain its
bytes. The control runs the same with `tls=False` (frames only tagged with the secret) and must
find them: so the test would see a value if TLS leaked one.
"""

from __future__ import annotations

import secrets
import socket
import threading
from pathlib import Path

import httpx
import pytest
from waiting import wait_for

from app.processes.supervisor import ProcessCluster

IDS = ["lhr", "jfk"]
TLS_HANDSHAKE_RECORD = 0x16  # a TLS record of type handshake opens every TLS connection


class Relay:
    """127.0.0.1:port -> target, recording every byte each way, per connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.lock = threading.Lock()
        self.streams: list[bytearray] = []  # one per direction of each connection
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.closing = False
        self.open: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()  # lhr down: the dialler retries
                continue
            with self.lock:
                self.open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                t = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                t.start()
                self.threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        seen = bytearray()
        with self.lock:
            self.streams.append(seen)
        try:
            while data := src.recv(65536):
                with self.lock:
                    seen += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def recorded(self) -> list[bytes]:
        with self.lock:
            return [bytes(s) for s in self.streams]

    def close(self) -> None:
        self.sock.close()
        with self.lock:
            for s in self.open:
                s.close()
        for t in self.threads:
            t.join(timeout=5)


class RelayedCluster(ProcessCluster):
    """jfk reaches lhr's peer port through `relay_port`."""

    relay_port: int = 0

    def command(self, rid: str) -> list[str]:
        cmd = super().command(rid)
        if rid == "jfk":
            direct = f"--peer=lhr={self.host}:{self.replicas['lhr'].peer_port}"
            assert direct in cmd, cmd
            cmd[cmd.index(direct)] = f"--peer=lhr=127.0.0.1:{self.relay_port}"
        return cmd


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "secret-only-control"])
def test_a_written_value_never_appears_in_a_capture_of_tls_peer_traffic(tmp_path: Path, tls: bool):
    c = RelayedCluster(IDS, tmp_path, inject_latency=False, tls=tls)
    relay = Relay((c.host, c.replicas["lhr"].peer_port))
    c.relay_port = relay.port
    value = f"capture-me-{secrets.token_hex(12)}"
    try:
        c.start()
        r = httpx.put(f"{c.url('jfk')}/api/replicas/jfk/kv/secret-note", json={"value": value}, timeout=10)
        assert r.status_code == 200, r.text

        def at_lhr() -> bool:
            r = httpx.get(f"{c.url('lhr')}/api/replicas/lhr/kv/secret-note", timeout=5)
            return r.status_code == 200 and r.json()["values"] == [value]

        wait_for("the value written at jfk to reach lhr (through the relay)", at_lhr)
        st = httpx.get(f"{c.url('lhr')}/api/status", timeout=5).json()
        assert st["transport"]["encrypted"] is tls
    finally:
        c.close()
        relay.close()
    streams = [s for s in relay.recorded() if s]
    captured = b"".join(streams)
    assert len(captured) > 100, f"the relay saw {len(captured)} bytes: jfk did not go through it"
    found = value.encode() in captured
    if tls:
        assert all(s[0] == TLS_HANDSHAKE_RECORD for s in streams), [s[:8] for s in streams]
        assert not found, "the written value is readable in the capture of TLS peer traffic"
    else:
        assert found, "control: without TLS the value should be in the capture (is the relay on the path?)"
