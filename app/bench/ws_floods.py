"""`edgestate bench hostile --ws`: what hostile WebSocket clients cost a server.

Starts a fresh `edgestate serve` (or uses `--url`), keeps one normal client reading `/ws` and
writes flowing over HTTP so the stream is busy, and then, one after the other:

- **big frames**: N clients each send K binary frames of S bytes (the header first, then the
  payload streamed from a shared buffer, as an attacker would), reading what comes back;
- **deflate bomb**: N clients offer permessage-deflate and send K messages that are ~16 KB on
  the wire and 15 MiB inflated (sent compressed even when compression was not agreed);
- **never-reading clients**: N clients complete the handshake and never read; the phase ends
  when the server has closed them all (its `edgestate_websocket_clients` gauge is back to the
  one normal client) or after a deadline; then they read, to see how the server closed them.

For each phase: the server's peak RSS over its RSS just before the phase (sampled every
20 ms from /proc), the close codes the clients saw (`reset`: the connection was reset before a
close frame could be read; `open`: the server never closed it), whether the normal client kept
receiving, and for the never-reading flood the seconds until the server had closed them all,
the bytes each had waiting for it, and the host's peak TCP socket memory over its level
before (from /proc/net/sockstat, so other work on the host shows in it).

Figures, not pass/fail. Linux only (it reads /proc).
"""

from __future__ import annotations

import base64
import contextlib
import os
import random
import re
import select
import socket
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MiB = 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class FloodParams:
    frame_clients: int = 40
    frames: int = 4
    frame_bytes: int = 15 * MiB
    bomb_clients: int = 40
    bombs: int = 4
    bomb_bytes: int = 15 * MiB
    idle_clients: int = 300
    idle_deadline: float = 60.0
    writes: float = 20.0
    pops: str = "default"
    speed: float = 4.0
    seed: int = 0
    url: str | None = None
    phases: tuple[str, ...] = ("frames", "bomb", "idle")


SHORT: dict[str, Any] = dict(frame_clients=4, frames=2, bomb_clients=4, bombs=2, idle_clients=20, idle_deadline=45.0)


# -- a raw WebSocket client: what an attacker controls ------------------------------------------


def handshake(host: str, port: int, *, deflate: bool = False, timeout: float = 10.0) -> tuple[socket.socket, bool, bytes]:
    """Open `/ws`; returns the socket, whether permessage-deflate was agreed, and any bytes read past the response."""
    sock = socket.create_connection((host, port), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    ext = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if deflate else ""
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            sock.close()
            raise ConnectionError("closed during the handshake")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise ConnectionError(f"handshake refused: {head.splitlines()[0]!r}")
    agreed = re.search(rb"(?im)^sec-websocket-extensions:.*permessage-deflate", head) is not None
    return sock, agreed, rest


class FrameReader:
    """Reads the server's frames without keeping their payloads: counts bytes, finds the close code."""

    def __init__(self) -> None:
        self.buf = b""
        self.skip = 0  # payload bytes still to skip
        self.bytes = 0
        self.close_code: int | None = None

    def feed(self, data: bytes) -> None:
        self.bytes += len(data)
        self.buf += data
        while self.close_code is None:
            if self.skip:
                n = min(self.skip, len(self.buf))
                self.buf, self.skip = self.buf[n:], self.skip - n
                if self.skip:
                    return
            if len(self.buf) < 2:
                return
            opcode, length, at = self.buf[0] & 0x0F, self.buf[1] & 0x7F, 2
            if length == 126:
                if len(self.buf) < 4:
                    return
                length, at = int.from_bytes(self.buf[2:4], "big"), 4
            elif length == 127:
                if len(self.buf) < 10:
                    return
                length, at = int.from_bytes(self.buf[2:10], "big"), 10
            if opcode == 0x8:
                if len(self.buf) < at + length:
                    return
                self.close_code = int.from_bytes(self.buf[at:at + 2], "big") if length >= 2 else 1005
                return
            self.buf, self.skip = self.buf[at:], length


def frame_header(payload_len: int, *, opcode: int = 0x2, rsv1: bool = False) -> bytes:
    """A client frame header with an all-zero mask key (legal), so the payload goes unmasked as is."""
    b0 = 0x80 | (0x40 if rsv1 else 0) | opcode
    if payload_len < 126:
        head = bytes([b0, 0x80 | payload_len])
    elif payload_len < 1 << 16:
        head = bytes([b0, 0x80 | 126]) + payload_len.to_bytes(2, "big")
    else:
        head = bytes([b0, 0x80 | 127]) + payload_len.to_bytes(8, "big")
    return head + b"\0\0\0\0"


def _drain(sock: socket.socket, reader: FrameReader) -> bool:
    """Read what is there without waiting; False once the connection is closed or reset."""
    while True:
        try:
            data = sock.recv(1 << 16, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        reader.feed(data)


def read_close(sock: socket.socket, reader: FrameReader, timeout: float) -> str:
    """Read until the server's close frame, EOF or the timeout: the close code, 'reset', 'eof' or 'open'."""
    deadline = time.monotonic() + timeout
    while reader.close_code is None:
        left = deadline - time.monotonic()
        if left <= 0:
            return "open"
        ready, _, _ = select.select([sock], [], [], min(left, 0.5))
        if not ready:
            continue
        try:
            data = sock.recv(1 << 16)
        except OSError:
            return "reset"
        if not data:
            return "eof"
        reader.feed(data)
    return str(reader.close_code)


_ZEROS = bytes(MiB)


def send_big_frames(host: str, port: int, frames: int, size: int) -> str:
    """One client: `frames` binary frames of `size` bytes; how the server answered."""
    sock, _, rest = handshake(host, port)
    reader = FrameReader()
    reader.feed(rest)
    try:
        sock.settimeout(30.0)
        for _ in range(frames):
            sock.sendall(frame_header(size))
            left = size
            while left and reader.close_code is None:
                n = min(left, len(_ZEROS))
                sock.sendall(memoryview(_ZEROS)[:n])
                left -= n
                if not _drain(sock, reader):
                    return str(reader.close_code) if reader.close_code is not None else "reset"
            if reader.close_code is not None:
                break
        return read_close(sock, reader, 3.0 if reader.close_code is None else 0.0)
    except OSError:
        _drain(sock, reader)
        return str(reader.close_code) if reader.close_code is not None else "reset"
    finally:
        sock.close()


def deflate_bomb(inflated: int) -> bytes:
    """A permessage-deflate message body (window 2**12, the server's limit) that inflates to `inflated` zeros."""
    z = zlib.compressobj(9, zlib.DEFLATED, -12)
    out = [z.compress(bytes(MiB)) for _ in range(inflated // MiB)]
    out.append(z.compress(bytes(inflated % MiB)))
    out.append(z.flush(zlib.Z_SYNC_FLUSH))
    body = b"".join(out)
    return body[:-4] if body.endswith(b"\0\0\xff\xff") else body


def send_bombs(host: str, port: int, bombs: int, body: bytes) -> tuple[bool, str]:
    """One client: offers deflate, sends `bombs` compressed messages; (deflate agreed, how the server answered)."""
    sock, agreed, rest = handshake(host, port, deflate=True)
    reader = FrameReader()
    reader.feed(rest)
    try:
        sock.settimeout(30.0)
        for _ in range(bombs):
            sock.sendall(frame_header(len(body), rsv1=True) + body)
            if not _drain(sock, reader) or reader.close_code is not None:
                break
        return agreed, read_close(sock, reader, 3.0 if reader.close_code is None else 0.0)
    except OSError:
        _drain(sock, reader)
        return agreed, str(reader.close_code) if reader.close_code is not None else "reset"
    finally:
        sock.close()


# -- what the server costs ----------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def tcp_mem_bytes() -> int:
    """The host's TCP socket buffer memory (every process's), from /proc/net/sockstat."""
    with open("/proc/net/sockstat", encoding="ascii") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()
                return int(parts[parts.index("mem") + 1]) * PAGE
    return 0


class PeakSampler:
    """Samples the server's RSS (and the host's TCP memory) every 20 ms; `phase()` restarts the peaks."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.base_rss = self.peak_rss = rss_bytes(pid)
        self.base_tcp = self.peak_tcp = tcp_mem_bytes()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            try:
                rss, tcp = rss_bytes(self.pid), tcp_mem_bytes()
            except (OSError, RuntimeError):
                return
            with self.lock:
                self.peak_rss = max(self.peak_rss, rss)
                self.peak_tcp = max(self.peak_tcp, tcp)

    def phase(self) -> None:
        with self.lock:
            self.base_rss = self.peak_rss = rss_bytes(self.pid)
            self.base_tcp = self.peak_tcp = tcp_mem_bytes()

    def growth(self) -> tuple[float, float, float]:
        """(RSS before the phase, peak RSS growth, peak host TCP memory growth), in MB."""
        with self.lock:
            return (round(self.base_rss / 1e6, 1), round((self.peak_rss - self.base_rss) / 1e6, 1),
                    round((self.peak_tcp - self.base_tcp) / 1e6, 1))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


@dataclass
class NormalClient:
    """One well-behaved client reading the stream in its own thread."""

    url: str
    messages: int = 0
    closed: str | None = None
    thread: threading.Thread | None = None
    conn: object = None
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def start(self) -> None:
        from websockets.sync.client import connect

        self.conn = self.stack.enter_context(connect(self.url, max_size=None, compression=None, open_timeout=10))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for _ in self.conn:
                self.messages += 1
        except ConnectionClosed as e:
            self.closed = str(e.rcvd.code if e.rcvd else "no close frame")
        else:
            self.closed = str(self.conn.close_code)

    def wait_for_more(self, since: int, timeout: float) -> bool:
        """Whether it receives a message beyond `since` within `timeout` (it is still being served)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.closed is None:
            if self.messages > since:
                return True
            time.sleep(0.05)  # polling interval
        return self.messages > since and self.closed is None

    def stop(self) -> None:
        self.stack.close()
        if self.thread is not None:
            self.thread.join(timeout=10)


def _writer(base: str, rate: float, seed: int, stop: threading.Event) -> None:
    import httpx

    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=10.0) as http:
        try:
            ids = [r["id"] for r in http.get("/api/replicas").json()["replicas"]]
        except Exception:  # noqa: BLE001 - a bench keeps going with one POP
            ids = ["lhr"]
        while not stop.wait(1.0 / rate):
            try:
                http.put(f"/api/replicas/{rng.choice(ids)}/kv/flood-{rng.randrange(100)}",
                         json={"value": rng.randrange(1 << 30)})
            except httpx.TransportError:
                pass


def _metric(base: str, name: str) -> float | None:
    import httpx

    try:
        text = httpx.get(base + "/metrics", timeout=5.0).text
    except httpx.TransportError:
        return None
    m = re.search(rf"(?m)^{re.escape(name)} ([0-9.e+]+)$", text)
    return float(m.group(1)) if m else None


def _in_threads(n: int, fn) -> list:
    out: list = [None] * n

    def one(i: int) -> None:
        try:
            out[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - a failed attacker is a result, not a crash
            out[i] = f"error: {type(e).__name__}"

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _phase_frames(host, port, p: FloodParams, sampler: PeakSampler, normal: NormalClient) -> dict:
    sampler.phase()
    before = normal.messages
    codes = _in_threads(p.frame_clients, lambda i: send_big_frames(host, port, p.frames, p.frame_bytes))
    kept = normal.wait_for_more(before, 10.0)
    base, rss, _ = sampler.growth()
    return {"clients": p.frame_clients, "frames": p.frames, "frame_mb": round(p.frame_bytes / 1e6, 1),
            "sent_mb": round(p.frame_clients * p.frames * p.frame_bytes / 1e6, 1),
            "rss_before_mb": base, "peak_rss_growth_mb": rss, "close_codes": dict(Counter(codes)),
            "normal_client_kept_stream": kept}


def _phase_bomb(host, port, p: FloodParams, sampler: PeakSampler, normal: NormalClient) -> dict:
    body = deflate_bomb(p.bomb_bytes)
    sampler.phase()
    before = normal.messages
    results = _in_threads(p.bomb_clients, lambda i: send_bombs(host, port, p.bombs, body))
    kept = normal.wait_for_more(before, 10.0)
    base, rss, _ = sampler.growth()
    agreed = sum(1 for r in results if isinstance(r, tuple) and r[0])
    codes = [r[1] if isinstance(r, tuple) else r for r in results]
    return {"clients": p.bomb_clients, "messages": p.bombs, "wire_kb": round(len(body) / 1e3, 1),
            "inflated_mb": round(p.bomb_bytes / 1e6, 1), "deflate_agreed": agreed,
            "rss_before_mb": base, "peak_rss_growth_mb": rss, "close_codes": dict(Counter(codes)),
            "normal_client_kept_stream": kept}


def _phase_idle(host, port, base_url, p: FloodParams, sampler: PeakSampler, normal: NormalClient) -> dict:
    sampler.phase()
    before = normal.messages
    socks = []
    for _ in range(p.idle_clients):
        try:
            sock, _, rest = handshake(host, port)
        except OSError:
            continue
        reader = FrameReader()
        reader.feed(rest)
        socks.append((sock, reader))
    started = time.monotonic()
    closed_after = None
    deadline = started + p.idle_deadline
    while time.monotonic() < deadline:
        connected = _metric(base_url, "edgestate_websocket_clients")
        if connected is not None and connected <= 1:  # only the normal client is left
            closed_after = round(time.monotonic() - started, 1)
            break
        time.sleep(0.2)  # polling interval
    kept = normal.wait_for_more(before, 10.0)
    base, rss, tcp = sampler.growth()
    codes = _in_threads(len(socks), lambda i: read_close(socks[i][0], socks[i][1], 5.0))
    waiting = sorted(r.bytes for _, r in socks)
    for sock, _ in socks:
        sock.close()
    return {"clients": p.idle_clients, "connected": len(socks), "all_closed_after_s": closed_after,
            "deadline_s": p.idle_deadline, "rss_before_mb": base, "peak_rss_growth_mb": rss,
            "peak_host_tcp_mem_growth_mb": tcp, "close_codes": dict(Counter(codes)),
            "bytes_waiting_per_client_max_kb": round(waiting[-1] / 1e3, 1) if waiting else None,
            "normal_client_kept_stream": kept}


def measure(p: FloodParams, progress=lambda msg: None) -> dict:
    from .ws import Params, _Server

    server = _Server(Params(pops=p.pops, speed=p.speed, seed=p.seed, url=p.url), progress)
    base_url = server.start()
    host, port = base_url.split("//", 1)[1].rsplit(":", 1)
    port = int(port)
    if server.proc is None:
        raise RuntimeError("--url: the server's RSS is read from /proc, so it must be started by the bench")
    stop = threading.Event()
    writer = threading.Thread(target=_writer, args=(base_url, p.writes, p.seed, stop), daemon=True)
    normal = NormalClient(base_url.replace("http://", "ws://") + "/ws")
    sampler = None
    result: dict = {"server": base_url}
    try:
        writer.start()
        normal.start()
        if not normal.wait_for_more(0, 15.0):
            raise RuntimeError("the normal client received nothing")
        sampler = PeakSampler(server.proc.pid)
        if "frames" in p.phases:
            progress(f"big frames: {p.frame_clients} clients x {p.frames} x {p.frame_bytes / MiB:g} MiB ...")
            result["frames"] = _phase_frames(host, port, p, sampler, normal)
        if "bomb" in p.phases:
            progress(f"deflate bomb: {p.bomb_clients} clients x {p.bombs} x {p.bomb_bytes / MiB:g} MiB inflated ...")
            result["bomb"] = _phase_bomb(host, port, p, sampler, normal)
        if "idle" in p.phases:
            progress(f"never-reading: {p.idle_clients} clients ...")
            result["idle"] = _phase_idle(host, port, base_url, p, sampler, normal)
        result["normal_client_closed"] = normal.closed
        result["server_alive"] = server.proc.poll() is None
    finally:
        stop.set()
        normal.stop()
        if sampler is not None:
            sampler.close()
        writer.join(timeout=15)
        server.stop()
    return result


def report(r: dict) -> str:
    lines = []
    if "frames" in r:
        f = r["frames"]
        lines.append(f"big frames     {f['clients']} clients x {f['frames']} x {f['frame_mb']} MB ({f['sent_mb']} MB offered): "
                     f"server RSS +{f['peak_rss_growth_mb']} MB (from {f['rss_before_mb']} MB), closes {f['close_codes']}, "
                     f"normal client {'kept' if f['normal_client_kept_stream'] else 'LOST'} its stream")
    if "bomb" in r:
        b = r["bomb"]
        lines.append(f"deflate bomb   {b['clients']} clients x {b['messages']} x {b['wire_kb']} KB -> {b['inflated_mb']} MB: "
                     f"deflate agreed with {b['deflate_agreed']}, server RSS +{b['peak_rss_growth_mb']} MB, "
                     f"closes {b['close_codes']}, normal client {'kept' if b['normal_client_kept_stream'] else 'LOST'} its stream")
    if "idle" in r:
        i = r["idle"]
        when = f"all closed after {i['all_closed_after_s']} s" if i["all_closed_after_s"] is not None \
            else f"NOT all closed within {i['deadline_s']:g} s"
        lines.append(f"never reading  {i['connected']}/{i['clients']} clients: {when}, closes {i['close_codes']}, "
                     f"server RSS +{i['peak_rss_growth_mb']} MB, host TCP memory +{i['peak_host_tcp_mem_growth_mb']} MB, "
                     f"at most {i['bytes_waiting_per_client_max_kb']} KB waiting per client, "
                     f"normal client {'kept' if i['normal_client_kept_stream'] else 'LOST'} its stream")
    lines.append(f"server         {'alive' if r.get('server_alive') else 'DEAD'}; normal client "
                 f"{'still connected' if r.get('normal_client_closed') is None else 'closed: ' + str(r['normal_client_closed'])}")
    return "\n".join(lines)
