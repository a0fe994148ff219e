"""The OR-set's per-element join takes a shortcut when both sides hold one bare dot; it must
give exactly what the general dot-set rule gives, for every relation between the two dots and
the two contexts."""

from hypothesis import given, settings
from hypothesis import strategies as st

from replication.clocks import CausalContext, Dot
from replication.crdts import orset
from replication.crdts.dotstore import join_dotset

dots = st.builds(Dot, st.sampled_from(["a", "b", "c"]), st.integers(1, 4))
contexts = st.lists(dots, max_size=6).map(CausalContext.of)


def _general(a, ca, b, cb):
    return frozenset(join_dotset(frozenset(orset.dots_of(a)), ca, frozenset(orset.dots_of(b)), cb))


@settings(max_examples=400, deadline=None)
@given(dots, contexts, dots, contexts)
def test_bare_dot_join_matches_the_general_rule(a, ca, b, cb):
    # A store only holds a dot its context has seen.
    ca.add(a)
    cb.add(b)
    got = orset._join_entry(a, ca, b, cb)
    assert frozenset(orset.dots_of(got)) == _general(a, ca, b, cb)
    # and in the stored form: a bare dot when one, a frozenset otherwise (empty is falsy)
    assert (type(got) is Dot) == (len(orset.dots_of(got)) == 1)


def test_the_shortcut_covers_each_outcome():
    a, b = Dot("a", 1), Dot("b", 1)
    seen_both = CausalContext.of([a, b])
    assert orset._join_entry(a, CausalContext.of([a]), b, CausalContext.of([b])) == frozenset({a, b})
    assert orset._join_entry(a, CausalContext.of([a]), b, seen_both) == b  # b's side saw a and dropped it
    assert orset._join_entry(a, seen_both, b, CausalContext.of([b])) == a
    assert not orset._join_entry(a, seen_both, b, seen_both)  # each removed by the other
    assert orset._join_entry(a, seen_both, a, seen_both) == a
