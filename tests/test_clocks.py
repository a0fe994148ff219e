import pytest
from hypothesis import given
from hypothesis import strategies as st

from replication.clocks import CausalContext, Dot, HybridLogicalClock, Timestamp, VersionVector
from replication.errors import MalformedDelta

dots = st.builds(Dot, st.sampled_from(["a", "b", "c"]), st.integers(1, 12))


def test_version_vector_order():
    a = VersionVector({"x": 2, "y": 1})
    b = VersionVector({"x": 1, "y": 3})
    assert a.concurrent(b)
    m = a.copy()
    m.merge(b)
    assert m.to_dict() == {"x": 2, "y": 3}
    assert m.dominates(a) and m.dominates(b) and not a.dominates(m)
    assert a.meet(b).to_dict() == {"x": 1, "y": 1}
    assert VersionVector({"x": 0}).to_dict() == {}


def test_context_holds_gaps_then_compacts_when_they_fill():
    c = CausalContext()
    c.add(Dot("a", 1))
    c.add(Dot("a", 3))
    c.add(Dot("a", 4))
    assert c.vv.to_dict() == {"a": 1} and c.cloud == {Dot("a", 3), Dot("a", 4)}
    assert Dot("a", 2) not in c and Dot("a", 4) in c
    assert list(c.dots_not_in(CausalContext.of([Dot("a", 1)]))) != []
    c.add(Dot("a", 2))
    assert c.vv.to_dict() == {"a": 4} and c.cloud == set()


def test_next_dot_stays_above_cloud():
    c = CausalContext.of([Dot("a", 1), Dot("a", 5)])
    assert c.next_dot("a") == Dot("a", 6)
    assert c.next_dot("b") == Dot("b", 1)


def _compact(c: CausalContext) -> bool:
    """Nothing in the cloud is covered by the vector or directly after it."""
    return all(not c.vv.contains(d) and d.counter != c.vv.get(d.replica) + 1 for d in c.cloud)


@given(st.sets(dots), st.sets(dots))
def test_context_is_exactly_the_set_it_was_given(xs, ys):
    c = CausalContext.of(xs)
    for r in "abc":
        for n in range(1, 14):
            assert (Dot(r, n) in c) == (Dot(r, n) in xs)
    assert _compact(c)
    d = CausalContext.of(ys)
    assert set(c.dots_not_in(d)) == xs - ys
    m = c.copy()
    m.merge(d)
    assert set(m.dots()) == xs | ys
    assert _compact(m)
    assert m.covers(c) and m.covers(d)
    assert c.covers(d) == (ys <= xs)
    assert CausalContext.from_wire(c.to_wire()) == c


@given(st.lists(st.sets(dots), max_size=8))
def test_merging_contexts_one_by_one_is_their_union_and_stays_compact_after_each(parts):
    # a store merges every delta it applies: the merge works only on what the delta adds, so
    # check it after each step, with the clouds and vectors that out-of-order arrivals make
    m, seen = CausalContext(), set()
    for part in parts:
        m.merge(CausalContext.of(part))
        seen |= part
        assert set(m.dots()) == seen and _compact(m)


@pytest.mark.parametrize(
    "wire",
    [None, [], [{}, None], [{"a": -1}, []], [{"a": 1.5}, []], [{"": 1}, []], [{"a": 1}, [["a"]]],
     [{"a": 1}, [["a", 0]]], [{"a": 1}, [[3, 1]]], [{"a": 2**63}, []], "x"],
)
def test_malformed_context_is_refused(wire):
    with pytest.raises(MalformedDelta):
        CausalContext.from_wire(wire)


def test_hlc_is_monotonic_and_follows_physical_time():
    h = HybridLogicalClock()
    assert h.now(1000) == Timestamp(1000, 0)
    assert h.now(1000) == Timestamp(1000, 1)
    assert h.now(999) == Timestamp(1000, 2)  # physical clock went backwards: logical keeps order
    assert h.now(1001) == Timestamp(1001, 0)


def test_hlc_observes_remote_time_but_refuses_absurd_drift():
    h = HybridLogicalClock(max_drift_ms=1000)
    assert h.observe(Timestamp(1500, 4), 1000)
    assert h.last == Timestamp(1500, 5)
    assert h.now(1000) > Timestamp(1500, 5)
    before = h.last
    assert not h.observe(Timestamp(10_000_000, 0), 1000)
    assert h.last == before


@given(st.sets(dots))
def test_the_packable_form_packs_to_the_wire_forms_bytes(xs):
    """Digests hash `to_packable` (no list made per dot); a peer reading `to_wire` must see the
    same bytes, or two replicas with one state would disagree on its digest."""
    import msgpack

    c = CausalContext.of(xs)
    assert msgpack.packb(c.to_packable(), use_bin_type=True) == msgpack.packb(c.to_wire(), use_bin_type=True)
