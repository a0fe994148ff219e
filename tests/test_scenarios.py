"""Scenarios on the fast driver: the built-ins prove their claims, runs are deterministic, a false
claim fails, and a malformed file is refused with its file and line before anything runs."""

from __future__ import annotations

import json
import textwrap

import pytest

from app.cli import main as edgestate
from replication.scenarios import ScenarioError, builtin_names, load_builtin, load_file, parse, run_fast

BUILTINS = ["hello-world", "parallel-universes", "audience-counter", "atlantic-cut", "pop-dies", "coordination-tax"]


def scenario(text: str, source: str = "my.yaml"):
    return parse(textwrap.dedent(text).lstrip("\n"), source)


def refused(text: str, line: int | None, *fragments: str, pops: str | None = None) -> ScenarioError:
    """The scenario is refused, at `line`, with a message containing every fragment."""
    with pytest.raises(ScenarioError) as info:
        s = scenario(text)
        run_fast(s, pops=pops)
    e = info.value
    assert e.source == "my.yaml"
    assert e.line == line, str(e)
    assert str(e).startswith(f"my.yaml:{line}: " if line else "my.yaml: ")
    for f in fragments:
        assert f in str(e), str(e)
    return e


# -- the built-ins ------------------------------------------------------------------------------


def test_the_builtins_are_the_six_of_the_talk():
    assert set(BUILTINS) <= set(builtin_names())


@pytest.mark.parametrize("name", BUILTINS)
def test_each_builtin_proves_its_own_claim(name):
    events = []
    report = run_fast(load_builtin(name), seed=1, on_event=events.append)
    assert report["error"] is None
    assert report["checks"] and all(c["passed"] for c in report["checks"]), report["checks"]
    assert report["passed"] is True
    # it says so at the end, with the claim
    assert events[-1]["status"] == "passed" and events[-1]["caption"] == "✓ " + report["claim"]
    assert all(e["kind"] == "scenario" and e["name"] == name for e in events)


def test_a_steps_event_names_the_replica_it_acts_at():
    """The page follows a run it started (the Concurrent writes button) at the POP a step names."""
    events = []
    run_fast(load_builtin("parallel-universes"), seed=1, on_event=events.append)
    writes = [e for e in events if e["op"] == "write"]
    assert [e["at"] for e in writes] == ["lhr", "iad", "syd"]
    assert next(e for e in events if e["op"] == "read")["at"] == "syd"
    assert all("at" not in e for e in events if e["op"] in ("partition", "heal", "say", "settle"))
    # `at` lists and "all" name no single replica
    assert all("at" not in e for e in events if e["op"] == "expect")


def test_builtin_figures_are_what_the_claims_say():
    hello = run_fast(load_builtin("hello-world"), seed=2)
    assert 50 < hello["figures"]["spread"]["ms"] <= 500  # London to Auckland is over 100 ms of fibre
    votes = run_fast(load_builtin("audience-counter"), seed=2)
    assert votes["figures"]["votes"] == {"writes": 120, "acknowledged": 120, "redirected": 0, "refused": 0,
                                         "added": 120}
    tax = run_fast(load_builtin("coordination-tax"), seed=2)["figures"]
    assert tax["tax"]["local_ack_ms"] == 0.0 and tax["tax"]["commit_ms"] >= 50
    assert tax["avail"]["crdt_share"] == 1.0
    leader_side = next(g for g in tax["avail"]["groups"] if tax["avail"]["leader"] in g)
    # with a majority on the leader's side, exactly that side can write; otherwise no one
    expected = sorted(leader_side) if len(leader_side) > len(tax["avail"]["crdt_writers"]) // 2 else []
    assert sorted(tax["avail"]["consensus_writers"]) == expected


# -- determinism ----------------------------------------------------------------------------------


def _stream(name: str, seed: int) -> tuple[list, list]:
    sim_events: list = []
    events: list = []
    run_fast(load_builtin(name), seed=seed, on_event=events.append,
             sim_sink=lambda ev: sim_events.append((ev.t, ev.kind, ev.node, repr(sorted(ev.data.items())))))
    return events, sim_events


@pytest.mark.parametrize("name", ["pop-dies", "parallel-universes"])
def test_the_same_seed_gives_the_same_run_event_for_event(name):
    a = _stream(name, 7)
    b = _stream(name, 7)
    assert len(a[1]) > 1000
    assert json.dumps(a[0]) == json.dumps(b[0])
    assert a[1] == b[1]


def test_another_seed_gives_another_run():
    a, _ = _stream("audience-counter", 1)
    b, _ = _stream("audience-counter", 2)
    assert a[-1]["status"] == b[-1]["status"] == "passed"
    assert json.dumps(a) != json.dumps(b)  # the load lands at other POPs: the figures differ


# -- claims that do not hold ------------------------------------------------------------------------


def test_a_false_claim_fails_with_the_measured_figures():
    s = scenario("""
        name: wrong-sum
        claim: three increments make four
        pops: lhr,iad,syd
        steps:
          - write: {at: lhr, counter: c, add: 1}
          - write: {at: iad, counter: c, add: 1}
          - write: {at: syd, counter: c, add: 1}
          - settle: {within_ms: 3000, as: s}
          - expect: {counter: c, value: 4}
          - expect: {figure: s.ms, max: 1}
    """)
    events = []
    report = run_fast(s, on_event=events.append)
    assert report["passed"] is False and report["error"] is None
    wrong, slow = report["checks"]
    assert not wrong["passed"] and wrong["line"] == 9
    assert wrong["figures"]["observed"] == [{"value": 3, "at": ["lhr", "iad", "syd"]}]
    assert not slow["passed"] and slow["figures"]["s.ms"] > 1
    assert events[-1]["status"] == "failed" and events[-1]["caption"] == "✗ three increments make four"


def test_a_settle_that_times_out_is_measured_not_fatal():
    s = scenario("""
        name: cut-forever
        claim: converges while cut
        pops: lhr,iad
        steps:
          - partition: {groups: [[lhr]]}
          - write: {at: lhr, kv: k, value: 1}
          - settle: {within_ms: 500, as: s}
          - expect: {figure: s.converged, equals: true}
    """)
    report = run_fast(s)
    assert report["passed"] is False
    assert report["figures"]["s"] == {"converged": False, "ms": None, "within_ms": 500}
    assert report["duration_ms"] == pytest.approx(500)


def test_a_step_that_cannot_be_carried_out_fails_the_run_naming_its_line():
    s = scenario("""
        name: write-at-a-dead-pop
        claim: nothing
        pops: lhr,iad
        steps:
          - crash: lhr
          - write: {at: lhr, kv: k, value: 1}
          - expect: {converged: true}
    """)
    report = run_fast(s)
    assert report["passed"] is False
    assert report["error"].startswith("my.yaml:6: step 2 (write): ")
    assert "lhr" in report["error"]
    assert report["checks"] == []  # nothing after the failed step ran


# -- malformed files: refused with file and line ---------------------------------------------------


HEAD = """\
name: t
claim: c
pops: lhr,iad
steps:
"""


def test_bad_yaml_names_the_line():
    refused(HEAD + "  - write: {at: lhr, kv: k, value: [1, 2}\n  - expect: {converged: true}\n", 5, "not valid YAML")


def test_an_unknown_step_names_its_line():
    refused(HEAD + "  - say: hi\n  - teleport: {at: lhr}\n  - expect: {converged: true}\n", 6,
            "unknown step 'teleport'", "known: say")


def test_a_wrong_field_type_names_the_line_of_the_value():
    refused(HEAD + "  - wait: 10\n  - wait:\n      ms: soon\n  - expect: {converged: true}\n", 7,
            "step 2 (wait)", "'ms' must be a positive number", "'soon'")
    refused(HEAD + "  - write: {at: lhr, counter: c, add: 1.5}\n  - expect: {converged: true}\n", 5,
            "whole number")
    refused(HEAD + "  - expect: {converged: yes please}\n", 5, "true or false")
    refused(HEAD + "  - crash: all\n  - expect: {converged: true}\n", 5, "one replica id")
    refused(HEAD + "  - write:\n      at: [lhr, iad]\n      kv: k\n      value: 1\n  - expect: {converged: true}\n", 6,
            "field 'at' must be a replica id")


def test_an_unknown_replica_names_its_line():
    refused(HEAD + "  - say: hi\n  - crash: xyz\n  - expect: {converged: true}\n", 6, "no replica 'xyz'",
            "lhr, iad")
    refused(HEAD + "  - partition:\n      groups:\n        - [lhr, nowhere]\n  - expect: {converged: true}\n", 7,
            "no replica 'nowhere'")


def test_a_replica_the_chosen_pops_lack_is_refused_too():
    # the file is fine with its own POPs; the command line picked others
    refused(HEAD + "  - crash: iad\n  - expect: {converged: true}\n", 5, "no replica 'iad'", pops="lhr,syd")


def test_a_missing_field_names_the_step():
    refused(HEAD + "  - say: hi\n  - write: {kv: k, value: 1}\n  - expect: {converged: true}\n", 6,
            "missing field 'at'")
    refused("name: t\nsteps:\n  - expect: {converged: true}\n", 1, "missing field 'claim'")


def test_more_mistakes_each_at_their_line():
    refused(HEAD + "  - write: {at: lhr, kv: k, value: 1, colour: red}\n  - expect: {converged: true}\n", 5,
            "unknown field 'colour'")
    refused(HEAD + "  - write: {at: lhr, kv: k, add: 1}\n  - expect: {converged: true}\n", 5,
            "a kv write takes exactly one of value, delete")
    refused(HEAD + "  - say: a\n  - write: {at: lhr, kv: k, value: 1, context_from: r}\n  - expect: {converged: true}\n",
            6, "no earlier `read` stored as 'r'")
    refused(HEAD + "  - say: a\n  - expect: {figure: spread.ms, max: 3}\n", 6, "no earlier step measured 'spread'")
    refused(HEAD + "  - partition: arctic\n  - expect: {converged: true}\n", 5, "unknown cut 'arctic'")
    refused(HEAD + "  - say: a\n  - say: b\n", 1, "add at least one `expect` step")
    refused("name: t\nclaim: c\nname: u\nsteps: [{expect: {converged: true}}]\n", 3, "'name' is given twice",
            "line 1")
    refused(HEAD + "  - write: {at: lhr, kv: k, value: 2024-01-01}\n  - expect: {converged: true}\n", 5,
            "not a JSON value")


def test_what_would_keep_the_simulator_busy_is_refused():
    refused(HEAD + "  - wait: 1000000000\n  - expect: {converged: true}\n", 5, "at most 600000")
    refused(HEAD + "  - load: {writes: 10, counter: c, rate_per_s: 1000000}\n  - expect: {converged: true}\n", 5,
            "rate_per_s must be at most")
    bomb = HEAD + "  - say: &a hi\n  - write: {at: lhr, kv: k, value: [*a, *a]}\n  - expect: {converged: true}\n"
    refused(bomb, 6, "aliases")
    refused(HEAD + "  - partition: {groups: [[lhr], [lhr, iad]]}\n  - expect: {converged: true}\n", 5,
            "'lhr' is in two groups")


def test_json_is_yaml_too(tmp_path):
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"name": "j", "claim": "one write spreads", "pops": ["lhr", "iad"], "steps": [
        {"write": {"at": "lhr", "kv": "k", "value": {"a": [1, None]}}},
        {"settle": {"within_ms": 1000}},
        {"expect": {"kv": "k", "values": [{"a": [1, None]}]}},
    ]}, indent=1))
    report = run_fast(load_file(f))
    assert report["passed"] is True and report["replicas"] == ["lhr", "iad"]


def test_an_unreadable_file_is_refused(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read it"):
        load_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"name: \xff\xfe")
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_file(bad)


# -- the command line -----------------------------------------------------------------------------------


def test_cli_lists_the_builtins(capsys):
    assert edgestate(["scenario", "list"]) == 0
    out = capsys.readouterr().out
    for name in BUILTINS:
        assert name in out


def test_cli_runs_a_builtin_and_writes_the_report(tmp_path, capsys):
    out_json = tmp_path / "r.json"
    assert edgestate(["scenario", "run", "hello-world", "--seed", "3", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "[      0.0 ms]  1/7 London writes" in out
    assert "PASSED ✓ a write at London" in out
    report = json.loads(out_json.read_text())
    assert report["passed"] is True and report["seed"] == 3


def test_cli_exit_1_when_the_claim_does_not_hold(tmp_path, capsys):
    f = tmp_path / "false.yaml"
    f.write_text(HEAD + "  - write: {at: lhr, counter: c, add: 2}\n  - settle: 2000\n  - expect: {counter: c, value: 3}\n")
    assert edgestate(["scenario", "run", str(f)]) == 1
    out = capsys.readouterr().out
    assert "FAILED ✗ c" in out and "checks: 0 of 1 passed" in out


def test_cli_exit_2_for_a_malformed_file_with_file_and_line(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text(HEAD + "  - say: hi\n  - wait: -5\n  - expect: {converged: true}\n")
    assert edgestate(["scenario", "run", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"{f}:6: step 2 (wait)" in err and "positive number" in err
    assert edgestate(["scenario", "run", "no-such-scenario"]) == 2
    assert "no built-in scenario" in capsys.readouterr().err
    assert edgestate(["scenario", "run", "hello-world", "--pops", "lhr,zzz"]) == 2
    assert "unknown POP" in capsys.readouterr().err
