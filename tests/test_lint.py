"""The code has no pyflakes findings (ruff's F rules): unused imports and names, undefined names,
repeated dict keys, redefinitions. Each was once a real slip here (a repeated path in the API test's
expected set hid nothing only by luck). ruff is pinned in requirements.lock."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).parent / "ruff"


def test_pyflakes_finds_nothing():
    assert RUFF.exists(), f"{RUFF}: ruff is not installed in this environment (./dev test installs it)"
    run = subprocess.run([str(RUFF), "check", "--select", "F", "--output-format", "concise", "--no-cache",
                          "app", "replication", "tests"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
