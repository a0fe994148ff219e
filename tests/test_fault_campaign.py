"""The fault campaigns, short form: random schedules on the simulator over many seeds, and
real replica processes under SIGKILL churn. The long forms are `edgestate bench faults`."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from app.bench.churn import ChurnParams, run_churn
from app.cli import main
from replication import coalesce
from replication.bench import faults
from replication.crdts import BY_NAMESPACE, ormap, pncounter
from replication.crdts.dotstore import join_dotfun

CI_SEEDS = 100


@pytest.mark.timeout(900)
def test_a_hundred_random_fault_schedules_break_no_invariant():
    result = faults.run(faults.Params(seeds=CI_SEEDS), progress=False)
    assert result["failed"] == [], "\n".join(f"seed {f['seed']}: {f['failure']}" for f in result["failed"])
    assert result["acked_writes"] > 100 * CI_SEEDS and result["checks"] > result["acked_writes"]
    assert result["converge_ms_p99"] is not None


@pytest.mark.timeout(900)
def test_random_fault_schedules_on_model_trees_break_no_invariant():
    """Two replicas per POP: plumtree runs on model trees (roottrees), with their adoptions, the
    silent named in payloads and rejoins, under the same faults. The long form:
    `edgestate bench faults --replicas 12`."""
    params = faults.Params(seeds=10, first_seed=1000, replicas=12)
    assert faults._Campaign(0, params).cluster.root_trees is not None
    result = faults.run(params, progress=False)
    assert result["failed"] == [], "\n".join(f"seed {f['seed']}: {f['failure']}" for f in result["failed"])
    assert result["acked_writes"] > 100 * params.seeds and result["checks"] > result["acked_writes"]


COALESCE_MS = 2000.0  # far longer than the dashboard's 100 ms, so that a good share of the writes wait


@pytest.mark.timeout(900)
def test_random_fault_schedules_with_coalesced_writes_break_no_invariant():
    """Writes held and sent as delta groups (replication.coalesce) under the same faults, crashes
    with and without state among them. The long form: `edgestate bench faults --coalesce-ms 2000`."""
    params = faults.Params(seeds=20, first_seed=2000, coalesce_ms=COALESCE_MS)
    result = faults.run(params, progress=False)
    assert result["failed"] == [], "\n".join(f"seed {f['seed']}: {f['failure']}" for f in result["failed"])
    assert result["held_writes"] > result["acked_writes"] // 10 > params.seeds


def test_the_campaign_finds_a_group_joined_under_the_wrong_context(monkeypatch):
    """It can fail: a group whose entries are joined under the first delta's context alone drops
    what the second added."""
    orig = coalesce.join_local

    def bad(a, b):
        g = orig(a, b)
        [ref] = a.entries
        mod = BY_NAMESPACE[ref[0]]
        g.entries[ref] = mod.join(a.entries[ref], a.ctx, b.entries[ref], a.ctx)
        live = set(mod.dots(g.entries[ref]))
        g.seals = {d: s for d, s in {**a.seals, **b.seals}.items() if d in live}
        return g

    monkeypatch.setattr(coalesce, "join_local", bad)
    result = faults.run(faults.Params(seeds=20, coalesce_ms=COALESCE_MS), progress=False)
    assert result["failed"] and all("lost" in f["failure"] for f in result["failed"]), result["failed"]


def test_a_seed_replays_event_for_event():
    first, second = faults.run_seed(7), faults.run_seed(7)
    assert asdict(first) == asdict(second)
    assert first.writes > 0 and first.faults > 0


def test_the_campaign_finds_the_old_counter_join(monkeypatch):
    """The campaign can fail: with the join this project used to have, it does, and says why."""
    monkeypatch.setattr(pncounter, "join", join_dotfun)
    found = [r for r in (faults.run_seed(s) for s in range(10)) if not r.ok]
    assert found and any("two entries" in r.failure for r in found), [r.failure for r in found]


def test_the_campaign_finds_a_map_join_that_forgets_removals(monkeypatch):
    """The campaign writes maps too (from the type's own examples), and catches a map whose join
    lets a counter entry outlive the removal that saw it."""
    monkeypatch.setattr(ormap, "_floored", lambda d, floors: False)
    found = [r for r in (faults.run_seed(s) for s in range(3)) if not r.ok]
    assert found and all("maps" in r.failure for r in found), [r.failure for r in found]


def test_bench_faults_command_writes_json_and_exits_by_outcome(tmp_path, capsys):
    out = tmp_path / "faults.json"
    assert main(["bench", "faults", "--seeds", "2", "--quiet", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["seeds"] == 2 and result["failed"] == []
    out = capsys.readouterr().out
    assert "converge" in out and "p50" in out  # converge_ms_p50, its name wrapped at "_" (report.table)


def test_bench_faults_replays_one_seed(capsys):
    assert main(["bench", "faults", "--seed", "3", "--quiet"]) == 0
    assert "seeds" in capsys.readouterr().out


@pytest.mark.timeout(600)
def test_real_processes_under_sigkill_churn_and_sigstop_converge_exactly():
    """Five replicas, eight writers, a SIGKILL every few seconds and a SIGSTOP: afterwards every
    acknowledged kv write is everywhere, counters are exact within the indeterminate requests,
    and all digests are equal soon after the last restart."""
    r = run_churn(ChurnParams(duration_s=20.0, kill_every_s=5.0, stop_s=8.0), log=lambda _m: None)
    assert r.ok, r.failures
    assert r.kills >= 2 and r.stops == 1
    assert r.acked > 200 and r.kv_checked > 0
    assert all(len(c["read"]) == 5 for c in r.counters.values())


def test_bench_faults_disk_finds_every_damage(tmp_path, capsys):
    out = tmp_path / "disk.json"
    assert main(["bench", "faults", "--disk", "value-edit,db-flip", "--trials", "3", "--json", str(out)]) == 0
    reports = json.loads(out.read_text())["disk"]
    assert [r["kind"] for r in reports] == ["value-edit", "db-flip"]
    assert all(r["silent"] == 0 and r["bad_repair"] == 0 and r["detected"] + r["harmless"] == 3 for r in reports)
    assert reports[0]["detected"] == 3  # an edited value is always named
    assert main(["bench", "faults", "--disk", "nonsense"]) == 2
