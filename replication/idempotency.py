"""Idempotency records: a write retried with the same key is applied once and answered the same.

A client that gave up on a write (a timeout, a dropped connection) cannot know whether it
landed. Sending it again with the same `Idempotency-Key` is safe: the replica that took the
first keeps a record of it (the key, a fingerprint of the request, and the answer it gave)
and answers the retry from the record instead of applying the write again.

The rules, the same on a real replica and on the simulator:

- Records are per replica: a key names a write at the replica it was sent to.
- A record is kept for `TTL_MS` (10 minutes) at least, counted from when the write was
  answered; later it may be dropped (a real replica drops expired records at checkpoints).
- Only a write that succeeded leaves a record. A write answered with an error changed
  nothing (a real replica rolls back a write whose flush failed), so its retry applies fresh.
- The same key with a different request (method, path or body) is refused
  (`IdempotencyKeyReused`): a key is a promise about one request.
- A real replica makes a record durable in the same transaction as the write itself, so a
  retry after a restart, clean or not, is still answered from the record.
- The table is bounded (`MAX_RECORDS`, `MAX_BYTES`). At the bound a new keyed write is
  refused (`IdempotencyTableFull`, with how long until the oldest record may go) rather
  than forgetting a record early: forgetting one would let its retry apply twice, which is
  what the key exists to prevent. Writes without a key are not affected.

This module is the bookkeeping only: the HTTP layer renders answers to bytes, a driver
decides when a record is durable. Time is wall-clock milliseconds, passed in.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .errors import IdempotencyKeyReused, IdempotencyTableFull, InvalidIdempotencyKey

TTL_MS = 10 * 60 * 1000
MAX_RECORDS = 100_000
MAX_BYTES = 64 * 1024 * 1024
MAX_KEY_CHARS = 255
RECORD_OVERHEAD_BYTES = 100  # per record, beside its key, fingerprint and body: a rough Python cost


def check_idempotency_key(key: object) -> str:
    """1 to 255 printable ASCII characters (space to tilde)."""
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS or not all(" " <= c <= "~" for c in key):
        raise InvalidIdempotencyKey(
            f"an Idempotency-Key must be 1 to {MAX_KEY_CHARS} printable ASCII characters")
    return key


def request_fingerprint(method: str, replica_id: str, ns: str, key: str, op: dict) -> bytes:
    """What makes two requests the same request: the method, the path (replica, namespace,
    key) and the operation as parsed from the body (so key order and spacing do not matter)."""
    text = json.dumps([method.upper(), replica_id, ns, key, op], sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class Answer:
    """What a keyed write answered: the status and the body's bytes, as first sent."""

    status: int
    body: bytes
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Record:
    key: str
    request: bytes  # the fingerprint of the request the key was first used for
    status: int
    body: bytes
    at_ms: int  # wall-clock time of the answer: the record lives TTL_MS from here

    @property
    def size(self) -> int:
        return len(self.key) + len(self.request) + len(self.body) + RECORD_OVERHEAD_BYTES

    def answer(self) -> Answer:
        return Answer(self.status, self.body, replayed=True)


@dataclass(frozen=True, slots=True)
class Once:
    """A keyed write as the HTTP layer hands it down: the key, the request's fingerprint, and
    how to render the write's result as the answer's body (called once, when it succeeded)."""

    key: str
    request: bytes
    render: Callable[[object], bytes]

    def record(self, result: object, at_ms: int) -> Record:
        return Record(self.key, self.request, 200, self.render(result), at_ms)


class Ledger:
    """One replica's records, oldest first, bounded in count and bytes. Holds only records
    of writes that are done (durable, on a real replica); writes in flight are the driver's."""

    def __init__(self, *, ttl_ms: int = TTL_MS, max_records: int = MAX_RECORDS, max_bytes: int = MAX_BYTES) -> None:
        if ttl_ms <= 0 or max_records <= 0 or max_bytes <= 0:
            raise ValueError("an idempotency ledger needs a positive lifetime and bounds")
        self.ttl_ms = ttl_ms
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._records: OrderedDict[str, Record] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._records)

    def cutoff(self, now_ms: float) -> int:
        """Records answered before this may go."""
        return math.floor(now_ms - self.ttl_ms)

    def expire(self, now_ms: float) -> int:
        """Drop the records older than the lifetime; returns how many went."""
        cut = self.cutoff(now_ms)
        records = self._records
        n = 0
        while records:
            key, rec = next(iter(records.items()))
            if rec.at_ms >= cut:
                break
            del records[key]
            self.bytes -= rec.size
            n += 1
        return n

    def get(self, key: str, request: bytes, now_ms: float) -> Record | None:
        """The record of this key, if it is alive. Raises IdempotencyKeyReused when the key
        was used for another request."""
        self.expire(now_ms)
        rec = self._records.get(key)
        if rec is None:
            return None
        if rec.request != request:
            raise IdempotencyKeyReused(
                f"Idempotency-Key {key!r} was used for a different request at this replica; "
                "use a new key for a new request")
        return rec

    def admit(self, now_ms: float, in_flight: int = 0) -> None:
        """Raise IdempotencyTableFull when one more record would pass a bound (counting the
        keyed writes still in flight, whose records are not here yet)."""
        self.expire(now_ms)
        if len(self._records) + in_flight < self.max_records and self.bytes < self.max_bytes:
            return
        oldest = next(iter(self._records.values()), None)
        wait_ms = self.ttl_ms if oldest is None else oldest.at_ms + self.ttl_ms - now_ms
        raise IdempotencyTableFull(
            f"this replica holds its maximum of idempotency records ({self.max_records} records, "
            f"{self.max_bytes} bytes, each kept {self.ttl_ms // 1000} s); retry later, or write without a key",
            retry_after_s=max(1, math.ceil(wait_ms / 1000.0)))

    def add(self, rec: Record) -> None:
        """Keep a record of a write that is done. Records arrive in answer order, so the
        dictionary stays oldest first; a key seen again (its old record expired) moves to the end."""
        old = self._records.pop(rec.key, None)
        if old is not None:
            self.bytes -= old.size
        self._records[rec.key] = rec
        self.bytes += rec.size

    def clear(self) -> None:
        self._records.clear()
        self.bytes = 0


__all__ = [
    "MAX_BYTES",
    "MAX_KEY_CHARS",
    "MAX_RECORDS",
    "TTL_MS",
    "Answer",
    "IdempotencyKeyReused",
    "IdempotencyTableFull",
    "InvalidIdempotencyKey",
    "Ledger",
    "Once",
    "Record",
    "check_idempotency_key",
    "request_fingerprint",
]
