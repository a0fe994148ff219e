"""Merge laws for every registered CRDT type, on states reached by real histories (hypothesis).

One harness for all types: each type's operations come from its own `EXAMPLES` and go through
the protocol (`check`, `delta`, `mutate`, `join`), so a type registered tomorrow is checked here
without a line more.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replication.clocks import CausalContext, Dot, Timestamp
from replication.crdts import BY_NAMESPACE, base, register, types
from replication.crdts.base import CrdtType, SimpleMint
from replication.errors import InvalidOperation

REPLICAS = ["a", "b", "c"]
TYPES = [pytest.param(t, id=t.NAME) for t in types()]


class Sim:
    """One key of one CRDT type at three replicas, each a (store, context) pair."""

    def __init__(self, t: CrdtType):
        self.t = t
        self.states = {r: (t.empty(), CausalContext()) for r in REPLICAS}
        self.deltas = []

    def mint(self, r):
        store, ctx = self.states[r]
        first = ctx.next_dot(r).counter
        return SimpleMint(r, first, now=lambda: Timestamp(0, first), read=lambda: list(self.t.dots(store)))

    def delta_for(self, r, op):
        """The operation's delta at `r` (its dot store and context), or None: nothing to change,
        or refused (a map field holding the other type), which must then leave `r` as it was."""
        store, _ctx = self.states[r]
        before = copy.deepcopy(store)
        try:
            out = self.t.delta(store, self.t.check(op), self.mint(r))
        except InvalidOperation:
            assert store == before
            return None
        return None if out is None else (out.store, CausalContext.of(out.ctx))

    def mutate(self, r, op):
        delta = self.delta_for(r, op)
        if delta is not None:
            self.states[r] = join(self.t, self.states[r], delta)
            self.deltas.append(delta)
        return delta


def join(t, x, y):
    ctx = x[1].copy()
    ctx.merge(y[1])
    return t.join(x[0], x[1], y[0], y[1]), ctx


def same(x, y):
    return x[0] == y[0] and x[1] == y[1]


def steps(t):
    return st.lists(
        st.one_of(
            st.tuples(st.just("op"), st.sampled_from(REPLICAS), st.sampled_from(t.EXAMPLES)),
            st.tuples(st.just("sync"), st.sampled_from(REPLICAS), st.sampled_from(REPLICAS)),
        ),
        max_size=25,
    )


def run(t, history):
    sim = Sim(t)
    for step in history:
        if step[0] == "op":
            sim.mutate(step[1], step[2])
        else:
            sim.states[step[2]] = join(t, sim.states[step[2]], sim.states[step[1]])
    return sim


@pytest.mark.parametrize("t", TYPES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_the_join_is_commutative_associative_and_idempotent(t, data):
    sim = run(t, data.draw(steps(t)))
    x, y, z = (sim.states[r] for r in REPLICAS)
    assert same(join(t, x, y), join(t, y, x)), "commutative"
    assert same(join(t, join(t, x, y), z), join(t, x, join(t, y, z))), "associative"
    assert same(join(t, x, x), x), "idempotent"


@pytest.mark.parametrize("t", TYPES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_the_delta_mutator_equals_the_mutation(t, data):
    """state ⊔ delta(state, op) == mutate(state, op), the type's plain in-place reference."""
    sim = run(t, data.draw(steps(t)))
    op, r = data.draw(st.sampled_from(t.EXAMPLES)), data.draw(st.sampled_from(REPLICAS))
    before = sim.states[r]
    store, ctx = copy.deepcopy(before[0]), before[1].copy()
    try:
        t.mutate(store, ctx, t.check(op), sim.mint(r))
    except InvalidOperation:
        store, ctx = before
    delta = sim.delta_for(r, op)
    got = before if delta is None else join(t, before, delta)
    assert same(got, (store, ctx))


@pytest.mark.parametrize("t", TYPES)
@settings(max_examples=150, deadline=None)
@given(data=st.data(), rnd=st.randoms(use_true_random=False))
def test_the_same_deltas_in_any_order_with_duplicates_converge(t, data, rnd):
    ops = data.draw(st.lists(st.tuples(st.sampled_from(REPLICAS), st.sampled_from(t.EXAMPLES)), max_size=15))
    sim = Sim(t)
    for r, op in ops:
        sim.mutate(r, op)
    finals = []
    for _ in range(3):
        shuffled = sim.deltas + rnd.sample(sim.deltas, k=len(sim.deltas) // 2)
        rnd.shuffle(shuffled)
        s = (t.empty(), CausalContext())
        for d in shuffled:
            s = join(t, s, d)
        finals.append(s)
    # every replica that saw everything also agrees with the receivers
    full = (t.empty(), CausalContext())
    for r in REPLICAS:
        full = join(t, full, sim.states[r])
    for f in finals:
        assert same(f, full)


@pytest.mark.parametrize("t", TYPES)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_every_state_reads_back_from_its_wire_form(t, data):
    sim = run(t, data.draw(steps(t)))
    for store, _ctx in sim.states.values():
        assert t.from_wire(t.to_wire(store)) == store
        assert sorted(d for d, _c in t.contents(store)) == sorted(t.dots(store))


@pytest.mark.parametrize("t", TYPES)
def test_every_type_implements_the_whole_protocol_and_its_examples_check(t):
    assert isinstance(t, CrdtType) and base.missing_members(t) == []
    assert BY_NAMESPACE[t.NAME] is t
    assert set(t.CHECKS) == set(t.figures(t.value(t.empty(), _Reader())))
    for op in t.EXAMPLES:
        t.check({**op, "context": None} if op.get("context") == base.FROM_READ else op)


class _Reader:
    key = "k"

    def token(self, dots):
        return "token"


def test_the_registry_refuses_a_module_that_is_not_a_type_and_a_name_taken():
    class Half:
        NAME = "halves"

    with pytest.raises(TypeError, match="lacks"):
        register(Half)
    with pytest.raises(ValueError, match="registered already"):
        register(BY_NAMESPACE["kv"])


# one entry per actor, as every counter store holds (pncounter.from_wire refuses two)
_counter_stores = st.dictionaries(st.sampled_from("abcde"), st.tuples(st.integers(1, 6), st.integers(0, 9),
                                                                       st.integers(0, 9)), max_size=5).map(
    lambda m: {Dot(r, c): (p, n) for r, (c, p, n) in m.items()})


@given(a=_counter_stores, b=_counter_stores)
@settings(max_examples=300, deadline=None)
def test_the_counters_one_entry_join_equals_the_join_over_every_entry(a, b):
    """A write's delta carries one actor's entry, and every replica joins it: that join takes a
    short way (only the actor's entry is looked at) that must give what the full one gives."""
    from replication.crdts import pncounter

    for delta in [b, *({d: v} for d, v in b.items())]:  # the one-entry way and the general one
        before = dict(a)
        joined = pncounter.join(a, CausalContext(), delta, CausalContext())
        assert joined == pncounter._join_all(a, delta)
        assert a == before  # neither side is changed in place
        assert joined is not a
