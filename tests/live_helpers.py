"""Shared by the API tests: a live cluster on a clock the test moves by hand.

Virtual time moves only when a test says so (`clock.advance(s)`), so "Sydney has not seen
London's write yet" is a fact the test sets up, never a race.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from app.dashboard.simulated import LiveCluster, build_live
from app.dashboard.server import create_app
from app.web.security import Settings
from replication.geo import place_replicas, select_pops


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make_live(ids: str = "lhr,syd,jfk", *, strategy: str = "plumtree", clock: FakeClock | None = None) -> LiveCluster:
    return build_live(
        place_replicas(select_pops(ids)), strategy=strategy, seed=1, speed=1.0, epoch_ms=1.7e12,
        clock=clock or FakeClock(), secret=b"test cluster secret",
    )


def make_client(live: LiveCluster, settings: Settings | None = None, **kwargs) -> TestClient:
    return TestClient(create_app(live, settings=settings, wall_clock=kwargs.pop("wall_clock", None)), **kwargs)


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def is_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def snapshot(live: LiveCluster) -> tuple:
    """Everything a refused request must leave alone: states, who is up, the network, the simulation."""
    return (
        live.convergence()["digests"],
        [(s["id"], s["status"], s["incarnation"]) for s in live.replica_states()],
        live.sim.partitioned,
        live.cluster.config.strategy,
        live.speed,
        live.sim.loss,
        live.paused,
        live.sim.now,
    )


def run_async(coro):
    """`asyncio.run` in a thread of its own: works even when this thread already runs a loop
    (Playwright's sync API leaves one running for the rest of the session)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _loops() -> dict:
    import uvloop

    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


LOOPS = _loops()  # the event loops replica processes run on


def run_in_thread(loop_name: str, main) -> None:
    """Run `main()` on a fresh loop of `LOOPS[loop_name]` in a thread of its own (a loop another
    test left marked running in this thread must not matter); its exception is raised here."""
    import threading

    errors: list[BaseException] = []

    def run():
        loop = LOOPS[loop_name]()
        try:
            loop.run_until_complete(main())
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(e)
        finally:
            loop.close()

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if errors:
        raise errors[0]


class WakeTurns:
    """Which loop turn each client's sender was woken in (the hubs wake a group per turn).
    Start it inside the running loop; `watch` each client's `wake` event; `per_turn()` counts."""

    def __init__(self) -> None:
        import asyncio

        self.turn = 0
        self.woke_at: list[int] = []
        self._loop = asyncio.get_running_loop()
        self._count()

    def _count(self) -> None:  # once per loop turn: call_soon from a callback runs in the next turn
        self.turn += 1
        self._loop.call_soon(self._count)

    def watch(self, clients) -> None:
        for c in clients:
            real = c.wake.set
            c.wake.set = lambda real=real: (self.woke_at.append(self.turn), real())

    def per_turn(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for t in self.woke_at:
            out[t] = out.get(t, 0) + 1
        return out
