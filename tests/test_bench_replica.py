"""`edgestate bench replica --short`: the small real run as a subprocess. Its JSON has every documented
figure, each one positive and consistent with the others (percentiles ordered, throughput no
more than the latencies allow, propagation no faster than the latency model's physics, TLS and
secret-only side by side with their ratio), and stdout carries the same figures as tables.
No figure is compared with a target here: on a shared machine that is the benchmark's report."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys

import pytest

from app.bench.replica import PROPAGATION_POPS, SHORT, TLS_POPS, _extract
from replication.bench.revision import REPO
from app.processes.supervisor import edgestate_cmd
from replication.geo import LatencyModel, all_pops

WRITES, CLIENTS, PROPAGATION_WRITES = SHORT.writes, SHORT.clients, SHORT.propagation_writes
TIMEOUT_S = 180

SINGLE = ["write_p50_ms", "write_p99_ms", "write_max_ms", "sequential_writes_per_s",
          "writes_per_s", "loaded_p50_ms", "loaded_p99_ms", "loaded_max_ms"]
PROPAGATION = ["real_p50_ms", "real_p99_ms", "sim_p50_ms", "sim_p99_ms", "median_ratio", "ratio_p50", "ratio_p99"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "replica.json"
    cmd = edgestate_cmd("bench", "replica", "--short", "--json", str(out))
    try:
        r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=TIMEOUT_S,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"bench replica did not finish within {TIMEOUT_S}s; stderr so far:\n{e.stderr}")
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return json.loads(out.read_text()), r.stdout, r.stderr


def _positive(section: dict, keys: list[str]) -> None:
    for k in keys:
        assert k in section, f"{k} missing from {sorted(section)}"
        v = section[k]
        assert isinstance(v, (int, float)) and math.isfinite(v) and v > 0, (k, v)


def test_single_replica_figures_are_present_positive_and_consistent(bench):
    data, _, _ = bench
    assert data["params"]["writes"] == WRITES
    assert data["params"]["clients"] == CLIENTS
    assert data["params"]["propagation_writes"] == PROPAGATION_WRITES
    s = data["single"]
    _positive(s, SINGLE)
    assert s["clients"] == CLIENTS
    assert s["write_p50_ms"] <= s["write_p99_ms"] <= s["write_max_ms"], s
    assert s["loaded_p50_ms"] <= s["loaded_p99_ms"] <= s["loaded_max_ms"], s
    assert all(type(load["checkpoints"]) is int and load["checkpoints"] >= 0 for load in s["load"]), s["load"]
    # at least half the writes took the median or longer, and one client waits for each of its
    # writes in turn: the elapsed time is at least (writes / 2) * p50 / clients
    assert s["sequential_writes_per_s"] <= 2000.0 / s["write_p50_ms"] * (1 + 1e-9), s
    assert s["writes_per_s"] <= 2000.0 * CLIENTS / s["loaded_p50_ms"] * (1 + 1e-9), s


def test_propagation_figures_are_present_positive_and_physical(bench):
    data, _, _ = bench
    p = data["propagation"]
    assert p["pops"] == PROPAGATION_POPS
    _positive(p, PROPAGATION)
    assert p["real_p50_ms"] <= p["real_p99_ms"], p
    assert p["sim_p50_ms"] <= p["sim_p99_ms"], p
    assert p["ratio_p50"] <= p["ratio_p99"], p
    assert p["median_ratio"] == pytest.approx(p["real_p50_ms"] / p["sim_p50_ms"], rel=1e-9)
    # reaching every replica takes at least the one-way latency to the farthest one, for the
    # luckiest origin: the injected delays in the real run, the model itself in the simulator
    pops = {q.id: q for q in all_pops()}
    model = LatencyModel()
    floor = min(max(model.one_way_ms(pops[a], pops[b]) for b in PROPAGATION_POPS if b != a)
                for a in PROPAGATION_POPS)
    assert p["sim_p50_ms"] >= floor, (p, floor)
    assert p["real_p50_ms"] >= floor, (p, floor)


def _table_row(stdout: str, columns: list[str]) -> dict[str, str]:
    """The data row under the header line that lists exactly these columns."""
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        if line.split() == columns:
            assert set(lines[i + 1].split()) <= {"-" * len(c) for c in columns}, lines[i + 1]
            values = lines[i + 2].split()
            assert len(values) == len(columns), lines[i + 2]
            return dict(zip(columns, values))
    raise AssertionError(f"no table with columns {columns} in stdout:\n{stdout}")


def _shown_as(cell: str, json_value: float) -> bool:
    """The cell is the figure rounded to the decimals it shows (one precision per column: report.table)."""
    decimals = len(cell.partition(".")[2])
    return abs(float(cell) - json_value) <= 0.5 * 10 ** -decimals + 1e-9


def test_stdout_has_the_tables_with_the_same_figures(bench):
    data, stdout, stderr = bench
    assert "durable writes over HTTP, one replica process" in stdout
    assert f"propagation to every replica, 5 processes ({', '.join(PROPAGATION_POPS)}) vs the simulator" in stdout
    tables = [
        (data["single"], ["write_p50_ms", "write_p99_ms", "write_max_ms", "sequential_writes_per_s"]),
        (data["single"], ["clients", "writes_per_s", "loaded_p50_ms", "loaded_p99_ms", "writes_per_flush", "flush_ms",
                          "cpu_ms_per_write"]),
        (data["single"], ["clients", "loaded_max_ms", "checkpoints"]),
        (data["single"]["floor"], ["floor_p50_ms", "floor_p99_ms", "floor_commits_per_s"]),
        (data["propagation"], ["real_p50_ms", "sim_p50_ms", "real_p99_ms", "sim_p99_ms", "median_ratio",
                               "ratio_p50", "ratio_p99"]),
    ]
    for section, columns in tables:
        row = _table_row(stdout, columns)
        for c in columns:
            assert _shown_as(row[c], section[c]), (c, row[c], section[c])
    # progress goes to stderr, never into the results
    assert "propagation:" in stderr
    assert "floor:" in stderr
    assert not [line for line in stdout.splitlines()
                if line.startswith(("floor:", "latency:", "throughput:", "propagation:"))]


def test_the_disks_floor_is_measured_beside_and_the_targets_are_ratios_to_it(bench):
    data, stdout, _ = bench
    s = data["single"]
    f, t = s["floor"], s["targets"]
    _positive(f, ["floor_p50_ms", "floor_p99_ms", "floor_commits_per_s"])
    assert f["floor_p50_ms"] <= f["floor_p99_ms"], f
    assert f["floor_commits"] == 2 * (WRITES // 2)  # half before the writes, half after
    # one after another: the elapsed time is at least half the commits times the median
    assert f["floor_commits_per_s"] <= 2000.0 / f["floor_p50_ms"] * (1 + 1e-9), f
    assert t["single_p50_x_floor"] == pytest.approx(s["write_p50_ms"] / f["floor_p50_ms"], rel=1e-9)
    assert t["loaded_clients"] == CLIENTS
    assert t["loaded_rate_x_floor"] == pytest.approx(s["writes_per_s"] / f["floor_commits_per_s"], rel=1e-9)
    assert t["loaded_p99_budget_ms"] == pytest.approx(4 * f["floor_p99_ms"] + 10, rel=1e-9)
    assert t["single_p50_met"] == (t["single_p50_x_floor"] <= t["single_p50_target_x"] == 2)
    assert t["loaded_rate_met"] == (t["loaded_rate_x_floor"] >= t["loaded_rate_target_x"] == 5)
    assert t["loaded_p99_met"] == (s["loaded_p99_ms"] <= t["loaded_p99_budget_ms"])
    # what the load cost the replica: one client waits for each write's own flush; n clients
    # have at most n writes in flight, so no flush holds more
    assert 0 < s["sequential_writes_per_flush"] <= 1 + 1e-9, s
    for row in s["load"]:
        _positive(row, ["writes_per_flush", "flush_ms", "cpu_ms_per_write"])
        assert row["writes_per_flush"] <= row["clients"] + 1e-9, row
    assert f"one client: p50 {t['single_p50_x_floor']:.2f}x the floor's p50 (target: <= 2x)" in stdout
    assert f"{CLIENTS} clients: {t['loaded_rate_x_floor']:.2f}x the floor's commits/s (target: >= 5x)" in stdout


def test_writes_only_runs_the_floor_and_the_write_path_alone(tmp_path):
    out = tmp_path / "writes.json"
    cmd = edgestate_cmd("bench", "replica", "--writes-only", "--writes", "40", "--clients", "2", "--json", str(out))
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert sorted(data) == ["params", "single"]
    assert data["single"]["floor"]["floor_commits"] == 40 and data["single"]["clients"] == 2
    assert "propagation" not in r.stdout and "the floor's commits/s" in r.stdout


def test_tls_and_secret_only_are_measured_side_by_side(bench):
    data, stdout, stderr = bench
    t = data["tls"]
    assert t["pops"] == TLS_POPS and t["rounds"] == SHORT.tls_rounds
    assert t["clients"] == CLIENTS and t["writes"] == WRITES
    for mode in ("tls", "plain"):
        m = t[mode]
        assert m["mode"] == mode
        _positive(m, ["writes_per_s", "propagation_p50_ms", "propagation_p99_ms"])
        assert len(m["rounds_writes_per_s"]) == SHORT.tls_rounds
        assert m["writes_per_s"] == pytest.approx(statistics.median(m["rounds_writes_per_s"]), rel=1e-9)
        assert m["propagation_p50_ms"] <= m["propagation_p99_ms"], m
    assert t["throughput_ratio"] == pytest.approx(t["tls"]["writes_per_s"] / t["plain"]["writes_per_s"], rel=1e-9)
    assert t["tls_cost_pct"] == pytest.approx((1 - t["throughput_ratio"]) * 100, rel=1e-9)
    assert t["propagation_p50_ratio"] == pytest.approx(
        t["tls"]["propagation_p50_ms"] / t["plain"]["propagation_p50_ms"], rel=1e-9)
    # the table: one row per mode with the same figures, then the cost line
    lines = stdout.splitlines()
    header = lines.index(next(ln for ln in lines if ln.split() == ["mode", "writes_per_s", "propagation_p50_ms",
                                                                  "propagation_p99_ms"]))
    for line in lines[header + 2:header + 4]:
        mode, *values = line.split()
        for column, v in zip(["writes_per_s", "propagation_p50_ms", "propagation_p99_ms"], values):
            assert _shown_as(v, t[mode][column]), (mode, column, v)
    assert f"costs {t['tls_cost_pct']:.1f} %" in stdout
    assert "tls: round 1/" in stderr


def test_a_baseline_revision_is_measured_beside_this_tree_in_alternating_rounds(tmp_path):
    out = tmp_path / "baseline.json"
    cmd = edgestate_cmd("bench", "replica", "--baseline", "HEAD", "--rounds", "1", "--writes", "30", "--clients", "2",
                        "--json", str(out))
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    b = json.loads(out.read_text())["baseline"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    assert b["revision"] == head.stdout.strip() and b["rounds"] == 1
    for side in ("before", "after"):
        assert len(b["runs"][side]) == 1
        _positive(b[side], ["floor_p50_ms", "write_p50_ms", "writes_per_s", "single_p50_x_floor", "loaded_rate_x_floor"])
        assert b[side]["writes_per_s"] == pytest.approx(b["runs"][side][0]["writes_per_s"], rel=1e-9)
    assert "round 1/1: before" in r.stderr and "round 1/1: after" in r.stderr
    assert f"beside revision {b['revision'][:10]}" in r.stdout


def test_a_baseline_tree_is_what_its_replica_process_imports(tmp_path):
    """The baseline's replica runs this venv's `edgestate` with PYTHONPATH at the extracted tree:
    its `app` and `replication` must come from there, not from this (editable) install."""
    full = _extract("HEAD", str(tmp_path))
    tree = tmp_path / "baseline"
    script = tmp_path / "which.py"  # run as a script, as the console script runs: not from this tree's cwd
    script.write_text("import app, replication; print(app.__file__); print(replication.__file__)\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(tree)})
    assert [line.startswith(str(tree)) for line in r.stdout.split()] == [True, True], r.stdout
    assert len(full) == 40


def test_the_stacks_own_floor_is_measured_with_the_same_loads(bench):
    """The skeleton (`http_floor`): the same client and loads against a bare ASGI app that commits
    each body; its ratios to the floor and the replica's to it are what the JSON and stdout say."""
    data, stdout, _ = bench
    s = data["single"]
    sk, f, t = s["skeleton"], s["floor"], s["targets"]
    _positive(sk, ["write_p50_ms", "write_p99_ms", "sequential_writes_per_s", "writes_per_s", "loaded_p99_ms"])
    assert sk["clients"] == CLIENTS and sk["write_p50_ms"] <= sk["write_p99_ms"], sk
    assert sk["sequential_writes_per_s"] <= 2000.0 / sk["write_p50_ms"] * (1 + 1e-9), sk
    assert t["skeleton_p50_x_floor"] == pytest.approx(sk["write_p50_ms"] / f["floor_p50_ms"], rel=1e-9)
    assert t["skeleton_rate_x_floor"] == pytest.approx(sk["writes_per_s"] / f["floor_commits_per_s"], rel=1e-9)
    assert t["single_p50_x_skeleton"] == pytest.approx(s["write_p50_ms"] / sk["write_p50_ms"], rel=1e-9)
    assert t["loaded_rate_x_skeleton"] == pytest.approx(s["writes_per_s"] / sk["writes_per_s"], rel=1e-9)
    assert f"skeleton: one client p50 {t['skeleton_p50_x_floor']:.2f}x the floor's" in stdout


def test_the_skeleton_answers_each_write_once_its_body_is_committed(tmp_path):
    """What the skeleton's figures stand for: every answered PUT is a committed row (read back
    from its database after the process is gone), one client or several at once."""
    import asyncio
    import sqlite3

    from app.bench.http_floor import Skeleton
    from live_helpers import run_async
    from app.processes.http_client import Conn

    async def put(port: int, n: int, clients: int) -> list[int]:
        async def one(c: Conn, i: int) -> int:
            status, _ = await c.request("PUT", f"/k{i}", json.dumps({"value": i}).encode())
            return status

        conns = [Conn("127.0.0.1", port) for _ in range(clients)]
        for c in conns:
            await c.open()
        try:
            out = []
            for start in range(0, n, clients):
                out += await asyncio.gather(*(one(c, start + j) for j, c in enumerate(conns) if start + j < n))
            return out
        finally:
            for c in conns:
                c.close()

    with Skeleton(str(tmp_path)) as sk:
        assert run_async(put(sk.port, 12, 1)) == [200] * 12
        assert run_async(put(sk.port, 24, 4)) == [200] * 24
    conn = sqlite3.connect(tmp_path / "http-floor.db")
    try:
        rows = [r for (r,) in conn.execute("SELECT row FROM floor ORDER BY seq")]
    finally:
        conn.close()
    assert len(rows) == 36
    assert rows[0].startswith(b'{"value": 0}')


def test_a_failed_skeleton_commit_fails_its_writes_instead_of_hanging(tmp_path):
    """A commit that raises (here: its connection closed under it) is every waiting write's error,
    and the committer goes on: the bench then reports a failed write, not a 10 s client timeout."""
    import asyncio

    from app.bench.http_floor import _Committer
    from live_helpers import run_async

    async def go():
        committer = _Committer(str(tmp_path))
        task = asyncio.create_task(committer.run())
        try:
            await asyncio.wait_for(committer.durable(b"one"), 10)
            committer.conn.close()
            with pytest.raises(Exception) as e:
                await asyncio.wait_for(asyncio.gather(committer.durable(b"two"), committer.durable(b"three")), 10)
            assert not isinstance(e.value, asyncio.TimeoutError)
            assert not task.done()  # still committing
        finally:
            task.cancel()

    run_async(go())
