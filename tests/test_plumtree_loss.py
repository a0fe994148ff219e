"""Plumtree under message loss and mass failure, in virtual time (deterministic seeds).

Under loss (the simulator's loss knob turns acks on; see DisseminationConfig.acks) every payload is acknowledged and an unacknowledged eager push is sent again after
the link's round trip: a lossy network still gets every write everywhere by dissemination,
without waiting for anti-entropy. After half the replicas crash at once, every write issued
afterwards still reaches every survivor (the bench's --crash-fraction mode).
"""

import json

from app.cli import main
from replication.bench.propagation import Params, crash_run
from replication.geo import place_replicas, select_pops
from replication.messages import Envelope, Gossip, IHave
from replication.sim.cluster import SimCluster

SIX = "lhr,jfk,syd,nrt,gru,jnb"


def _six():
    """Six POPs with payload acks, two seconds in: overlay and trees formed, nothing written."""
    cluster = SimCluster(place_replicas(select_pops(SIX)), seed=1, acks=True)
    cluster.sim.run_for(2000)
    return cluster, cluster.sim


def test_ten_percent_loss_reaches_every_replica_before_anti_entropy():
    # Today's code left some writes to anti-entropy here: a lost eager payload waited for an
    # IHAVE, a GRAFT (itself lossy, retried after 400 ms) or the next anti-entropy round.
    r = crash_run(Params(pops="all", writes=150, warmup=50, loss=0.1, seed=4, crash_fraction=0.0),
                  "plumtree", progress=False)
    assert r["crashed"] == 0 and r["reliability"] == 1.0
    assert r["delivered_before_antientropy"] == 1.0, r


def test_a_lost_eager_payload_is_sent_again_after_a_round_trip():
    _cluster, sim = _six()
    node = sim.nodes["lhr"]
    strategy = node.strategy
    written = node.write("kv", "k", {"value": 1}, now=sim.now)
    pushes = [e for e in written.envelopes if isinstance(e.msg, Gossip)]
    assert pushes, "the root pushes to its tree neighbours"
    child = pushes[0].dst
    rto = 2 * node.link_ms(child) + strategy.cfg.ack_slack_ms
    # the pushes are "lost" (never delivered): after one round trip each is sent again, once
    assert strategy.next_deadline() <= sim.now + rto
    again = [e for e in strategy.tick(sim.now + rto) if isinstance(e.msg, Gossip)]
    assert child in {e.dst for e in again}
    # the child's ack (a one-item IHAVE) stops further sends to it
    mid = pushes[0].msg.mid
    strategy.handle(child, IHave([(mid, "lhr", 0.0)]), sim.now + rto + 1)
    later = strategy.tick(sim.now + 3 * rto + 1)
    assert child not in {e.dst for e in later if isinstance(e.msg, Gossip)}


def test_a_payload_is_acknowledged_even_when_it_is_a_duplicate():
    _cluster, sim = _six()
    root = sim.nodes["lhr"]
    push = next(e for e in root.write("kv", "k", {"value": 1}, now=sim.now).envelopes if isinstance(e.msg, Gossip))
    child = sim.nodes[push.dst]
    for _ in range(2):  # the second is the resend of a payload whose ack was lost
        out = child.receive(Envelope("lhr", push.dst, push.msg), now=sim.now + 100)
        acks = [e for e in out if e.dst == "lhr" and isinstance(e.msg, IHave)]
        assert [a.msg.items[0][0] for a in acks] == [push.msg.mid]


def test_half_the_replicas_crash_and_every_later_write_reaches_every_survivor():
    r = crash_run(Params(pops="default", writes=60, warmup=40, seed=2, crash_fraction=0.5), "plumtree", progress=False)
    assert r["crashed"] == 11 and r["writes"] == 60
    assert r["reliability"] == 1.0 and r["complete_share"] == 1.0, r
    assert r["ratio_p50"] >= 1.0


def test_cli_crash_fraction_reports_reliability_and_recovery(tmp_path, capsys):
    out = tmp_path / "c.json"
    rc = main(["bench", "propagation", "--pops", SIX, "--writes", "20", "--warmup", "10", "--strategy", "plumtree",
               "--crash-fraction", "0.5", "--quiet", "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())["strategies"]["plumtree"]
    assert r["crashed"] == 3 and r["reliability"] == 1.0
    assert "recovery_s" in r and "window_ratio_p99" in r
    assert "recovery" in capsys.readouterr().out  # the column (long names wrap at "_": report.table)


def test_cli_refuses_a_crash_that_leaves_fewer_than_two_replicas(capsys):
    rc = main(["bench", "propagation", "--pops", SIX, "--crash-fraction", "0.9", "--quiet"])
    assert rc == 2
    assert "--crash-fraction" in capsys.readouterr().err


def _copies(envelopes) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in envelopes:
        if isinstance(e.msg, Gossip):
            out[e.dst] = out.get(e.dst, 0) + 1
    return out


def test_links_that_lose_payloads_get_two_copies_and_three_over_long_links():
    _cluster, sim = _six()
    node = sim.nodes["lhr"]
    st = node.strategy
    assert set(_copies(node.write("kv", "a", {"value": 1}, now=sim.now).envelopes).values()) == {1}
    st._pushes, st._unanswered = 100.0, 10.0  # a tenth of recent pushes needed a resend
    copies = _copies(node.write("kv", "b", {"value": 2}, now=sim.now).envelopes)
    assert copies
    for child, n in copies.items():
        link = node.link_ms(child)
        assert n == (3 if link >= st.cfg.redundant_far_ms else 2 if link >= st.cfg.redundant_link_ms else 1), (child, link)


def test_a_crashed_child_is_no_reason_to_send_everyone_two_copies():
    cluster, sim = _six()
    node = sim.nodes["lhr"]
    sim.write("lhr", "kv", "a", {"value": 1})
    sim.run_for(1000)
    children = [p for p in node.strategy._sets("lhr")[0] if p != node.strategy.parent.get("lhr")]
    cluster.crash(children[0])
    for i in range(5):  # every push to the crashed child goes unanswered, every resend too
        sim.write("lhr", "kv", f"k{i}", {"value": i})
        sim.run_for(1000)
    assert node.strategy._pushes > 5 and not node.strategy._redundant
    assert set(_copies(node.write("kv", "z", {"value": 0}, now=sim.now).envelopes).values()) == {1}


def test_after_four_fifths_crash_the_survivors_are_reached_by_dissemination_within_seconds():
    # Before: the survivors' overlay links led mostly to the dead until membership declared
    # them (seconds; longer with four fifths gone), so most writes waited for anti-entropy. A
    # child that answers none of its sends now gets stand-in lazy links, told at once.
    r = crash_run(Params(pops="all", writes=100, warmup=40, seed=2, crash_fraction=0.8), "plumtree", progress=False)
    assert r["crashed"] == 43 and r["reliability"] == 1.0
    assert r["delivered_before_antientropy"] >= 0.9, r


def test_a_lossy_but_live_child_gets_no_stand_ins():
    # Four unanswered sends to a child we keep hearing from (its acks of other payloads, its
    # IHAVEs) mean a lossy link, not a crash: the child stays eager and no links are added.
    _cluster, sim = _six()
    node = sim.nodes["lhr"]
    st = node.strategy
    written = node.write("kv", "a", {"value": 1}, now=sim.now)  # never delivered: every send "lost"
    child = next(e.dst for e in written.envelopes if isinstance(e.msg, Gossip))
    lazy_before = set(st.lazy["*"])
    t = sim.now
    for _ in range(st.cfg.ack_tries + 1):
        t += 2 * node.link_ms(child) + st.cfg.ack_slack_ms
        st.handle(child, IHave([]), t - 1)  # heard from it meanwhile
        st.tick(t)
    assert child not in st.silent and child in st.eager["*"]
    assert set(st.lazy["*"]) == lazy_before
    # not heard from at all: presumed down, it goes lazy (on six POPs every other member is a
    # neighbour already, so there is no one left to stand in)
    node.write("kv", "b", {"value": 2}, now=t)
    for _ in range(st.cfg.ack_tries + 1):
        t += 2 * node.link_ms(child) + st.cfg.ack_slack_ms + 1
        st.tick(t)
    assert child in st.silent and child not in st.eager["*"] and child in st.lazy["*"]
    st.handle(child, IHave([]), t)
    assert child not in st.silent  # heard again


def test_without_loss_no_payload_is_acknowledged_and_the_loss_knob_turns_acks_on_and_off():
    """Acks double the messages per write: links that lose nothing (and TCP) do without them.
    The cluster's loss setting switches them for every node at once."""
    cluster = SimCluster(place_replicas(select_pops(SIX)), seed=1)
    sim = cluster.sim
    sim.run_for(2000)
    root = sim.nodes["lhr"]
    push = next(e for e in root.write("kv", "k", {"value": 1}, now=sim.now).envelopes if isinstance(e.msg, Gossip))
    child = sim.nodes[push.dst]

    def acks(now):
        out = child.receive(Envelope("lhr", push.dst, push.msg), now=now)
        return [e for e in out if e.dst == "lhr" and isinstance(e.msg, IHave)]

    assert acks(sim.now + 100) == [] and not root.strategy.unacked
    cluster.set_loss(0.1)
    assert sim.loss == 0.1 and [a.msg.items[0][0] for a in acks(sim.now + 200)] == [push.msg.mid]
    cluster.set_loss(0.0)
    assert acks(sim.now + 300) == []
    forced = SimCluster(place_replicas(select_pops(SIX)), seed=1, acks=False, loss=0.2)
    assert not forced.config.dissemination.acks
    forced.set_loss(0.3)
    assert not forced.config.dissemination.acks  # asked for explicitly: the knob leaves it


def test_payload_acks_are_a_cost_lossless_links_do_not_pay():
    """The live show pays for every simulated message: with no loss a write costs its payloads
    and batched IHAVEs; the same run with acks forced on sends one more message per payload."""
    def sent(acks):
        cluster = SimCluster(place_replicas(select_pops("default")), seed=3, acks=acks)
        sim = cluster.sim
        sim.run_for(3000)
        before = dict(sim.stats["sent"])
        for i in range(20):
            sim.write(cluster.ids[i % len(cluster.ids)], "counters", "c", {"add": 1})
            sim.run_for(300)
        return {k: n - before.get(k, 0) for k, n in sim.stats["sent"].items()}

    plain, acked = sent(None), sent(True)
    assert plain["payload"] == acked["payload"] >= 20 * 21
    assert acked["ihave"] - plain["ihave"] >= 0.95 * plain["payload"], (plain, acked)


def test_announced_messages_graft_in_announcement_order_whatever_their_number():
    # The deadlines of announced-but-missing messages are kept in a heap: a lagging simulation
    # holds thousands at once, and a scan per event made every event cost O(those). Checked
    # against the scan it replaced, at every step: the next deadline, and what is grafted when.
    import random

    from replication.clocks import Dot
    from replication.messages import Graft

    _cluster, sim = _six()
    strategy, now = sim.nodes["lhr"].strategy, sim.now
    peers = ["jfk", "syd", "nrt", "gru", "jnb"]
    rng = random.Random(3)
    most = 0
    for step in range(400):
        now += rng.uniform(0.0, 5.0)
        mids = [Dot(rng.choice(peers), rng.randint(1, 200)) for _ in range(rng.randint(1, 4))]
        strategy.handle(rng.choice(peers), IHave([(m, m.replica, rng.uniform(0, 200)) for m in mids]), now)
        if rng.random() < 0.3 and strategy.missing:  # one of them arrives after all
            strategy.missing.pop(rng.choice(list(strategy.missing)))
        most = max(most, len(strategy.missing))
        others = [strategy.flush_at, *(d for d, *_ in strategy._acks_due),
                  *([strategy._expiry[0].at + strategy.cfg.cache_ms] if strategy._expiry else [])]
        scan = [v.deadline for v in strategy.missing.values()] + [t for t in others if t is not None]
        assert strategy.next_deadline() == min(scan, default=None), step
        if step % 5 == 0:
            tries = strategy.cfg.ack_tries
            due = [mid for mid, v in strategy.missing.items()
                   if now >= v.deadline and v.grafts < tries * max(1, len(v.offers))]
            grafted = [e.msg.mids[0] for e in strategy.tick(now) if isinstance(e.msg, Graft) and e.msg.mids]
            assert grafted == due, step
    assert most > 100  # enough at once that the heap was exercised
