"""`replication.io.worker.Worker`: the group commit's own thread."""

from __future__ import annotations

import asyncio
import threading

import pytest

from live_helpers import run_async

from replication.io.worker import Worker

DEADLINE_S = 30.0


def test_calls_run_on_one_other_thread_one_at_a_time_in_order():
    w = Worker("t-order")
    seen: list[int] = []
    threads: set[int] = set()
    busy = {"now": 0, "most": 0}
    lock = threading.Lock()

    def job(i: int):
        def run() -> int:
            with lock:
                busy["now"] += 1
                busy["most"] = max(busy["most"], busy["now"])
            threads.add(threading.get_ident())
            seen.append(i)
            with lock:
                busy["now"] -= 1
            return i * i
        return run

    async def main() -> list[int]:
        loop_thread = threading.get_ident()
        out = await asyncio.gather(*(w.call(job(i)) for i in range(200)))
        assert loop_thread not in threads
        return out

    try:
        assert run_async(main()) == [i * i for i in range(200)]
    finally:
        w.close(DEADLINE_S)
    assert seen == list(range(200))
    assert len(threads) == 1
    assert busy["most"] == 1


def test_an_exception_is_raised_to_the_caller_and_the_worker_goes_on():
    w = Worker("t-raise")

    def fail() -> None:
        raise OSError(28, "No space left on device")

    async def main() -> int:
        with pytest.raises(OSError, match="No space left"):
            await w.call(fail)
        return await w.call(lambda: 7)

    try:
        assert run_async(main()) == 7
    finally:
        w.close(DEADLINE_S)


def test_a_cancelled_caller_leaves_its_call_to_finish_and_nothing_goes_wrong():
    w = Worker("t-cancel")
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    loop_errors: list[dict] = []

    def slow() -> str:
        started.set()
        assert release.wait(DEADLINE_S)
        finished.set()
        return "done"

    async def main() -> str:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
        task = asyncio.ensure_future(w.call(slow))
        while not started.is_set():
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        return await w.call(lambda: "next")  # after the slow one: the worker took it in order

    try:
        assert run_async(main()) == "next"
    finally:
        w.close(DEADLINE_S)
    assert finished.is_set()
    assert loop_errors == []


def test_close_finishes_what_was_queued_then_refuses_calls():
    w = Worker("t-close")
    done: list[int] = []
    gate = threading.Event()

    def job(i: int):
        def run() -> None:
            assert gate.wait(DEADLINE_S)
            done.append(i)
        return run

    async def queue_then_close() -> None:
        pending = [asyncio.ensure_future(w.call(job(i))) for i in range(5)]
        await asyncio.sleep(0)  # each call queued
        gate.set()
        w.close(DEADLINE_S)  # blocks the loop until the thread ends: the calls ran
        assert done == [0, 1, 2, 3, 4]
        await asyncio.gather(*pending)  # their answers reach the loop after it is free again
        with pytest.raises(RuntimeError, match="closed"):
            await w.call(lambda: None)

    run_async(queue_then_close())
    assert w._thread is not None and not w._thread.is_alive()


def test_no_thread_until_the_first_call_and_close_without_one():
    w = Worker("t-idle")
    w.close(DEADLINE_S)
    assert w._thread is None


def test_a_call_that_outlives_its_loop_ends_quietly():
    w = Worker("t-orphan")
    started, release = threading.Event(), threading.Event()
    hook_errors: list = []
    old_hook = threading.excepthook
    threading.excepthook = hook_errors.append

    def slow() -> int:
        started.set()
        assert release.wait(DEADLINE_S)
        return 1

    async def main() -> None:
        asyncio.ensure_future(w.call(slow))
        while not started.is_set():
            await asyncio.sleep(0.001)

    try:
        run_async(main())  # the loop ends (and closes) with the call still running
        release.set()
        w.close(DEADLINE_S)
        assert w._thread is not None and not w._thread.is_alive()
    finally:
        threading.excepthook = old_hook
    assert hook_errors == []
