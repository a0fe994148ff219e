"""Scenario files: YAML (or JSON, which is YAML) turned into checked steps, every one with its line.

Parsing goes through `yaml.compose`, not `yaml.safe_load`, so every mapping, list and scalar
keeps its start mark: an error names the file and the line of the offending value, not just
"invalid scenario". Checking happens in two passes:

- `parse(text, source)`: the structure. Known top-level fields, known step kinds, known fields
  per step, the right types, required fields present, values storable as JSON.
- `Scenario.bind(ids)`: the replica names, against the cluster the scenario is about to run
  on (the command line may pick other POPs than the file's `pops`).

Both raise `ScenarioError`, whose message starts with `file:line:`. Nothing runs before both
have passed, so a malformed file changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..crdts import BY_LABEL
from ..errors import EdgeStateError
from .cuts import CUTS

MAX_FILE_BYTES = 256 * 1024
MAX_MS = 600_000.0  # ten virtual minutes: a longer wait is a typo, and would keep the simulator busy
# `say: {text, wait: presenter}`: the live run waits for the presenter's → (POST .../next) for at
# most this long by default, then goes on by itself; a run must never hang on a presenter who left
PRESENTER_WAIT_S = 120.0
MAX_PRESENTER_WAIT_S = 1800.0  # half an hour of questions is the longest pause a file may ask for
SAY_WAITS = ("presenter",)
# A step names its key by the type's label (`kv: k`, `counter: c`, `set: s`, `map: m`): label -> namespace.
NAMESPACES = {label: t.NAME for label, t in BY_LABEL.items()}


class ScenarioError(ValueError):
    """A scenario file that cannot run: `str()` is `file:line: message`."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source, self.line, self.message = source, line, message
        super().__init__(f"{source}:{line}: {message}" if line else f"{source}: {message}")


# -- the checked form ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    index: int  # 1-based, as people count them
    op: str
    line: int
    args: dict[str, Any]
    lines: dict[str, int]  # per field: where it is written, for errors found later (bind, run)
    caption: str | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    description: str
    claim: str
    steps: tuple[Step, ...]
    source: str
    pops: str | None = None  # a `select_pops` spec: all, default, or "ID,ID,..."
    line: int = 1

    def bind(self, ids: list[str]) -> None:
        """Refuse a replica name the cluster does not have, naming the line."""
        known = set(ids)

        def check(step: Step, fld: str, rid: str) -> None:
            if rid not in known:
                raise ScenarioError(self.source, step.lines.get(fld, step.line),
                                    f"step {step.index} ({step.op}): no replica {rid!r} in this cluster "
                                    f"(it has: {', '.join(ids)})")

        for s in self.steps:
            for fld in ("at", "writer", "leader"):
                v = s.args.get(fld)
                if isinstance(v, str) and v != "all":
                    check(s, fld, v)
                elif isinstance(v, list):
                    for rid in v:
                        check(s, fld, rid)
            for g in s.args.get("groups") or ():
                for rid in g:
                    check(s, "groups", rid)

    def summary(self) -> dict:
        return {"name": self.name, "title": self.title, "description": self.description, "claim": self.claim}


# -- the schema ---------------------------------------------------------------------------------
#
# Field types: "str", "int", "number" (finite), "pos" (finite > 0), "bool", "json" (any value
# storable as JSON), "strlist", "jsonlist", "replica" (an id), "replicas" (an id, "all", or a
# list of ids), "groups" (a list of lists of ids).

_KEYS = {label: "str" for label in NAMESPACES}
COMMON = {"caption": "str"}
WRITE_VERBS = {"value": "json", "add": "json", "remove": "jsonlist", "delete": "bool"}  # verbs a write may spell out
# What an `expect` may check of a key, from every type's CHECKS (one field type per name).
_CHECKS: dict[str, str] = {}
for _t in BY_LABEL.values():
    for _f, _typ in _t.CHECKS.items():
        if _CHECKS.setdefault(_f, _typ) != _typ:
            raise TypeError(f"two CRDT types check {_f!r} as different things in scenarios")

STEPS: dict[str, dict] = {
    "say": {"fields": {"text": "str", "wait": "str", "max_wait_s": "pos"}, "short": "text", "required": ["text"]},
    "write": {
        # a verb spelled out (`add: 3`), or the operation as data, as the HTTP API takes it (`op: {set: {a: 1}}`)
        "fields": {"at": "replica", **_KEYS, **WRITE_VERBS, "op": "json", "context_from": "str"},
        "required": ["at"], "one_of": list(_KEYS),
    },
    "read": {"fields": {"at": "replica", **_KEYS, "as": "str"}, "required": ["at", "as"], "one_of": list(_KEYS)},
    "partition": {"fields": {"cut": "str", "groups": "groups", "region": "str"}, "short": "cut",
                  "exactly": ["cut", "groups", "region"]},
    "heal": {"fields": {}},
    "crash": {"fields": {"at": "replica", "lose_state": "bool"}, "short": "at", "required": ["at"]},
    "recover": {"fields": {"at": "replica"}, "short": "at", "required": ["at"]},
    "wait": {"fields": {"ms": "ms"}, "short": "ms", "required": ["ms"]},
    "settle": {"fields": {"within_ms": "ms", "as": "str"}, "short": "within_ms", "required": ["within_ms"]},
    "load": {
        "fields": {"writes": "int", "counter": "str", "add": "int", "at": "replicas", "rate_per_s": "pos",
                   "as": "str"},
        "required": ["writes", "counter", "rate_per_s"],
    },
    "expect": {
        "fields": {"converged": "bool", **_KEYS, "at": "replicas", **_CHECKS, "figure": "str", "min": "number",
                   "max": "number", "equals": "json", "label": "str"},
        "exactly": ["converged", *_KEYS, "figure"],
    },
    "consensus": {"fields": {"writer": "replica", "leader": "replica", "as": "str"}, "required": ["writer", "as"]},
    "availability": {"fields": {"deadline_ms": "ms", "leader": "replica", "as": "str"}, "required": ["as"]},
}

TOP = {"name": "str", "title": "str", "description": "str", "claim": "str", "pops": "pops", "steps": "steps"}


# -- parsing ------------------------------------------------------------------------------------


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"{node.value!r}"


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self._loader = yaml.SafeLoader("")

    def err(self, node_or_line, message: str) -> ScenarioError:
        line = node_or_line if isinstance(node_or_line, int) else _line(node_or_line)
        return ScenarioError(self.source, line, message)

    def value(self, node: yaml.Node) -> Any:
        """A subtree as Python data (SafeLoader's own scalar rules)."""
        return self._loader.construct_object(node, deep=True)

    def mapping(self, node: yaml.Node, where: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.err(node, f"{where} must be a mapping, got {_kind(node)}")
        out, seen = [], {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode) or not isinstance(self.value(k), str):
                raise self.err(k, f"{where}: field names must be text")
            name = self.value(k)
            if name in seen:
                raise self.err(k, f"{where}: field {name!r} is given twice (first on line {seen[name]})")
            seen[name] = _line(k)
            out.append((name, k, v))
        return out

    def typed(self, node: yaml.Node, typ: str, where: str) -> Any:
        def bad(expected: str):
            return self.err(node, f"{where} must be {expected}, got {_kind(node)}")

        if typ in ("strlist", "jsonlist", "groups", "replicas", "pops") and isinstance(node, yaml.SequenceNode):
            items = node.value
            if typ == "groups":
                if not items:
                    raise bad("a non-empty list of lists of replica ids")
                return [self.typed(g, "strlist", f"{where}[{i}]") for i, g in enumerate(items)]
            if typ in ("strlist", "replicas", "pops"):
                return [self.typed(x, "str", f"{where}[{i}]") for i, x in enumerate(items)]
            return [self.typed(x, "json", f"{where}[{i}]") for i, x in enumerate(items)]
        if typ == "json":
            v = self.value(node)
            problem = _json_problem(v)
            if problem:
                raise self.err(node, f"{where}: {problem}")
            return v
        if not isinstance(node, yaml.ScalarNode):
            names = {"str": "text", "replica": "a replica id", "replicas": "a replica id, 'all' or a list of ids",
                     "groups": "a list of lists of replica ids", "strlist": "a list of text",
                     "jsonlist": "a list", "pops": "'all', 'default', 'ID,ID,...' or a list of ids"}
            raise bad(names.get(typ, f"a {typ}"))
        v = self.value(node)
        if typ in ("str", "replica", "replicas", "pops"):
            if not isinstance(v, str) or not v:
                raise bad("non-empty text")
            if typ == "replica" and v == "all":
                raise bad("one replica id ('all' goes with checks and loads)")
            return v
        if typ == "bool":
            if not isinstance(v, bool):
                raise bad("true or false")
            return v
        if typ == "int":
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad("a whole number")
            return v
        if typ in ("number", "pos", "ms"):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise bad("a number" if typ == "number" else "a positive number")
            if typ != "number" and not v > 0:
                raise bad("a positive number")
            if typ == "ms" and v > MAX_MS:
                raise bad(f"at most {MAX_MS:.0f} (virtual ms)")
            return v
        if typ in ("strlist", "jsonlist", "groups"):
            raise bad("a list")
        raise AssertionError(typ)

    def step(self, node: yaml.Node, index: int) -> Step:
        where = f"step {index}"
        if isinstance(node, yaml.ScalarNode):  # `- heal`: a step without arguments
            op, arg_node, line = self.value(node), None, _line(node)
            if not isinstance(op, str):
                raise self.err(node, f"{where} must be a step name or a mapping, got {_kind(node)}")
        else:
            pairs = self.mapping(node, where)
            if len(pairs) != 1:
                names = ", ".join(n for n, _, _ in pairs) or "nothing"
                raise self.err(node, f"{where} must be one step such as `- write: {{...}}`, got {names}")
            op, key_node, arg_node = pairs[0]
            line = _line(key_node)
        if op not in STEPS:
            raise self.err(line, f"{where}: unknown step {op!r} (known: {', '.join(STEPS)})")
        where = f"step {index} ({op})"
        schema = STEPS[op]
        fields = {**schema["fields"], **COMMON}
        args: dict[str, Any] = {}
        lines: dict[str, int] = {}
        if arg_node is None or (isinstance(arg_node, yaml.ScalarNode) and self.value(arg_node) is None):
            pass
        elif isinstance(arg_node, yaml.MappingNode):
            for name, k, v in self.mapping(arg_node, where):
                if name not in fields:
                    raise self.err(k, f"{where}: unknown field {name!r} (known: {', '.join(fields)})")
                args[name] = self.typed(v, fields[name], f"{where}: field {name!r}")
                lines[name] = _line(v)
        elif "short" in schema:
            name = schema["short"]
            args[name] = self.typed(arg_node, fields[name], f"{where}")
            lines[name] = _line(arg_node)
        else:
            raise self.err(arg_node, f"{where} takes a mapping of fields ({', '.join(fields)}), got {_kind(arg_node)}")
        for req in schema.get("required", ()):
            if req not in args:
                raise self.err(line, f"{where}: missing field {req!r}")
        for group_key in ("one_of", "exactly"):
            group = schema.get(group_key)
            if group:
                present = [g for g in group if g in args]
                if len(present) != 1:
                    raise self.err(line, f"{where}: give exactly one of {', '.join(group)}"
                                         + (f" (got {', '.join(present)})" if present else ""))
        _check_step(self, op, args, lines, line, where)
        caption = args.pop("caption", None)
        return Step(index, op, line, args, lines, caption)

    def parse(self, text: str) -> Scenario:
        try:
            for ev in yaml.parse(text, Loader=yaml.SafeLoader):
                # an alias can make a few lines stand for an exponential amount of data
                if isinstance(ev, yaml.AliasEvent):
                    raise ScenarioError(self.source, ev.start_mark.line + 1,
                                        "aliases (*name) are not supported in scenario files: write it out")
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            raise ScenarioError(self.source, mark.line + 1 if mark else None,
                                f"not valid YAML: {e.problem or e.context}") from None
        except yaml.YAMLError as e:
            raise ScenarioError(self.source, None, f"not valid YAML: {e}") from None
        if root is None:
            raise ScenarioError(self.source, 1, "the file is empty")
        top: dict[str, Any] = {}
        for name, k, v in self.mapping(root, "a scenario"):
            if name not in TOP:
                raise self.err(k, f"unknown field {name!r} (known: {', '.join(TOP)})")
            if name == "steps":
                if not isinstance(v, yaml.SequenceNode) or not v.value:
                    raise self.err(v, "steps must be a non-empty list")
                top[name] = tuple(self.step(s, i) for i, s in enumerate(v.value, 1))
            elif name == "pops":
                p = self.typed(v, "pops", "pops")
                top[name] = ",".join(p) if isinstance(p, list) else p
            else:
                top[name] = self.typed(v, "str", name)
        for req in ("name", "claim", "steps"):
            if req not in top:
                raise self.err(root, f"missing field {req!r}")
        if not any(s.op == "expect" for s in top["steps"]):
            raise self.err(root, "a scenario checks its claim: add at least one `expect` step")
        names_seen: dict[str, int] = {}
        for s in top["steps"]:
            if s.op == "write" and "context_from" in s.args and s.args["context_from"] not in names_seen:
                raise self.err(s.lines["context_from"],
                               f"step {s.index} (write): no earlier `read` stored as {s.args['context_from']!r}")
            if s.op == "expect" and "figure" in s.args:
                ref = s.args["figure"].partition(".")[0]
                if ref not in names_seen:
                    raise self.err(s.lines["figure"],
                                   f"step {s.index} (expect): no earlier step measured {ref!r} (give it `as: {ref}`)")
            if "as" in s.args:
                names_seen[s.args["as"]] = s.line
        return Scenario(
            name=top["name"], title=top.get("title", top["name"]), description=top.get("description", ""),
            claim=top["claim"], steps=top["steps"], source=self.source, pops=top.get("pops"), line=_line(root),
        )


def _check_step(p: _Parser, op: str, args: dict, lines: dict, line: int, where: str) -> None:
    """What the schema cannot say: which verbs go with which type, ranges."""
    if op == "say":
        if "wait" in args and args["wait"] not in SAY_WAITS:
            raise p.err(lines["wait"], f"{where}: field 'wait' must be one of {', '.join(SAY_WAITS)}, "
                                       f"got {args['wait']!r}")
        if "max_wait_s" in args:
            if "wait" not in args:
                raise p.err(lines["max_wait_s"], f"{where}: 'max_wait_s' bounds a `wait: presenter`: give one")
            if args["max_wait_s"] > MAX_PRESENTER_WAIT_S:
                raise p.err(lines["max_wait_s"], f"{where}: field 'max_wait_s' must be at most "
                                                 f"{MAX_PRESENTER_WAIT_S:.0f} (wall seconds)")
    if op == "write":
        label = next(k for k in _KEYS if k in args)
        t = BY_LABEL[label]
        spelled = [v for v in t.VERBS if v in WRITE_VERBS]
        given = [v for v in (*WRITE_VERBS, "op") if v in args]
        if len(given) != 1 or (given[0] != "op" and given[0] not in t.VERBS):
            raise p.err(line, f"{where}: a {label} write takes exactly one of {', '.join([*spelled, 'op'])}")
        verb = given[0]
        try:  # the type checks the operation now, so a bad one fails before anything runs
            t.check(args["op"] if verb == "op" else {verb: args[verb]})
        except EdgeStateError as e:
            raise p.err(lines[verb], f"{where}: field {verb!r}: {e.message}") from None
        if "context_from" in args and not t.TAKES_CONTEXT:
            takers = ", ".join(lb for lb, x in BY_LABEL.items() if x.TAKES_CONTEXT)
            raise p.err(lines["context_from"], f"{where}: context_from goes with {takers} writes")
    elif op == "partition" and "cut" in args and args["cut"] not in CUTS:
        raise p.err(lines["cut"], f"{where}: unknown cut {args['cut']!r} (known: {', '.join(CUTS)})")
    elif op == "partition" and "groups" in args:
        seen: set[str] = set()
        for g in args["groups"]:
            for rid in g:
                if rid in seen:
                    raise p.err(lines["groups"], f"{where}: replica {rid!r} is in two groups")
                seen.add(rid)
    elif op == "load":
        if not 1 <= args["writes"] <= 100_000:
            raise p.err(lines["writes"], f"{where}: writes must be between 1 and 100000")
        if args["rate_per_s"] > 10_000:
            raise p.err(lines["rate_per_s"], f"{where}: rate_per_s must be at most 10000")
    elif op == "expect":
        label = next((k for k in _KEYS if k in args), None)
        allowed = tuple(BY_LABEL[label].CHECKS) if label else ()
        for f in _CHECKS:
            if f in args and f not in allowed:
                raise p.err(lines[f], f"{where}: {f!r} does not go with {label or 'this check'}")
        if label and not any(f in args for f in allowed):
            raise p.err(line, f"{where}: say what to expect of the {label}: {', '.join(allowed)}")
        if "figure" in args:
            if "." not in args["figure"]:
                raise p.err(lines["figure"], f"{where}: a figure is named NAME.FIELD, e.g. spread.ms")
            if not any(f in args for f in ("min", "max", "equals")):
                raise p.err(line, f"{where}: give min, max or equals for the figure")
        elif any(f in args for f in ("min", "max", "equals")):
            raise p.err(line, f"{where}: min, max and equals go with figure")
        if "at" in args and not label:
            raise p.err(lines["at"], f"{where}: 'at' goes with a {', '.join(_KEYS)} check")


def _json_problem(v: Any, depth: int = 0) -> str | None:
    if depth > 32:
        return "nested too deeply"
    if v is None or isinstance(v, (bool, str, int)):
        return None
    if isinstance(v, float):
        return None if math.isfinite(v) else "numbers must be finite"
    if isinstance(v, list):
        return next((p for x in v if (p := _json_problem(x, depth + 1))), None)
    if isinstance(v, dict):
        if not all(isinstance(k, str) for k in v):
            return "mapping keys in a value must be text"
        return next((p for x in v.values() if (p := _json_problem(x, depth + 1))), None)
    return f"a {type(v).__name__} is not a JSON value (quote it to make it text)"


# -- entry points ---------------------------------------------------------------------------------


def parse(text: str, source: str = "<scenario>") -> Scenario:
    return _Parser(source).parse(text)


def load_file(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ScenarioError(str(p), None, f"cannot read it: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ScenarioError(str(p), None, f"larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScenarioError(str(p), None, f"not UTF-8 text (byte {e.start})") from None
    return parse(text, str(p))


def builtin_names() -> list[str]:
    folder = resources.files(__package__).joinpath("builtin")
    return sorted(f.name[: -len(".yaml")] for f in folder.iterdir() if f.name.endswith(".yaml"))


def load_builtin(name: str) -> Scenario:
    if name not in builtin_names():
        raise KeyError(name)
    text = resources.files(__package__).joinpath("builtin", f"{name}.yaml").read_text("utf-8")
    return parse(text, f"{name}.yaml")


@dataclass
class Catalogue:
    """Every built-in scenario, parsed once (the app lists them on every page load)."""

    scenarios: dict[str, Scenario] = field(default_factory=dict)

    @classmethod
    def builtin(cls) -> "Catalogue":
        return cls({n: load_builtin(n) for n in builtin_names()})

    @classmethod
    def with_files(cls, paths: list[str | Path], ids: list[str]) -> "Catalogue":
        """The built-ins plus the presenter's own files, each checked against the cluster's
        replicas now (a file's scenario replaces a built-in of the same name)."""
        cat = cls.builtin()
        for path in paths:
            s = load_file(path)
            s.bind(ids)
            cat.scenarios[s.name] = s
        return cat
