"""The TCP transport between replica processes, under the event loops replicas run on."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from app.processes.supervisor import free_port
from live_helpers import LOOPS, run_in_thread
from replication.messages import Envelope, Ping
from replication.io.net import Transport

SECRET = b"a transport test secret, long enough"


async def _until(cond, what: str, deadline_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not cond():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)  # poll interval


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_peer_that_resets_the_connection_is_reached_again_when_it_is_back(loop_name):
    """A peer killed mid-stream resets our connection. Under uvloop the next write raised
    RuntimeError, which ended the sender: the restarted peer never heard from us again."""

    async def main():
        port = free_port()
        accepted = []

        async def resetter(_reader, writer):  # a peer that dies: RST, not FIN
            accepted.append(1)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()

        dead = await asyncio.start_server(resetter, "127.0.0.1", port)
        tx = Transport("lhr", SECRET, {"syd": ("127.0.0.1", port)}, lambda e: None)
        seq = 0

        def ping():
            nonlocal seq
            seq += 1
            tx.send(Envelope("lhr", "syd", Ping(seq)))

        # keep sending into the resetting peer until the transport has seen the reset
        async def pinging(stop: asyncio.Event):
            while not stop.is_set():
                ping()
                await asyncio.sleep(0.02)  # one ping per tick, as a node's timers would

        stop = asyncio.Event()
        pinger = asyncio.create_task(pinging(stop))
        await _until(lambda: tx.stats.dropped_out.get("connection_lost", 0) >= 1 and len(accepted) >= 2,
                     "the reset to be noticed and a reconnect")
        dead.close()
        await dead.wait_closed()
        got = []
        rx = Transport("syd", SECRET, {"lhr": ("127.0.0.1", free_port())}, got.append)
        await rx.listen("127.0.0.1", port)
        await _until(lambda: got, "a ping at the restarted peer")
        stop.set()
        await pinger
        assert tx.link_status()["links"]["syd"]["sender_alive"]
        await tx.close()
        await rx.close()

    run_in_thread(loop_name, main)
