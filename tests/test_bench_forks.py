"""replication/bench/forks.py: tasks forked from state the parent prepares once per need."""

import os

import pytest

from replication.bench.forks import Task, TaskFailed, run_forked


def _grow(prepared: list, n: int) -> tuple[int, int, int]:
    prepared.append(n)  # the child's copy: the parent's and the other tasks' copies stay as they were
    return os.getpid(), len(prepared), sum(prepared)


def _fail(prepared, message: str):
    raise ValueError(message)


def _die(prepared):
    os._exit(3)


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_each_need_is_prepared_once_and_every_task_starts_from_it_untouched(jobs):
    calls = []

    def prepare(need):
        calls.append(need)
        return [100] if need == "a" else [1000]

    ends = []
    tasks = [Task(("a", i), "a", _grow, (i,)) for i in range(3)] + [Task(("b", i), "b", _grow, (i,)) for i in range(2)]
    results, prepared = run_forked(tasks, jobs, prepare, ends.append)
    assert calls == ["a", "b"]
    assert prepared == {"a": [100], "b": [1000]}
    assert {k: v[1:] for k, v in results.items()} == {
        ("a", 0): (2, 100), ("a", 1): (2, 101), ("a", 2): (2, 102), ("b", 0): (2, 1000), ("b", 1): (2, 1001)}
    assert len({v[0] for v in results.values()} | {os.getpid()}) == 6  # each task in a process of its own
    assert sorted(ends) == sorted(t.key for t in tasks)


def test_a_failing_task_raises_with_its_error_and_no_process_is_left():
    tasks = [Task("ok", None, _grow, (1,)), Task("bad", None, _fail, ("the reason",))]
    with pytest.raises(TaskFailed, match=r"'bad'.*ValueError: the reason"):
        run_forked(tasks, 2, lambda need: [])
    import multiprocessing

    assert multiprocessing.active_children() == []


def test_a_task_whose_process_dies_raises():
    with pytest.raises(TaskFailed, match=r"'dead' failed \(exit code 3\).*without a result"):
        run_forked([Task("dead", None, _die)], 1, lambda need: None)


def test_jobs_below_one_is_refused():
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        run_forked([], 0, lambda need: None)
