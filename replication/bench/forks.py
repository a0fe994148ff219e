"""Run a bench's tasks side by side in forked processes, each from a state the parent prepared.

Building and settling a 10,000-replica cluster takes ~16 s; a bench that measured nine things on
fresh clusters of one strategy built it nine times. Here the parent builds what a task starts
from once (`prepare(need)`, when the first task that needs it is about to start and a process is
free) and forks each task from it: the child gets its own copy-on-write copy, changes it as it
likes, and sends back its result. Forked, not spawned: the prepared state is never pickled.
"""

from __future__ import annotations

import gc
import multiprocessing
from multiprocessing.connection import wait
from typing import Any, Callable, Hashable, NamedTuple


class Task(NamedTuple):
    key: Hashable  # names the result
    need: Hashable  # what it starts from: prepare(need), shared by every task that names it
    fn: Callable[..., Any]  # fn(prepared, *args), in the child
    args: tuple = ()


class TaskFailed(RuntimeError):
    """A task raised (its error and traceback are in the message) or its process died."""


def _child(conn, fn, prepared, args) -> None:
    try:
        out = (True, fn(prepared, *args))
    except BaseException as e:  # noqa: BLE001 -- reported to the parent, which raises it
        import traceback

        out = (False, f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
    conn.send(out)
    conn.close()


def run_forked(tasks: list[Task], jobs: int, prepare: Callable[[Hashable], Any],
               done: Callable[[Hashable], None] | None = None) -> tuple[dict, dict]:
    """Every task's result by key, at most `jobs` at once, started in the order given (put long ones
    first); and what was prepared, by need, for the parent to use afterwards. `done(key)` as each
    ends. The first failure stops the others and raises TaskFailed."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    ctx = multiprocessing.get_context("fork")
    prepared: dict = {}
    pending = list(tasks)
    running: dict = {}  # the result pipe's reading end -> (key, process)
    results: dict = {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                task = pending.pop(0)
                if task.need not in prepared:
                    prepared[task.need] = prepare(task.need)
                # Objects the parent holds go to the permanent generation: a child's collections then
                # skip them instead of writing to (and so copying) every page of the prepared state.
                gc.freeze()
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(send, task.fn, prepared[task.need], task.args), daemon=True)
                proc.start()
                send.close()
                running[recv] = (task.key, proc)
            for recv in wait(list(running)):
                key, proc = running.pop(recv)
                try:
                    ok, value = recv.recv()
                except EOFError:
                    ok, value = False, "its process ended without a result"
                recv.close()
                proc.join()
                if not ok:
                    raise TaskFailed(f"task {key!r} failed (exit code {proc.exitcode}): {value}")
                results[key] = value
                if done is not None:
                    done(key)
    finally:
        for recv, (_, proc) in running.items():
            proc.kill()
            proc.join()
            recv.close()
        gc.unfreeze()
    return results, prepared
