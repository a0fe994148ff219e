"""Listing a replica's keys of one type, a page at a time (as Workers KV lists: up to 1,000 keys
a page, an opaque cursor, `list_complete`).

Keys come in code-point order. A cursor is the last key of the page before, so listing holds no
state between pages (any replica, any process restart, can continue it) and every key that is
there from the first page to the last is listed exactly once, whatever is written meanwhile; a
key created or removed during the listing may or may not be listed, as in the stores users know.
The cursor is opaque to clients (base64url of a version tag and the key): a tampered one decodes
to some other position or is refused as `invalid_cursor`, never more than a key's bytes.

A page costs O(keys of the type) to find (a bounded heap over them, nothing sorted in full): a
replica's keyspace is held in memory and bounded by its writes' bounds.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from typing import Iterable, NamedTuple

from .errors import InvalidCursor, InvalidKey, InvalidLimit
from .values import MAX_KEY_BYTES, check_key

MAX_PAGE = 1000
DEFAULT_PAGE = 1000
_TAG = b"k1:"


class Page(NamedTuple):
    keys: list[str]
    cursor: str | None  # where the next page starts; None when the list is complete


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(_TAG + key.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The key a cursor names (the last key of the page before)."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > 2 * MAX_KEY_BYTES:
        raise InvalidCursor("a cursor must be the `cursor` of an earlier page of this listing")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if not raw.startswith(_TAG):
            raise ValueError
        return check_key(raw[len(_TAG):].decode("utf-8"))
    except (ValueError, binascii.Error, UnicodeDecodeError, InvalidKey):
        raise InvalidCursor("a cursor must be the `cursor` of an earlier page of this listing") from None


def check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str):
        raise InvalidKey("a prefix must be a string")
    if prefix:
        check_key(prefix)  # the same text rules as a key; the empty prefix lists everything
    return prefix


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidLimit(f"limit must be a whole number from 1 to {MAX_PAGE}, got {limit!r}")
    return limit


def page(keys: Iterable[str], prefix: str = "", cursor: str | None = None, limit: int = DEFAULT_PAGE) -> Page:
    """One page of `keys` (any order, each once) after `cursor`, starting with `prefix`."""
    check_prefix(prefix)
    check_limit(limit)
    after = decode_cursor(cursor) if cursor is not None else None
    wanted = (k for k in keys if k.startswith(prefix) and (after is None or k > after))
    found = heapq.nsmallest(limit + 1, wanted)
    if len(found) > limit:
        return Page(found[:limit], encode_cursor(found[limit - 1]))
    return Page(found, None)
