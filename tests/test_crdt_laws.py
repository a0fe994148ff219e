"""Merge laws for every CRDT, on states reached by real histories (hypothesis)."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from replication.clocks import CausalContext, Dot, Timestamp
from replication.crdts import mvregister, orset, pncounter
from replication.values import encode_value

REPLICAS = ["a", "b", "c"]


class Sim:
    """One key of one CRDT at three replicas, each a (store, context) pair."""

    def __init__(self, mod):
        self.mod = mod
        self.states = {r: (mod.empty(), CausalContext()) for r in REPLICAS}
        self.deltas = []

    def next_dots(self, r, n):
        first = self.states[r][1].next_dot(r)
        return [Dot(r, first.counter + i) for i in range(n)]

    def delta_for(self, r, op):
        store, _ctx = self.states[r]
        kind, arg = op
        if self.mod is mvregister:
            [d] = self.next_dots(r, 1)
            if kind == "write":
                return mvregister.write_delta(store, d, encode_value(arg), Timestamp(0, d.counter))
            return mvregister.clear_delta(store, d)
        if self.mod is pncounter:
            [d] = self.next_dots(r, 1)
            return pncounter.add_delta(store, r, d, arg)
        elems = [encode_value(e) for e in sorted(set(arg))]
        if kind == "add":
            return orset.add_delta(store, elems, self.next_dots(r, len(elems)))
        [d] = self.next_dots(r, 1)
        return orset.remove_delta(store, elems, d)

    def mutate(self, r, op):
        delta = self.delta_for(r, op)
        if delta is not None:
            self.states[r] = join(self.mod, self.states[r], as_state(delta))
            self.deltas.append(as_state(delta))
        return delta


def as_state(delta):
    store, dots = delta
    return store, CausalContext.of(dots)


def join(mod, x, y):
    ctx = x[1].copy()
    ctx.merge(y[1])
    return mod.join(x[0], x[1], y[0], y[1]), ctx


def same(x, y):
    return x[0] == y[0] and x[1] == y[1]


reg_ops = st.one_of(st.tuples(st.just("write"), st.integers(0, 5)), st.tuples(st.just("clear"), st.none()))
ctr_ops = st.tuples(st.just("add"), st.integers(-5, 5))
set_ops = st.tuples(st.sampled_from(["add", "remove"]), st.lists(st.integers(0, 3), min_size=1, max_size=3))
steps = lambda ops: st.lists(  # noqa: E731
    st.one_of(
        st.tuples(st.just("op"), st.sampled_from(REPLICAS), ops),
        st.tuples(st.just("sync"), st.sampled_from(REPLICAS), st.sampled_from(REPLICAS)),
    ),
    max_size=25,
)
CASES = [(mvregister, reg_ops), (pncounter, ctr_ops), (orset, set_ops)]


def run(mod, history):
    sim = Sim(mod)
    for step in history:
        if step[0] == "op":
            sim.mutate(step[1], step[2])
        else:
            sim.states[step[2]] = join(mod, sim.states[step[2]], sim.states[step[1]])
    return sim


def _laws(mod, history):
    sim = run(mod, history)
    x, y, z = (sim.states[r] for r in REPLICAS)
    assert same(join(mod, x, y), join(mod, y, x)), "commutative"
    assert same(join(mod, join(mod, x, y), z), join(mod, x, join(mod, y, z))), "associative"
    assert same(join(mod, x, x), x), "idempotent"


@settings(max_examples=150)
@given(steps(reg_ops))
def test_mvregister_join_laws(h):
    _laws(mvregister, h)


@settings(max_examples=150)
@given(steps(ctr_ops))
def test_pncounter_join_laws(h):
    _laws(pncounter, h)


@settings(max_examples=150)
@given(steps(set_ops))
def test_orset_join_laws(h):
    _laws(orset, h)


def apply_directly(mod, state, r, op, sim):
    store, ctx = copy.deepcopy(state[0]), state[1].copy()
    kind, arg = op
    if mod is mvregister:
        [d] = sim.next_dots(r, 1)
        if kind == "write":
            mvregister.apply_write(store, ctx, d, encode_value(arg), Timestamp(0, d.counter))
        elif store:
            for old in list(store):
                del store[old]
            ctx.add(d)
    elif mod is pncounter:
        [d] = sim.next_dots(r, 1)
        pncounter.apply_add(store, ctx, r, d, arg)
    else:
        elems = [encode_value(e) for e in sorted(set(arg))]
        if kind == "add":
            orset.apply_add(store, ctx, elems, sim.next_dots(r, len(elems)))
        else:
            [d] = sim.next_dots(r, 1)
            orset.apply_remove(store, ctx, elems, d)
    return store, ctx


@settings(max_examples=150)
@given(st.sampled_from(CASES).flatmap(lambda c: st.tuples(st.just(c[0]), steps(c[1]), c[1], st.sampled_from(REPLICAS))))
def test_delta_mutator_equals_mutation(case):
    mod, history, op, r = case
    sim = run(mod, history)
    before = sim.states[r]
    expected = apply_directly(mod, before, r, op, sim)
    delta = sim.delta_for(r, op)
    got = before if delta is None else join(mod, before, as_state(delta))
    assert same(got, expected)


@settings(max_examples=150)
@given(
    st.sampled_from(CASES).flatmap(
        lambda c: st.tuples(st.just(c[0]), st.lists(st.tuples(st.sampled_from(REPLICAS), c[1]), max_size=15))
    ),
    st.randoms(use_true_random=False),
)
def test_same_deltas_any_order_with_duplicates_converge(case, rnd):
    mod, ops = case
    sim = Sim(mod)
    for r, op in ops:
        sim.mutate(r, op)
    finals = []
    for _ in range(3):
        shuffled = sim.deltas + rnd.sample(sim.deltas, k=len(sim.deltas) // 2)
        rnd.shuffle(shuffled)
        s = (mod.empty(), CausalContext())
        for d in shuffled:
            s = join(mod, s, d)
        finals.append(s)
    # every replica that saw everything also agrees with the receivers
    full = (mod.empty(), CausalContext())
    for r in REPLICAS:
        full = join(mod, full, sim.states[r])
    for f in finals:
        assert same(f, full)
