"""A compiled build of the simulator's hot path, for batch runs (`bench simspeed --native`).

mypyc (it comes with mypy, pinned in requirements.lock with the test extras) compiles the modules
in `MODULES` to C extensions from their own sources and type annotations: the same code, the same
deterministic run (the same seed delivers the same messages to the same digests; tests/test_native.py
holds the two equal under loss, partitions and crashes), without the interpreter's cost per step.

A build is a copy of the whole `replication` package in a cache directory named by a hash of every
source file in the package, the Python version and mypyc's version, with the compiled modules
beside their sources. A process that puts that directory first on its module path runs them;
nothing in the source tree changes, and an edited source can never run as a stale build, since its
hash names another directory. Only batch runs use it: the server and replica processes import
the package as it is.

What the compiled modules need of their sources (kept so, since `mypy` must pass on them for mypyc
to compile them at all): no type errors, annotations that tell the truth at run time (mypyc checks
them), no method assigned on an instance, no method aliases, and no class that inherits from a
built-in exception (the simulator's errors live in `sim/errors.py` for that reason). An argument a
function checks itself is `object` (a narrower annotation refuses bad input with a TypeError before
the check, and turns True into 1 where it says `int`). tests/test_native.py runs the library's own
tests against the build as well, but for the few whose instruments compiled code cannot take.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
MODULES = (
    "clocks.py", "store.py", "seals.py", "replica.py", "antientropy.py", "membership.py", "node.py",
    "dissemination/__init__.py", "dissemination/plumtree.py", "dissemination/roottrees.py",
    "dissemination/seedtree.py", "sim/simulator.py",
    "crdts/dotstore.py", "crdts/mvregister.py", "messages.py", "delta.py",
)
BUILT = "BUILT"  # written last: a directory without it is a build that did not finish
KEEP = 4  # builds kept (the newest): one per edit of the sources would otherwise pile up, 4 MB each


class NativeUnavailable(RuntimeError):
    """No compiled build here (no mypyc, no C compiler, or the build failed): the reason."""


def cache_root() -> Path:
    return Path(os.environ.get("EDGESTATE_NATIVE_CACHE") or PACKAGE.parent / ".native")


def _mypyc_version() -> str | None:
    if importlib.util.find_spec("mypyc") is None:
        return None
    from importlib.metadata import version

    return version("mypy")


def source_hash(package: Path = PACKAGE) -> str:
    """Names a build: every source file of the package, this Python, this mypyc."""
    h = hashlib.blake2b(digest_size=12)
    h.update(f"{sys.version}\n{_mypyc_version()}\n{' '.join(MODULES)}\n".encode())
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        h.update(str(path.relative_to(package)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def unavailable() -> str | None:
    """Why a build cannot be made here, or None."""
    if _mypyc_version() is None:
        return "mypyc is not installed (it comes with the test extras: ./dev test)"
    if importlib.util.find_spec("setuptools") is None:
        return "setuptools is not installed (mypyc builds its extensions with it)"
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc!r} is not on PATH)"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.exists():
        return f"no Python headers ({headers} is missing: a -dev package)"
    return None


def build(progress=None) -> Path:
    """The directory to put first on the module path for the compiled modules of this source
    tree, built now if there is none yet (about half a minute). Raises NativeUnavailable."""
    root = cache_root()
    target = root / source_hash()
    if (target / BUILT).exists():
        return target
    reason = unavailable()
    if reason is not None:
        raise NativeUnavailable(reason)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=root))
    try:
        shutil.copytree(PACKAGE, work / "replication", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        if progress:
            progress(f"compiling {len(MODULES)} modules with mypyc in {work}")
        r = subprocess.run(
            [sys.executable, "-m", "mypyc", *(f"replication/{m}" for m in MODULES)],
            check=False, cwd=work, capture_output=True, text=True,
            env={**os.environ, "MYPY_CACHE_DIR": str(work / ".mypy_cache")},
        )
        if r.returncode:
            raise NativeUnavailable(f"mypyc failed:\n{(r.stdout + r.stderr).strip()[-3000:]}")
        missing = [m for m in MODULES if not list((work / "replication" / m).parent.glob(f"{Path(m).stem}.*.so"))]
        if missing:
            raise NativeUnavailable(f"mypyc built no extension for {', '.join(missing)}")
        shutil.rmtree(work / "build", ignore_errors=True)
        shutil.rmtree(work / ".mypy_cache", ignore_errors=True)
        (work / BUILT).write_text(f"{sys.version}\nmypyc {_mypyc_version()}\n")
        try:
            os.rename(work, target)
        except OSError:
            if not (target / BUILT).exists():  # not another process's finished build: a real error
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    _prune(root, target)
    return target


def _prune(root: Path, keep: Path) -> None:
    """Remove all but the KEEP newest builds (never `keep`), and builds abandoned an hour ago.
    A process still running a removed build keeps the extensions it has loaded."""
    done = sorted((d for d in root.iterdir() if (d / BUILT).exists() and d != keep),
                  key=lambda d: (d / BUILT).stat().st_mtime, reverse=True)
    stale = [d for d in root.iterdir() if d.is_dir() and "." in d.name and d.stat().st_mtime < time.time() - 3600]
    for d in done[KEEP - 1:] + stale:
        shutil.rmtree(d, ignore_errors=True)


__all__ = ["MODULES", "NativeUnavailable", "build", "cache_root", "source_hash", "unavailable"]
