"""CA rotation on a live 3-replica cluster over mutual TLS, with writes running all the way through.

The operator's procedure (README: Peer TLS), one clean restart (SIGTERM, start) at a time:
  0. make CA2 beside CA1;
  1. every replica trusts CA1 and CA2, still with its CA1 certificate;
  2. every replica gets a CA2 certificate (still trusting both);
  3. every replica trusts only CA2.
After each step the cluster converges: every acknowledged write is readable at every replica,
every peer is alive at every replica, and no peer connection was refused in its TLS handshake
or for its identity (the counters in /metrics, read from each process just before it is stopped
and from all at the end of the step). No downtime: one replica is down at a time, and while it
is, the other two each acknowledge writes and answer reads; a write fails only at the replica
being restarted.

The negative control shows the overlap is what makes this work: a replica restarted with a CA2
certificate while the others trust only CA1 is refused by them (their `handshake` refusals
count up), and is taken back once it has its CA1 certificate again, losing nothing.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest
from waiting import wait_for

from app.processes.supervisor import ProcessCluster
from replication.io import certs

IDS = ["lhr", "jfk", "syd"]
WRITE_PACE_S = 0.03  # between one writer's writes: steady load without starving 2 busy cores
CONVERGE_S = 90.0
REFUSED = re.compile(r'^edgestate_peer_connections_refused(?:_total)?\{reason="([^"]+)"\} (\S+)$', re.M)


def refused(c: ProcessCluster, rid: str) -> Counter:
    """This process's peer-connection refusals by reason (since it started)."""
    text = httpx.get(f"{c.url(rid)}/metrics", timeout=5).text
    return Counter({reason: int(float(n)) for reason, n in REFUSED.findall(text)})


def status(c: ProcessCluster, rid: str) -> dict:
    return httpx.get(f"{c.url(rid)}/api/status", timeout=5).json()


class Writers:
    """One thread per replica adding numbered members to the set `rot-<rid>` there, and reading it
    back, until stopped. Records what was acknowledged, and every failure at a replica that was not
    being restarted at the time (there must be none)."""

    def __init__(self, c: ProcessCluster) -> None:
        self.c = c
        self.lock = threading.Lock()
        self.acked: dict[str, set[int]] = {rid: set() for rid in IDS}
        self.reads: Counter = Counter()
        self.failed_at_down: Counter = Counter()
        self.unexpected: list[str] = []
        self.down: set[str] = set()
        self.epoch: Counter = Counter()  # bumped when a replica goes down and when it is back
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(rid,), daemon=True) for rid in IDS]

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def going_down(self, rid: str) -> None:
        with self.lock:
            self.down.add(rid)
            self.epoch[rid] += 1

    def back_up(self, rid: str) -> None:
        with self.lock:
            self.down.discard(rid)
            self.epoch[rid] += 1

    def _run(self, rid: str) -> None:
        n = 0
        url = f"/api/replicas/{rid}/sets/rot-{rid}"
        with httpx.Client(base_url=self.c.url(rid), timeout=10) as http:
            while not self.stop.is_set():
                n += 1
                with self.lock:
                    was_down, epoch = rid in self.down, self.epoch[rid]
                try:
                    w = http.post(url, json={"add": [n]})
                    r = http.get(url)
                    problem = None if w.status_code == r.status_code == 200 and n in r.json()["members"] \
                        else f"write {w.status_code} {w.text[:200]} / read {r.status_code} {r.text[:200]}"
                    if w.status_code == 200:
                        with self.lock:
                            self.acked[rid].add(n)
                except httpx.TransportError as e:
                    problem = repr(e)
                with self.lock:
                    if problem is None:
                        self.reads[rid] += 1
                    elif was_down or rid in self.down or self.epoch[rid] != epoch:
                        self.failed_at_down[rid] += 1
                    else:
                        self.unexpected.append(f"{rid} #{n}: {problem}")
                self.stop.wait(WRITE_PACE_S)  # pacing the load, not waiting for anything

    def snapshot(self) -> dict[str, set[int]]:
        with self.lock:
            return {rid: set(s) for rid, s in self.acked.items()}

    def served(self) -> Counter:
        with self.lock:
            return Counter(self.reads)


def converged(c: ProcessCluster, acked: dict[str, set[int]]) -> bool:
    """Every write acknowledged so far is readable at every replica, and every peer is alive."""
    try:
        for at in IDS:
            st = status(c, at)
            if set(st["peers"].values()) != {"alive"} or len(st["peers"]) != len(IDS) - 1:
                return False
            with httpx.Client(base_url=c.url(at), timeout=5) as http:
                for rid, members in acked.items():
                    r = http.get(f"/api/replicas/{at}/sets/rot-{rid}")
                    if r.status_code != 200 or not members <= set(r.json()["members"]):
                        return False
    except httpx.TransportError:
        return False
    return True


class Refusals:
    """Peer-connection refusals by reason during one step, over process restarts: a process's
    counters start at 0 and die with it, so each is read just before it is stopped, and what it
    had counted before the step began is left out."""

    def __init__(self, c: ProcessCluster) -> None:
        self.c = c
        self.base = {rid: refused(c, rid) for rid in IDS}
        self.total: Counter = Counter()

    def take(self, rid: str, restarting: bool) -> None:
        self.total.update(refused(self.c, rid) - self.base[rid])
        self.base[rid] = Counter() if restarting else refused(self.c, rid)


def restart_one(c: ProcessCluster, w: Writers, rid: str, counts: Refusals | None = None) -> None:
    """Clean stop, start with what `c.cas`/`c.certs` now say; the others serve all along."""
    if counts is not None:
        counts.take(rid, restarting=True)
    others = [o for o in IDS if o != rid]
    served = w.served()
    w.going_down(rid)
    assert c.stop(rid) == 0, c.output(rid)
    # while it is down, the other two still take writes and answer reads
    wait_for(f"writes and reads at {others} while {rid} is down",
             lambda: all(w.served()[o] > served[o] for o in others), deadline_s=30)
    c.restart(rid)
    w.back_up(rid)


def rolling_step(c: ProcessCluster, w: Writers, name: str) -> None:
    counts = Refusals(c)
    for rid in IDS:
        restart_one(c, w, rid, counts)
    acked = w.snapshot()
    wait_for(f"convergence after {name}", lambda: converged(c, acked), deadline_s=CONVERGE_S, poll_s=0.25)
    for rid in IDS:
        counts.take(rid, restarting=False)
    bad = {reason: counts.total[reason] for reason in ("handshake", "identity") if counts.total[reason]}
    assert not bad, f"{name}: peer connections refused {bad}; logs:\n" + "\n".join(
        c.output(rid)[-3000:] for rid in IDS)
    assert not w.unexpected, f"{name}: failures at replicas that were up: {w.unexpected[:5]}"


@pytest.mark.timeout(600)
def test_ca_rotation_on_a_live_cluster_loses_no_write_and_never_refuses_a_peer(tmp_path: Path):
    c = ProcessCluster(IDS, tmp_path / "cluster", inject_latency=False)
    ca1 = list(c.cas)
    assert len(ca1) == 1 and set(c.certs) == set(IDS), "ProcessCluster runs TLS by default"
    ca1_certs = dict(c.certs)
    ca2_dir = tmp_path / "ca2"
    try:
        c.start()
        with Writers(c) as w:
            wait_for("first writes everywhere", lambda: all(w.served()[r] for r in IDS))
            ca2 = [certs.init_ca(ca2_dir).cert]

            # negative control: syd with a CA2 certificate while lhr and jfk trust only CA1
            before = {rid: refused(c, rid)["handshake"] for rid in ("lhr", "jfk")}
            syd2 = certs.issue(ca2_dir, "syd")
            c.cas, c.certs["syd"] = ca1 + ca2, (syd2.cert, syd2.key)  # syd itself still trusts CA1
            restart_one(c, w, "syd")
            wait_for("lhr and jfk refuse syd's CA2 certificate in the handshake",
                     lambda: all(refused(c, rid)["handshake"] > before[rid] for rid in ("lhr", "jfk")))
            assert "TLS handshake failed" in c.output("lhr"), c.output("lhr")[-2000:]  # and a clear log line
            c.cas, c.certs["syd"] = ca1, ca1_certs["syd"]
            restart_one(c, w, "syd")
            acked = w.snapshot()
            wait_for("convergence after syd is back on CA1", lambda: converged(c, acked),
                     deadline_s=CONVERGE_S, poll_s=0.25)

            c.cas = ca1 + ca2
            rolling_step(c, w, "step 1: trust CA1 and CA2")
            for rid in IDS:
                issued = certs.issue(ca2_dir, rid, force=True)
                c.certs[rid] = (issued.cert, issued.key)
            rolling_step(c, w, "step 2: CA2 certificates")
            c.cas = ca2
            rolling_step(c, w, "step 3: trust only CA2")

            for rid in IDS:
                assert status(c, rid)["transport"]["encrypted"] is True
        acked = w.snapshot()
        wait_for("every acknowledged write everywhere at the end", lambda: converged(c, acked),
                 deadline_s=CONVERGE_S, poll_s=0.25)
        assert not w.unexpected, w.unexpected[:5]
        assert sum(map(len, acked.values())) > 100, {rid: len(s) for rid, s in acked.items()}
    finally:
        c.close()
