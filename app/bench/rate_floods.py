"""`edgestate bench hostile --rate-limit`: can a client write more than its limit by lying about
who it is?

Starts `edgestate serve --audience` with a tiny per-client write rate (one token per 1000 s, so
the count a client may write is its burst, however slow the machine) and, from loopback, sends
batches of concurrent writes, each write in a batch claiming a different client: distinct
`X-Forwarded-For`, `Forwarded: for=`, `X-Real-IP` and IPv6 `X-Forwarded-For` addresses. Every
write comes from the one real client, so over all batches at most the burst (plus what the rate
refilled meanwhile) may be accepted; each accepted write beyond that is a bypass. The counters
written are read back: their sum must be the writes accepted.

`trusted_proxies` runs the server with `--forwarded-allow-ips` naming loopback, as behind a
proxy: there the distinct addresses are believed, and the campaign shows them as bypasses (a
check that it can see one).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


@dataclass
class RateParams:
    writes: int = 30  # per batch, all at once
    burst: int = 5
    rate: float = 0.001
    trusted_proxies: str | None = None


SHORT: dict = {}


def _batches(n: int) -> dict[str, list[dict[str, str]]]:
    v4 = [f"203.0.113.{i + 1}" for i in range(n)]
    return {
        "X-Forwarded-For": [{"X-Forwarded-For": a} for a in v4],
        "Forwarded": [{"Forwarded": f"for={a};proto=http"} for a in v4],
        "X-Real-IP": [{"X-Real-IP": a} for a in v4],
        "X-Forwarded-For (IPv6)": [{"X-Forwarded-For": f"2001:db8::{i + 1:x}"} for i in range(n)],
    }


def measure(p: RateParams, progress=lambda msg: None) -> dict:
    import httpx

    from .ws import Params, _Server

    extra = ["--audience", "--write-rate", repr(p.rate), "--write-burst", str(p.burst)]
    if p.trusted_proxies:
        extra += ["--forwarded-allow-ips", p.trusted_proxies]
    server = _Server(Params(pops="lhr", extra=tuple(extra)), progress)
    base = server.start()
    assert server.proc is not None  # started by us, not --url
    result: dict = {"writes_per_batch": p.writes, "burst": p.burst, "rate_per_s": p.rate,
                    "trusted_proxies": p.trusted_proxies, "batches": {}}
    try:
        progress(f"rate limit: {len(_batches(1))} batches of {p.writes} writes, each claiming another client ...")
        started = time.monotonic()
        accepted = 0
        with httpx.Client(base_url=base, timeout=30.0) as http, ThreadPoolExecutor(max_workers=p.writes) as pool:
            for i, (name, headers) in enumerate(_batches(p.writes).items()):
                def write(h: dict[str, str], key: str = f"spoof-{i}") -> int | str:
                    try:
                        return http.post(f"/api/replicas/lhr/counters/{key}", json={"add": 1}, headers=h).status_code
                    except httpx.TransportError as e:
                        return f"error: {type(e).__name__}"

                statuses = list(pool.map(write, headers))
                ok = statuses.count(200)
                accepted += ok
                result["batches"][name] = {"accepted": ok, "statuses": dict(Counter(str(s) for s in statuses))}
            elapsed = time.monotonic() - started
            written = sum(http.get(f"/api/replicas/lhr/counters/spoof-{i}").json()["value"]
                          for i in range(len(result["batches"])))
        allowed = p.burst + math.floor(p.rate * elapsed)
        every = [int(s) for b in result["batches"].values() for s, n in b["statuses"].items() if s.isdigit()
                 for _ in range(n)]
        result.update(accepted=accepted, allowed=allowed, bypasses=max(0, accepted - allowed),
                      counted_value=written, five_xx=sum(1 for s in every if s >= 500),
                      server_alive=server.proc.poll() is None)
    finally:
        server.stop()
    return result


def report(r: dict) -> str:
    per = ", ".join(f"{k} {v['accepted']}" for k, v in r["batches"].items())
    return (f"rate limit     {len(r['batches'])} x {r['writes_per_batch']} concurrent writes with spoofed client "
            f"addresses: {r['accepted']} accepted ({per}), {r['allowed']} allowed, bypasses: {r['bypasses']}, "
            f"5xx: {r['five_xx']}, counters read back {r['counted_value']}"
            + (f" (trusting {r['trusted_proxies']})" if r["trusted_proxies"] else ""))
