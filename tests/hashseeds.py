"""Run a snippet in fresh interpreters under different PYTHONHASHSEED values: str hashes,
and so set iteration order, differ between them, which a deterministic run must not notice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def outputs_under_hash_seeds(code: str, seeds: tuple[str, ...], timeout: float = 90) -> list[str]:
    """`code` runs with the tests folder as `sys.argv[1]`; returns each run's stripped stdout."""
    outs = []
    for seed in seeds:
        p = subprocess.run(
            [sys.executable, "-c", code, str(TESTS)], env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=TESTS.parent, capture_output=True, text=True, timeout=timeout,
        )
        assert p.returncode == 0, p.stderr
        outs.append(p.stdout.strip())
    return outs
