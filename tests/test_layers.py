"""`replication/__init__.py` names the package's layers; each module keeps to its layer's imports.

The layers are read from that docstring itself, so the docstring and the code cannot drift:
a new module must be listed in one layer, and a core module that starts reading a clock or
opening a socket fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import replication

ROOT = Path(replication.__file__).parent

WEB = {"fastapi", "starlette", "uvicorn", "app", "httpx", "websockets", "jinja2"}
# a clock, sleeping, sockets, threads, processes, the file system, logging, unseeded randomness
CORE_FORBIDDEN = {"time", "datetime", "socket", "selectors", "asyncio", "threading", "subprocess", "signal", "os",
                  "pathlib", "shutil", "tempfile", "fcntl", "sqlite3", "urllib", "logging", "secrets", "uuid"}
SIMULATION_FORBIDDEN = {"socket", "selectors", "threading", "subprocess", "signal", "shutil", "tempfile", "fcntl",
                        "sqlite3", "urllib", "secrets"}
HEADINGS = {"core": "core", "simulation": "simulation", "real I/O": "io", "tools": "tools"}


def layers() -> dict[str, set[str]]:
    """Layer -> the names listed under it in the package docstring."""
    out: dict[str, set[str]] = {}
    doc = replication.__doc__
    for bullet in re.split(r"\n- ", doc)[1:]:
        heading = next((h for h in HEADINGS if bullet.startswith(h)), None)
        assert heading is not None, f"a layer the test does not know: {bullet[:40]!r}"
        out[HEADINGS[heading]] = set(re.findall(r"`([a-z_.]+)`", bullet.split("\n\n")[0]))
    return out


def modules() -> dict[str, Path]:
    """Every module of the package, as dotted names relative to it (`crdts.orset`)."""
    out = {}
    for p in ROOT.rglob("*.py"):
        rel = p.relative_to(ROOT).with_suffix("")
        parts = [x for x in rel.parts if x != "__init__"]
        if parts:
            out[".".join(parts)] = p
    return out


def layer_of(name: str, table: dict[str, set[str]]) -> str:
    """The layer of the most specific name listed for `name` (`scenarios.cli` before `scenarios`)."""
    hits = sorted(((len(n), layer) for layer, listed in table.items() for n in listed
                   if name == n or name.startswith(n + ".")), reverse=True)
    assert hits, f"replication.{name} is listed in no layer"
    assert len(hits) == 1 or hits[0][0] != hits[1][0], f"replication.{name} is listed twice: {hits}"
    return hits[0][1]


def _runtime_nodes(tree: ast.AST):
    """Every node but those under `if TYPE_CHECKING:` (names for the type checker, never imported)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            yield from (n for child in node.orelse for n in ast.walk(child))
            continue
        yield node
        yield from _runtime_nodes(node)


def imports(path: Path, name: str) -> tuple[set[str], set[str], bool]:
    """(top-level modules imported from outside, package modules imported, whether `open(` is
    called), at run time."""
    tree = ast.parse(path.read_text())
    outside, inside, opens = set(), set(), False
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("replication."):
                    inside.add(a.name.removeprefix("replication."))
                else:
                    outside.add(a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                mod = node.module or ""
                if mod == "replication" or mod.startswith("replication."):
                    inside.add(mod.removeprefix("replication").lstrip("."))
                else:
                    outside.add(mod.split(".")[0])
            else:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module:
                    inside.add(target)
                else:  # from . import x, y
                    inside.update(".".join(base + [a.name]) for a in node.names)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
            opens = True
    return outside, {i for i in inside if i}, opens


def test_every_module_is_in_one_layer():
    table = layers()
    assert set(table) == set(HEADINGS.values())
    for name in modules():
        layer_of(name, table)
    listed = {n for names in table.values() for n in names}
    missing = sorted(n for n in listed if not any(m == n or m.startswith(n + ".") for m in modules()))
    assert missing == [], f"listed in the docstring, but no such module: {missing}"


def test_each_layer_imports_only_what_it_may():
    table = layers()
    mods = modules()
    problems = []
    for name, path in sorted(mods.items()):
        layer = layer_of(name, table)
        outside, inside, opens = imports(path, name)
        if outside & WEB:
            problems.append(f"{name} imports web code: {sorted(outside & WEB)}")
        inner = {i for i in inside if i in mods or any(m.startswith(i + ".") for m in mods)}
        if layer == "core":
            if outside & CORE_FORBIDDEN:
                problems.append(f"core module {name} imports {sorted(outside & CORE_FORBIDDEN)}")
            if opens:
                problems.append(f"core module {name} opens a file")
            outer = sorted(i for i in inner if layer_of(i, table) != "core")
            if outer:
                problems.append(f"core module {name} imports outer layers: {outer}")
        elif layer == "simulation":
            if outside & SIMULATION_FORBIDDEN:
                problems.append(f"simulation module {name} imports {sorted(outside & SIMULATION_FORBIDDEN)}")
            outer = sorted(i for i in inner if layer_of(i, table) in ("io", "tools"))
            if outer:
                problems.append(f"simulation module {name} imports {outer}")
        elif layer == "io":
            outer = sorted(i for i in inner if layer_of(i, table) == "tools")
            if outer:
                problems.append(f"real I/O module {name} imports tools: {outer}")
    assert problems == []


def test_the_check_would_catch_a_core_module_reading_a_clock(tmp_path):
    bad = tmp_path / "node.py"
    bad.write_text("from typing import TYPE_CHECKING\nimport time\nfrom .sim import Simulator\n"
                   "if TYPE_CHECKING:\n    from .storage import Storage\n\n"
                   "def now():\n    with open('x') as f:\n        return time.time()\n")
    outside, inside, opens = imports(bad, "node")
    assert "time" in outside & CORE_FORBIDDEN and inside == {"sim"} and opens


def test_no_test_calls_asyncio_run_in_the_test_thread():
    """Playwright's sync API leaves a loop marked running in the test thread for the rest of the
    session, so `asyncio.run` there fails in any test that runs after a browser test (the fresh-clone
    suite caught two). Tests use `live_helpers.run_async`, which runs the loop in a thread of its own."""
    offenders = []
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\basyncio\.run\(", line) and "# own thread" not in line and not line.lstrip().startswith("#"):
                offenders.append(f"{path.name}:{n}: {line.strip()}")
    assert offenders == [], "use live_helpers.run_async:\n" + "\n".join(offenders)
