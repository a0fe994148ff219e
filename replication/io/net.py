"""The real transport: envelopes between replica processes as frames over TCP, in TLS 1.3 with
mutual authentication (or, for loopback development, HMAC-tagged with a shared secret).

Each replica listens on one port for frames from its peers, and dials each peer once for the
frames it sends there: a connection carries frames one way only, so a reader never has to
tell replies from requests, and a peer that restarts simply reconnects.

Who may speak (see `wire` for the frame format, `tls` for the certificates):
- With `tls`, nothing is read from a connection before its TLS handshake has verified the
  peer's certificate against our CAs; the certificate must name exactly one replica id, one of
  our peers, and the connection's hello and every frame on it must come from that id. The
  dialler checks the same of the replica it reached, so neither end can be impersonated by a
  holder of some other cluster certificate.
- Without, the first frame must be a tagged hello of at most `HELLO_MAX_FRAME` bytes; anyone
  with the secret can speak as anyone, and captured frames can be replayed.
- Connections not yet authenticated are capped (`MAX_PENDING`) and must finish their handshake
  and hello within `HELLO_S`; each peer keeps at most `MAX_PER_PEER` connections (a newer one
  replaces the oldest: a restarted peer's fresh connection wins); a connection silent for
  `IDLE_S` is closed (senders close theirs after `SENDER_IDLE_S`, so an honest one never is).
  Every refusal is counted by reason (`NetStats.refused`) and logged, at most once per reason
  every `LOG_EVERY_S`, so a flood cannot flood the log.

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
import socket
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from ..messages import Envelope
from ..wire import DEFAULT_MAX_FRAME, BadFrame, FrameDecoder, FrameEncoder, Hello
from .tls import replica_ids

log = logging.getLogger("edgestate.net")

READ_CHUNK = 64 * 1024
MAX_QUEUED_BYTES = 8 * 1024 * 1024  # per peer: beyond this, new frames are dropped
BACKOFF_MIN_S = 0.02
BACKOFF_MAX_S = 1.0
MAX_PENDING = 32  # connections accepted but not yet authenticated (handshake and hello)
MAX_PER_PEER = 2  # authenticated connections per peer
HELLO_S = 10.0  # from accept to a verified hello (TLS handshake included)
IDLE_S = 60.0  # a receiving connection silent this long is closed
SENDER_IDLE_S = 30.0  # a sender closes its idle connection first, so a receiver never cuts an honest one
LOG_EVERY_S = 10.0


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
    refused: Counter = field(default_factory=Counter)  # connections refused before any frame, by reason


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
        tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
    ) -> None:
        """`on_sent(dst, kind, delay_ms, nbytes)`: told of every frame queued (for an observer's map).
        `tls`: (server, client) contexts from `tls.contexts`; then `secret` is not used for frames."""
        self.me = me
        self._on_sent = on_sent
        self.peers = dict(peers)
        self._tls = tls
        self._secret = None if tls is not None else secret
        self._encoder = FrameEncoder(self._secret, max_frame=max_frame)
        self._max_frame = max_frame
        self._on_envelope = on_envelope
        self._delay_ms = delay_ms
        self._links: dict[str, _Link] = {}
        self._listener: socket.socket | None = None
        self._acceptor: asyncio.Task | None = None
        self._readers: set[asyncio.Task] = set()
        self._pending = 0
        self._by_peer: dict[str, deque[asyncio.StreamWriter]] = {}
        self._logged: dict[str, tuple[float, int]] = {}  # reason -> (when last logged, refusals since)
        self.blocked: set[str] = set()
        self.stats = NetStats()
        self._closed = False

    @property
    def encrypted(self) -> bool:
        return self._tls is not None

    # -- listening ----------------------------------------------------------------------------

    async def listen(self, host: str, port: int) -> int:
        """Start accepting frames. Returns the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, *_rest, sockaddr = infos[0]
        sock = socket.create_server(sockaddr[:2], family=family, backlog=128)
        sock.setblocking(False)
        self._listener = sock
        self._acceptor = loop.create_task(self._accept())
        return sock.getsockname()[1]

    async def _accept(self) -> None:
        """Our own accept loop, so a connection is counted and capped before a byte of it is read,
        and its TLS handshake starts on a fresh socket (uvloop's start_tls on an open stream loses
        the ClientHello the stream has already read)."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            try:
                conn, address = await loop.sock_accept(self._listener)
            except asyncio.CancelledError:
                raise
            except OSError as e:  # out of descriptors, a reset before accept: keep listening
                self.stats.refused["accept_error"] += 1
                self._log_refusal("accept_error", f"{self.me}: accept failed: {e}")
                await asyncio.sleep(BACKOFF_MIN_S)
                continue
            if self._pending >= MAX_PENDING:
                self._refuse("too_many_connections", address, f"{MAX_PENDING} connections are already authenticating")
                conn.close()
                continue
            self._pending += 1
            task = loop.create_task(self._serve(conn, address))
            self._readers.add(task)
            task.add_done_callback(self._readers.discard)

    async def _open(self, conn: socket.socket, address) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_CHUNK, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            if self._tls is None:
                transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn)
            else:
                transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn, ssl=self._tls[0],
                                                                  ssl_handshake_timeout=HELLO_S)
        except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as e:
            conn.close()
            if self._tls is not None:
                self._refuse("handshake", address, f"TLS handshake failed: {_ssl_reason(e)}")
            return None
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    async def _serve(self, conn: socket.socket, address) -> None:
        pending = True
        counted = 0
        decoder: FrameDecoder | None = None
        writer: asyncio.StreamWriter | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HELLO_S
        try:
            opened = await self._open(conn, address)
            if opened is None:
                return
            reader, writer = opened
            cert_id = self._identity(writer, address) if self._tls is not None else None
            if self._tls is not None and cert_id is None:
                return
            decoder = FrameDecoder(self._secret, max_frame=self._max_frame, local_id=self.me, hello=True,
                                   peer_id=cert_id, peers=self.peers)
            while not self._closed:
                timeout = IDLE_S if not pending else deadline - loop.time()
                try:
                    data = await asyncio.wait_for(reader.read(READ_CHUNK), max(timeout, 0.0))
                except TimeoutError:
                    if pending:
                        self._refuse("hello_timeout", address, f"no hello within {HELLO_S:g} s")
                    else:
                        self.stats.refused["idle"] += 1  # an honest sender closes first; not worth a log line
                    return
                if not data:
                    decoder.eof()  # raises BadFrame(truncated) if a frame was cut short
                    return
                self.stats.bytes_in += len(data)
                envs = decoder.feed(data)
                if pending and decoder.peer is not None:
                    pending = False
                    self._pending -= 1
                    self._admit(decoder.peer, writer)
                self._deliver(envs)
                self.stats.frames_in += decoder.frames - counted  # fragments count as the frames they are
                counted = decoder.frames
        except BadFrame as e:
            self._deliver(e.decoded)  # authentic messages that came before the bad frame
            if decoder is not None:
                self.stats.frames_in += decoder.frames - counted
            self.stats.bad_frames[e.code] += 1
            self._log_refusal(e.code, f"{self.me}: dropped a connection from {address}: {e.message}")
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # closing: end quietly (asyncio logs a cancelled connection task as an error)
            pass
        finally:
            if pending:
                self._pending -= 1
            elif decoder is not None and decoder.peer is not None:
                conns = self._by_peer.get(decoder.peer)
                if conns is not None and writer in conns:
                    conns.remove(writer)
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    def _identity(self, writer: asyncio.StreamWriter, address) -> str | None:
        """The one replica id a verified peer certificate names, or None (refused and counted) for
        a certificate naming none, several, or a replica that is not one of our peers."""
        names = replica_ids(writer.get_extra_info("peercert"))
        if len(names) != 1:
            self._refuse("identity", address, f"its certificate names {names or 'no replica id'}, not one replica")
            return None
        if names[0] not in self.peers:
            self._refuse("unknown_peer", address, f"its certificate is {names[0]!r}'s, not one of this replica's peers")
            return None
        return names[0]

    def _admit(self, peer: str, writer: asyncio.StreamWriter) -> None:
        """One more authenticated connection from `peer`; beyond MAX_PER_PEER the oldest is closed."""
        conns = self._by_peer.setdefault(peer, deque())
        conns.append(writer)
        while len(conns) > MAX_PER_PEER:
            self.stats.refused["replaced"] += 1
            conns.popleft().close()

    def _refuse(self, reason: str, address, detail: str) -> None:
        self.stats.refused[reason] += 1
        self._log_refusal(reason, f"{self.me}: refused a peer connection from {address}: {detail}")

    def _log_refusal(self, reason: str, line: str) -> None:
        """A warning per refusal, but at most one per reason every LOG_EVERY_S (an attacker's flood
        is counted in full and logged in summary)."""
        now = time.monotonic()
        last, since = self._logged.get(reason, (-LOG_EVERY_S, 0))
        if now - last < LOG_EVERY_S:
            self._logged[reason] = (last, since + 1)
            return
        more = f" ({since} more like it since the last line)" if since else ""
        log.warning("%s%s", line, more)
        self._logged[reason] = (now, 0)

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
                    if writer is None:
                        await link.wake.wait()
                        continue
                    try:
                        await asyncio.wait_for(link.wake.wait(), SENDER_IDLE_S)
                    except TimeoutError:  # idle: close it before the receiver's IDLE_S would
                        link.connected = False
                        writer.close()
                        writer = None
                    continue
                if writer is None:
                    writer = await self._dial(dst)
                    if writer is None:
                        self.stats.connect_failures += 1
                        self._drop_expired(link, loop.time() - backoff)
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, BACKOFF_MAX_S)
                        continue
                    self.stats.connects += 1
                    link.connected = True
                    backoff = BACKOFF_MIN_S
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

    async def _dial(self, dst: str) -> asyncio.StreamWriter | None:
        """A connection to `dst` that has said hello, or None. Under TLS, a peer whose verified
        certificate does not name `dst` is refused: we never send to an impostor."""
        host, port = self.peers[dst]
        try:
            if self._tls is None:
                _r, writer = await asyncio.open_connection(host, port)
            else:
                _r, writer = await asyncio.open_connection(host, port, ssl=self._tls[1], server_hostname=host,
                                                           ssl_handshake_timeout=HELLO_S)
        except (ssl.SSLError, TimeoutError) as e:
            self._refuse("handshake", f"{dst} at {host}:{port}", f"TLS handshake failed: {_ssl_reason(e)}")
            return None
        except OSError:
            return None
        if self._tls is not None:
            names = replica_ids(writer.get_extra_info("peercert"))
            if names != [dst]:
                self._refuse("identity", f"{dst} at {host}:{port}",
                             f"the replica there has a certificate for {names or 'no replica id'}, not {dst!r}")
                writer.close()
                return None
        hello = self._encoder.encode(Envelope(self.me, dst, Hello()))
        writer.write(hello)
        self.stats.frames_out += 1
        self.stats.bytes_out += len(hello)
        return writer

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
            "refused": dict(st.refused), "encrypted": self.encrypted,
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
        if self._acceptor is not None:
            self._acceptor.cancel()
        tasks = [link.task for link in self._links.values() if link.task] + list(self._readers)
        if self._acceptor is not None:
            tasks.append(self._acceptor)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._listener is not None:
            self._listener.close()


def _ssl_reason(e: BaseException) -> str:
    """The part of an SSL error an operator can act on ("certificate has expired", "unknown ca")."""
    if isinstance(e, TimeoutError):
        return f"no handshake within {HELLO_S:g} s"
    verify = getattr(e, "verify_message", None)
    if verify:
        if "issuer" in str(verify):  # OpenSSL's words for a certificate from a CA we do not trust
            return f"its certificate is not signed by a CA this replica trusts ({verify})"
        return str(verify)
    reason = getattr(e, "reason", None)
    return (str(reason or e) or type(e).__name__).replace("_", " ").lower()  # str() of a bare reset is ""


__all__ = ["NetStats", "Transport", "parse_address"]
