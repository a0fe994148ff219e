"""`edgestate bench faults --processes`: real replica processes under SIGKILL churn.

Five `edgestate replica` processes on loopback (with `--inject-latency`, so peers are as far
apart as their POPs), and `writers` client threads writing at random replicas: kv writes to
keys of their own (so each key has one right value) and increments of a few shared counters.
Meanwhile a random replica is SIGKILLed every `kill_every_s` (about) and restarted
`down_s` later, with at most `max_down` down at once, and one replica is frozen with SIGSTOP
for `stop_s` (its peers see it die; its clients time out), then thawed. Then every replica is
brought back, and the run checks, once the cluster has converged:

- every replica restarted, and all digests are equal, within `converge_s` of the last restart;
- every acknowledged kv write reads back, with its value, at every replica;
- every counter, at every replica, lies between its acknowledged increments and those plus
  the indeterminate ones (a request that timed out or whose connection broke may or may not
  have been applied; an error answer means it was not).

A client's view of each request: `acked` (200), `refused` (an error status, or the
connection refused: not applied), `indeterminate` (no answer).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field

from ..processes.supervisor import ProcessCluster

IDS = ("lhr", "fra", "jfk", "sin", "syd")
COUNTERS = ("c0", "c1", "c2")
REQUEST_TIMEOUT_S = 5.0
SETTLE_DEADLINE_S = 120.0


@dataclass
class ChurnParams:
    duration_s: float = 60.0
    writers: int = 8
    kill_every_s: float = 8.0
    down_s: float = 3.0
    max_down: int = 2
    stop_s: float = 15.0
    converge_s: float = 10.0
    seed: int = 0


@dataclass
class ChurnResult:
    ok: bool
    failures: list[str] = field(default_factory=list)
    acked: int = 0
    refused: int = 0
    indeterminate: int = 0
    kills: int = 0
    stops: int = 0
    converge_s: float | None = None
    kv_checked: int = 0
    counters: dict = field(default_factory=dict)
    wall_s: float = 0.0


class _Client:
    """What the writers saw, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kv: dict[str, object] = {}
        self.acked = {c: 0 for c in COUNTERS}
        self.unknown = {c: 0 for c in COUNTERS}
        self.counts = {"acked": 0, "refused": 0, "indeterminate": 0}


def _request(method: str, url: str, body: dict | None) -> tuple[str, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
            return "acked", json.loads(resp.read())
    except urllib.error.HTTPError as e:
        e.close()
        return "refused", e.code  # an answer: the replica says it did not apply it
    except urllib.error.URLError as e:
        if isinstance(e.reason, ConnectionRefusedError):
            return "refused", None  # nobody listening: it never arrived
        return "indeterminate", None
    except (ConnectionError, socket.timeout, TimeoutError, OSError, http.client.HTTPException):
        return "indeterminate", None


def _writer(tid: int, cluster: ProcessCluster, client: _Client, stop: threading.Event, seed: int) -> None:
    rng = random.Random(f"{seed}:writer:{tid}")
    n = 0
    while not stop.is_set():
        rid = rng.choice(IDS)
        base = f"{cluster.url(rid)}/api/replicas/{rid}"
        if rng.random() < 0.5:
            key, value = f"t{tid}-{n}", {"t": tid, "n": n}
            n += 1
            outcome, _ = _request("PUT", f"{base}/kv/{key}", {"value": value})
            with client.lock:
                client.counts[outcome] += 1
                if outcome == "acked":
                    client.kv[key] = value
        else:
            c = rng.choice(COUNTERS)
            outcome, _ = _request("POST", f"{base}/counters/{c}", {"add": 1})
            with client.lock:
                client.counts[outcome] += 1
                if outcome == "acked":
                    client.acked[c] += 1
                elif outcome == "indeterminate":
                    client.unknown[c] += 1


def _status(cluster: ProcessCluster, rid: str) -> dict | None:
    outcome, body = _request("GET", f"{cluster.url(rid)}/api/status", None)
    return body if outcome == "acked" else None


def _digests(cluster: ProcessCluster) -> dict[str, str | None]:
    out = {}
    for rid in IDS:
        st = _status(cluster, rid)
        out[rid] = None if st is None else st["digest"]
    return out


def run_churn(params: ChurnParams, root: str | None = None, log=print) -> ChurnResult:
    rng = random.Random(f"{params.seed}:chaos")
    res = ChurnResult(ok=False)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgestate-churn-") as tmp:
        cluster = ProcessCluster(list(IDS), root or tmp, inject_latency=True)
        client = _Client()
        stop = threading.Event()
        try:
            cluster.start()
            writers = [threading.Thread(target=_writer, args=(i, cluster, client, stop, params.seed), daemon=True)
                       for i in range(params.writers)]
            for w in writers:
                w.start()
            down: dict[str, float] = {}  # SIGKILLed replica -> when to restart it
            frozen: tuple[str, float] | None = None
            stop_at = t0 + params.duration_s * 0.3 if params.stop_s > 0 else None
            end = time.monotonic() + params.duration_s
            next_kill = time.monotonic() + rng.uniform(0.5, 1.5) * params.kill_every_s
            while time.monotonic() < end:
                now = time.monotonic()
                for rid, at in list(down.items()):
                    if now >= at:
                        cluster.spawn(rid)
                        del down[rid]
                if frozen and now >= frozen[1]:
                    os.kill(cluster.replicas[frozen[0]].proc.pid, signal.SIGCONT)
                    frozen = None
                if stop_at is not None and now >= stop_at:
                    stop_at = None
                    rid = rng.choice([r for r in IDS if r not in down])
                    os.kill(cluster.replicas[rid].proc.pid, signal.SIGSTOP)
                    frozen = (rid, now + params.stop_s)
                    res.stops += 1
                    log(f"churn: SIGSTOP {rid} for {params.stop_s:.0f} s")
                if now >= next_kill:
                    next_kill = now + rng.uniform(0.5, 1.5) * params.kill_every_s
                    live = [r for r in IDS if r not in down and (frozen is None or r != frozen[0])]
                    if len(down) < params.max_down and live:
                        rid = rng.choice(live)
                        cluster.kill(rid)
                        down[rid] = now + params.down_s
                        res.kills += 1
                        log(f"churn: SIGKILL {rid} at {now - t0:.1f} s")
                time.sleep(0.05)  # the chaos loop's tick; every wait on the cluster below is a condition
            stop.set()
            for w in writers:
                w.join(timeout=REQUEST_TIMEOUT_S * 3)
            if frozen:
                os.kill(cluster.replicas[frozen[0]].proc.pid, signal.SIGCONT)
            for rid in list(down):
                cluster.spawn(rid)
            try:
                cluster.wait_ready()
            except RuntimeError as e:
                res.failures.append(f"a replica did not restart: {e}")
                return res
            back = time.monotonic()
            deadline = back + SETTLE_DEADLINE_S
            while True:
                d = _digests(cluster)
                if None not in d.values() and len(set(d.values())) == 1:
                    res.converge_s = round(time.monotonic() - back, 2)
                    break
                if time.monotonic() > deadline:
                    res.failures.append(f"not converged {SETTLE_DEADLINE_S:.0f} s after the last restart: "
                                        f"{_explain(cluster)}")
                    return res
                time.sleep(0.1)  # poll interval
            if res.converge_s > params.converge_s:
                res.failures.append(f"converged {res.converge_s} s after the last restart; the target is "
                                    f"{params.converge_s} s")
            _check_reads(cluster, client, res)
        finally:
            stop.set()
            for r in cluster.replicas.values():
                if r.running:
                    try:
                        os.kill(r.proc.pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
            cluster.close()
            if res.failures:
                res.failures.append(f"replica logs kept in {_keep_logs(cluster)}")
            res.acked = client.counts["acked"]
            res.refused = client.counts["refused"]
            res.indeterminate = client.counts["indeterminate"]
            res.wall_s = round(time.monotonic() - t0, 1)
    res.ok = not res.failures
    return res


def _keep_logs(cluster: ProcessCluster) -> str:
    import shutil

    keep = tempfile.mkdtemp(prefix="edgestate-churn-logs-")
    for r in cluster.replicas.values():
        if r.log.exists():
            shutil.copy(r.log, keep)
    return keep


def _explain(cluster: ProcessCluster) -> str:
    """Each replica's digest, actor, vector and view of its peers: enough to start looking."""
    out = []
    for rid in IDS:
        st = _status(cluster, rid)
        if st is None:
            out.append(f"{rid}: no answer")
            continue
        peers = {p: s for p, s in st.get("peers", {}).items() if s != "alive"}
        out.append(f"{rid}: digest {st['digest'][:12]} actor {st['actor']} vv {st['version_vector']} "
                   f"joined {st.get('joined')} not-alive peers {peers} waiting {st.get('waiting_inbound')} "
                   f"held {st.get('held_outbound')} transport {st.get('transport')}")
    return "\n  ".join(["", *out])


def _check_reads(cluster: ProcessCluster, client: _Client, res: ChurnResult) -> None:
    for rid in IDS:
        base = f"{cluster.url(rid)}/api/replicas/{rid}"
        for key, value in client.kv.items():
            outcome, body = _request("GET", f"{base}/kv/{key}", None)
            if outcome != "acked" or body.get("values") != [value]:
                res.failures.append(f"{rid}: acknowledged kv {key!r}={value} reads {body!r}")
                if len(res.failures) > 20:
                    return
            res.kv_checked += 1
        for c in COUNTERS:
            outcome, body = _request("GET", f"{base}/counters/{c}", None)
            lo, hi = client.acked[c], client.acked[c] + client.unknown[c]
            got = body.get("value") if outcome == "acked" else None
            res.counters.setdefault(c, {"acked": lo, "indeterminate": client.unknown[c], "read": {}})["read"][rid] = got
            if got is None or not lo <= got <= hi:
                res.failures.append(f"{rid}: counter {c} reads {got}; acknowledged {lo}, at most {hi} with the "
                                    "indeterminate ones")


def as_dict(r: ChurnResult) -> dict:
    return asdict(r)


__all__ = ["ChurnParams", "ChurnResult", "as_dict", "run_churn"]
