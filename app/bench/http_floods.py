"""`edgestate bench hostile --http`: the big valid writes' event-loop stall, and hostile HTTP.

- **stall**: the writes of `edgestate bench writes` (its `after` round, reused as is: the
  server in a thread with a 5 ms heartbeat on its loop): a refused 130,000-member set add, the
  most members one request may carry, a one-member add to a set one below its bound, the most
  map fields one request may carry. The longest heartbeat delay charged to an accepted write
  is the stall; the longest garbage collection in the same window and the host's load average
  stand beside it, since either can make the figure (see `bench writes`).
- **hostile requests** against a fresh `edgestate serve` process: keys that are not UTF-8, a
  JSON body that repeats a member, bad methods, bad and lying Content-Length headers, bodies
  over the limit (declared and chunked), deep nesting, huge numbers, NaN, bodies that are not
  UTF-8, a smuggling pair of Content-Length and Transfer-Encoding, a header of 100 KB. Each
  answer's status is kept; any 5xx, or a server that dies, is a miss.
- **header flood**: N clients each send one request with a header of S bytes (16 MiB), at
  once; the server's peak RSS growth (target: under 50 MB) and its answers (431 each: the head
  is bounded by `web.http_head`; before it, uvicorn's httptools parser held each header whole).
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

MiB = 1024 * 1024


@dataclass
class HttpParams:
    pops: str = "default"  # the stall round's replicas: 22 POPs, so a write is joined at 21
    big: int = 130_000
    header_clients: int = 10
    header_bytes: int = 16 * MiB


SHORT: dict[str, Any] = dict(pops="lhr,syd,jfk", header_clients=2, header_bytes=4 * MiB)


def stall(p: HttpParams) -> dict:
    from .writes import _round

    load_before = os.getloadavg()
    rows = _round(p.pops, p.big, "after")
    load_after = os.getloadavg()
    accepted = [r for r in rows if r["status"] == 200]
    worst = max(accepted, key=lambda r: r["worst_stall_ms"], default=None)
    return {"pops": p.pops, "rows": rows, "longest_stall_ms": round(worst["worst_stall_ms"], 1) if worst else 0.0,
            "longest_stall_write": worst["write"] if worst else None,
            "worst_gc_ms": round(max((r["worst_gc_ms"] for r in rows), default=0.0), 1),
            "load_average_1m": [round(load_before[0], 2), round(load_after[0], 2)],
            "statuses": [r["status"] for r in rows]}


# -- hostile requests -----------------------------------------------------------------------------

_K = "/api/replicas/lhr"


def _json_requests() -> list[tuple[str, str, str, bytes | None, dict]]:
    """(name, method, path, body, headers) sent with httpx."""
    j = {"content-type": "application/json"}
    return [
        ("invalid UTF-8 key (PUT)", "PUT", f"{_K}/kv/coll%FEx", b'{"value": "fe"}', j),
        ("invalid UTF-8 key (GET)", "GET", f"{_K}/kv/coll%FFx", None, {}),
        ("NUL in a key", "PUT", f"{_K}/kv/a%00b", b'{"value": 1}', j),
        ("a 16 KB key", "PUT", f"{_K}/kv/{'k' * 16384}", b'{"value": 1}', j),
        ("duplicate JSON member", "POST", f"{_K}/counters/d", b'{"add":1,"add":100}', j),
        ("PATCH", "PATCH", f"{_K}/counters/d", b'{"add":1}', j),
        ("DELETE on a read-only route", "DELETE", "/healthz", None, {}),
        ("body over the limit, declared", "PUT", f"{_K}/kv/big", b'{"value": "' + b"x" * (2 * MiB) + b'"}', j),
        ("deep nesting", "POST", f"{_K}/sets/deep", b'{"add": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", j),
        ("a 5,000-digit number", "POST", f"{_K}/counters/n", b'{"add": ' + b"9" * 5000 + b"}", j),
        ("NaN", "POST", f"{_K}/counters/n", b'{"add": NaN}', j),
        ("Infinity as a value", "PUT", f"{_K}/kv/inf", b'{"value": Infinity}', j),
        ("a body that is not UTF-8", "PUT", f"{_K}/kv/u", b'{"value": "\xff\xfe"}', j),
        ("a body that is not JSON", "PUT", f"{_K}/kv/t", b"value=1", {"content-type": "text/plain"}),
        ("an empty body", "POST", f"{_K}/counters/e", b"", j),
        ("a JSON list body", "POST", f"{_K}/counters/e", b"[1, 2]", j),
        ("a member of the wrong type", "POST", f"{_K}/counters/e", b'{"add": "1"}', j),
    ]


def _chunked_over_limit() -> bytes:
    head = (f"PUT {_K}/kv/chunked HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(40))  # 2.5 MiB, no length declared
    return head + body + b"0\r\n\r\n"


def _raw_requests() -> list[tuple[str, bytes, bool]]:
    """(name, bytes, whether to half-close after sending) sent over a raw socket."""
    post = f"POST {_K}/counters/raw HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n".encode()
    return [
        ("Content-Length: abc", post + b"Content-Length: abc\r\n\r\n{\"add\":1}", False),
        ("Content-Length: -1", post + b"Content-Length: -1\r\n\r\n{\"add\":1}", False),
        ("a lying Content-Length (more than sent)", post + b"Content-Length: 100\r\n\r\n{\"add\":1}", True),
        ("two different Content-Lengths", post + b"Content-Length: 9\r\nContent-Length: 10\r\n\r\n{\"add\":1}", False),
        ("Content-Length with Transfer-Encoding", post + b"Content-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n"
                                                         b"9\r\n{\"add\":1}\r\n0\r\n\r\n", False),
        ("a method HTTP does not know", b"FROB /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", False),
        ("a 64 KB key", f"GET {_K}/kv/{'k' * 65536} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode(), False),
        ("a 100 KB header", b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
         False),
        ("a request line that is not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64), True),
        ("a chunked body over the limit", _chunked_over_limit(), False),
    ]


def _raw(port: int, data: bytes, half_close: bool, timeout: float = 10.0) -> int | str:
    """The status of the first answer, 'closed' if none came, 'timeout' if the server kept quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # answered and closed before we finished: read what it said
        got = b""
        try:
            while b"\r\n" not in got:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except TimeoutError:
            return "timeout"
        except OSError:
            pass
    line = got.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit() else "closed"


def _documented_shape(r) -> bool:
    try:
        err = r.json()["error"]
        return isinstance(err["code"], str) and isinstance(err["message"], str)
    except (ValueError, KeyError, TypeError):
        return False


def hostile(base_url: str) -> dict:
    import httpx

    port = int(base_url.rsplit(":", 1)[1])
    answers: list[dict] = []
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        for name, method, path, body, headers in _json_requests():
            status: int | str
            try:
                r = http.request(method, path, content=body, headers=headers)
                status, shaped = r.status_code, r.status_code < 400 or _documented_shape(r)
            except httpx.TransportError as e:
                status, shaped = f"error: {type(e).__name__}", False
            answers.append({"request": name, "status": status, "json_error": shaped})
        try:  # the duplicate-member write must have changed nothing
            read_back = http.get(f"{_K}/counters/d").json().get("value")
        except (httpx.HTTPError, ValueError, AttributeError):
            read_back = None
    for name, data, half_close in _raw_requests():
        try:
            status = _raw(port, data, half_close)
        except OSError as e:
            status = f"error: {type(e).__name__}"
        answers.append({"request": name, "status": status, "json_error": None})
    five = [a["request"] for a in answers if isinstance(a["status"], int) and a["status"] >= 500]
    return {"requests": len(answers), "answers": answers,
            "statuses": dict(Counter(str(a["status"]) for a in answers)), "five_xx": len(five), "five_xx_requests": five,
            "app_errors_not_json": [a["request"] for a in answers if a["json_error"] is False],
            "duplicate_member_changed_nothing": read_back == 0}


def _big_header(port: int, size: int) -> int | str:
    head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: "
    return _raw(port, head + b"a" * size + b"\r\n\r\n", False, timeout=60.0)


def header_flood(base_url: str, pid: int, clients: int, size: int) -> dict:
    from .ws_floods import PeakSampler, _in_threads

    port = int(base_url.rsplit(":", 1)[1])
    sampler = PeakSampler(pid)
    try:
        statuses = _in_threads(clients, lambda i: _big_header(port, size))
        base, rss, _ = sampler.growth()
    finally:
        sampler.close()
    return {"clients": clients, "header_mib": size / MiB, "statuses": dict(Counter(str(x) for x in statuses)),
            "rss_before_mb": base, "peak_rss_growth_mb": rss}


def measure_hostile(p: HttpParams | None = None, progress=lambda msg: None) -> dict:
    from .ws import Params, _Server

    p = p or HttpParams()
    server = _Server(Params(pops="lhr"), progress)
    base_url = server.start()
    assert server.proc is not None  # started by us, not --url
    try:
        out = hostile(base_url)
        progress(f"http: {p.header_clients} clients x a {p.header_bytes / MiB:g} MiB header ...")
        out["header_flood"] = header_flood(base_url, server.proc.pid, p.header_clients, p.header_bytes)
        try:
            import httpx

            alive = server.proc.poll() is None and httpx.get(base_url + "/healthz", timeout=10.0).status_code == 200
        except httpx.TransportError:
            alive = False
        out["server_alive"] = alive
    finally:
        server.stop()
    return out


def measure(p: HttpParams, progress=lambda msg: None) -> dict:
    progress("http: hostile requests against a fresh serve ...")
    out = {"hostile": measure_hostile(p, progress)}
    progress(f"http: big valid writes on {p.pops} POPs, the loop's stall ...")
    t0 = time.monotonic()
    out["stall"] = stall(p)
    out["stall"]["took_s"] = round(time.monotonic() - t0, 1)
    return out


def report(r: dict) -> str:
    s, h = r["stall"], r["hostile"]
    rows = ", ".join(f"{row['write']}: {row['status']} {row['worst_stall_ms']:.1f} ms" for row in s["rows"])
    return "\n".join([
        f"http stall     {rows}",
        f"http stall     longest from an accepted write: {s['longest_stall_ms']} ms ({s['longest_stall_write']}), "
        f"longest GC {s['worst_gc_ms']} ms, load average {s['load_average_1m'][0]} -> {s['load_average_1m'][1]} "
        f"({s['pops']} POPs)",
        f"http hostile   {h['requests']} requests: {h['statuses']}, 5xx: {h['five_xx']} {h['five_xx_requests'] or ''}"
        f"; server {'alive' if h['server_alive'] else 'DEAD'}"
        + (f"; app errors not JSON: {h['app_errors_not_json']}" if h["app_errors_not_json"] else ""),
        f"http headers   {h['header_flood']['clients']} clients x a {h['header_flood']['header_mib']:g} MiB header: "
        f"{h['header_flood']['statuses']}, server RSS +{h['header_flood']['peak_rss_growth_mb']} MB "
        f"(from {h['header_flood']['rss_before_mb']} MB)",
    ])
