"""A bench's coroutine runs to the end whether or not the calling thread already runs a loop."""

import asyncio
import threading

import pytest
from live_helpers import run_async

from app.bench import runloop


async def _answer(x):
    await asyncio.sleep(0)
    return x, threading.current_thread().name


async def _fail():
    raise ValueError("from the bench")


def test_without_a_running_loop_it_runs_here():
    assert runloop.run(_answer(1)) == (1, threading.current_thread().name)


def test_inside_a_running_loop_it_runs_on_a_thread_of_its_own_and_errors_come_back():
    async def main():
        value, thread = runloop.run(_answer(2))
        with pytest.raises(ValueError, match="from the bench"):
            runloop.run(_fail())
        return value, thread

    value, thread = run_async(main())
    assert value == 2 and thread == "bench-loop"
