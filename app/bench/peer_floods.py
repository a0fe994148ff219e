"""`edgestate bench hostile --peer-port`: what strangers on the peer port cost a replica.

Starts two real `edgestate replica` processes (lhr, syd; `ProcessCluster`) twice: once with
peer links over mutual TLS (a throwaway CA) and once with the shared secret only. Against lhr's
peer port, one after the other:

- **big prefixes**: N connections each send a 16 MiB length prefix and then 16 MiB - 1 bytes
  of garbage (plaintext: under TLS it is not a handshake);
- **idle**: N connections that send nothing; the phase ends when lhr has closed them all or
  after `HELLO_S` + 10 s (at most `MAX_PENDING` may wait to authenticate, each for `HELLO_S`);
- **slowloris**: N connections that trickle 1 byte a second (a real TLS ClientHello under TLS,
  a small hello's length prefix and body without), until lhr closes them or a deadline.

For each phase: lhr's peak RSS growth over its RSS just before (sampled every 20 ms from
/proc, and the growth of its VmHWM), how the attackers were answered, the seconds until lhr
had closed them all, and what lhr counted in `/metrics` (`edgestate_peer_connections_refused`,
`edgestate_bad_frames`) during the phase. Afterwards syd is restarted (a fresh peer connection
through the port that was flooded) and a write at each replica must reach the other.

Linux only (it reads /proc).
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import struct
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .ws_floods import MiB, PeakSampler, _in_threads

CLOSE_SLACK_S = 10.0  # beyond the transport's own deadline, before the bench stops waiting


@dataclass
class PeerParams:
    big_clients: int = 20
    big_bytes: int = 16 * MiB
    idle_clients: int = 2000
    slow_clients: int = 20
    slow_deadline: float = 30.0
    modes: tuple[str, ...] = ("tls", "secret")
    phases: tuple[str, ...] = ("big", "idle", "slow")


SHORT: dict[str, Any] = dict(big_clients=4, idle_clients=200, slow_clients=3)


def hwm_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def metrics(url: str) -> dict[str, float]:
    """The peer-port refusal counters of a replica's /metrics, as 'family{reason}' -> value."""
    import httpx

    text = httpx.get(url + "/metrics", timeout=10.0).text
    out = {}
    for m in re.finditer(r'(?m)^edgestate_(peer_connections_refused|bad_frames)_total\{reason="([^"]*)"\} ([0-9.e+]+)$',
                         text):
        out[f"{m.group(1)}:{m.group(2)}"] = float(m.group(3))
    return out


def _delta(before: dict, after: dict) -> dict:
    grouped: dict[str, dict[str, int]] = {}
    for k, v in after.items():
        n = int(v - before.get(k, 0.0))
        if n:
            family, reason = k.split(":", 1)
            grouped.setdefault(family, {})[reason] = n
    return grouped


def client_hello() -> bytes:
    """The bytes a TLS client sends first: what a slowloris under TLS trickles."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="lhr")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


_GARBAGE = b"x" * MiB


def send_big_prefix(port: int, size: int) -> tuple[str, int]:
    """One attacker: a `size` length prefix, then `size` - 1 bytes. (how it ended, bytes sent)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30.0) as s:
        try:
            s.sendall(struct.pack(">I", size))
            sent = 4
            left = size - 1
            while left:
                n = min(left, len(_GARBAGE))
                s.sendall(memoryview(_GARBAGE)[:n])
                sent += n
                left -= n
        except OSError:
            return "cut off", sent
        try:  # everything went: is it closed now?
            return ("closed" if s.recv(1) == b"" else "answered"), sent
        except TimeoutError:
            return "open", sent
        except OSError:
            return "cut off", sent


def _watch_closed(socks: list[socket.socket], deadline_s: float, trickle: bytes | None = None) -> list[float | None]:
    """Seconds until each socket was closed by the other end (None: still open at the deadline).
    With `trickle`, each open socket is sent its next byte every second."""
    started = time.monotonic()
    closed: list[float | None] = [None] * len(socks)
    poller = select.poll()
    index = {}
    for i, s in enumerate(socks):
        poller.register(s, select.POLLIN | select.POLLERR | select.POLLHUP)
        index[s.fileno()] = i
    sent = [0] * len(socks)
    next_byte = started
    while any(c is None for c in closed) and time.monotonic() - started < deadline_s:
        now = time.monotonic()
        if trickle is not None and now >= next_byte:
            next_byte += 1.0
            for i, s in enumerate(socks):
                if closed[i] is None and sent[i] < len(trickle):
                    try:
                        s.send(trickle[sent[i]:sent[i] + 1])
                        sent[i] += 1
                    except OSError:
                        pass  # poll() reports it
        for fd, _ev in poller.poll(100):
            i = index[fd]
            try:
                data = socks[i].recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:  # EOF or reset: lhr closed it
                closed[i] = round(time.monotonic() - started, 1)
                poller.unregister(fd)
    return closed


def _connect_many(port: int, n: int) -> tuple[list[socket.socket], int]:
    socks, failed = [], 0
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5.0)
        except OSError:
            failed += 1
            continue
        socks.append(s)
    return socks, failed


def _closing(closed: list[float | None], connected: int, failed: int) -> dict:
    done = [c for c in closed if c is not None]
    return {"connected": connected, "connect_failed": failed,
            "closed_within_1s": sum(1 for c in done if c <= 1.0), "still_open": len(closed) - len(done),
            "all_closed_after_s": max(done) if len(done) == len(closed) and done else None}


def _phase(sampler: PeakSampler, pid: int, url: str, attack) -> dict:
    sampler.phase()
    hwm0, m0 = hwm_bytes(pid), metrics(url)
    out = attack()
    base, rss, _ = sampler.growth()
    hwm = round((hwm_bytes(pid) - hwm0) / 1e6, 1)
    return {**out, "rss_before_mb": base, "peak_rss_growth_mb": max(rss, hwm), "sampled_growth_mb": rss,
            "hwm_growth_mb": hwm, "counted": _delta(m0, metrics(url))}


def _replicates(cluster, src: str, dst: str, key: str, deadline_s: float = 30.0) -> bool:
    import httpx

    value = f"{src}->{dst}@{time.time_ns()}"
    r = httpx.put(f"{cluster.url(src)}/api/replicas/{src}/kv/{key}", json={"value": value}, timeout=10.0)
    if r.status_code != 200:
        return False
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            got = httpx.get(f"{cluster.url(dst)}/api/replicas/{dst}/kv/{key}", timeout=5.0)
            if got.status_code == 200 and value in got.json().get("values", []):
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling interval
    return False


def _mode(tls: bool, p: PeerParams, progress) -> dict:
    from replication.io import net

    from ..processes.supervisor import ProcessCluster

    label = "tls" if tls else "secret"
    with tempfile.TemporaryDirectory(prefix=f"edgestate-hostile-{label}-") as root, \
            ProcessCluster(["lhr", "syd"], root, inject_latency=False, tls=tls) as cluster:
        cluster.start()
        target = cluster.replicas["lhr"]
        assert target.proc is not None  # started above
        pid, url, port = target.proc.pid, cluster.url("lhr"), target.peer_port
        result: dict = {"replicated_before": _replicates(cluster, "syd", "lhr", "before")}
        sampler = PeakSampler(pid)
        try:
            if "big" in p.phases:
                progress(f"peer port ({label}): {p.big_clients} x {p.big_bytes / MiB:g} MiB prefixes ...")

                def big() -> dict:
                    ends = _in_threads(p.big_clients, lambda i: send_big_prefix(port, p.big_bytes))
                    outcomes = Counter(e[0] if isinstance(e, tuple) else e for e in ends)
                    offered = sum(e[1] for e in ends if isinstance(e, tuple))
                    return {"clients": p.big_clients, "prefix_mib": p.big_bytes / MiB, "outcomes": dict(outcomes),
                            "sent_mb": round(offered / 1e6, 1)}

                result["big"] = _phase(sampler, pid, url, big)
            if "idle" in p.phases:
                progress(f"peer port ({label}): {p.idle_clients} idle connections ...")

                def idle() -> dict:
                    socks, failed = _connect_many(port, p.idle_clients)
                    try:
                        closed = _watch_closed(socks, net.HELLO_S + CLOSE_SLACK_S)
                    finally:
                        for s in socks:
                            s.close()
                    return {"clients": p.idle_clients, **_closing(closed, len(socks), failed)}

                result["idle"] = _phase(sampler, pid, url, idle)
            if "slow" in p.phases:
                progress(f"peer port ({label}): {p.slow_clients} slowloris connections, 1 byte/s ...")
                trickle = client_hello() if tls else struct.pack(">I", 200) + b"\0" * 200

                def slow() -> dict:
                    socks, failed = _connect_many(port, p.slow_clients)
                    try:
                        closed = _watch_closed(socks, p.slow_deadline, trickle)
                    finally:
                        for s in socks:
                            s.close()
                    return {"clients": p.slow_clients, **_closing(closed, len(socks), failed)}

                result["slow"] = _phase(sampler, pid, url, slow)
        finally:
            sampler.close()
        result["replica_alive"] = target.running
        # a fresh connection from a restarted peer through the flooded port, and lhr's own dial out
        cluster.stop("syd")
        cluster.restart("syd")
        result["replicated_after"] = (_replicates(cluster, "syd", "lhr", "after-in")
                                      and _replicates(cluster, "lhr", "syd", "after-out"))
        result["peer_tls"] = tls
        return result


def measure(p: PeerParams, progress=lambda msg: None) -> dict:
    _raise_fd_limit(p.idle_clients + 256)
    return {mode: _mode(mode == "tls", p, progress) for mode in p.modes}


def _raise_fd_limit(need: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def worst_rss(r: dict) -> float:
    return max((ph["peak_rss_growth_mb"] for m in r.values() for ph in m.values() if isinstance(ph, dict)
                and "peak_rss_growth_mb" in ph), default=0.0)


def report(r: dict) -> str:
    lines = []
    for mode, m in r.items():
        head = f"peer port {mode:<6}"
        if "big" in m:
            b = m["big"]
            lines.append(f"{head} {b['clients']} x {b['prefix_mib']:g} MiB prefixes ({b['sent_mb']} MB sent): "
                         f"replica RSS +{b['peak_rss_growth_mb']} MB (from {b['rss_before_mb']} MB), "
                         f"{b['outcomes']}, counted {b['counted']}")
        for phase, what in (("idle", "idle"), ("slow", "slowloris")):
            if phase in m:
                x = m[phase]
                when = f"all closed after {x['all_closed_after_s']} s" if x["all_closed_after_s"] is not None \
                    else f"{x['still_open']} STILL OPEN"
                lines.append(f"{head} {x['connected']}/{x['clients']} {what}: {x['closed_within_1s']} closed at once, "
                             f"{when}, replica RSS +{x['peak_rss_growth_mb']} MB, counted {x['counted']}")
        lines.append(f"{head} replica {'alive' if m['replica_alive'] else 'DEAD'}, replicates a write both ways "
                     f"after a peer restart: {'yes' if m['replicated_after'] else 'NO'}")
    return "\n".join(lines)
