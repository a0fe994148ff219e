"""Runs a checked scenario against a cluster, one step at a time, on virtual time.

The engine never advances time itself. `Engine.run()` is a generator: when a step has to
wait it yields what it waits for, `Until(t)` (virtual time `t`) or `UntilTrue(pred, deadline)`
(a condition, given up at virtual time `deadline`), and the driver resumes it once that
happened (sending back, for a condition, whether it held). So the same steps run as fast as
possible on a fresh simulator (`drivers.run_fast`) and paced by the wall clock on the
dashboard's cluster (`drivers.run_live`), and the figures mean the same in both.

Every random choice (where a `load` write lands) comes from one `random.Random` seeded by
the scenario's seed: same seed, same run.

What the engine reports, as it goes, through `emit`: one event per step (kind "scenario",
status "running", the step's caption, and `at`: the replica it acts at, when it names one),
a second one with the figures for steps that measure something, and a last one with status
"passed" or "failed", the claim and every check. A `say` step's events carry `say: true`
(the page keeps those on screen as the story's captions; the rest is progress).

Two waits are for the audience, not for the cluster:

- A step that changes the map (partition, heal, crash, recover) comes at least `MAP_HOLD_MS`
  virtual ms after the previous one, so every state of the map is on screen for a while (in
  coordination-tax the Americas cut and its heal fell in the same virtual instant: the cut never
  showed). The hold is in virtual time, in the engine, not on the page: the page cannot keep a
  cut on the map that the cluster has already healed, and on virtual time the hold is the same
  in a fast run, a live run and the timeline's replay (figures stay the same in both drivers).
  It only ever delays the NEXT change, so what a step measures from a change (a `settle` after
  a heal, a `read` after a recover) still starts at that change.
- `say: {text, wait: presenter}` yields `Presenter(max_s)`: the live driver waits (wall clock)
  for the presenter's → for at most `max_s`, then goes on; the fast driver never waits.

`tally()`: the value of the counter or set the scenario is about (the first one a step names),
at every POP that is up: the page shows it large on the map.
"""

from __future__ import annotations

import heapq
import json
import random
from typing import Any, Callable, NamedTuple

from ..baseline.consensus import ConsensusCluster, central_leader, majority
from ..crdts import BY_NAMESPACE
from ..crdts.base import canon
from ..errors import EdgeStateError
from .cuts import cut_groups, region_groups
from .spec import NAMESPACES, PRESENTER_WAIT_S, Scenario, Step

DEFAULT_AVAILABILITY_DEADLINE_MS = 2000.0
MAP_HOLD_MS = 500.0  # virtual: at the dashboard's default speed (0.1) five wall seconds, at 1x half a second
TALLY_TYPES = ("counter", "set")  # the labels whose value makes a running total on the map
TALLY_MEMBERS = 12  # a set's members listed in a tally, at most
CUT_TITLES = {"atlantic": "cut the Atlantic", "pacific": "cut the Pacific", "americas": "cut the Americas off"}


class Until(NamedTuple):
    t: float


class UntilTrue(NamedTuple):
    pred: Callable[[], bool]
    deadline: float


class Presenter(NamedTuple):
    """Wait for the presenter's → (wall clock), at most `max_s` seconds. The answer sent back:
    "next" (the presenter went on), "timeout" or "none" (nobody to wait for: a fast run)."""
    max_s: float


class StepFailed(Exception):
    """A step that could not be carried out (not a check that failed: that is a result)."""


_canon = canon


def _same_items(a: list, b: list) -> bool:
    return sorted(map(_canon, a)) == sorted(map(_canon, b))


def _equal(a: Any, b: Any) -> bool:
    """JSON equality, with 1 == 1.0 (a figure may be a float where the file wrote an int)."""
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) and not isinstance(b, bool):
        return a == b
    return _canon(a) == _canon(b)


def _ms(x: float) -> float:
    return round(x, 3)


class Engine:
    def __init__(
        self,
        scenario: Scenario,
        ops,
        cluster,
        *,
        seed: int,
        run_tag: str = "1",
        emit: Callable[[dict], None] | None = None,
    ) -> None:
        """`ops`: what the steps call (write, read, partition, heal, crash, recover): the
        `SimCluster` itself, or the `LiveCluster` that wraps it (which first brings virtual
        time up to now). `cluster`: the `SimCluster`, for placements, the latency model and
        the simulator."""
        self.scenario = scenario
        self.ops = ops
        self.cluster = cluster
        self.sim = cluster.sim
        self.seed = seed
        self.run_tag = run_tag
        self._emit = emit or (lambda ev: None)
        self.rng = random.Random(f"scenario:{scenario.name}:{seed}")
        self.figures: dict[str, dict] = {}
        self.reads: dict[str, Any] = {}
        self.checks: list[dict] = []
        self.steps: list[dict] = []
        self.groups: list[list[str]] | None = None
        self._pending: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._loads_end = 0.0
        self._leader: str | None = None
        self._step: Step | None = None
        self._last_map_change: float | None = None
        self.subject = self._subject()

    # -- helpers ----------------------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self.sim.now

    @property
    def ids(self) -> list[str]:
        return self.cluster.ids

    def up(self) -> list[str]:
        return [i for i in self.ids if self.sim.up(i)]

    def key(self, text: str) -> str:
        return text.replace("{run}", self.run_tag)

    def who(self, at) -> list[str]:
        if at is None or at == "all":
            return self.up()
        return [at] if isinstance(at, str) else list(at)

    def event(self, status: str, caption: str, **extra) -> None:
        s = self._step
        ev = {"t": _ms(self.now), "kind": "scenario", "node": None, "name": self.scenario.name, "run": self.run_tag,
              "step": s.index if s else 0, "of": len(self.scenario.steps), "op": s.op if s else None,
              "line": s.line if s else self.scenario.line, "status": status, "caption": caption}
        at = s.args.get("at") if s else None
        if isinstance(at, str) and at != "all":  # the POP the step acts at: the page can show it
            ev["at"] = at
        if s is not None and s.op == "say":
            ev["say"] = True
        if self.subject is not None:
            ev["tally"] = self.tally()
        ev.update(extra)
        self._emit(ev)

    # -- the running total ------------------------------------------------------------------------

    def _subject(self) -> tuple[str, str, str] | None:
        """(label, namespace, key) of the first counter or set a step names, `{run}` filled in."""
        for s in self.scenario.steps:
            for label in TALLY_TYPES:
                name = s.args.get(label)
                if isinstance(name, str) and s.op in ("write", "load", "expect", "read"):
                    return label, NAMESPACES[label], self.key(name)
        return None

    def tally(self) -> dict | None:
        """The subject's value at every POP that is up: a counter's value, a set's size (and its
        first members); `min`/`max` differ while the POPs disagree."""
        if self.subject is None:
            return None
        label, ns, key = self.subject
        values: list[Any] = []
        for rid in self.up():
            figs = BY_NAMESPACE[ns].figures(self.ops.read(rid, ns, key))
            values.append(figs.get("value") if label == "counter" else figs.get("members", []))
        out: dict[str, Any] = {"type": label, "key": key, "pops": len(values)}
        if label == "counter":
            nums = [v for v in values if isinstance(v, (int, float))] or [0]
            out.update(min=min(nums), max=max(nums))
        else:
            sizes = [len(v) for v in values] or [0]
            union = sorted({_canon(m) for v in values for m in v})
            out.update(min=min(sizes), max=max(sizes),
                       members=[json.loads(m) for m in union[:TALLY_MEMBERS]], more=max(0, len(union) - TALLY_MEMBERS))
        out["agree"] = out["min"] == out["max"] and len({_canon(v) for v in values}) <= 1
        return out

    def leader(self, asked: str | None) -> str:
        if asked:
            return asked
        if self._leader is None:
            self._leader = central_leader(self.cluster.placements, self.cluster.model)
        return self._leader

    def nearest_up(self, rid: str) -> str | None:
        up = self.up()
        if not up:
            return None
        return min(up, key=lambda o: (self.cluster.one_way_ms(rid, o), o))

    # -- waiting ------------------------------------------------------------------------------------

    def _until(self, t: float):
        """Wait for virtual time `t`, carrying out scheduled load writes on the way."""
        while self._pending and self._pending[0][0] <= t:
            at, _, fn = heapq.heappop(self._pending)
            if at > self.now:
                yield Until(at)
            fn()
        if t > self.now:
            yield Until(t)

    # -- the run ------------------------------------------------------------------------------------

    def run(self):
        sc = self.scenario
        start = self.now
        self.event("running", sc.title, claim=sc.claim)
        error = None
        for step in sc.steps:
            self._step = step
            try:
                changes = self._changes_map(step)
                if changes:
                    yield from self._hold_map()
                yield from getattr(self, "_" + step.op)(step)
                if changes:
                    self._last_map_change = self.now
            except (EdgeStateError, StepFailed, ValueError) as e:
                msg = getattr(e, "message", None) or str(e)
                error = f"{sc.source}:{step.line}: step {step.index} ({step.op}): {msg}"
                self.event("running", f"step {step.index} failed: {msg}", error=error)
                break
        yield from self._until(self._loads_end)  # a load still running finishes before the verdict
        self._step = None
        passed = error is None and bool(self.checks) and all(c["passed"] for c in self.checks)
        report = {
            "name": sc.name, "title": sc.title, "claim": sc.claim, "passed": passed, "error": error,
            "seed": self.seed, "run": self.run_tag, "replicas": list(self.ids),
            "started_ms": _ms(start), "ended_ms": _ms(self.now), "duration_ms": _ms(self.now - start),
            "steps": self.steps, "checks": self.checks, "figures": self.figures,
        }
        mark = "✓" if passed else "✗"
        self.event("passed" if passed else "failed", f"{mark} {sc.claim}", claim=sc.claim, checks=self.checks,
                   error=error, figures=self.figures)
        return report

    def _begin(self, step: Step, caption: str, announce: bool = True) -> None:
        caption = step.caption or caption
        self.steps.append({"index": step.index, "op": step.op, "line": step.line, "t": _ms(self.now),
                           "caption": caption})
        if announce:  # steps that know their outcome at once announce it instead
            self.event("running", caption)

    def _measured(self, step: Step, caption: str, figures: dict) -> None:
        name = step.args.get("as")
        if name:
            self.figures[name] = figures
        self.steps[-1]["result"] = caption
        self.steps[-1]["figures"] = figures
        self.event("running", caption, figures=figures)

    # -- steps --------------------------------------------------------------------------------------
    #
    # Every step is a generator, so `run` can `yield from` any of them; those that never wait
    # end with `return` before a bare `yield` that only makes them generators.

    def _changes_map(self, step: Step) -> bool:
        """Whether the step changes what the map shows (a heal with no cut in force, a `recover`
        of a POP that is up, changes nothing, so a scenario's opening `heal` costs no hold)."""
        if step.op == "partition":
            return True
        if step.op == "heal":
            return bool(self.sim.partitioned)
        if step.op == "crash":
            return self.sim.up(step.args["at"])
        if step.op == "recover":
            return not self.sim.up(step.args["at"])
        return False

    def _hold_map(self):
        """Let the map's last change be seen before the next one (see the module's docstring)."""
        if self._last_map_change is not None:
            yield from self._until(self._last_map_change + MAP_HOLD_MS)

    def _say(self, step: Step):
        if step.args.get("wait") != "presenter":
            self._begin(step, step.args["text"])
            return
        max_s = step.args.get("max_wait_s", PRESENTER_WAIT_S)
        self._begin(step, step.args["text"], announce=False)
        self.event("running", step.args["text"], waiting="presenter", max_wait_s=max_s)
        answer = yield Presenter(max_s)
        self.steps[-1]["presenter"] = answer
        if answer == "timeout":  # said on the page and in the report: the run went on by itself
            self.event("running", f"no → from the presenter in {max_s:g} s: going on", waited="timeout")
        elif answer == "next":
            self.event("running", "→ the presenter went on", waited="next")

    def _ns_key(self, args: dict) -> tuple[str, str, str]:
        field = next(f for f in NAMESPACES if f in args)
        return field, NAMESPACES[field], self.key(args[field])

    def _write(self, step: Step):
        a = step.args
        field, ns, key = self._ns_key(a)
        t = BY_NAMESPACE[ns]
        at = a["at"]
        if "op" in a:
            op = dict(a["op"])
        else:
            verb = next(v for v in t.VERBS if v in a)
            op = {verb: a[verb]}
        ctx = None
        if t.TAKES_CONTEXT:
            if "context_from" in a:
                seen = self.reads.get(a["context_from"])
                if seen is None or not hasattr(seen, "context"):
                    raise StepFailed(f"the read {a['context_from']!r} was not a {field} read")
                ctx = seen.context
            op.setdefault("context", ctx)
        what = t.describe(key, op)
        if ctx is not None:
            what += f" (with the context of read {a['context_from']!r})"
        self._begin(step, f"{at} {what}")
        self.ops.write(at, ns, key, op)
        return
        yield

    def _read(self, step: Step):
        a = step.args
        field, ns, key = self._ns_key(a)
        view = self.ops.read(a["at"], ns, key)
        self.reads[a["as"]] = view
        figs = BY_NAMESPACE[ns].figures(view)
        caption = f"{a['at']} reads {field} {key}: {_canon(next(iter(figs.values())))}"
        self._begin(step, caption, announce=False)
        self._measured(step, caption, figs)
        return
        yield

    def _partition(self, step: Step):
        a = step.args
        placements = self.cluster.placements
        if "cut" in a:
            groups, title = cut_groups(placements, a["cut"]), CUT_TITLES.get(a["cut"], a["cut"])
        elif "region" in a:
            groups, title = region_groups(placements, a["region"]), f"isolate {a['region']}"
        else:
            groups, title = a["groups"], "partition"
        if "groups" not in a and len(groups) < 2:
            raise StepFailed(f"{title}: every replica is on one side, nothing to cut")
        final = self.ops.partition(groups)
        self.groups = [list(g) for g in final]
        sizes = " | ".join(f"{len(g)} POP{'s' if len(g) != 1 else ''}" for g in self.groups)
        self._begin(step, f"{title}: {sizes}")
        return
        yield

    def _heal(self, step: Step):
        self._begin(step, "heal the network: anti-entropy repairs what each side missed")
        self.ops.heal()
        self.groups = None
        return
        yield

    def _crash(self, step: Step):
        at = step.args["at"]
        lose = step.args.get("lose_state", False)
        self._begin(step, f"{at} crashes" + (" and loses its state" if lose else ""))
        self.ops.crash(at, lose)
        return
        yield

    def _recover(self, step: Step):
        self._begin(step, f"{step.args['at']} recovers and catches up by anti-entropy")
        self.ops.recover(step.args["at"])
        return
        yield

    def _wait(self, step: Step):
        ms = step.args["ms"]
        self._begin(step, f"wait {ms:g} ms")
        yield from self._until(self.now + ms)

    def _settle(self, step: Step):
        within = step.args["within_ms"]
        self._begin(step, f"wait for every POP to agree (at most {within:g} ms)")
        yield from self._until(self._loads_end)
        start = self.now
        ok = yield UntilTrue(self.sim.converged, start + within)
        ms = self.now - start
        figs = {"converged": bool(ok), "ms": _ms(ms) if ok else None, "within_ms": within}
        caption = f"every POP agrees after {ms:.1f} ms" if ok else f"not converged after {within:g} ms"
        self._measured(step, caption, figs)

    def _load(self, step: Step):
        a = step.args
        n, rate, add = a["writes"], a["rate_per_s"], a.get("add", 1)
        key = self.key(a["counter"])
        targets = self.who(a.get("at", "all")) if a.get("at", "all") != "all" else list(self.ids)
        figs = {"writes": n, "acknowledged": 0, "redirected": 0, "refused": 0, "added": 0}
        name = a.get("as") or f"load@{step.line}"
        self.figures[name] = figs
        self._begin(step, f"{n} increments of {key} from {len(targets)} POPs, {rate:g} per second")
        start = self.now

        def fire(origin: str) -> Callable[[], None]:
            def go() -> None:
                rid = origin if self.sim.up(origin) else self.nearest_up(origin)
                if rid is None:
                    figs["refused"] += 1
                    return
                if rid != origin:
                    figs["redirected"] += 1  # a client whose POP is down is routed to the nearest one up
                try:
                    self.ops.write(rid, "counters", key, {"add": add})
                except EdgeStateError:  # e.g. the counter would overflow: counted, not fatal to the run
                    figs["refused"] += 1
                    return
                figs["acknowledged"] += 1
                figs["added"] += add
            return go

        for i in range(n):
            t = start + i * 1000.0 / rate
            self._seq += 1
            heapq.heappush(self._pending, (t, self._seq, fire(self.rng.choice(targets))))
            self._loads_end = max(self._loads_end, t)
        return
        yield

    def _expect(self, step: Step):
        a = step.args
        if "converged" in a:
            digests = self.sim.digests()
            actual = len(set(digests.values())) <= 1
            figs = {"converged": actual, "states": len(set(digests.values())), "replicas_up": len(digests)}
            label = "every POP that is up holds the same state" if a["converged"] else "the POPs disagree"
            passed = actual == a["converged"]
        elif "figure" in a:
            name, _, fld = a["figure"].partition(".")
            val = self.figures.get(name, {}).get(fld)
            conds = []
            passed = val is not None
            if "min" in a:
                conds.append(f">= {a['min']:g}")
                passed = passed and isinstance(val, (int, float)) and val >= a["min"]
            if "max" in a:
                conds.append(f"<= {a['max']:g}")
                passed = passed and isinstance(val, (int, float)) and val <= a["max"]
            if "equals" in a:
                conds.append(f"== {_canon(a['equals'])}")
                passed = passed and _equal(val, a["equals"])
            label = f"{a['figure']} {' and '.join(conds)}"
            figs = {a["figure"]: val}
        else:
            field, ns, key = self._ns_key(a)
            t = BY_NAMESPACE[ns]
            asked = [f for f in t.CHECKS if f in a]
            replicas = self.who(a.get("at"))
            observed: dict[str, Any] = {}
            passed = bool(replicas)
            for r in replicas:
                figs = t.figures(self.ops.read(r, ns, key))
                ok = all(_same_items(figs[f], a[f]) if t.CHECKS[f] == "jsonlist" else _equal(figs[f], a[f])
                         for f in asked)
                observed[r] = figs if len(figs) > 1 else next(iter(figs.values()))
                passed = passed and ok
            where = "every POP" if a.get("at") in (None, "all") else ", ".join(replicas)
            want = "; ".join(f"{f} == {_canon(a[f])}" for f in asked)
            label = f"{field} {key} at {where}: {want}"
            distinct = {}
            for r, got in observed.items():
                distinct.setdefault(_canon(got), []).append(r)
            figs = {"replicas": len(replicas),
                    "observed": [{"value": json.loads(k), "at": rs} for k, rs in distinct.items()]}
        label = a.get("label", label)
        check = {"step": step.index, "line": step.line, "label": label, "passed": bool(passed), "figures": figs}
        self.checks.append(check)
        self._begin(step, f"check: {label}", announce=False)
        self.steps[-1]["result"] = "passed" if passed else "failed"
        self.event("running", f"{'✓' if passed else '✗'} {label}", check=check)
        return
        yield

    def _consensus(self, step: Step):
        """The same write through a global leader, on the coordinated baseline with the same
        POPs and latency model (a side simulation: the cluster on the map is not touched)."""
        a = step.args
        writer, leader = a["writer"], self.leader(a.get("leader"))
        self._begin(step, f"the same write at {writer} through a global leader ({leader}), majority commit")
        cc = ConsensusCluster(self.cluster.placements, leader=leader, seed=self.seed, model=self.cluster.model)
        t = cc.write(writer, "kv", "coordinated", {"value": writer})
        ok = cc.run_until_committed([t], max_ms=60_000)
        commit = cc.latency_ms(t) if ok else None
        figs = {"writer": writer, "leader": leader, "quorum": majority(len(self.ids)), "replicas": len(self.ids),
                "commit_ms": _ms(commit) if commit is not None else None,
                "rtt_to_leader_ms": _ms(2 * self.cluster.one_way_ms(writer, leader)) if writer != leader else 0.0,
                "local_ack_ms": 0.0}
        caption = (f"with CRDTs {writer}'s write is answered at {writer}: 0 ms on the WAN; "
                   f"through the leader it commits after {commit:.1f} ms" if ok else
                   f"through the leader, {writer}'s write did not commit")
        self._measured(step, caption, figs)
        return
        yield

    def _availability(self, step: Step):
        """Under the partition in force: which POPs can still write, with CRDTs (here, for real)
        and with a global leader (on the coordinated baseline, with the same cut)."""
        a = step.args
        deadline = a.get("deadline_ms", DEFAULT_AVAILABILITY_DEADLINE_MS)
        leader = self.leader(a.get("leader"))
        self._begin(step, f"every POP tries to write: CRDTs vs a global leader at {leader} "
                          f"(acknowledged within {deadline:g} ms?)")
        up = self.up()
        key = self.key("available-{run}")
        crdt = []
        for rid in up:
            try:
                self.ops.write(rid, "kv", key, {"value": rid})
                crdt.append(rid)
            except EdgeStateError:
                pass
        cc = ConsensusCluster(self.cluster.placements, leader=leader, seed=self.seed, model=self.cluster.model)
        if self.groups:
            cc.sim.partition(self.groups)
        for rid in self.ids:
            if rid not in up:
                cc.sim.crash(rid)
        tickets = {rid: cc.write(rid, "kv", key, {"value": rid}) for rid in up}
        cc.sim.run_for(deadline)
        cons = [rid for rid, t in tickets.items() if cc.committed(t)]
        n = len(self.ids)
        figs = {"leader": leader, "deadline_ms": deadline, "groups": self.groups or [list(self.ids)],
                "crdt_writers": crdt, "consensus_writers": cons,
                "crdt_share": round(len(crdt) / n, 4), "consensus_share": round(len(cons) / n, 4)}
        caption = (f"can write: {len(crdt)} of {n} POPs with CRDTs, {len(cons)} of {n} with a global leader")
        self._measured(step, caption, figs)
        return
        yield
