"""`serve --attach`: the dashboard over replicas that run elsewhere, reached over their HTTP API.

`AttachedLive` is `ProcessLive` (the dashboard over local replica processes) without the
supervisor: the same relaying of reads, writes, batches and lists (each replica's own answer
and error code come back), the same panels, convergence and coordination panel, with these
differences, each because this dashboard does not own the replicas:

- where a replica answers: its URL (`config.Target`), over TLS for https (the CA given, or the
  system's), its token sent on every request, its admin token on fault controls;
- events come from each replica's `GET /api/events` (`feed`), not a local socket; a replica
  whose feed cannot be had is shown down, with the reason (a `crash` event carrying `reason`,
  `unreachable()`, `/readyz`), and retried with backoff; it is up again at its first event;
- the map places replicas by the POP their id names (`config.placement`);
- partition and heal go to each replica's `POST`/`DELETE /api/faults/partition` with its admin
  token. A replica that refuses (no admin token, a wrong one) makes the whole partition refused
  (409 `not_supported_with_attach`, naming it and why), undone at the others first; one that
  cannot be reached learns it when its feed comes back;
- crash, recover, reset and the simulator's controls answer 409 `not_supported_with_attach`:
  stopping a process on another host is not something its HTTP API offers;
- `measured_rtt()`: the round trips each replica's SWIM probes measured (from its `status`
  events), to show beside the model's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path

import orjson

from replication import derived
from replication.contract import ClockInfo
from replication.errors import NotWithAttach

from ..processes.cluster import CONTROL_TIMEOUT_S, ProcessLive
from ..processes.http_client import HttpError, Pool
from .config import Target, placement
from .feed import follow

log = logging.getLogger("edgestate.attach")


class AttachedLive(ProcessLive):
    def __init__(self, targets: list[Target], *, strategy: str = "plumtree") -> None:
        """`strategy`: what the replicas were started with (shown, not changed)."""
        super().__init__([placement(t.id) for t in targets], Path("."), strategy=strategy, inject_latency=False)
        self.targets = {t.id: t for t in targets}
        self._pools = {t.id: Pool(timeout=CONTROL_TIMEOUT_S, ssl=t.ssl_context(),
                                  headers={"Authorization": f"Bearer {t.token}"} if t.token else None)
                       for t in targets}
        self._reasons: dict[str, str] = dict.fromkeys(self.ids, "not reached yet")
        self._rtt: dict[str, dict[str, float]] = {}
        self._started = False

    # -- lifecycle: follow every replica's feed; nothing to spawn ---------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for rid, t in self.targets.items():
            self._tasks.append(loop.create_task(
                follow(t, self._on_event, functools.partial(self._on_up, rid), functools.partial(self._on_down, rid)),
                name=f"attach-{rid}"))
        self._tasks.append(loop.create_task(self._poll_details()))
        self._started = True

    async def close(self) -> None:
        await self._stop_tasks()
        for pool in self._pools.values():
            pool.close()

    def _endpoint(self, rid: str):
        t = self.targets[rid]
        return t.host, t.port, self._pools[rid].ssl, ({"Authorization": f"Bearer {t.token}"} if t.token else {})

    async def _request(self, rid: str, method: str, path: str, body: bytes = b"",
                       headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        t = self.targets[rid]
        return await self._pools[rid].request_full(t.host, t.port, method, path, body, headers)

    # -- reachability ----------------------------------------------------------------------------

    def _on_up(self, rid: str) -> None:
        self._reasons.pop(rid, None)
        if self._groups is not None:  # cut off while it was away: it learns the partition now
            groups = self._groups
            self._tasks.append(asyncio.get_running_loop().create_task(self._catch_up_partition(rid, groups)))

    async def _catch_up_partition(self, rid: str, groups: list[list[str]]) -> None:
        if self._groups == groups:
            why = await self._admin(rid, "POST", "/api/faults/partition", {"groups": groups})
            if why:
                log.warning("replica %s back, but did not take the partition in force: %s", rid, why)

    def _on_down(self, rid: str, reason: str) -> None:
        self._reasons[rid] = reason
        if rid in self._down:
            return
        self._down.add(rid)
        self._state[rid]["status"] = "down"
        self.bus.publish({"t": self.now_ms(), "kind": "crash", "node": rid, "reason": reason})

    def _on_event(self, ev: dict) -> None:
        if ev.get("type") == "status" and isinstance(ev.get("rtt_ms"), dict):
            self._rtt[ev["replica"]] = {p: float(ms) for p, ms in ev["rtt_ms"].items()
                                        if isinstance(ms, (int, float)) and p in self.targets}
        super()._on_event(ev)

    def unreachable(self) -> dict[str, str]:
        """Each replica this dashboard cannot follow now, with why."""
        return {rid: self._reasons[rid] for rid in self.ids if rid in self._reasons}

    def measured_rtt(self) -> dict[str, dict[str, float]]:
        """replica -> peer -> ms: the round trips its failure detector's probes measured (smoothed)."""
        return {rid: dict(self._rtt[rid]) for rid in self.ids if rid in self._rtt}

    def clock_info(self) -> ClockInfo:
        return {**super().clock_info(), "attached": True}

    async def aunready(self) -> str | None:
        """`/readyz`: None when every attached replica is followed and answers its own /readyz 200."""
        if not self._started:
            return "starting"
        away = [f"{rid} unreachable: {why}" for rid, why in self.unreachable().items()]
        problems = await self._unready_up()
        return ", ".join([*away, *problems]) or None

    # -- faults: through each replica's admin API ----------------------------------------------------

    async def _admin(self, rid: str, method: str, path: str, body: dict | None = None) -> str | None:
        """Ask one replica's admin API: None when done (or unreachable: it is told when it is back),
        else why it refused."""
        t = self.targets[rid]
        headers = {"Authorization": f"Bearer {t.admin_token}"} if t.admin_token else None
        try:
            status, _h, raw = await self._request(rid, method, path,
                                                  orjson.dumps(body) if body is not None else b"", headers)
        except (HttpError, OSError, asyncio.TimeoutError) as e:
            log.warning("could not tell %s %s %s: %s", rid, method, path, e)
            return None
        if status == 200:
            return None
        try:
            err = orjson.loads(raw)["error"]
            return f"{status} {err['code']}: {err['message']}"
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return f"answered {status}"

    async def _tell(self, method: str, path: str, body: dict | None) -> list[tuple[str, str]]:
        up = [rid for rid in self.ids if rid not in self._down]
        answers = await asyncio.gather(*(self._admin(rid, method, path, body) for rid in up))
        return [(rid, why) for rid, why in zip(up, answers) if why]

    def _refused(self, what: str, refused: list[tuple[str, str]]) -> NotWithAttach:
        named = "; ".join(f"{rid}: {why}" for rid, why in refused)
        return NotWithAttach(f"{what} needs each replica's admin API, and {named} (give the replicas' admin token: "
                             "--attach-admin-token, or admin_token in the --attach-file)")

    async def partition(self, groups: list[list[str]]) -> list[list[str]]:
        final = derived.partition_groups(groups, self.ids)
        refused = await self._tell("POST", "/api/faults/partition", {"groups": final})
        if refused:
            # undone where it was taken: the cluster is left as it was, not half cut
            before = self._groups
            if before is None:
                await self._tell("DELETE", "/api/faults/partition", None)
            else:
                await self._tell("POST", "/api/faults/partition", {"groups": before})
            raise self._refused("a partition", refused)
        self._groups = final
        self.bus.publish({"t": self.now_ms(), "kind": "partition", "node": None, "groups": final})
        return final

    async def heal(self) -> None:
        refused = await self._tell("DELETE", "/api/faults/partition", None)
        if refused:
            raise self._refused("healing", refused)
        self._groups = None
        self.bus.publish({"t": self.now_ms(), "kind": "heal", "node": None})

    async def crash(self, rid: str, lose_state: bool = False) -> None:
        self._known(rid)
        raise NotWithAttach(f"crash: this dashboard is attached to {rid} at {self.targets[rid].url}, it does not run "
                            "its process; stop it where it runs (it shows down here while it is)")

    async def recover(self, rid: str) -> None:
        self._known(rid)
        raise NotWithAttach(f"recover: this dashboard is attached to {rid} at {self.targets[rid].url}, it does not "
                            "run its process; start it where it runs (it shows up here once it answers)")

    def _refuse(self, what: str):
        raise NotWithAttach(f"{what} is a control of the simulator; these replicas run elsewhere")


__all__ = ["AttachedLive"]
