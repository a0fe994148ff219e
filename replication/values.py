"""What may be stored: typed namespaces, keys, and plain-JSON values in canonical form.

The namespaces are those of the registered CRDT types (`replication.crdts`).

Values are kept as canonical JSON bytes (sorted object keys, no whitespace). Bytes are
immutable, so a caller holding a value it read cannot change replica state behind our
back, and equal values hash and compare equal on every replica.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from .errors import InvalidKey, InvalidValue, MalformedDelta, UnknownType, ValueTooLarge

MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 64 * 1024
MAX_DEPTH = 64
INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # what orjson and every msgpack peer can carry


_registry: dict | None = None


def _types() -> dict:
    """The CRDT registry (replication.crdts), found on first use: the type modules import this
    one, so it cannot import them while loading."""
    global _registry
    if _registry is None:
        from .crdts import BY_NAMESPACE

        _registry = BY_NAMESPACE
    return _registry


def __getattr__(name: str):
    if name == "NAMESPACES":  # the registered types' namespaces, in registration order
        return tuple(_types())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_namespace(ns: object) -> str:
    types = _types()
    if not isinstance(ns, str) or ns not in types:
        raise UnknownType(f"unknown type {ns!r}: expected one of {', '.join(types)}")
    return ns


def check_key(key: object) -> str:
    if not isinstance(key, str):
        raise InvalidKey("a key must be a string")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKey("a key must be valid UTF-8 text (no lone surrogates)") from None
    if size == 0:
        raise InvalidKey("a key must not be empty")
    if size > MAX_KEY_BYTES:
        raise InvalidKey(f"a key must be at most {MAX_KEY_BYTES} bytes of UTF-8, got {size}")
    return key


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_new_key(key: object) -> str:
    """A key a local write may create: a valid key (`check_key`) without control characters
    (U+0000-U+001F, U+007F), which would otherwise reach logs, terminals and the page as they are.
    Only new writes are held to it: a key already in some replica's state still decodes."""
    check_key(key)
    assert isinstance(key, str)
    bad = _CONTROL.search(key)
    if bad:
        raise InvalidKey(f"a key must not contain control characters (found U+{ord(bad.group()):04X})")
    return key


def _check_json(v: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidValue(f"value nests deeper than {MAX_DEPTH} levels")
    t = type(v)
    if v is None or t is bool or t is str:
        return
    if t is int:
        if not INT_MIN <= v <= INT_MAX:
            raise InvalidValue("integers must fit in 64 bits")
        return
    if t is float:
        if not math.isfinite(v):
            raise InvalidValue("NaN and infinities are not JSON")
        return
    if t is list or t is tuple:
        for item in v:
            _check_json(item, depth + 1)
        return
    if t is dict:
        for k, item in v.items():
            if type(k) is not str:
                raise InvalidValue(f"object keys must be strings, got {type(k).__name__}")
            _check_json(item, depth + 1)
        return
    raise InvalidValue(f"{t.__name__} is not JSON-serialisable")


def encode_value(value: Any, limit: int = MAX_VALUE_BYTES) -> bytes:
    """Validate a plain JSON value and return its canonical bytes."""
    _check_json(value, 0)
    try:
        raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as e:  # e.g. strings with lone surrogates
        raise InvalidValue(f"value is not JSON-serialisable: {e}") from None
    if len(raw) > limit:
        raise ValueTooLarge(f"value is {len(raw)} bytes of JSON; the limit is {limit}")
    return raw


def decode_value(raw: bytes) -> Any:
    return orjson.loads(raw)


def canonical_from_wire(raw: object, limit: int = MAX_VALUE_BYTES) -> bytes:
    """A value received from a peer: must be canonical JSON bytes, re-checked, never trusted."""
    if not isinstance(raw, bytes):
        raise MalformedDelta("a value must be JSON bytes")
    try:
        canon = encode_value(orjson.loads(raw), limit)
    except (orjson.JSONDecodeError, InvalidValue, ValueTooLarge) as e:
        raise MalformedDelta(f"bad value in delta: {e}") from None
    if canon != raw:
        raise MalformedDelta("a value in a delta is not in canonical form")
    return canon
