"""The `edgestate` command's manners: `--version`, a closed pipe ends it quietly (status 0, no
traceback), every argument of every subcommand has help, and bench tables fit 100 columns with
one precision per column."""

from __future__ import annotations

import argparse
import os
import subprocess
from importlib.metadata import version

import pytest

from app.cli import build_parser
from app.processes.supervisor import edgestate_cmd
from replication.bench.cli import COLUMNS as PROPAGATION_COLUMNS
from replication.bench.report import MAX_WIDTH, table

RUN_TIMEOUT_S = 120


def walk(parser: argparse.ArgumentParser, path: str = "edgestate"):
    """(command path, action) for every action of every parser under `parser`."""
    for action in parser._actions:
        yield path, action
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, f"{path} {name}")


def test_every_argument_of_every_subcommand_has_help():
    missing = []
    commands = set()
    for path, action in walk(build_parser()):
        commands.add(path)
        if isinstance(action, argparse._SubParsersAction):
            # each subcommand's one-line help is in the parent's list of choices
            helped = {a.dest for a in action._choices_actions if a.help}
            missing += [f"{path} {name}" for name in action.choices if name not in helped]
            continue
        if action.help is None or not str(action.help).strip():
            missing.append(f"{path}: {'/'.join(action.option_strings) or action.dest}")
    assert {"edgestate serve", "edgestate replica", "edgestate bench propagation", "edgestate scenario run"} <= commands
    assert missing == [], "arguments without help:\n" + "\n".join(missing)


def test_version_comes_from_the_package_metadata():
    out = subprocess.run(edgestate_cmd("--version"), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"edgestate {version('edgestate')}"


@pytest.mark.parametrize("args", [
    ["scenario", "list"],
    ["bench", "propagation", "--pops", "lhr,fra,syd", "--writes", "5", "--warmup", "0", "--strategy", "direct",
     "--quiet"],
], ids=["scenario-list", "bench-propagation"])
def test_a_closed_pipe_ends_quietly(args):
    """The reader is gone before the first write (its end closed before the start), so the
    first line written meets the closed pipe: no race with how much fits in the pipe's buffer."""
    r, w = os.pipe()
    os.close(r)
    try:
        out = subprocess.run(edgestate_cmd(*args), stdout=w, stderr=subprocess.PIPE, text=True,
                             timeout=RUN_TIMEOUT_S)
    finally:
        os.close(w)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr and "Exception ignored" not in out.stderr


def widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def test_the_propagation_table_fits_100_columns_with_one_precision_per_column():
    rows = [
        {"strategy": "plumtree", "replicas": 54, "writes": 1000, "ratio_p50": 1.234567, "ratio_p99": 3.5,
         "payloads_per_receiver": 1.02, "max_sends_per_node": 12, "delivered_before_antientropy": 0.999,
         "delivered_everywhere": 1.0, "heal_converge_ms": 1234.5678, "first_write_max": 2.25,
         "first_write_p50": 1.5, "switched_back_max": 103.25},
        {"strategy": "gossip", "replicas": 54, "writes": 1000, "ratio_p50": 12.5, "ratio_p99": float("inf"),
         "payloads_per_receiver": 4.75, "max_sends_per_node": 340, "delivered_before_antientropy": 0.5,
         "delivered_everywhere": 0.998, "heal_converge_ms": 87.0, "first_write_max": None,
         "first_write_p50": 1.0, "switched_back_max": 9.5},
    ]
    text = table(rows, PROPAGATION_COLUMNS)
    assert widest(text) <= MAX_WIDTH, text
    for name in PROPAGATION_COLUMNS:  # every column is shown, under its name's words
        assert all(word in text for word in name.split("_")), (name, text)
    lines = text.splitlines()
    plumtree = [line for line in lines if line.startswith("plumtree")]
    gossip = [line for line in lines if line.startswith("gossip")]
    joined_p, joined_g = "  ".join(plumtree), "  ".join(gossip)
    # one precision per column: 1.234567 and 12.5 share 2 decimals; 1234.5678 and 87.0 share 1
    assert " 1.23 " in joined_p and " 12.50 " in joined_g, text
    assert "1234.6" in joined_p and " 87.0" in joined_g, text
    assert " inf" in joined_g and " - " in joined_g + " ", text


def test_a_table_of_many_long_columns_is_cut_into_parts_that_fit():
    cols = ["name"] + [f"a_rather_long_column_name_number_{i}" for i in range(20)]
    rows = [{"name": "row", **{c: 123456.789 for c in cols[1:]}}]
    text = table(rows, cols)
    assert widest(text) <= MAX_WIDTH, text
    assert text.count("row") >= 2  # the first column repeats in each part
    assert text.count("123457") == 20  # one precision: none past 10,000


def test_bench_propagation_plot_writes_a_self_contained_html_cdf(tmp_path):
    import json
    import re

    out = tmp_path / "cdf.html"
    data = tmp_path / "result.json"
    run = subprocess.run(edgestate_cmd("bench", "propagation", "--pops", "lhr,fra,syd,jfk", "--writes", "12",
                                       "--warmup", "0", "--strategy", "plumtree,direct", "--quiet",
                                       "--plot", str(out), "--json", str(data)),
                         capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert run.returncode == 0, run.stderr
    html = out.read_text()
    assert re.search(r"plotly\.js v\d", html), "plotly.js is not inlined"
    assert not re.search(r"<script[^>]*\bsrc=", html), "a script is fetched (from a CDN?) rather than inlined"
    names = re.findall(r'"name":"([^"]+)"', html)
    assert sorted(names) == ["direct", "physical limit", "plumtree"], names
    result = json.loads(data.read_text())
    for r in result["strategies"].values():  # what the curves are drawn from
        assert len(r["convergence_ms"]) == len(r["physical_ms"]) == 12
        assert all(t is None or t >= lim * 0.999 for t, lim in zip(r["convergence_ms"], r["physical_ms"]))


def test_plot_into_a_missing_directory_is_refused_before_the_run(tmp_path):
    run = subprocess.run(edgestate_cmd("bench", "propagation", "--plot", str(tmp_path / "no" / "x.html"), "--quiet"),
                         capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert run.returncode == 2 and "no such directory" in run.stderr and "Traceback" not in run.stderr


def test_progress_says_how_long_the_rest_should_take():
    import io

    from replication.bench.report import Progress

    t = [100.0]
    out = io.StringIO()
    bar = Progress("plumtree", 100, stream=out, clock=lambda: t[0])
    t[0] += 10.0
    bar.update(25)  # 25 in 10 s: 75 more take 30 s
    t[0] += 90.0
    bar.update(50)  # 50 in 100 s: 50 more take 100 s
    bar.update(100)
    assert out.getvalue().splitlines() == ["plumtree: 25/100 (25%), ~30s left", "plumtree: 50/100 (50%), ~1m40s left",
                                           "plumtree: 100/100 (100%)"]
