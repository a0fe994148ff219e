"""Waiting on a condition against a deadline: the only way tests here wait for anything."""

from __future__ import annotations

import time


def wait_for(what: str, cond, deadline_s: float = 60.0, poll_s: float = 0.1, pause=time.sleep):
    """Poll `cond()` until it returns something truthy (returned), or fail naming `what`.
    `pause(seconds)` is how it waits between polls: a browser test passes its page's (conftest's
    `Page.wait_server`), because Playwright's sync API runs the test's route handler, which every
    request of the page passes through, only while the test is inside a Playwright call; a page
    request made while the test polls the server over HTTP would wait for the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {deadline_s}s waiting for {what}"
        pause(poll_s)  # poll interval, not a readiness guess
