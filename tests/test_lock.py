"""requirements.lock, as ./dev installs it: every dependency pinned exactly and hashed, a runtime
section that holds together on its own, and nothing in the environment that the lock does not pin.

./dev installs the lock with `pip install --require-hashes -r` (the runtime section for
`./dev run`, everything for `./dev test`), then the project with `--no-deps`. These tests read the
file the way that depends on it: one pin per distribution with its `--hash=sha256:` lines, the
`# ---- test extras` line splitting the two sections.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
TEST_MARK = "# ---- test extras"  # the same string as LOCK_TEST_MARK in ./dev
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*(\\)?\s*$")
HASH = re.compile(r"^\s+--hash=sha256:([0-9a-f]{64})\s*(\\)?\s*$")


def parse_lock(text: str) -> dict[str, dict]:
    """{name: {version, marker, hashes, section}}; any line that is not a comment, a pin or one
    of its hash lines fails, as does a pin without hashes or a name pinned twice."""
    entries: dict[str, dict] = {}
    section, current, continued = "runtime", None, False
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith(TEST_MARK):
            section = "test"
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            assert not continued, f"line {n}: a pin's hash list ends with '\\' then stops"
            continue
        m = HASH.match(line)
        if m:
            assert current is not None and continued, f"line {n}: a hash line outside a pin: {line!r}"
            current["hashes"].append(m.group(1))
            continued = bool(m.group(2))
            continue
        m = PIN.match(line)
        assert m, f"line {n}: not an exact pin ('name==version [; marker] \\'): {line!r}"
        assert not continued, f"line {n}: the previous pin's hash list ends with '\\'"
        name = canonicalize_name(m.group(1))
        assert name not in entries, f"line {n}: {name} pinned twice"
        current = entries[name] = {
            "version": m.group(2), "marker": m.group(3), "hashes": [], "section": section, "line": n,
        }
        continued = bool(m.group(4))
    assert not continued, "the lock ends inside a pin's hash list"
    return entries


def test_every_pin_in_the_lock_carries_hashes():
    entries = parse_lock(LOCK.read_text())
    assert len(entries) > 20, "the lock pins almost nothing: was it parsed?"
    unhashed = [f"{name} (line {e['line']})" for name, e in entries.items() if not e["hashes"]]
    assert not unhashed, f"pins without --hash lines (pip --require-hashes refuses them): {unhashed}"


def test_parse_lock_refuses_a_pin_without_hashes():
    # The check above must be able to fail: a pin with no hash, or a loose version, is caught.
    text = "a==1 \\\n    --hash=sha256:" + "0" * 64 + "\nb==2\n"
    assert parse_lock(text)["b"]["hashes"] == []
    for bad in ("a>=1\n", "a==1 \\\n", "a==1 \\\n    --hash=md5:00\n"):
        try:
            parse_lock(bad)
        except AssertionError:
            continue
        raise AssertionError(f"parse_lock accepted {bad!r}")


def test_uvloop_keeps_its_platform_marker():
    # A Windows user must still be able to install: uvloop is pinned only off Windows.
    uvloop = parse_lock(LOCK.read_text())["uvloop"]
    assert uvloop["marker"] and Marker(uvloop["marker"]) == Marker("sys_platform != 'win32'"), uvloop


def test_the_environment_holds_exactly_what_the_lock_pins():
    """Every distribution `pip freeze` shows (but the project itself) is pinned, at that version."""
    entries = parse_lock(LOCK.read_text())
    out = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True, text=True, check=True,
    ).stdout
    installed = {}
    for line in out.splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            installed[canonicalize_name(name)] = version.strip()
        elif line.strip() and not line.startswith("#"):
            installed[line.strip()] = "?"  # a direct URL or path: never what the lock installs
    installed.pop("edgestate", None)
    unpinned = sorted(n for n in installed if n not in entries)
    assert not unpinned, f"installed but not in requirements.lock (run ./dev lock): {unpinned}"
    wrong = {n: (v, entries[n]["version"]) for n, v in installed.items() if entries[n]["version"] != v}
    assert not wrong, f"installed version differs from the lock (installed, locked): {wrong}"


def _closure(extras: set[str]) -> set[str]:
    """The distributions edgestate (with these extras) needs on this host, transitively, as the
    installed metadata says (extras of a dependency followed too)."""
    needed: set[str] = set()
    todo, seen = [("edgestate", frozenset(extras))], set()
    while todo:
        name, want = todo.pop()
        if (name, want) in seen:
            continue
        seen.add((name, want))
        for spec in metadata.requires(name) or []:
            req = Requirement(spec)
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in want or {""}):
                continue
            dep = canonicalize_name(req.name)
            needed.add(dep)
            todo.append((dep, frozenset(req.extras)))
    return needed


def test_the_runtime_section_is_closed_under_dependencies():
    """`./dev run` installs only the lines above the test-extras line: they must hold everything
    edgestate needs without its test extras and nothing more, and the whole lock everything the
    test extras add."""
    entries = parse_lock(LOCK.read_text())
    runtime = {n for n, e in entries.items() if e["section"] == "runtime"}
    assert runtime and runtime != set(entries), "the lock has no test-extras line splitting it"
    for_run, for_test = _closure(set()), _closure({"test"})
    assert not sorted(for_run - runtime), f"needed to run, but below the test-extras line: {sorted(for_run - runtime)}"
    assert not sorted(runtime - for_run), f"above the test-extras line, but not needed to run: {sorted(runtime - for_run)}"
    assert not sorted(for_test - set(entries)), f"needed by the test extras, not in the lock: {sorted(for_test - set(entries))}"
