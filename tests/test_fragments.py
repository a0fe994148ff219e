"""Messages bigger than a frame: split into tagged fragments, reassembled, or refused cleanly.

A full-state anti-entropy reply for a big keyspace can exceed the frame limit; without
fragments it would be dropped on every round and a replica that lost its state would never
catch up. Frames here are made small (4 KiB) so ordinary deltas need several fragments."""

from __future__ import annotations

import asyncio
import random

import pytest

from app.processes.supervisor import free_port
from live_helpers import run_async
from replication.messages import AeReply, Envelope, Ping
from replication.io.net import Transport
from replication.replica import Replica
from replication.errors import BadFrame
from replication.wire import (
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    FrameEncoder,
    Fragment,
    encode_body,
)

SECRET = b"fragments test secret, 32 bytes."
SMALL = 4096


def big_reply(keys: int = 300) -> Envelope:
    r = Replica("lhr")
    for i in range(keys):
        r.write_kv(f"key-{i}", {"i": i, "pad": "x" * 40}, now=1.0)
    return Envelope("lhr", "syd", AeReply(r.store.full_delta()))


def test_a_big_message_goes_as_fragments_and_comes_back_whole_in_any_chunking():
    env = big_reply()
    frames = FrameEncoder(SECRET, max_frame=SMALL).encode_all(env)
    assert len(frames) > 3 and all(len(f) <= SMALL + 4 for f in frames)
    stream = b"".join(frames) + FrameEncoder(SECRET, max_frame=SMALL).encode(Envelope("lhr", "syd", Ping(7)))
    rng = random.Random(3)
    for _ in range(5):
        dec = FrameDecoder(SECRET, max_frame=SMALL, local_id="syd")
        out, pos = [], 0
        while pos < len(stream):
            n = rng.randint(1, 3 * SMALL)
            out += dec.feed(stream[pos:pos + n])
            pos += n
        dec.eof()
        assert len(out) == 2, out
        assert encode_body(out[0]) == encode_body(env)  # the very same message
        assert isinstance(out[1].msg, Ping)


def test_a_message_that_fits_is_one_ordinary_frame():
    env = Envelope("lhr", "syd", Ping(1))
    [frame] = FrameEncoder(SECRET).encode_all(env)
    assert frame == FrameEncoder(SECRET).encode(env)


def _fragment_frames(env: Envelope) -> list[bytes]:
    return FrameEncoder(SECRET, max_frame=SMALL).encode_all(env)


@pytest.mark.parametrize("case", ["reordered", "interleaved", "restarted", "truncated", "tampered"])
def test_a_broken_fragment_stream_is_a_bad_frame(case):
    frames = _fragment_frames(big_reply())
    enc = FrameEncoder(SECRET, max_frame=SMALL)
    if case == "reordered":
        frames[1], frames[2] = frames[2], frames[1]
        code = "malformed"
    elif case == "interleaved":
        frames.insert(2, enc.encode(Envelope("lhr", "syd", Ping(1))))
        code = "malformed"
    elif case == "restarted":
        frames = frames[:2] + _fragment_frames(big_reply())
        code = "malformed"
    elif case == "truncated":
        frames = frames[:-1]
        code = "truncated"
    else:
        f = bytearray(frames[1])
        f[40] ^= 1
        frames[1] = bytes(f)
        code = "bad_hmac"
    dec = FrameDecoder(SECRET, max_frame=SMALL, local_id="syd")
    with pytest.raises(BadFrame) as e:
        for f in frames:
            assert dec.feed(f) == []
        dec.eof()
    assert e.value.code == code, e.value.message


def test_fragments_whose_message_lies_about_its_ends_or_nests_are_refused():
    enc = FrameEncoder(SECRET, max_frame=SMALL)
    other = encode_body(Envelope("fra", "syd", Ping(1)))  # the inner message claims another sender
    nested = encode_body(Envelope("lhr", "syd", Fragment(9, 0, 2, b"x")))
    for inner in (other, nested):
        half = len(inner) // 2
        frames = [enc.encode(Envelope("lhr", "syd", Fragment(5, 0, 2, inner[:half]))),
                  enc.encode(Envelope("lhr", "syd", Fragment(5, 1, 2, inner[half:])))]
        dec = FrameDecoder(SECRET, max_frame=SMALL, local_id="syd")
        with pytest.raises(BadFrame) as e:
            for f in frames:
                dec.feed(f)
        assert e.value.code == "malformed"


def test_limits_on_whole_messages():
    env = big_reply()
    with pytest.raises(BadFrame) as e:
        FrameEncoder(SECRET, max_frame=SMALL).encode_all(env, max_message=SMALL * 2)
    assert e.value.code == "oversized"
    frames = _fragment_frames(env)
    dec = FrameDecoder(SECRET, max_frame=SMALL, local_id="syd", max_message=SMALL * 2)
    with pytest.raises(BadFrame) as e:
        for f in frames:
            dec.feed(f)
    assert e.value.code == "oversized"


def test_two_transports_carry_a_message_above_the_frame_limit():
    """End to end over TCP, with the default 16 MiB frame: a 19 MB anti-entropy reply arrives whole."""
    r = Replica("lhr")
    for i in range(320):
        r.write_kv(f"big-{i}", "v" * 60_000, now=1.0)  # ~19 MB of values in all
    env = Envelope("lhr", "syd", AeReply(r.store.full_delta()))
    assert len(encode_body(env)) > DEFAULT_MAX_FRAME

    async def main():
        got: list[Envelope] = []
        port = free_port()
        rx = Transport("syd", SECRET, {"lhr": ("127.0.0.1", free_port())}, got.append)
        tx = Transport("lhr", SECRET, {"syd": ("127.0.0.1", port)}, lambda e: None)
        await rx.listen("127.0.0.1", port)
        try:
            tx.send(env)
            for _ in range(600):
                if got:
                    break
                await asyncio.sleep(0.05)  # poll interval
            assert got, f"nothing arrived; sender {tx.stats}, receiver {rx.stats}"
            assert encode_body(got[0]) == encode_body(env)
            assert rx.stats.bytes_in > DEFAULT_MAX_FRAME and not rx.stats.bad_frames
            assert tx.stats.frames_out >= 2  # it went as fragments
        finally:
            await tx.close()
            await rx.close()

    run_async(main())
