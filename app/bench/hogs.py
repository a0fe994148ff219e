"""CPU hogs: K processes that spin in pure Python, to see how something holds up on a busy machine.

Used by `edgestate bench live --cpu-hog K` and by the test suite's `--cpu-hogs K` option
(tests/conftest.py). Each hog is its own process (a thread would only contend for this
process's GIL, not for the CPU), started at normal priority so that it competes with the server
for a core as other work on a shared machine does. They are stopped by their own pids at the
end, whatever happened meanwhile; a hog also stops by itself when its parent goes away (it checks
its parent's pid), so a killed harness leaves nothing spinning.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

# Spins; every ~million iterations looks whether the process that started it is still there.
SPIN = (
    "import os, sys\n"
    "parent = int(sys.argv[1])\n"
    "n = 0\n"
    "while True:\n"
    "    n += 1\n"
    "    if n % 1_000_000 == 0 and os.getppid() != parent:\n"
    "        break\n"
)


def start(k: int) -> list[subprocess.Popen]:
    """Start `k` spinning processes (none for 0)."""
    if k < 0:
        raise ValueError("the number of CPU hogs must be >= 0")
    return [subprocess.Popen([sys.executable, "-c", SPIN, str(os.getpid())], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(k)]


def stop(procs: list[subprocess.Popen]) -> None:
    """Kill each hog (by its pid) and reap it."""
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=10)


@contextlib.contextmanager
def running(k: int) -> Iterator[list[subprocess.Popen]]:
    """`k` hogs for the duration of the block."""
    procs = start(k)
    try:
        yield procs
    finally:
        stop(procs)
