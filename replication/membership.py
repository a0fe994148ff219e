"""Failure detection and membership, SWIM-style (Das et al.; HashiCorp memberlist).

Every probe interval a node pings one member, in a shuffled round-robin order. No ack
within the probe timeout: it asks k others to ping the target for it. Still nothing by the
end of the interval: the target is suspected, and after the suspicion timeout declared
dead. Updates ride on pings and acks. A member that hears itself suspected or declared
dead refutes it with a higher incarnation. Dead members stay in the probe rotation so that
a healed partition or a recovered replica is noticed and rejoins.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .messages import Ack, Envelope, Ping, PingReq

ALIVE, SUSPECT, DEAD = "alive", "suspect", "dead"
_RANK = {ALIVE: 0, SUSPECT: 1, DEAD: 2}


@dataclass
class MembershipConfig:
    probe_interval_ms: float = 1000.0
    probe_timeout_ms: float = 500.0  # above the longest round trip on Earth (~350 ms)
    indirect_probes: int = 3
    suspicion_ms: float = 3000.0
    piggyback: int = 8
    retransmit_mult: int = 3


@dataclass
class _Member:
    status: str = ALIVE
    incarnation: int = 0
    since: float = 0.0


class Membership:
    def __init__(self, me: str, peers: list[str], rng: random.Random, config: MembershipConfig, incarnation: int = 0):
        self.me = me
        self.cfg = config
        self.rng = rng
        self.incarnation = incarnation
        self.members = {p: _Member() for p in peers if p != me}
        self._suspects: dict[str, float] = {}  # peer -> suspected since; kept apart: ticks are hot
        self.rtt_ms: dict[str, float] = {}
        self.changes: list[tuple[str, str]] = []
        self._order: list[str] = []
        self._seq = 0
        self._probe: dict | None = None  # the probe of this interval
        self._relays: dict[int, tuple[str, int]] = {}  # our seq -> (requester, their seq)
        self._updates: dict[str, list] = {}  # peer -> [status, incarnation, transmissions]
        self._next_probe = rng.uniform(0, config.probe_interval_ms)  # desynchronise nodes
        if incarnation:
            self._announce(self.me, ALIVE, incarnation)

    # -- views ---------------------------------------------------------------------

    def status(self, peer: str) -> str:
        return self.members[peer].status

    def reachable(self) -> list[str]:
        """Members not declared dead (suspects still get messages, as in SWIM)."""
        return [p for p, m in self.members.items() if m.status != DEAD]

    # -- updates ---------------------------------------------------------------------

    def _announce(self, peer: str, status: str, inc: int) -> None:
        self._updates[peer] = [status, inc, 0]

    def _set(self, peer: str, status: str, inc: int, now: float) -> None:
        m = self.members[peer]
        if m.status != status:
            self.changes.append((peer, status))
        m.status, m.incarnation, m.since = status, inc, now
        if status == SUSPECT:
            self._suspects[peer] = now
        else:
            self._suspects.pop(peer, None)
        self._announce(peer, status, inc)

    def _apply_update(self, peer: str, status: str, inc: int, now: float) -> None:
        if peer == self.me:
            if status != ALIVE and inc >= self.incarnation:
                self.incarnation = inc + 1  # refute: I am alive, at a newer incarnation
                self._announce(self.me, ALIVE, self.incarnation)
            return
        m = self.members.get(peer)
        if m is None:
            return  # not a member of this cluster
        if status == ALIVE:
            if inc > m.incarnation:
                self._set(peer, ALIVE, inc, now)
        elif inc > m.incarnation or (inc == m.incarnation and _RANK[status] > _RANK[m.status]):
            self._set(peer, status, inc, now)

    def _piggyback(self, dst: str) -> list:
        limit = self.cfg.retransmit_mult * max(1, math.ceil(math.log2(len(self.members) + 2)))
        out = []
        m = self.members.get(dst)
        if m is not None and m.status != ALIVE:
            out.append((dst, m.status, m.incarnation))  # tell it directly so it can refute
        for peer, u in sorted(self._updates.items(), key=lambda kv: kv[1][2])[: self.cfg.piggyback]:
            out.append((peer, u[0], u[1]))
            u[2] += 1
            if u[2] >= limit:
                del self._updates[peer]
        return out

    def _absorb(self, updates: list, now: float) -> None:
        for item in updates:
            if isinstance(item, (list, tuple)) and len(item) == 3 and item[1] in _RANK and type(item[2]) is int:
                self._apply_update(item[0], item[1], item[2], now)

    # -- protocol ----------------------------------------------------------------------

    def _next_target(self) -> str | None:
        if not self._order:
            self._order = list(self.members)
            self.rng.shuffle(self._order)
        return self._order.pop() if self._order else None

    def tick(self, now: float) -> list[Envelope]:
        out: list[Envelope] = []
        for peer, since in list(self._suspects.items()):
            if since + self.cfg.suspicion_ms <= now:
                self._set(peer, DEAD, self.members[peer].incarnation, now)
        probe = self._probe
        if probe and not probe["acked"] and not probe["indirect"] and now >= probe["t0"] + self.cfg.probe_timeout_ms:
            probe["indirect"] = True
            helpers = [p for p in self.reachable() if p != probe["target"]]
            for h in self.rng.sample(helpers, min(self.cfg.indirect_probes, len(helpers))):
                out.append(Envelope(self.me, h, PingReq(probe["seq"], probe["target"])))
        if now >= self._next_probe:
            if probe and not probe["acked"]:
                m = self.members[probe["target"]]
                if m.status == ALIVE:
                    self._set(probe["target"], SUSPECT, m.incarnation, now)
            target = self._next_target()
            self._next_probe = now + self.cfg.probe_interval_ms
            if target is not None:
                self._seq += 1
                self._probe = {"target": target, "seq": self._seq, "t0": now, "acked": False, "indirect": False}
                out.append(Envelope(self.me, target, Ping(self._seq, self._piggyback(target))))
        return out

    def next_deadline(self) -> float:
        t = self._next_probe
        p = self._probe
        if p and not p["acked"] and not p["indirect"]:
            t = min(t, p["t0"] + self.cfg.probe_timeout_ms)
        if self._suspects:
            t = min(t, min(self._suspects.values()) + self.cfg.suspicion_ms)
        return t

    def handle(self, env: Envelope, now: float) -> list[Envelope]:
        msg, src = env.msg, env.src
        if src not in self.members:
            return []
        if isinstance(msg, Ping):
            self._absorb(msg.updates, now)
            return [Envelope(self.me, src, Ack(msg.seq, self._piggyback(src)))]
        if isinstance(msg, PingReq):
            if msg.target not in self.members:
                return []
            self._seq += 1
            self._relays[self._seq] = (src, msg.seq)
            return [Envelope(self.me, msg.target, Ping(self._seq, self._piggyback(msg.target)))]
        if isinstance(msg, Ack):
            self._absorb(msg.updates, now)
            relay = self._relays.pop(msg.seq, None)
            if relay is not None and msg.target is None:
                return [Envelope(self.me, relay[0], Ack(relay[1], [], target=src))]
            p = self._probe
            if p and msg.seq == p["seq"] and (msg.target or src) == p["target"] and not p["acked"]:
                p["acked"] = True
                if msg.target is None:
                    rtt = now - p["t0"]
                    old = self.rtt_ms.get(src)
                    self.rtt_ms[src] = rtt if old is None else 0.8 * old + 0.2 * rtt
        return []

    def restart(self, now: float) -> None:
        """A crashed replica back with its state: announce a newer incarnation."""
        self.incarnation += 1
        self._announce(self.me, ALIVE, self.incarnation)
        self._probe = None
        self._next_probe = now
        self._relays.clear()
