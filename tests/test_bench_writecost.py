"""`bench writecost`: instructions per write counted by valgrind, this tree against a revision."""

from __future__ import annotations

import argparse
import shutil

import pytest

from app.bench import writecost

pytestmark = pytest.mark.timeout(600)

SMALL = dict(pops="lhr,syd,jfk", writes=4)


def params(**kw) -> writecost.Params:
    valgrind = shutil.which("valgrind")
    assert valgrind, "./dev test installs valgrind"
    return writecost.Params(valgrind=valgrind, **{**SMALL, **kw})


def test_the_instruction_count_is_read_from_cachegrinds_summary():
    out = "==1== Cachegrind, a high-precision tracing profiler\n==1== \n==1== I   refs:      7,912,039,575\n"
    assert writecost.instructions(out) == 7_912_039_575
    with pytest.raises(RuntimeError, match="no instruction count"):
        writecost.instructions("valgrind: something went wrong")


def test_side_by_side_with_a_revision_counts_the_same_work_at_both():
    r = writecost.run(params(baseline="HEAD"), progress=False)
    rows = {row["mode"]: row for row in r["rows"]}
    assert set(rows) == {"sim", "live"}
    for row in rows.values():
        assert row["same_work"], row["delivered"]  # the same seed: the same messages at both
        assert row["delivered"]["current"][0] > 0
        # the same code counted twice: an instruction count moves by well under a per cent
        assert row["ratio"] == pytest.approx(1.0, abs=0.02), row
    # the dashboard's observers of the events cost something on top of the simulation
    assert rows["live"]["current"] > rows["sim"]["current"] > 0
    table = writecost.table(r)
    assert "baseline" in table and "ratio" in table and table.count("\n") == 2


def test_this_tree_alone_and_an_unknown_revision():
    r = writecost.run(params(modes=("sim",)), progress=False)
    [row] = r["rows"]
    assert row["mode"] == "sim" and row["current"] > 0 and "ratio" not in row
    assert "baseline" not in writecost.table(r)
    with pytest.raises(ValueError, match="not a git revision"):
        writecost.run(params(baseline="no-such-rev-xyz"), progress=False)


def test_the_command_says_what_is_missing_without_valgrind(monkeypatch, capsys):
    monkeypatch.setattr(writecost.shutil, "which", lambda name: None)
    args = argparse.Namespace(baseline="", writes=4, modes=("sim",), pops="lhr,syd", seed=1, repeat=1, json=None,
                              quiet=True)
    assert writecost.main(args) == 2
    assert "valgrind is not installed" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["", "sim,fast", ",", "live,nope"])
def test_bad_modes_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        writecost._modes(text)
