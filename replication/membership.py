"""Failure detection and membership, SWIM-style (Das et al.; HashiCorp memberlist).

Every probe interval a node pings one member, in a shuffled round-robin order. No ack
within the probe timeout: it asks k others to ping the target for it. Still nothing by the
end of the interval: the target is suspected, and after the suspicion timeout declared
dead. Updates ride on pings and acks. Dead members stay in the probe rotation so that a
healed partition or a recovered replica is noticed and rejoins.

Incarnations order what is said about a member: only the member itself raises its own.
Between two notices about one member, the higher incarnation wins; at one incarnation,
dead beats suspect beats alive. So a death is overridden only by news from a strictly newer
incarnation of the member, which a delayed message from before the death cannot carry.

How a wrongly suspected or dead member gets back, whatever was lost while it was cut off:
- Every ping, ack and ping-req carries its sender's incarnation. A direct message from a
  member at a newer incarnation than the one we hold it dead or suspect at revives it.
- A member refutes every suspicion or death notice about itself that it hears: at its own
  incarnation or above, by raising its incarnation past the notice; an older one (it already
  refuted it, but the announcement ran out of retransmissions before reaching everyone), by
  announcing itself alive again. A reply to someone holding us suspect or dead carries the
  refutation (it is built after the notice was taken in); where no reply is due (the notice
  came in an ack or a push-pull answer) we send the accuser a ping of our own at once.
- Piggybacked updates are sent a bounded number of times, so a partition can outlast them.
  A periodic push-pull (memberlist's full state sync) repairs that: about every
  `push_pull_ms` (scaled up with log2 of the cluster size past 32 members, as memberlist
  does) a node sends its whole table to one member, half the time one it holds suspect or
  dead, so the dead are retried often. The receiver merges it and answers with its own
  table (never an answer to an answer). Merging:
  - about oneself: refute, as above;
  - alive at a newer incarnation than we hold: alive;
  - a third party's suspect or dead: only at a strictly newer incarnation than we hold,
    and only as suspicion (dead stays dead), so the member has a suspicion timeout to
    refute it and one stale table cannot kill anyone. memberlist also turns dead into
    suspect, but takes an equal incarnation too: after a heal, one stale table would then
    set the whole cluster suspecting everyone the stale side had declared dead.
  - alive at the very incarnation we hold suspect or dead: a conflict only the member can
    settle, so we ping it now; the ping tells it what we hold, and it refutes in its ack.
    After a partition heals, the side that declared the other dead learns from a single
    push-pull of every member it must check, and repairs them all in one round trip
    instead of waiting to meet each of them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import NamedTuple

from .clocks import MAX_COUNTER
from .messages import Ack, Envelope, Ping, PingReq, PushPull

ALIVE, SUSPECT, DEAD = "alive", "suspect", "dead"
_RANK = {ALIVE: 0, SUSPECT: 1, DEAD: 2}
PUSH_PULL_SCALE_THRESHOLD = 32  # members; memberlist's pushPullScaleThreshold


@dataclass
class MembershipConfig:
    probe_interval_ms: float = 1000.0
    probe_timeout_ms: float = 500.0  # above the longest round trip on Earth (~350 ms)
    indirect_probes: int = 3
    suspicion_ms: float = 3000.0
    piggyback: int = 8
    retransmit_mult: int = 3
    # Full-table exchange period up to 32 members (see push_pull_interval), rounded up to whole
    # probe intervals. memberlist uses 30 s; here a healed partition must be repaired in seconds.
    push_pull_ms: float = 2000.0


def push_pull_interval(base_ms: float, members: int) -> float:
    """memberlist's pushPullScale: the period grows with log2 of the cluster past 32 members,
    so a node's push-pull bytes per second grow as n / log n, not n (1,000 members: 6x)."""
    if members <= PUSH_PULL_SCALE_THRESHOLD:
        return base_ms
    return base_ms * (math.ceil(math.log2(members) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1)


@dataclass(slots=True)
class _Member:
    status: str = ALIVE
    incarnation: int = 0
    since: float = 0.0


@dataclass(slots=True)
class _Probe:
    """This interval's probe of `target`: our ping `seq`, sent at `t0`."""

    target: str
    seq: int
    t0: float
    acked: bool = False
    indirect: bool = False  # the probe timed out and others were asked to ping the target


@dataclass(slots=True)
class _Update:
    """A notice about a member to piggyback, until it has gone out `sent` times enough."""

    status: str
    incarnation: int
    sent: int = 0


class _Relay(NamedTuple):
    """A ping we send for someone else's PingReq: whom to ack, under their probe's seq."""

    requester: str
    seq: int


class Membership:
    def __init__(self, me: str, peers: list[str], rng: random.Random, config: MembershipConfig, incarnation: int = 0,
                 push_pull_rng: random.Random | None = None):
        """`push_pull_rng`: the push-pull's own draws (when and with whom), kept apart from
        `rng` (which the host may share with others) so that adding or tuning the push-pull
        leaves every other seeded choice of the host as it was."""
        self.me = me
        self.cfg = config
        self.rng = rng
        self._pp_rng = push_pull_rng or random.Random(f"push-pull:{me}:{incarnation}:{rng.random()}")
        self.incarnation = incarnation
        self.members = {p: _Member() for p in peers if p != me}
        self._suspects: dict[str, float] = {}  # peer -> suspected since; kept apart: ticks are hot
        self.rtt_ms: dict[str, float] = {}
        self.changes: list[tuple[str, str]] = []
        self._order: list[str] = []
        self._seq = 0
        self._probe: _Probe | None = None  # the probe of this interval
        self._relays: dict[int, _Relay] = {}  # our ping's seq -> the PingReq it answers
        self._updates: dict[str, _Update] = {}  # member -> the latest notice about it
        self._refuted = False  # set when a notice about us was contradicted (see handle)
        self._asked: dict[str, float] = {}  # member -> when we last asked it (see _ask)
        # The push-pull's table, kept until something in it changes: at 1,000 members, building
        # it for every push-pull and its reply was a third of an idle cluster's simulation.
        self._table: list[tuple[str, str, int]] | None = None
        # A push-pull rides on every k-th probe tick rather than a timer of its own: no extra
        # wake-ups, and the host's other timers run exactly as they would without it.
        pp_ms = push_pull_interval(config.push_pull_ms, len(self.members) + 1)
        self.push_pull_every = max(1, math.ceil(pp_ms / config.probe_interval_ms - 1e-9))
        self.push_pull_ms = self.push_pull_every * config.probe_interval_ms
        # desynchronise nodes
        self._next_probe = rng.uniform(0, config.probe_interval_ms)
        self._pp_countdown = self._pp_rng.randrange(self.push_pull_every) + 1  # probe ticks to the next push-pull
        if incarnation:
            self._announce(self.me, ALIVE, incarnation)

    # -- views ---------------------------------------------------------------------

    def watch(self, peer: str) -> None:
        """Start watching `peer` too (a large cluster's partial view grows by who contacts us)."""
        if peer != self.me and peer not in self.members:
            self.members[peer] = _Member()
            self._table = None

    def status(self, peer: str) -> str:
        return self.members[peer].status

    def reachable(self) -> list[str]:
        """Members not declared dead (suspects still get messages, as in SWIM)."""
        return [p for p, m in self.members.items() if m.status != DEAD]

    def table(self) -> list[tuple[str, str, int]]:
        """What this node knows of everyone, itself included: a push-pull's content. Shared by
        the messages that carry it, so nobody may change it."""
        out = self._table
        if out is None:
            out = [(self.me, ALIVE, self.incarnation)]
            out += [(p, m.status, m.incarnation) for p, m in self.members.items()]
            self._table = out
        return out

    # -- updates ---------------------------------------------------------------------

    def _announce(self, peer: str, status: str, inc: int) -> None:
        self._updates[peer] = _Update(status, inc)

    def _set(self, peer: str, status: str, inc: int, now: float) -> None:
        m = self.members[peer]
        if m.status != status:
            self.changes.append((peer, status))
        m.status, m.incarnation, m.since = status, inc, now
        self._table = None
        if status == SUSPECT:
            self._suspects[peer] = now
        else:
            self._suspects.pop(peer, None)
        self._announce(peer, status, inc)

    def _about_me(self, status: str, inc: int) -> None:
        """Someone's word about us. Contradict anything but 'alive at our incarnation or older'."""
        if status == ALIVE and inc <= self.incarnation:
            return
        # Suspect or dead at our incarnation or a newer one (we restarted and lost count), or
        # alive at a newer one (likewise): move past it. Suspect or dead at an older one: that
        # was refuted already, but not everyone heard; say it again.
        if inc >= self.incarnation:
            self.incarnation = min(inc + 1, MAX_COUNTER)  # capped: past it would not decode
            self._table = None
        self._announce(self.me, ALIVE, self.incarnation)
        if status != ALIVE:
            self._refuted = True

    def _apply_update(self, peer: str, status: str, inc: int, now: float) -> None:
        if peer == self.me:
            self._about_me(status, inc)
            return
        m = self.members.get(peer)
        if m is None:
            return  # not a member of this cluster
        if status == ALIVE:
            if inc > m.incarnation:
                self._set(peer, ALIVE, inc, now)
        elif inc > m.incarnation or (inc == m.incarnation and _RANK[status] > _RANK[m.status]):
            self._set(peer, status, inc, now)

    def _heard_from(self, peer: str, inc: int, now: float) -> None:
        """A message straight from `peer` at incarnation `inc`: it was alive when it sent it.
        Revives it only from a strictly newer incarnation: a message sent before we declared
        it dead (delayed, reordered) carries the incarnation it died at."""
        if inc > self.members[peer].incarnation:
            self._set(peer, ALIVE, inc, now)

    def _merge(self, table: list, now: float) -> list[str]:
        """A push-pull table. About us: refute. Alive at a newer incarnation: take it. Suspect or
        dead at a strictly newer incarnation: suspect (dead stays dead), and let it refute.
        Returns the members to ask now: those we hold suspect or dead that the sender holds
        alive at the same incarnation (see _ask)."""
        ask = []
        for item in table:
            if not (isinstance(item, (list, tuple)) and len(item) == 3 and item[1] in _RANK and type(item[2]) is int):
                continue
            peer, status, inc = item
            if peer == self.me:
                self._about_me(status, inc)
                continue
            m = self.members.get(peer)
            if m is None:
                continue
            if inc <= m.incarnation:
                if inc == m.incarnation and status == ALIVE and m.status != ALIVE:
                    ask.append(peer)
                continue
            if status == ALIVE:
                self._set(peer, ALIVE, inc, now)
            else:
                self._set(peer, DEAD if m.status == DEAD and status == DEAD else SUSPECT, inc, now)
        return ask

    def _ask(self, peers: list[str], now: float) -> list[Envelope]:
        """Ping members we hold suspect or dead at the incarnation a push-pull holds them alive
        at (see the module docstring). At most once a probe interval per member: a member that
        really is down is held alive by others until they notice, and is asked only that often."""
        out = []
        for p in peers:
            if self._asked.get(p, -math.inf) + self.cfg.probe_interval_ms <= now:
                self._asked[p] = now
                out.append(Envelope(self.me, p, self._ping(p)))
        return out

    def _piggyback(self, dst: str) -> list:
        limit = self.cfg.retransmit_mult * max(1, math.ceil(math.log2(len(self.members) + 2)))
        out = []
        m = self.members.get(dst)
        if m is not None and m.status != ALIVE:
            out.append((dst, m.status, m.incarnation))  # tell it directly so it can refute
        for peer, u in sorted(self._updates.items(), key=lambda kv: kv[1].sent)[: self.cfg.piggyback]:
            out.append((peer, u.status, u.incarnation))
            u.sent += 1
            if u.sent >= limit:
                del self._updates[peer]
        return out

    def _absorb(self, updates: list, now: float) -> None:
        for item in updates:
            if isinstance(item, (list, tuple)) and len(item) == 3 and item[1] in _RANK and type(item[2]) is int:
                peer, status, inc = item
                self._apply_update(peer, status, inc, now)

    # -- protocol ----------------------------------------------------------------------

    def _ping(self, dst: str) -> Ping:
        self._seq += 1
        return Ping(self._seq, self._piggyback(dst), incarnation=self.incarnation)

    def _next_target(self) -> str | None:
        if not self._order:
            self._order = list(self.members)
            self.rng.shuffle(self._order)
        return self._order.pop() if self._order else None

    def _push_pull_target(self) -> str | None:
        if not self.members:
            return None
        down = [p for p, m in self.members.items() if m.status != ALIVE]
        rng = self._pp_rng
        if down and rng.random() < 0.5:
            return rng.choice(down)
        return rng.choice(list(self.members))

    def tick(self, now: float) -> list[Envelope]:
        out: list[Envelope] = []
        for peer, since in list(self._suspects.items()):
            if since + self.cfg.suspicion_ms <= now:
                self._set(peer, DEAD, self.members[peer].incarnation, now)
        probe = self._probe
        if probe and not probe.acked and not probe.indirect and now >= probe.t0 + self.cfg.probe_timeout_ms:
            probe.indirect = True
            helpers = [p for p in self.reachable() if p != probe.target]
            for h in self.rng.sample(helpers, min(self.cfg.indirect_probes, len(helpers))):
                out.append(Envelope(self.me, h, PingReq(probe.seq, probe.target, self.incarnation)))
        if now >= self._next_probe:
            if probe and not probe.acked:
                m = self.members[probe.target]
                if m.status == ALIVE:
                    self._set(probe.target, SUSPECT, m.incarnation, now)
            target = self._next_target()
            self._next_probe = now + self.cfg.probe_interval_ms
            if target is not None:
                ping = self._ping(target)
                self._probe = _Probe(target, ping.seq, now)
                out.append(Envelope(self.me, target, ping))
            self._pp_countdown -= 1
            if self._pp_countdown <= 0:
                self._pp_countdown = self.push_pull_every
                target = self._push_pull_target()
                if target is not None:
                    out.append(Envelope(self.me, target, PushPull(self.table())))
        return out

    def next_deadline(self) -> float:
        """The push-pull's deadline is a probe's (see __init__)."""
        t = self._next_probe
        p = self._probe
        if p and not p.acked and not p.indirect:
            t = min(t, p.t0 + self.cfg.probe_timeout_ms)
        if self._suspects:
            t = min(t, min(self._suspects.values()) + self.cfg.suspicion_ms)
        return t

    def handle(self, env: Envelope, now: float) -> list[Envelope]:
        msg, src = env.msg, env.src
        if src not in self.members:
            return []
        self._refuted = False
        if isinstance(msg, PushPull):
            out = self._ask(self._merge(msg.table, now), now)
            if msg.want_reply:  # answered once: never a reply to a reply
                return [Envelope(self.me, src, PushPull(self.table(), want_reply=False)), *out]
            return self._refute_to(src) + out
        if not isinstance(msg, (Ping, Ack, PingReq)):
            return []
        self._heard_from(src, msg.incarnation, now)
        if isinstance(msg, PingReq):
            if msg.target not in self.members:
                return []
            ping = self._ping(msg.target)
            self._relays[ping.seq] = _Relay(src, msg.seq)
            return [Envelope(self.me, msg.target, ping)]
        self._absorb(msg.updates, now)
        if isinstance(msg, Ping):
            # built after the updates were taken in: carries any refutation they caused
            return [Envelope(self.me, src, Ack(msg.seq, self._piggyback(src), incarnation=self.incarnation))]
        out = self._refute_to(src)  # an ack: we do not answer it, unless it holds us suspect or dead
        relay = self._relays.pop(msg.seq, None)
        if relay is not None and msg.target is None:
            return out + [Envelope(self.me, relay.requester, Ack(relay.seq, [], target=src, incarnation=self.incarnation))]
        p = self._probe
        if p and msg.seq == p.seq and (msg.target or src) == p.target and not p.acked:
            p.acked = True
            if msg.target is None:
                rtt = now - p.t0
                old = self.rtt_ms.get(src)
                self.rtt_ms[src] = rtt if old is None else 0.8 * old + 0.2 * rtt
        return out

    def _refute_to(self, src: str) -> list[Envelope]:
        """`src` told us it holds us suspect or dead, in a message we do not answer: answer
        anyway, so our newer incarnation reaches it now rather than at its next probe of us.
        (Its ack to this ping is not a probe's: it changes nothing but what it piggybacks.)"""
        if not self._refuted:
            return []
        self._refuted = False
        return [Envelope(self.me, src, self._ping(src))]

    def restart(self, now: float) -> None:
        """A crashed replica back with its state: announce a newer incarnation, and sync at once."""
        self.incarnation = min(self.incarnation + 1, MAX_COUNTER)
        self._table = None
        self._announce(self.me, ALIVE, self.incarnation)
        self._probe = None
        self._next_probe = now
        self._pp_countdown = 1
        self._relays.clear()
