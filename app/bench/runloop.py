"""Run a bench's coroutine to the end, from any thread.

`asyncio.run` refuses to start in a thread whose event loop is already running: a bench called
from code that holds a loop (a notebook, a test after a browser test's sync API left its loop
in the thread) failed with "cannot be called from a running event loop" before measuring
anything. Then the coroutine runs on a fresh loop in a thread of its own, and this waits for it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = e

    t = threading.Thread(target=target, name="bench-loop")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
