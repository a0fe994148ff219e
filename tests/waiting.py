"""Waiting on a condition against a deadline: the only way tests here wait for anything."""

from __future__ import annotations

import time


def wait_for(what: str, cond, deadline_s: float = 60.0, poll_s: float = 0.1):
    """Poll `cond()` until it returns something truthy (returned), or fail naming `what`."""
    deadline = time.monotonic() + deadline_s
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {deadline_s}s waiting for {what}"
        time.sleep(poll_s)  # poll interval, not a readiness guess
