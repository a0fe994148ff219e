"""`Store.against`, anti-entropy's one-pass answer to a digest, agrees with the two questions it
stands for: `deltas_since(remote, hold) is None` and `applied.covers(remote)`, on replicas whose
contexts differ in every way random writes, partial deliveries, held dots and forgotten keys make."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from replication import Replica
from replication.clocks import CausalContext

IDS = ["lhr", "syd", "jfk", "gru"]


@st.composite
def histories(draw):
    reps = {i: Replica(i, members=IDS) for i in IDS}
    deltas = []
    for step in range(draw(st.integers(1, 14))):
        w = draw(st.sampled_from(IDS))
        _, d = reps[w].write_kv(f"k{draw(st.integers(0, 3))}", step, now=step)
        deltas.append((w, d))
        # each replica gets each origin's deltas in order, up to a point: contexts without clouds
    for r in IDS:
        for origin in IDS:
            mine = [d for w, d in deltas if w == origin]
            for d in mine[:draw(st.integers(0, len(mine)))]:
                reps[r].apply(d, now=0)
    if draw(st.booleans()):
        for r in reps.values():
            for p in IDS:
                if p != r.id:
                    r.observe_peer(p, reps[p].applied_context)  # forgets dot->key of stable dots
    return reps, draw(st.sets(st.sampled_from([(i, n) for i in IDS for n in range(1, 15)])))


@settings(max_examples=300, deadline=None)
@given(histories(), st.sampled_from(IDS), st.sampled_from(IDS))
def test_against_answers_what_deltas_since_and_covers_answer(h, a, b):
    reps, held_dots = h
    store, remote = reps[a].store, reps[b].store.applied
    if store.applied.cloud or remote.cloud:
        return
    hold = lambda d: tuple(d) in held_dots  # noqa: E731
    held, covered = store.against(remote.vv, hold)
    assert held == (store.deltas_since(CausalContext(remote.vv), hold) is None)
    assert covered == store.applied.covers(remote)


def test_a_dot_missing_at_the_remote_that_is_not_held_is_sent():
    lhr, syd = Replica("lhr", members=["lhr", "syd"]), Replica("syd", members=["lhr", "syd"])
    lhr.write_kv("k", 1, now=1)
    lhr.write_kv("k", 2, now=2)
    assert lhr.store.against(syd.store.applied.vv, lambda d: True) == (True, True)
    assert lhr.store.against(syd.store.applied.vv, lambda d: d[1] == 1) == (False, True)
    assert syd.store.against(lhr.store.applied.vv, lambda d: False) == (True, False)
