"""A git revision of this repository as committed: its full id, and its files extracted into a
directory (no worktree left behind). The benches that measure this tree side by side with an
older one (`bench simspeed --baseline`, `bench replica --baseline`) run that one from here."""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def resolve(rev: str) -> str:
    """The full commit id of `rev`; ValueError when it names none here."""
    r = subprocess.run(["git", "rev-parse", "--verify", rev + "^{commit}"], cwd=REPO, capture_output=True, text=True,
                       check=False)
    if r.returncode:
        raise ValueError(f"--baseline {rev!r}: not a git revision here ({r.stderr.strip()})")
    return r.stdout.strip()


def export(rev: str, into: Path, *paths: str) -> None:
    """The revision's files (only `paths` under the root, when given) extracted under `into`."""
    with tempfile.TemporaryFile() as tar:
        subprocess.run(["git", "archive", "--format=tar", rev, *paths], cwd=REPO, stdout=tar, check=True)
        tar.seek(0)
        with tarfile.open(fileobj=tar) as t:
            t.extractall(into, filter="data")
