"""One thread of its own for one kind of blocking call from the event loop: the group commit.

`asyncio.to_thread` goes through the loop's shared executor: a context copy, the pool's work
item and lock, and a concurrent future chained to the loop's own, each on every call. Here a
call is one queue put, and its answer one `call_soon_threadsafe`. Measured with `bench replica`
beside the revision before (3 alternating rounds, 3,000 writes a load): under 16 clients a group
commit took 0.46 ms instead of 0.76 (the disk's own commit: 0.24-0.25 ms) and p99 met its target
in 3 rounds of 3 instead of 2; latency and rate did not move (the loop's CPU per write sets
those). The `bench replica` skeleton (`app/bench/http_floor.py`), which does nothing else per
write, carried 16 clients 21-60 % further per second this way than with `to_thread` (3 rounds).

Calls run one at a time, in order, on the thread. A caller cancelled while its call runs does
not stop the call (a thread cannot be interrupted): the call finishes and its result is dropped,
as with `to_thread`. `close()` lets the calls already queued finish, then ends the thread.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_STOP = object()


def _settle(fut: asyncio.Future, ok: bool, value: Any) -> None:
    if fut.done():  # its caller was cancelled meanwhile
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class Worker:
    def __init__(self, name: str) -> None:
        self.name = name
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    async def call(self, fn: Callable[[], T]) -> T:
        """`fn()` on the worker's thread; its result, or its exception raised here."""
        if self._closed:
            raise RuntimeError(f"worker {self.name} is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._calls.put((fn, fut, loop))
        return await fut

    def _run(self) -> None:
        while True:
            item = self._calls.get()
            if item is _STOP:
                return
            fn, fut, loop = item
            try:
                ok, value = True, fn()
            except BaseException as e:  # noqa: BLE001 - the caller's to handle, as to_thread's would be
                ok, value = False, e
            try:
                loop.call_soon_threadsafe(_settle, fut, ok, value)
            except RuntimeError:  # the loop is closed: no one is waiting any more
                pass

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued calls, then end the thread (waiting at most `timeout` s for it)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._calls.put(_STOP)
            self._thread.join(timeout)


__all__ = ["Worker"]
