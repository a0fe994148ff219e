import pytest

from replication.geo import DEFAULT_POPS, LatencyModel, all_pops, place_replicas, select_pops


def test_all_54_pops_ship_as_package_data():
    pops = all_pops()
    assert len(pops) == 54 and len({p.id for p in pops}) == 54
    assert {p.region for p in pops} == {"Europe", "North America", "South America", "Africa", "Asia", "Oceania"}


def test_default_set_spans_every_continent():
    pops = select_pops("default")
    assert 18 <= len(pops) <= 24 and [p.id for p in pops] == list(DEFAULT_POPS)
    assert {p.region for p in pops} == {p.region for p in all_pops()}


def test_selection_by_list_and_errors():
    assert [p.id for p in select_pops("syd, lhr")] == ["syd", "lhr"]
    assert len(select_pops("all")) == 54
    with pytest.raises(ValueError, match="nope"):
        select_pops("lhr,nope")
    with pytest.raises(ValueError, match="twice"):
        select_pops("lhr,lhr")
    with pytest.raises(ValueError):
        select_pops(",")


@pytest.mark.parametrize(
    "a, b, measured_rtt",
    [("lhr", "jfk", 72), ("jfk", "cdg", 78), ("sjc", "syd", 150), ("dfw", "iad", 35)],
)
def test_latency_model_within_25_percent_of_measured_round_trips(a, b, measured_rtt):
    by = {p.id: p for p in all_pops()}
    model = LatencyModel()
    rtt = model.rtt_ms(by[a], by[b])
    assert abs(rtt - measured_rtt) / measured_rtt <= 0.25, rtt
    assert model.one_way_ms(by[a], by[b]) == model.one_way_ms(by[b], by[a])


def test_jitter_is_seeded_and_bounded():
    import random

    by = {p.id: p for p in all_pops()}
    m = LatencyModel(jitter_ms=5.0)
    xs = [m.sample_ms(by["lhr"], by["jfk"], random.Random(7)) for _ in range(3)]
    assert xs[0] == xs[1] == xs[2]
    base = m.one_way_ms(by["lhr"], by["jfk"])
    ys = [m.sample_ms(by["lhr"], by["jfk"], random.Random(i)) for i in range(50)]
    assert all(base <= y <= base + 5 for y in ys) and len(set(ys)) > 1


def test_synthetic_placement_puts_several_replicas_per_pop():
    reps = place_replicas(select_pops("all"), 1000)
    assert len(reps) == 1000 and len({r.id for r in reps}) == 1000
    assert reps[0].id == "lhr" and reps[54].id == "lhr-2" and reps[54].pop.id == "lhr"
