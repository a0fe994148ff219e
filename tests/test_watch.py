"""`GET /api/replicas/{id}/watch` on the simulated server, driven as ASGI (no sockets): resume
without loss or duplicates, filters, reset, the never-reading client dropped, the watcher cap.
Every implementation's `awatch` (a replica process, relayed processes) is in test_contract."""

from __future__ import annotations

import asyncio

from live_helpers import run_async
import functools

import orjson

from app.dashboard import simulated
from app.dashboard.server import create_app
from live_helpers import make_live
from replication.changefeed import ChangeFeed
from test_contract import parse_sse

DEADLINE_S = 20.0


class Conn:
    """One request to the app: its chunks as they are sent; `hang` makes every body send block."""

    def __init__(self, app, path: str, headers: dict[str, str] | None = None, *, hang: bool = False) -> None:
        self.app, self.hang = app, hang
        path, _, query = path.partition("?")
        self.scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                      "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
                      "root_path": "", "client": ("127.0.0.1", 5), "server": ("127.0.0.1", 80),
                      "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
        self.status: int | None = None
        self.body = b""
        self.bodies = 0
        self.gone = asyncio.Event()
        self.got = asyncio.Event()
        self.asked = False

    async def receive(self):
        if not self.asked:  # the request's (empty) body first, as a server sends it
            self.asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, msg) -> None:
        if msg["type"] == "http.response.start":
            self.status = msg["status"]
        else:
            if self.hang and self.bodies >= 1:
                await asyncio.Event().wait()  # a client that never reads: the socket is full
            self.bodies += 1
            self.body += msg.get("body", b"")
            self.got.set()

    def start(self) -> asyncio.Task:
        self.task = asyncio.create_task(self.app(self.scope, self.receive, self.send))
        return self.task

    def events(self) -> list[dict]:
        return parse_sse(self.body)

    async def until(self, cond) -> None:
        async with asyncio.timeout(DEADLINE_S):
            while not cond():
                self.got.clear()
                await self.got.wait()

    async def close(self) -> None:
        self.gone.set()
        async with asyncio.timeout(DEADLINE_S):
            await self.task


def run(coro):
    return run_async(coro)


async def write(live, key: str, value, replica: str = "lhr") -> None:
    await live.awrite(replica, "kv", key, {"value": value, "context": None})


def test_a_watch_resumes_after_a_disconnect_with_exactly_the_missed_changes_in_order():
    async def main():
        live = make_live()
        app = create_app(live)
        first = Conn(app, "/api/replicas/lhr/watch?prefix=k/")
        first.start()
        await first.until(lambda: first.body)
        await write(live, "k/0", 0)
        await write(live, "k/1", 1)
        await first.until(lambda: len(first.events()) == 2)
        await first.close()  # forced disconnect
        last = first.events()[-1]["id"]
        for i in range(2, 52):  # written while no one watched
            await write(live, f"k/{i}", i)
        await live.awrite("lhr", "counters", "k/c", {"add": 1})
        again = Conn(app, "/api/replicas/lhr/watch?prefix=k/&types=kv", {"Last-Event-ID": last})
        again.start()
        await again.until(lambda: len(again.events()) >= 50)
        await write(live, "k/52", 52)  # and it goes on live
        await again.until(lambda: len(again.events()) >= 51)
        await again.close()
        got = again.events()
        assert [e["data"]["key"] for e in got] == [f"k/{i}" for i in range(2, 53)]  # no counter: types=kv
        assert len({e["id"] for e in got}) == len(got) and all(e["event"] == "message" for e in got)
        seqs = [int(e["id"].split(".")[1]) for e in got]
        assert seqs == sorted(seqs) and seqs[0] == int(last.split(".")[1]) + 1
        assert got[0]["data"]["view"]["values"] == [2] and got[0]["data"]["origin"] == "lhr"
        assert got[-1]["data"]["version_vector"]["lhr"] >= 53

    run(main())


def test_a_cursor_from_before_a_reset_gets_reset_then_the_stream_goes_on():
    async def main():
        live = make_live()
        app = create_app(live)
        c = Conn(app, "/api/replicas/lhr/watch")
        c.start()
        await c.until(lambda: c.body)
        await write(live, "a", 1)
        await c.until(lambda: c.events())
        await c.close()
        old = c.events()[-1]["id"]
        await live.reset()  # every node new: the feed's run is too
        d = Conn(app, "/api/replicas/lhr/watch", {"Last-Event-ID": old})
        d.start()
        await d.until(lambda: d.events())
        await write(live, "b", 2)
        await d.until(lambda: len(d.events()) == 2)
        await d.close()
        reset, change = d.events()
        assert reset["event"] == "reset" and reset["id"] != old and reset["id"].split(".")[0] != old.split(".")[0]
        assert change["data"]["key"] == "b" and change["id"].split(".")[0] == reset["id"].split(".")[0]

    run(main())


def test_a_never_reading_client_is_told_and_dropped_holding_no_more_than_the_ring(monkeypatch):
    ring = 20
    monkeypatch.setattr(simulated, "ChangeFeed", functools.partial(ChangeFeed, capacity=ring))

    async def main():
        live = make_live()
        app = create_app(live)
        c = Conn(app, "/api/replicas/lhr/watch", hang=True)
        task = c.start()
        await c.until(lambda: c.bodies == 1)  # the hello went out; every later send blocks
        feed = live._feeds["lhr"][1]
        assert feed.subscribers == 1
        for i in range(ring * 3):
            await write(live, f"k{i}", i)
            assert len(feed._ring) <= ring  # what the connection waits on is the shared ring, bounded
            if task.done():
                break
        async with asyncio.timeout(DEADLINE_S):
            await task  # dropped: the response ended though the client never read
        assert feed.subscribers == 0 and app.state.watch_gate.open == 0

    run(main())


def test_watchers_are_capped_and_bad_watches_are_typed_errors():
    async def main():
        live = make_live()
        app = create_app(live)
        app.state.max_watchers = 1
        a = Conn(app, "/api/replicas/lhr/watch")
        a.start()
        await a.until(lambda: a.body)
        for path, status, code in [("/api/replicas/lhr/watch", 503, "too_many_watchers")]:
            b = Conn(app, path)
            b.gone.set()
            b.start()
            await b.close()
            assert b.status == status and orjson.loads(b.body)["error"]["code"] == code
        await a.close()
        for path, status, code in [("/api/replicas/nowhere/watch", 404, "unknown_replica"),
                                   ("/api/replicas/lhr/watch?types=kv,nope", 422, "invalid_types"),
                                   ("/api/replicas/lhr/watch?cursor=garbage", 400, "invalid_cursor")]:
            b = Conn(app, path)
            b.gone.set()
            b.start()
            await b.close()
            assert b.status == status and orjson.loads(b.body)["error"]["code"] == code, (path, b.body)
        assert app.state.watch_gate.open == 0

    run(main())
