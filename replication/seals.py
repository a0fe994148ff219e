"""Seals: an 8-byte checksum on each live dot's content, made once by the writer.

A dot names one write, so every replica holding the dot must hold the same content for it.
Version vectors cannot see a replica whose copy changed (a corrupted value, a bug, a dot
minted twice): the seal can. The writer computes it when it mints the dot, over

    (namespace, key, dot, the dot's content)

in a canonical encoding, and from then on it travels with the dot: in deltas, on disk,
in anti-entropy repairs. Nobody else ever computes a seal for a dot they received: they
only verify. So a copy whose content no longer matches its seal is known to be damaged,
and a peer's verifying copy can replace it.

What a seal is not: a signature. It is unkeyed (blake2b, 64 bits), so a change that
recomputes the seal (a bug in the writer's path, or a member with the cluster secret
forging content) yields a second copy that verifies as well as the first. Anti-entropy
still finds such a conflict (the copies differ), counts it, and makes every replica keep
the same copy (the lower seal); which of the two was the real write it cannot know.

The content of a dot is its type's business (`contents(store)` of each module in `crdts`):
kv: (value bytes, HLC wall, HLC logical); counters: (p, n); sets: the element's bytes; maps:
the field and what the dot holds there.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import msgpack

from .clocks import Dot
from .crdts import BY_NAMESPACE
from .errors import BadSeal, MalformedDelta

SEAL_BYTES = 8
NO_SEAL = b"\0" * SEAL_BYTES  # what a live dot without a seal shows (it never verifies)
_PERSON = b"edgestate/seal1"


# Copying a keyed, personalised hash is half the cost of making one (every dot of every key the
# scrub walks is sealed again); copy() leaves this one as it is, from any thread.
_BASE = hashlib.blake2b(digest_size=SEAL_BYTES, person=_PERSON)


def seal(ns: str, key: str, dot: Dot, content) -> bytes:
    h = _BASE.copy()
    h.update(msgpack.packb([ns, key, dot[0], dot[1], content], use_bin_type=True))
    return h.digest()


def mint(ns: str, key: str, contents: Iterable[tuple[Dot, object]]) -> dict[Dot, bytes]:
    """Seals for freshly minted dots: only ever called by the writer."""
    return {d: seal(ns, key, d, c) for d, c in contents}


def verifies(ns: str, key: str, dot: Dot, content, s: bytes | None) -> bool:
    return s is not None and seal(ns, key, dot, content) == s


def blob(dots: Iterable[Dot], seals: dict[Dot, bytes]) -> bytes:
    """The seals of `dots` (in the order given, by convention sorted) as one byte string."""
    return b"".join(seals.get(d, NO_SEAL) for d in dots)


def split(ns: str, key: str, dots: list[Dot], raw: object) -> dict[Dot, bytes]:
    """The inverse of `blob` for decoding: checks the length, not the seals."""
    if type(raw) is not bytes or len(raw) != SEAL_BYTES * len(dots):
        raise MalformedDelta(f"{ns} {key!r}: expected {len(dots)} seals of {SEAL_BYTES} bytes")
    return {d: raw[i * SEAL_BYTES:(i + 1) * SEAL_BYTES] for i, d in enumerate(dots)}


def to_row(ns: str, key: str, state, seals: dict[Dot, bytes]) -> list:
    """A key's state with its seals, as storage keeps it: [state in wire form, seals]."""
    mod = BY_NAMESPACE[ns]
    return [mod.to_wire(state), blob(sorted(mod.dots(state)), seals)]


def from_row(ns: str, key: str, obj: object):
    """(state, seals) from `to_row`'s form, every seal verified. Raises BadSeal naming the key."""
    if not (isinstance(obj, list) and len(obj) == 2):
        raise MalformedDelta(f"{ns} {key!r}: a stored key must be [state, seals]")
    mod = BY_NAMESPACE[ns]
    state = mod.from_wire(obj[0])
    got = split(ns, key, sorted(mod.dots(state)), obj[1])
    for d, content in mod.contents(state):
        if not verifies(ns, key, d, content, got[d]):
            raise BadSeal(ns, key, d, "in storage")
    return state, got


__all__ = ["NO_SEAL", "SEAL_BYTES", "blob", "from_row", "mint", "seal", "split", "to_row", "verifies"]
