"""Peer links over mutual TLS, and what any connection must show before it is read (issue 13).

In-process transports on loopback, under both event loops replicas run on (uvloop's start_tls on
an open stream lost the ClientHello: the reason the transport runs its own accept loop). A test
relay between two transports records every byte, as a capture on the path would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import struct
from pathlib import Path

import httpx
import pytest

from app.processes.supervisor import free_port
from live_helpers import LOOPS, run_in_thread
from replication.io import certs, net
from replication.io.net import Transport
from replication.io.tls import contexts
from replication.messages import Envelope, Gossip, Ping
from replication.replica import Replica
from replication.wire import HELLO_MAX_FRAME, Hello, encode_frame

SECRET = b"a peer tls test secret, long enough"
VALUE = "a-value-no-capture-may-show-7f3a9c"


async def until(cond, what: str, deadline_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not cond():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)  # poll interval


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """Two CAs; certificates from the first for lhr, syd, fra and a stranger, one expired lhr, and lhr's from the second."""
    root = tmp_path_factory.mktemp("pki")
    one, two, old = root / "one", root / "two", root / "old"
    certs.init_ca(one)
    certs.init_ca(two)
    certs.init_ca(old)
    for rid in ("lhr", "syd", "fra", "zzz"):
        certs.issue(one, rid)
    certs.issue(two, "lhr")
    # an lhr certificate from the first CA that expired last year
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=400)
    expired = root / "expired"
    expired.mkdir()
    for name in ("ca.pem", "ca.key"):
        (expired / name).write_bytes((one / name).read_bytes())
    certs.issue(expired, "lhr", days=30, now=past)
    return {"one": one, "two": two, "expired": expired}


def tls_for(pki, rid: str, *, ca: str = "one", issuer: str = "one", cert_of: str | None = None):
    d = pki[issuer]
    name = cert_of or rid
    return contexts([pki[ca] / "ca.pem"], d / f"{name}.pem", d / f"{name}.key")


class Relay:
    """A TCP relay recording every byte sent through it, toward `target`."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.captured = bytearray()
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def _pipe(self, reader, writer) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)

        async def copy(src, dst, record: bool):
            try:
                while data := await src.read(65536):
                    if record:
                        self.captured += data
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(copy(reader, up_w, True), copy(up_r, writer, False))

    async def close(self) -> None:
        self.server.close()


def secret_write() -> Envelope:
    """A real delta carrying VALUE, from lhr to syd."""
    rep = Replica("lhr")
    _view, delta = rep.write_kv("greeting", VALUE, now=1.0)
    return Envelope("lhr", "syd", Gossip(next(iter(delta.applied.dots())), "lhr", delta))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop_name", sorted(LOOPS))
@pytest.mark.parametrize("mode", ["tls", "secret"])
def test_a_capture_of_a_tls_link_shows_no_written_value_and_of_a_secret_only_link_it_does(pki, loop_name, mode):
    async def main():
        got: list[Envelope] = []
        rx_port = free_port()
        relay = Relay(rx_port)
        relay_port = await relay.start()
        tls = mode == "tls"
        rx = Transport("syd", SECRET, {"lhr": ("127.0.0.1", 1)}, got.append, tls=tls_for(pki, "syd") if tls else None)
        await rx.listen("127.0.0.1", rx_port)
        tx = Transport("lhr", SECRET, {"syd": ("127.0.0.1", relay_port)}, lambda e: None,
                       tls=tls_for(pki, "lhr") if tls else None)
        tx.send(secret_write())
        await until(lambda: got, "the write at syd")
        assert got[0].src == "lhr" and rx.encrypted is tls
        await tx.close()
        await rx.close()
        await relay.close()
        assert relay.captured, "the relay saw the traffic"
        shown = VALUE.encode() in bytes(relay.captured)
        assert shown is (not tls), f"{mode}: the value {'appears' if shown else 'does not appear'} in the capture"

    run_in_thread(loop_name, main)


async def _try(pki, loop_name, *, tx_tls, rx_tls, rx_id="syd", dial_as="lhr", rx_peers=("lhr",), deadline_s=3.0):
    """tx (`dial_as`) sends a ping to rx; returns (delivered, rx, tx) after the deadline or a delivery."""
    got: list[Envelope] = []
    rx_port = free_port()
    rx = Transport(rx_id, SECRET, {p: ("127.0.0.1", 1) for p in rx_peers}, got.append, tls=rx_tls)
    await rx.listen("127.0.0.1", rx_port)
    tx = Transport(dial_as, SECRET, {"syd": ("127.0.0.1", rx_port)}, lambda e: None, tls=tx_tls)
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    seq = 0
    while not got and loop.time() < end:
        seq += 1
        tx.send(Envelope(dial_as, "syd", Ping(seq)))
        await asyncio.sleep(0.05)  # a ping per tick, as a node's timers would; the refusal is what is awaited
        if sum(rx.stats.refused.values()) + sum(rx.stats.bad_frames.values()) + sum(tx.stats.refused.values()) >= 2:
            break
    await tx.close()
    await rx.close()
    return got, rx, tx


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop_name", sorted(LOOPS))
@pytest.mark.parametrize(("case", "reason"), [
    ("foreign_ca", "not signed by a ca this replica trusts"),
    ("expired", "certificate has expired"),
])
def test_a_certificate_from_another_ca_or_an_expired_one_is_refused_at_the_handshake(pki, loop_name, case, reason,
                                                                                     caplog):
    async def main():
        issuer = "two" if case == "foreign_ca" else "expired"
        got, rx, tx = await _try(pki, loop_name, tx_tls=tls_for(pki, "lhr", issuer=issuer), rx_tls=tls_for(pki, "syd"))
        assert not got, "nothing from a refused peer reaches the node"
        assert rx.stats.refused["handshake"] >= 1, rx.stats.refused
        assert rx.stats.frames_in == 0

    with caplog.at_level(logging.WARNING, logger="edgestate.net"):
        run_in_thread(loop_name, main)
    lines = [r.getMessage() for r in caplog.records if "refused a peer connection" in r.getMessage()]
    assert any("TLS handshake failed" in m and reason in m.lower() for m in lines), lines


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_certificate_naming_another_replica_cannot_speak_for_lhr(pki, loop_name, caplog):
    """fra's certificate is a good one from our CA: it still cannot say hello as lhr."""

    async def main():
        got, rx, _tx = await _try(pki, loop_name, tx_tls=tls_for(pki, "lhr", cert_of="fra"),
                                  rx_tls=tls_for(pki, "syd"), rx_peers=("lhr", "fra"))
        assert not got
        assert rx.stats.bad_frames["identity"] >= 1, (rx.stats.bad_frames, rx.stats.refused)

    with caplog.at_level(logging.WARNING, logger="edgestate.net"):
        run_in_thread(loop_name, main)
    assert any("certificate is 'fra'" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_certificate_of_a_replica_that_is_not_a_peer_is_refused_before_any_frame(pki, loop_name):
    async def main():
        got, rx, _tx = await _try(pki, loop_name, tx_tls=tls_for(pki, "zzz"), rx_tls=tls_for(pki, "syd"), dial_as="zzz")
        assert not got
        assert rx.stats.refused["unknown_peer"] >= 1, rx.stats.refused

    run_in_thread(loop_name, main)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_the_dialler_refuses_a_listener_whose_certificate_is_not_the_peer_it_dialled(pki, loop_name):
    """lhr dials syd's address but finds fra there (a stale address, or an impostor): nothing is sent."""

    async def main():
        got, rx, tx = await _try(pki, loop_name, tx_tls=tls_for(pki, "lhr"), rx_tls=tls_for(pki, "fra"), rx_id="fra")
        assert not got
        assert tx.stats.refused["identity"] >= 1, tx.stats.refused
        assert tx.stats.frames_out == 0, "not even the hello went out"

    run_in_thread(loop_name, main)


# -- what any connection must show before it is read ----------------------------------------------


def _raw_port_test(loop_name, body, *, tls: bool, pki=None, **patches):
    async def main():
        got: list[Envelope] = []
        port = free_port()
        rx = Transport("syd", SECRET, {"lhr": ("127.0.0.1", 1)}, got.append,
                       tls=tls_for(pki, "syd") if tls else None)
        await rx.listen("127.0.0.1", port)
        try:
            await body(rx, port, got)
        finally:
            await rx.close()

    saved = {k: getattr(net, k) for k in patches}
    for k, v in patches.items():
        setattr(net, k, v)
    try:
        run_in_thread(loop_name, main)
    finally:
        for k, v in saved.items():
            setattr(net, k, v)


async def _closed(reader: asyncio.StreamReader, deadline_s: float = 10.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), deadline_s) == b""
    except (ConnectionError, OSError):
        return True


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_stranger_announcing_a_16_mib_frame_is_cut_off_before_the_hello_not_buffered(loop_name):
    """The measured attack: 20 connections each announcing 16 MiB. Before a hello, a frame may
    be HELLO_MAX_FRAME bytes: each is refused on its four length bytes."""

    async def body(rx, port, _got):
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
        for _r, w in conns:
            w.write(struct.pack(">I", 16 * 1024 * 1024) + b"x" * 65536)
        closed = [await _closed(r) for r, _w in conns]
        for _r, w in conns:
            w.close()
        assert all(closed), "every connection was closed by the receiver"
        assert rx.stats.bad_frames["oversized"] == 20, rx.stats.bad_frames
        assert rx.stats.bytes_in <= 20 * (65536 + 4), "no more than what was already sent was read"

    _raw_port_test(loop_name, body, tls=False)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_first_frame_that_is_not_a_hello_or_one_from_a_stranger_is_refused(loop_name):
    async def body(rx, port, got):
        cases = [
            encode_frame(Envelope("lhr", "syd", Ping(1)), SECRET),  # no hello
            encode_frame(Envelope("zzz", "syd", Hello()), SECRET),  # not a peer
            encode_frame(Envelope("lhr", "syd", Hello()), SECRET) + encode_frame(Envelope("fra", "syd", Ping(2)), SECRET),
        ]
        for data in cases:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(data)
            assert await _closed(r)
            w.close()
        assert dict(rx.stats.bad_frames) == {"no_hello": 1, "unknown_peer": 1, "identity": 1}, rx.stats.bad_frames
        assert not got

    _raw_port_test(loop_name, body, tls=False)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("loop_name", sorted(LOOPS))
@pytest.mark.parametrize("tls", [True, False], ids=["tls", "secret"])
def test_idle_strangers_are_capped_and_timed_out_and_a_peer_still_gets_through(pki, loop_name, tls):
    """The measured attack: 2,000 idle connections, all accepted, never timed out. Now at most
    MAX_PENDING wait to authenticate, each for at most HELLO_S; the rest are closed at once."""

    async def body(rx, port, got):
        socks = []
        for _ in range(60):
            s = socket.create_connection(("127.0.0.1", port))
            s.setblocking(False)
            socks.append(s)
        await until(lambda: rx.stats.refused["too_many_connections"] >= 60 - net.MAX_PENDING,
                    "the connections over the cap refused")
        await until(lambda: rx.stats.refused["hello_timeout"] + rx.stats.refused["handshake"] >= net.MAX_PENDING,
                    "the waiting ones timed out")
        for s in socks:
            s.close()
        tx = Transport("lhr", SECRET, {"syd": ("127.0.0.1", port)}, lambda e: None,
                       tls=tls_for(pki, "lhr") if tls else None)
        tx.send(Envelope("lhr", "syd", Ping(7)))
        await until(lambda: got, "a real peer's ping after the flood")
        await tx.close()

    _raw_port_test(loop_name, body, tls=tls, pki=pki, HELLO_S=1.0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_peer_keeps_at_most_two_connections_the_newest_win(loop_name):
    async def body(rx, port, got):
        hello = encode_frame(Envelope("lhr", "syd", Hello()), SECRET)
        conns = []
        for i in range(3):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(hello + encode_frame(Envelope("lhr", "syd", Ping(i)), SECRET))
            await w.drain()
            conns.append((r, w))
            await until(lambda i=i: len(got) == i + 1, f"ping {i}")
        assert await _closed(conns[0][0]), "the oldest was closed"
        assert rx.stats.refused["replaced"] == 1
        for _r, w in conns:
            w.close()

    _raw_port_test(loop_name, body, tls=False)


def test_hello_frames_fit_the_limit_before_authentication():
    assert len(encode_frame(Envelope("a" * 64, "b" * 64, Hello()), SECRET)) <= HELLO_MAX_FRAME


# -- the replica's own certificate, judged at start ------------------------------------------------


@pytest.mark.parametrize(("case", "phrases"), [
    ("foreign", ["TLS:", "is not signed by the CA in"]),
    ("expired", ["TLS:", "is valid from", "not now"]),
    ("other_id", ["TLS:", "names 'fra', not this replica's id 'lhr'"]),
    ("no_key", ["--ca and --cert given without --key", "TLS needs all three"]),
])
def test_a_replica_with_a_certificate_its_peers_would_refuse_does_not_start(pki, tmp_path, case, phrases):
    from test_replica_cli import assert_refused, base, run_replica, write_secret

    cert = {"foreign": pki["two"] / "lhr.pem", "expired": pki["expired"] / "lhr.pem",
            "other_id": pki["one"] / "fra.pem", "no_key": pki["one"] / "lhr.pem"}[case]
    key = cert.with_suffix(".key")
    args = [*base(tmp_path, write_secret(tmp_path / "secret")), "--ca", str(pki["one"] / "ca.pem"), "--cert", str(cert)]
    if case != "no_key":
        args += ["--key", str(key)]
    rc, err = run_replica(args, tmp_path)
    assert_refused(rc, err, 2, *phrases)
    assert not (tmp_path / "data").exists()


def test_a_replica_listening_off_loopback_without_certificates_says_what_that_does_not_protect(pki, tmp_path):
    from test_replica_cli import base, spawn, stop, wait_healthy, write_secret

    secret = write_secret(tmp_path / "secret")
    plain = base(tmp_path, secret)
    plain[plain.index("--listen") + 1] = f"0.0.0.0:{free_port()}"
    http = free_port()
    proc, err = spawn([*plain, "--http", f"127.0.0.1:{http}"], tmp_path, "plain")
    try:
        wait_healthy(proc, f"http://127.0.0.1:{http}", err)
    finally:
        assert stop(proc) == 0
    text = err.read_text()
    assert "is not loopback" in text and "not encrypted" in text and "can be replayed" in text, text
    # with certificates: no such warning
    one = pki["one"]
    tls = [*base(tmp_path, secret, data="data-tls"), "--ca", str(one / "ca.pem"), "--cert", str(one / "lhr.pem"),
           "--key", str(one / "lhr.key")]
    tls[tls.index("--listen") + 1] = f"0.0.0.0:{free_port()}"
    http = free_port()
    proc, err = spawn([*tls, "--http", f"127.0.0.1:{http}"], tmp_path, "tls")
    try:
        wait_healthy(proc, f"http://127.0.0.1:{http}", err)
        metrics = httpx.get(f"http://127.0.0.1:{http}/metrics", timeout=5).text
        assert 'edgestate_peer_tls{replica="lhr"} 1.0' in metrics, metrics[:2000]
    finally:
        assert stop(proc) == 0
    assert "not encrypted" not in err.read_text()
