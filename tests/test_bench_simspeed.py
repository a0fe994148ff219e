"""`bench simspeed`: this tree against a git revision, in fresh processes, on the same work."""

from __future__ import annotations

import pytest

from replication.bench import simspeed


def test_side_by_side_with_a_revision_reports_both_and_checks_the_work_is_the_same():
    r = simspeed.run(simspeed.Params(baseline="HEAD", rounds=2, pops="lhr,syd,jfk", writes=5), progress=False)
    assert len(r["runs"]["baseline"]) == len(r["runs"]["current"]) == 2
    assert r["same_work"], r["delivered"]  # the same seed: the same messages at both revisions
    assert r["delivered"]["current"][0] > 0
    assert r["ratio"] == r["current_msgs_per_s"] / r["baseline_msgs_per_s"]
    assert len(r["params"]["baseline"]) == 40  # resolved to the commit it measured


def test_this_tree_alone_reports_cost_per_write():
    r = simspeed.run_here(simspeed.Params(baseline="", rounds=1, pops="lhr,syd,jfk", writes=4), progress=False)
    assert r["msgs_per_write"] == r["runs"][0]["delivered"] / 4 > 0


def test_an_unknown_revision_is_refused_before_anything_runs():
    with pytest.raises(ValueError, match="not a git revision"):
        simspeed.run(simspeed.Params(baseline="no-such-rev-xyz", rounds=1), progress=False)


def test_native_runs_this_tree_compiled_and_says_so():
    from replication import native

    if native.unavailable():
        pytest.skip(f"no compiled build here: {native.unavailable()}")
    p = simspeed.Params(baseline="", rounds=1, pops="lhr,syd,jfk", writes=4, native=True)
    compiled, interpreted = simspeed.run_here(p, progress=False), simspeed.run_here(
        simspeed.Params(baseline="", rounds=1, pops="lhr,syd,jfk", writes=4), progress=False)
    assert compiled["runs"][0]["native"] and not interpreted["runs"][0]["native"]
    assert compiled["runs"][0]["delivered"] == interpreted["runs"][0]["delivered"] > 0
    assert compiled["runs"][0]["digests"] == interpreted["runs"][0]["digests"]
