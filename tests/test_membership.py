"""Membership heals itself: incarnations on every direct message, refutation of any notice
about oneself, and periodic push-pull of the whole member table.

The protocol rules are checked on `Membership` objects driven by hand (sans-IO: every call
gets `now`); the healing end to end on the simulator with real nodes, on the virtual clock.
"""

from __future__ import annotations

import random

import pytest

from replication.bench.faults import run_seed
from replication.sim.cluster import SimCluster
from replication.geo import place_replicas, select_pops
from replication.membership import ALIVE, DEAD, SUSPECT, Membership, MembershipConfig, push_pull_interval
from replication.messages import Ack, Envelope, Ping, PingReq, PushPull
from replication.sim.simulator import SimEvent

pytestmark = pytest.mark.timeout(120)

CFG = MembershipConfig()
PEERS = ["a", "b", "c", "d", "e", "f", "g"]
HEAL_MS = 5000.0  # the fault campaign's bound: every replica sees every other alive by then


def member(me: str, peers=PEERS, incarnation: int = 0, seed: int = 1) -> Membership:
    return Membership(me, list(peers), random.Random(seed), MembershipConfig(), incarnation)


def quiet(m: Membership) -> Membership:
    """Past the retransmissions of what it had to announce (a restarted member announces itself)."""
    for _ in range(100):
        if not told(m, "c", [])[0].msg.updates:
            return m
    raise AssertionError("announcements never ran out")


def told(m: Membership, src: str, updates: list, now: float = 0.0) -> list[Envelope]:
    """`src` pings `m` with piggybacked updates (src's own incarnation left at 0)."""
    return m.handle(Envelope(src, m.me, Ping(1, updates)), now)


def direct(kind: str, src: str, dst: str, incarnation: int) -> Envelope:
    """A message straight from `src`, at its incarnation `incarnation`."""
    msg = {
        "ping": Ping(7, [], incarnation=incarnation),
        "ack": Ack(7, [], incarnation=incarnation),
        "ping_req": PingReq(7, "c", incarnation=incarnation),
        "push_pull": PushPull([(src, ALIVE, incarnation)], want_reply=False),
    }[kind]
    return Envelope(src, dst, msg)


def entry(m: Membership, peer: str) -> tuple[str, int]:
    return m.status(peer), m.members[peer].incarnation


def announced(envs: list[Envelope], peer: str) -> list[tuple]:
    """What the messages piggyback (or carry in their table) about `peer`."""
    out = []
    for e in envs:
        items = e.msg.table if isinstance(e.msg, PushPull) else getattr(e.msg, "updates", [])
        out += [u for u in items if u[0] == peer]
    return out


# -- revival by a direct message at a newer incarnation -------------------------------------------

KINDS = ["ping", "ack", "ping_req", "push_pull"]


@pytest.mark.parametrize("held", [DEAD, SUSPECT])
@pytest.mark.parametrize("kind", KINDS)
def test_a_direct_message_at_a_newer_incarnation_revives(kind, held):
    a = member("a")
    told(a, "c", [("b", held, 2)])
    assert entry(a, "b") == (held, 2)
    a.changes.clear()
    a.handle(direct(kind, "b", "a", 3), 10.0)
    assert entry(a, "b") == (ALIVE, 3)
    assert a.changes == [("b", ALIVE)]  # observers hear of it
    # and it is news worth spreading
    assert ("b", ALIVE, 3) in announced(told(a, "d", []), "b")


@pytest.mark.parametrize("held", [DEAD, SUSPECT])
@pytest.mark.parametrize("stale", [0, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_a_message_at_the_incarnation_it_died_at_or_older_does_not_revive(kind, stale, held):
    a = member("a")
    told(a, "c", [("b", held, 2)])
    out = a.handle(direct(kind, "b", "a", stale), 10.0)
    assert entry(a, "b") == (held, 2)
    if kind == "ping":  # the answer tells b what a holds, so that b can refute it
        assert ("b", held, 2) in announced(out, "b")


def test_a_delayed_ping_from_before_the_death_does_not_revive_and_the_refutation_does():
    a, b = member("a", ["a", "b"]), member("b", ["a", "b"])
    early = Envelope("b", "a", Ping(99, [], incarnation=b.incarnation))  # sent, then delayed
    # b falls silent: a probes it, gets no answer, suspects it, then declares it dead
    now = 0.0
    while a.status("b") != DEAD:
        now = a.next_deadline()
        a.tick(now)
        assert now < 10 * CFG.probe_interval_ms + CFG.suspicion_ms, "b was never declared dead"
    assert entry(a, "b") == (DEAD, 0)
    (ack,) = a.handle(early, now + 1)  # the old ping arrives at last
    assert entry(a, "b") == (DEAD, 0)
    # a's answer tells b it is dead; b refutes, and tells a at once (nobody answers an ack)
    assert ("b", DEAD, 0) in ack.msg.updates
    (refutation,) = b.handle(ack, now + 2)
    assert b.incarnation == 1
    assert (refutation.dst, refutation.msg.incarnation) == ("a", 1) and isinstance(refutation.msg, Ping)
    a.handle(refutation, now + 3)
    assert entry(a, "b") == (ALIVE, 1)


# -- refuting what is said about oneself -----------------------------------------------------------


@pytest.mark.parametrize(
    "notice, after",
    [
        ((SUSPECT, 3), 4),  # at our incarnation: move past it
        ((DEAD, 3), 4),
        ((DEAD, 5), 6),  # newer than ours (we restarted and lost count): past it too
        ((DEAD, 1), 3),  # older: refuted before, but its holder never heard; say it again
        ((SUSPECT, 2), 3),
        ((ALIVE, 7), 8),  # someone knows a newer us: get ahead of it before anyone suspects that one
    ],
)
def test_refutes_any_notice_about_itself(notice, after):
    a = quiet(member("a", incarnation=3))
    (ack,) = told(a, "c", [("a", *notice)])
    assert a.incarnation == after
    assert ack.msg.incarnation == after  # the answer to the accuser carries the refutation
    assert ("a", ALIVE, after) in ack.msg.updates  # and it is announced to everyone
    assert ("a", ALIVE, after) in announced(told(a, "d", []), "a")


@pytest.mark.parametrize("inc", [0, 3])
def test_alive_at_its_own_incarnation_or_older_is_not_contradicted(inc):
    a = quiet(member("a", incarnation=3))
    (ack,) = told(a, "c", [("a", ALIVE, inc)])
    assert a.incarnation == 3 and announced([ack], "a") == []


def test_refutation_of_an_ack_goes_back_to_its_sender_but_an_ack_of_that_is_not_answered():
    a, b = member("a"), member("b")
    told(b, "c", [("a", DEAD, 0)])  # b holds a dead at a's current incarnation
    (ack,) = b.handle(Envelope("a", "b", Ping(5, [], incarnation=a.incarnation)), 1.0)  # stale for b
    assert entry(b, "a") == (DEAD, 0) and ("a", DEAD, 0) in ack.msg.updates
    out = a.handle(ack, 2.0)
    assert [(e.dst, type(e.msg).__name__, e.msg.incarnation) for e in out] == [("b", "Ping", 1)]
    (ack2,) = b.handle(out[0], 3.0)
    assert entry(b, "a") == (ALIVE, 1)
    assert a.handle(ack2, 4.0) == []  # nothing left to refute: the exchange ends


def test_incarnation_never_rises_past_what_the_wire_carries():
    a = member("a")
    told(a, "c", [("a", DEAD, 2**63 - 1)])
    assert a.incarnation == 2**63 - 1


# -- push-pull ----------------------------------------------------------------------------------------


def test_push_pull_merge_rules():
    a = member("a")
    told(a, "c", [("c", DEAD, 2), ("d", SUSPECT, 1), ("e", ALIVE, 4), ("f", DEAD, 0), ("g", DEAD, 1)])
    table = [
        ("b", ALIVE, 0),
        ("a", DEAD, 0),  # about a: refuted
        ("c", ALIVE, 3),  # newer: revived
        ("d", DEAD, 1),  # a third party's death at the incarnation a knows: ignored
        ("e", DEAD, 5),  # at a newer one: suspected, not dead, so e may refute it
        ("f", SUSPECT, 0),  # a holds f dead at 0: a suspicion at 0 changes nothing
        ("g", DEAD, 3),  # dead at a newer incarnation than a's dead: still dead, newer
        ("zzz", ALIVE, 9),  # not a member: ignored
    ]
    out = a.handle(Envelope("b", "a", PushPull(table)), 100.0)
    assert a.incarnation == 1
    assert {p: entry(a, p) for p in "bcdefg"} == {
        "b": (ALIVE, 0), "c": (ALIVE, 3), "d": (SUSPECT, 1), "e": (SUSPECT, 5), "f": (DEAD, 0), "g": (DEAD, 3),
    }
    assert "zzz" not in a.members
    # answered once, with a's own table (itself alive at its refuted incarnation first)
    (reply,) = out
    assert reply.dst == "b" and isinstance(reply.msg, PushPull) and reply.msg.want_reply is False
    assert reply.msg.table == a.table() and reply.msg.table[0] == ("a", ALIVE, 1)
    assert len(reply.msg.table) == len(PEERS)


def test_push_pull_answer_is_not_answered_unless_it_needs_refuting():
    a = member("a")
    assert a.handle(Envelope("b", "a", PushPull([("b", ALIVE, 0)], want_reply=False)), 0.0) == []
    out = a.handle(Envelope("b", "a", PushPull([("a", SUSPECT, 0)], want_reply=False)), 0.0)
    assert [(e.dst, type(e.msg).__name__, e.msg.incarnation) for e in out] == [("b", "Ping", 1)]


def test_a_member_held_dead_that_a_table_holds_alive_at_that_incarnation_is_asked_directly():
    a, b = member("a"), member("b")
    told(a, "c", [("b", DEAD, 0)])
    table = PushPull([("c", ALIVE, 0), ("b", ALIVE, 0)], want_reply=False)
    (ask,) = a.handle(Envelope("c", "a", table), 100.0)
    assert ask.dst == "b" and isinstance(ask.msg, Ping) and ("b", DEAD, 0) in ask.msg.updates
    assert entry(a, "b") == (DEAD, 0)  # c's word alone revives nobody
    (ack,) = b.handle(ask, 150.0)  # b hears what a holds and refutes it in its answer
    assert a.handle(ack, 200.0) == [] and entry(a, "b") == (ALIVE, 1)
    # asked at most once a probe interval: a member really down is not pinged at every table
    told(a, "c", [("b", DEAD, 1)])  # b died again
    table = PushPull([("b", ALIVE, 1)], want_reply=False)
    assert a.handle(Envelope("c", "a", table), 300.0) == []
    assert a.handle(Envelope("d", "a", table), 100.0 + CFG.probe_interval_ms - 1) == []
    (again,) = a.handle(Envelope("d", "a", table), 100.0 + CFG.probe_interval_ms)
    assert again.dst == "b" and ("b", DEAD, 1) in again.msg.updates


def test_push_pull_between_two_members_repairs_both():
    a, b = member("a"), member("b")
    told(a, "c", [("b", DEAD, 0), ("d", DEAD, 0)])  # a: b and d dead at 0
    told(b, "c", [("d", ALIVE, 1)])  # b: d refuted, alive at 1
    t, sent = 0.0, []
    while not sent or sent[0].dst != "b":  # until a happens to pick b
        t = a.next_deadline()
        sent = [e for e in a.tick(t) if isinstance(e.msg, PushPull)]
    (reply,) = b.handle(sent[0], t + 1)
    assert b.incarnation == 1  # b refuted the death a holds of it
    held = {p: entry(a, p) for p in a.members}
    out = a.handle(reply, t + 2)
    assert entry(a, "b") == (ALIVE, 1) and entry(a, "d") == (ALIVE, 1)
    assert not [e for e in out if isinstance(e.msg, PushPull)]  # no reply to a reply
    # a's unanswered probes meanwhile made it suspect others, whom b holds alive at the same
    # incarnation: a asks each of them (and them only) directly
    conflicts = {p for p, (st, inc) in held.items() if st != ALIVE and (p, ALIVE, inc) in reply.msg.table}
    assert conflicts and sorted(e.dst for e in out) == sorted(conflicts)
    assert all(isinstance(e.msg, Ping) and (e.dst, held[e.dst][0], 0) in e.msg.updates for e in out)


def test_push_pull_rides_on_probe_ticks_every_push_pull_ms():
    a = member("a")
    assert a.push_pull_ms == CFG.push_pull_ms == a.push_pull_every * CFG.probe_interval_ms
    t, sent = 0.0, []
    while t < 6 * a.push_pull_ms:
        t = a.next_deadline()  # driven by its deadlines alone, as every driver does
        out = a.tick(t)
        pushes = [e for e in out if isinstance(e.msg, PushPull)]
        if pushes:
            assert any(isinstance(e.msg, Ping) for e in out)  # a probe tick: no wake-up of its own
            sent += [(t, e, a.table()) for e in pushes]
    assert sent[0][0] <= a.push_pull_ms + CFG.probe_interval_ms and len(sent) >= 5
    gaps = {round(y[0] - x[0], 6) for x, y in zip(sent, sent[1:])}
    assert gaps == {a.push_pull_ms}
    assert all(e.msg.want_reply and e.msg.table == table for _, e, table in sent)


def test_push_pull_prefers_members_held_suspect_or_dead():
    a = member("a", [f"p{i}" for i in range(10)] + ["a"], seed=3)
    told(a, "p1", [("p0", DEAD, 0)])
    picks = [a._push_pull_target() for _ in range(2000)]
    share = picks.count("p0") / len(picks)
    assert 0.45 < share < 0.65  # half the time the dead one, else one of all ten
    assert set(picks) == {f"p{i}" for i in range(10)}
    b = member("b", [f"p{i}" for i in range(10)] + ["b"], seed=3)
    picks = [b._push_pull_target() for _ in range(2000)]
    assert max(picks.count(p) for p in set(picks)) / len(picks) < 0.15  # nobody down: uniform


@pytest.mark.parametrize("n, factor", [(2, 1), (22, 1), (32, 1), (33, 2), (64, 2), (65, 3), (1000, 6)])
def test_push_pull_interval_grows_with_the_log_of_the_cluster(n, factor):
    assert push_pull_interval(1500.0, n) == 1500.0 * factor
    assert member("x", [f"p{i}" for i in range(n - 1)]).push_pull_ms == CFG.push_pull_ms * factor


def test_restart_syncs_at_once():
    a = member("a")
    a.restart(5000.0)
    assert a.incarnation == 1 and a.next_deadline() == 5000.0
    out = a.tick(5000.0)
    assert {type(e.msg).__name__ for e in out} == {"Ping", "PushPull"}
    assert all(e.msg.incarnation == 1 for e in out if isinstance(e.msg, Ping))


# -- end to end: a healed partition, with replicas restarted inside it ----------------------------


def _not_alive(sim) -> list[str]:
    return [f"{i} sees {p} {sim.nodes[i].membership.status(p)}"
            for i in sim.node_ids for p in sim.nodes[i].membership.members
            if sim.nodes[i].membership.status(p) != ALIVE]


@pytest.mark.parametrize("lose_state", [False, True], ids=["keeps-state", "loses-state"])
@pytest.mark.parametrize(
    "pops, cut_ms",
    [("lhr,jfk,syd", 10_000), ("default", 10_000), ("lhr,jfk,syd", 60_000), ("default", 60_000)],
    ids=["3-pops-10s", "22-pops-10s", "3-pops-60s", "22-pops-60s"],
)
def test_replicas_restarted_inside_a_partition_are_all_alive_soon_after_the_heal(pops, cut_ms, lose_state):
    events: list[SimEvent] = []
    c = SimCluster(place_replicas(select_pops(pops)), seed=1, secret=b"membership", sink=events.append,
                   traffic_events=False)
    sim = c.sim
    others = [i for i in c.ids if i != "lhr"]
    sim.run_until(2000)
    assert not _not_alive(sim)
    cut_at = sim.now
    sim.partition([["lhr"], others])
    # inside the partition: syd restarts, on the far side; then lhr, alone on its side
    sim.run_until(cut_at + cut_ms * 0.3)
    sim.crash("syd", lose_state=lose_state)
    sim.run_for(500)
    sim.recover("syd")
    sim.run_until(cut_at + cut_ms * 0.6)
    sim.crash("lhr", lose_state=lose_state)
    sim.run_for(500)
    sim.recover("lhr")
    sim.run_until(cut_at + cut_ms)
    # each side gave up on the other, as far as it got round to probing it (a fresh lhr may not have)
    down = _not_alive(sim)
    assert [d for d in down if d.endswith("sees lhr dead")]
    if not lose_state:
        assert [d for d in down if d.startswith("lhr sees") and d.endswith("dead")]
    healed_at = sim.now
    sim.heal()
    assert sim.run_until_condition(lambda: not _not_alive(sim), HEAL_MS), _not_alive(sim)
    # and it holds: nobody is suspected again once the cluster is whole
    since = len(events)
    sim.run_for(15_000)
    assert not _not_alive(sim)
    assert [e.data for e in events[since:] if e.kind == "membership"] == []
    # revivals were recorded for observers (the dashboard), and push-pulls were counted by kind
    revived = {f"{e.node} sees {e.data['peer']}" for e in events if e.kind == "membership" and e.t >= healed_at
               and e.data["status"] == ALIVE}
    assert {d.rsplit(" ", 1)[0] for d in down} <= revived
    assert sim.stats["sent"].get("push_pull", 0) > 0


@pytest.mark.parametrize("seed", [4, 14, 19, 25])
def test_fault_campaign_seeds_that_left_replicas_dead_after_the_heal(seed):
    res = run_seed(seed)
    assert res.ok, res.failure
    assert res.membership_ms is not None and res.membership_ms <= HEAL_MS


def test_the_push_pull_table_is_kept_only_until_something_in_it_changes():
    """The table is built once and shared by the messages carrying it (at 1,000 members its
    rebuilding was a third of an idle simulation): every change must show in the next one."""
    a = member("a")
    first = a.table()
    assert a.table() is first  # nothing changed: the same table
    expected = dict((p, (s, i)) for p, s, i in first)
    a.tick(CFG.probe_interval_ms * 2)  # a probe goes out: nothing known changes
    told(a, "c", [("d", SUSPECT, 0)], now=10.0)  # a status
    expected["d"] = (SUSPECT, 0)
    assert {p: (s, i) for p, s, i in a.table()} == expected
    told(a, "c", [("e", ALIVE, 4)], now=20.0)  # an incarnation
    expected["e"] = (ALIVE, 4)
    assert {p: (s, i) for p, s, i in a.table()} == expected
    told(a, "c", [("a", SUSPECT, 0)], now=30.0)  # a's own refutation: a newer incarnation of itself
    expected["a"] = (ALIVE, 1)
    assert {p: (s, i) for p, s, i in a.table()} == expected
    a.watch("h")  # a large cluster's view grows
    expected["h"] = (ALIVE, 0)
    assert {p: (s, i) for p, s, i in a.table()} == expected
    a.restart(40.0)
    expected["a"] = (ALIVE, 2)
    assert {p: (s, i) for p, s, i in a.table()} == expected
    assert first is not a.table() and dict((p, (s, i)) for p, s, i in first)["d"] == (ALIVE, 0)
