"""Opaque context tokens: what a read saw, handed back with the next write.

A token names the dots of the values a read returned. It is signed with the cluster's
secret and bound to one key: a forged token could name dots that do not exist yet, and
the replica would then treat a future write as already superseded, losing it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Iterable

import msgpack

from .clocks import Dot, dot_from_wire
from .errors import BadContext, MalformedDelta

VERSION = 1
MAC_BYTES = 16
MAX_TOKEN_CHARS = 8192


def _key_tag(ns: str, key: str) -> bytes:
    return hashlib.sha256(f"{ns}\x00{key}".encode("utf-8", "surrogatepass")).digest()[:8]


class ContextTokens:
    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the token secret must not be empty")
        self._secret = secret

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:MAC_BYTES]

    def issue(self, ns: str, key: str, dots: Iterable[Dot]) -> str:
        payload = msgpack.packb([VERSION, _key_tag(ns, key), sorted([list(d) for d in dots])], use_bin_type=True)
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode("ascii")

    def open(self, token: object, ns: str, key: str) -> list[Dot]:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise BadContext("context must be a token string returned by a read")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise BadContext("context token is not valid base64url") from None
        payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if len(raw) <= MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload)):
            raise BadContext("context token was not issued by this cluster, or was altered")
        try:
            version, tag, raw_dots = msgpack.unpackb(payload, raw=False)
            if version != VERSION:
                raise BadContext(f"unsupported context token version {version!r}")
            dots = [dot_from_wire(d) for d in raw_dots]
        except (ValueError, TypeError, MalformedDelta, msgpack.UnpackException):
            raise BadContext("context token is malformed") from None
        if tag != _key_tag(ns, key):
            raise BadContext("context token was issued for a different key")
        return dots
