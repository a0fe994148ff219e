"""The least a durable write over HTTP costs in this stack, measured beside the replica.

The disk's floor (`fsync_floor`) is one SQLite commit with nothing around it. A replica's write
also crosses the loopback socket twice, is parsed by uvicorn, and waits for a commit that runs
off the event loop (in a thread of its own, so that a slow disk never stalls the loop: peers'
probes and reads go on). This module is that skeleton and nothing else: a raw ASGI app on the same
server (uvicorn, httptools, uvloop, the replica's GIL switch interval) that answers a PUT once
its body is committed by the same kind of group committer (one task, the replica's kind of
flush thread, `replication.io.worker`, every body that arrived meanwhile in one transaction;
WAL, `synchronous=FULL`) in the same directory.
No routing, no validation, no CRDT, no log line. `edgestate bench replica` drives it with the
same client and load as the replica, so the ratios replica/skeleton and skeleton/floor say
which part of a write is ours and which is the stack's.

Run as `python -m app.bench.http_floor PORT DIRECTORY`; it prints `ready` once listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from replication.io.worker import Worker

from .fsync_floor import ROW_BYTES, open_db


class _Committer:
    def __init__(self, directory: str) -> None:
        # the worker thread commits on the connection the loop's thread opened: one at a time
        self.conn = open_db(Path(directory) / "http-floor.db", check_same_thread=False)
        self.pending: list[tuple[bytes, asyncio.Future]] = []
        self.kick = asyncio.Event()
        self.worker = Worker("http-floor-flush")

    def _commit(self, rows: list[bytes]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany("INSERT INTO floor (row) VALUES (?)", [(r,) for r in rows])
        self.conn.execute("COMMIT")

    async def run(self) -> None:
        while True:
            await self.kick.wait()
            self.kick.clear()
            batch, self.pending = self.pending, []
            try:
                rows = [b for b, _ in batch]
                await self.worker.call(lambda: self._commit(rows))
            except Exception as e:  # noqa: BLE001 - each waiter gets it (a 500), none waits forever
                with contextlib.suppress(sqlite3.Error):
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                for _, fut in batch:
                    fut.set_exception(e)
                continue
            for _, fut in batch:
                fut.set_result(None)

    async def durable(self, row: bytes) -> None:
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((row, fut))
        self.kick.set()
        await fut


def make_app(directory: str):
    committer: _Committer | None = None

    async def app(scope, receive, send):
        nonlocal committer
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    committer = _Committer(directory)
                    asyncio.get_running_loop().create_task(committer.run())
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        await committer.durable(body[:ROW_BYTES].ljust(ROW_BYTES, b" "))
        answer = b'{"ok":true}'
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})

    return app


def main(argv: list[str]) -> int:
    import uvicorn

    from ..replica.cli import GIL_SWITCH_INTERVAL_S

    port, directory = int(argv[0]), argv[1]
    os.makedirs(directory, exist_ok=True)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    config = uvicorn.Config(make_app(directory), host="127.0.0.1", port=port, http="httptools",
                            log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)

    async def serve():
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                return task.result()
            await asyncio.sleep(0.01)
        print("ready", flush=True)
        await task

    import uvloop

    uvloop.run(serve())
    return 0


READY_TIMEOUT_S = 60.0  # a busy CI machine starts Python slowly; the skeleton says when it listens


class Skeleton:
    """The skeleton as a process of its own (as a replica is): `with Skeleton(dir) as sk:` it
    listens on `sk.port` (process `sk.pid`) until the block ends."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.pid = 0

    def __enter__(self) -> Skeleton:
        from ..processes.supervisor import free_port

        self.port = free_port()
        root = str(Path(__file__).resolve().parents[2])  # the tree this module is from, as the replica's
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen([sys.executable, "-m", "app.bench.http_floor", str(self.port), self.directory],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.pid = self.proc.pid
        ready = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                if line.strip() == b"ready":
                    ready.set()
            ready.set()  # ended without saying ready: the check below says why

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(READY_TIMEOUT_S) or self.proc.poll() is not None:
            self.__exit__(None, None, None)
            err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.stderr else ""
            raise RuntimeError(f"the http_floor skeleton did not start: {err or 'no ready line'}")
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
