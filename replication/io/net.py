"""The real transport: envelopes between replica processes as HMAC-tagged frames over TCP.

Each replica listens on one port for frames from anyone, and dials each peer once for the
frames it sends there: a connection carries frames one way only, so a reader never has to
tell replies from requests, and a peer that restarts simply reconnects.

Nothing a peer sends can crash the process: a frame with a bad tag, a truncated or oversized
frame, or garbage is counted by its `BadFrame` code and the connection is closed (its sender
may be an attacker; an honest one reconnects and the protocols repair any loss). Frames that
cannot be sent (peer down, queue full, a message above 256 MiB) are dropped and
counted: the sans-IO protocols already tolerate loss, exactly as in the simulator.

`delay_ms(peer)` (the `--inject-latency` option) holds each outgoing frame for the geographic
one-way latency before it is written, so a loopback cluster behaves like the world map.
The delay is fixed per link, so a link stays first-in first-out.

`blocked` peers (a partition, set by an operator) get no frames, and frames from them are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from ..messages import Envelope
from ..wire import DEFAULT_MAX_FRAME, BadFrame, FrameDecoder, FrameEncoder

log = logging.getLogger("edgestate.net")

READ_CHUNK = 64 * 1024
MAX_QUEUED_BYTES = 8 * 1024 * 1024  # per peer: beyond this, new frames are dropped
BACKOFF_MIN_S = 0.02
BACKOFF_MAX_S = 1.0


def parse_address(text: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port). Raises ValueError with the reason."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        n = int(port)
    except ValueError:
        raise ValueError(f"{text!r}: port {port!r} is not a number") from None
    if not 0 <= n <= 65535:
        raise ValueError(f"{text!r}: port must be in 0..65535")
    return host, n


@dataclass
class NetStats:
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    bad_frames: Counter = field(default_factory=Counter)  # by BadFrame code
    dropped_out: Counter = field(default_factory=Counter)  # by reason
    connects: int = 0
    connect_failures: int = 0


class _Queued(NamedTuple):
    """One message's frames, waiting to be written to a peer."""

    due: float  # loop time at which it may go (see delay_ms)
    data: bytes  # its frames, joined
    frames: int


class _Link:
    """Frames waiting to go to one peer, and the task that writes them."""

    def __init__(self) -> None:
        self.queue: deque[_Queued] = deque()  # in the order sent, which is the order due (fixed delay)
        self.queued_bytes = 0
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.connected = False


class Transport:
    def __init__(
        self,
        me: str,
        secret: bytes,
        peers: dict[str, tuple[str, int]],
        on_envelope: Callable[[Envelope], None],
        *,
        delay_ms: Callable[[str], float] | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        on_sent: Callable[[str, str, float, int], None] | None = None,
    ) -> None:
        """`on_sent(dst, kind, delay_ms, nbytes)`: told of every frame queued (for an observer's map)."""
        self.me = me
        self._on_sent = on_sent
        self.peers = dict(peers)
        self._secret = secret
        self._encoder = FrameEncoder(secret, max_frame=max_frame)
        self._max_frame = max_frame
        self._on_envelope = on_envelope
        self._delay_ms = delay_ms
        self._links: dict[str, _Link] = {}
        self._server: asyncio.base_events.Server | None = None
        self._readers: set[asyncio.Task] = set()
        self.blocked: set[str] = set()
        self.stats = NetStats()
        self._closed = False

    # -- listening ----------------------------------------------------------------------------

    async def listen(self, host: str, port: int) -> int:
        """Start accepting frames. Returns the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=READ_CHUNK)
        return self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._readers.add(task)
        decoder = FrameDecoder(self._secret, max_frame=self._max_frame, local_id=self.me)
        counted = 0
        try:
            while not self._closed:
                data = await reader.read(READ_CHUNK)
                if not data:
                    decoder.eof()  # raises BadFrame(truncated) if a frame was cut short
                    return
                self.stats.bytes_in += len(data)
                self._deliver(decoder.feed(data))
                self.stats.frames_in += decoder.frames - counted  # fragments count as the frames they are
                counted = decoder.frames
        except BadFrame as e:
            self._deliver(e.decoded)  # authentic messages that came before the bad frame
            self.stats.frames_in += decoder.frames - counted
            self.stats.bad_frames[e.code] += 1
            peer = writer.get_extra_info("peername")
            log.warning("%s: dropped a connection from %s: %s", self.me, peer, e.message)
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # closing: end quietly (asyncio logs a cancelled connection task as an error)
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._readers.discard(task)

    def _deliver(self, envs) -> None:
        for env in envs:
            if env.src not in self.blocked:
                self._on_envelope(env)

    # -- sending ------------------------------------------------------------------------------

    def send(self, env: Envelope) -> None:
        """Queue an envelope for its destination. Never blocks, never raises for the network."""
        dst = env.dst
        if self._closed:
            return
        if dst not in self.peers:
            self.stats.dropped_out["unknown_peer"] += 1
            return
        if dst in self.blocked:
            self.stats.dropped_out["partitioned"] += 1
            return
        try:
            frames = self._encoder.encode_all(env)
        except BadFrame:
            self.stats.dropped_out["oversized"] += 1
            log.warning("%s: a %s to %s is above the message limit; dropped (anti-entropy retries)",
                        self.me, env.kind, dst)
            return
        # a message's frames (more than one when it is fragmented) travel as one unit: queued,
        # written and dropped together, so a receiver never sees half a fragmented message
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        link = self._links.get(dst)
        if link is None:
            link = self._links[dst] = _Link()
            link.task = asyncio.get_running_loop().create_task(self._run_link(dst, link))
        if link.queued_bytes and link.queued_bytes + len(data) > MAX_QUEUED_BYTES:
            self.stats.dropped_out["queue_full"] += 1
            return
        delay = self._delay_ms(dst) if self._delay_ms is not None else 0.0
        due = asyncio.get_running_loop().time() + delay / 1000.0
        link.queue.append(_Queued(due, data, len(frames)))
        link.queued_bytes += len(data)
        if self._on_sent is not None:
            self._on_sent(dst, env.kind, delay, len(data))
        link.wake.set()

    def send_all(self, envs) -> None:
        for env in envs:
            self.send(env)

    async def _run_link(self, dst: str, link: _Link) -> None:
        """The one sender to `dst`, for the transport's lifetime: an unexpected error is logged
        and the link starts over on a new connection, never leaving the peer unserved."""
        while not self._closed:
            try:
                await self._send_loop(dst, link)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a bug here must not silence a peer for ever
                self.stats.dropped_out["sender_error"] += 1
                log.exception("%s: the sender to %s failed; reconnecting", self.me, dst)
                await asyncio.sleep(BACKOFF_MAX_S)

    async def _send_loop(self, dst: str, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_MIN_S
        writer: asyncio.StreamWriter | None = None
        try:
            while not self._closed:
                if not link.queue:
                    link.wake.clear()
                    await link.wake.wait()
                    continue
                if writer is None:
                    host, port = self.peers[dst]
                    try:
                        _r, writer = await asyncio.open_connection(host, port)
                        self.stats.connects += 1
                        link.connected = True
                        backoff = BACKOFF_MIN_S
                    except OSError:
                        self.stats.connect_failures += 1
                        self._drop_expired(link, loop.time() - backoff)
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, BACKOFF_MAX_S)
                        continue
                due = link.queue[0].due
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                # everything already due goes out in one write
                chunks = []
                frames = 0
                now = loop.time()
                while link.queue and link.queue[0].due <= now:
                    q = link.queue.popleft()
                    link.queued_bytes -= len(q.data)
                    chunks.append(q.data)
                    frames += q.frames
                try:
                    writer.write(b"".join(chunks))
                    await writer.drain()
                    self.stats.frames_out += frames
                    self.stats.bytes_out += sum(map(len, chunks))
                except (ConnectionError, OSError, RuntimeError):
                    # Those messages are lost, as on any network; the protocols repair it.
                    # RuntimeError is uvloop's answer to a write on a connection the peer has
                    # reset (a restarted replica): left uncaught it ended this task, and the
                    # peer never heard from us again.
                    self.stats.dropped_out["connection_lost"] += len(chunks)
                    link.connected = False
                    writer.close()
                    writer = None
        finally:
            link.connected = False
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    def _drop_expired(self, link: _Link, before: float) -> None:
        """While a peer is unreachable, frames older than the retry delay are dropped rather
        than delivered late in a burst: anti-entropy will bring the peer what it missed."""
        while link.queue and link.queue[0].due < before:
            link.queued_bytes -= len(link.queue.popleft().data)
            self.stats.dropped_out["unreachable"] += 1

    def link_status(self) -> dict:
        """What an operator needs when a peer seems unreachable: totals, and per peer link
        whether it is connected, what waits in its queue, and whether its sender still runs."""
        st = self.stats
        return {
            "frames_in": st.frames_in, "frames_out": st.frames_out, "connects": st.connects,
            "connect_failures": st.connect_failures, "dropped_out": dict(st.dropped_out),
            "links": {
                peer: {"connected": link.connected, "queued": len(link.queue), "queued_bytes": link.queued_bytes,
                       "sender_alive": link.task is not None and not link.task.done()}
                for peer, link in sorted(self._links.items())
            },
        }

    def connected(self, peer: str) -> bool:
        link = self._links.get(peer)
        return bool(link and link.connected)

    # -- closing ------------------------------------------------------------------------------

    async def close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
        tasks = [link.task for link in self._links.values() if link.task] + list(self._readers)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


__all__ = ["NetStats", "Transport", "parse_address"]
