"""The simulator reporting only a sample of its traffic (`traffic_kinds`, `traffic_limit`), as the
live server's cluster does: the run is the same as with every message reported, every reported
message is reported whole (its "sent", then exactly one "delivered" or "dropped"), no window of
virtual time reports more than the limit, and the counters still count every message.

Checked on real replicas under loss, duplication, a cut that starts while messages fly and a
crash, against the same seed with all traffic reported."""

from __future__ import annotations

import pytest

from replication.geo import place_replicas, select_pops
from replication.sim.cluster import SimCluster
from replication.sim.simulator import TRAFFIC_WINDOW_MS

pytestmark = pytest.mark.timeout(120)

TRAFFIC = ("sent", "delivered", "dropped")
KINDS = frozenset({"payload", "ihave", "graft", "ae_reply"})


def run(seed: int, **traffic) -> tuple[SimCluster, list]:
    events: list = []
    c = SimCluster(place_replicas(select_pops("lhr,fra,iad,ord,sjc,syd,nrt,gru")), seed=seed, loss=0.1,
                   duplicate=0.05, sink=events.append, **traffic)
    sim, ids = c.sim, c.ids
    sim.run_for(1500)
    up = [r for r in ids if r != "syd"]  # syd crashes half-way
    for i in range(40):
        c.write(up[i % len(up)], "counters", "votes", {"add": 1})
        c.write(up[(i * 3) % len(up)], "kv", f"k{i % 5}", {"value": i})
        sim.run_for(7 + i % 11)
        if i in (15, 25):  # a write first in its window (so reported), then a fault while it flies
            sim.run_until((sim.now // TRAFFIC_WINDOW_MS + 1) * TRAFFIC_WINDOW_MS)
            c.write("lhr", "kv", "fault", {"value": i})
            if i == 15:
                c.partition([["lhr", "fra"], ["iad", "ord", "sjc", "syd", "nrt", "gru"]])
            else:
                c.crash("syd")
        if i == 30:
            c.heal()
    sim.run_for(400)
    c.recover("syd")
    sim.run_for(3000)
    return c, events


def as_tuples(events) -> list[tuple]:
    return [(e.t, e.kind, e.node, repr(sorted(e.data.items()))) for e in events]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_sampled_run_is_the_same_run_reported_in_part(seed):
    full, every = run(seed)
    part, sample = run(seed, traffic_kinds=KINDS, traffic_limit=4)
    # the same run: clock, replicas, counters (what was not reported is counted, not lost)
    assert part.sim.now == full.sim.now
    assert part.sim.digests() == full.sim.digests()
    f, p = full.sim.stats, part.sim.stats
    assert {k: v for k, v in p.items() if k != "unshown"} == {k: v for k, v in f.items() if k != "unshown"}
    assert f["unshown"] == 0
    # bytes count every message sent, reported or not
    assert sum(f["bytes"].values()) == sum(e.data["bytes"] for e in every if e.kind == "sent")
    # node and cluster events are all there, in the same order; the traffic reported is a subset
    assert as_tuples(e for e in sample if e.kind not in TRAFFIC) == as_tuples(e for e in every if e.kind not in TRAFFIC)
    traffic = [e for e in sample if e.kind in TRAFFIC]
    assert set(as_tuples(traffic)) <= set(as_tuples(every))
    assert {e.data["kind"] for e in traffic} <= KINDS
    sent = [e for e in traffic if e.kind == "sent"]
    # thinned for real, and what was left out is what `unshown` says
    all_sent = sum(1 for e in every if e.kind == "sent" and e.data["kind"] in KINDS)
    assert 0 < len(sent) < all_sent and p["unshown"] == all_sent - len(sent)
    # no window of virtual time reports more messages than the limit
    per_window: dict[float, int] = {}
    for e in sent:
        w = e.t // TRAFFIC_WINDOW_MS
        per_window[w] = per_window.get(w, 0) + 1
    assert max(per_window.values()) <= 4
    # each reported message whole: its sent first, then one ending (or still in flight at the end)
    ends: dict[int, list] = {}
    for e in traffic:
        if e.kind != "sent":
            ends.setdefault(e.data["mid"], []).append(e)
    sent_mids = {e.data["mid"] for e in sent}
    assert set(ends) <= sent_mids
    for e in sent:
        mine = ends.get(e.data["mid"], [])
        if e.data["deliver_at"] is None:  # dropped on the way out
            assert [x.kind for x in mine] == ["dropped"] and mine[0].t == e.t
        elif e.data["deliver_at"] <= part.sim.now:
            assert len(mine) == 1 and mine[0].t == e.data["deliver_at"], (e, mine)
        else:
            assert not mine
    reasons = {x.data["reason"] for m in ends.values() for x in m if x.kind == "dropped"}
    assert reasons == {"loss", "partition", "crashed"}  # every drop path, taken by reported messages


def test_without_a_limit_every_message_of_the_kinds_is_reported():
    full, every = run(5)
    part, sample = run(5, traffic_kinds=KINDS)
    want = [e for e in every if e.kind not in TRAFFIC or e.data["kind"] in KINDS]
    assert as_tuples(sample) == as_tuples(want)
    assert part.sim.stats["unshown"] == 0


def test_bad_traffic_limits_are_refused():
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="traffic_limit"):
            SimCluster(place_replicas(select_pops("lhr,fra")), seed=1, traffic_limit=bad)
