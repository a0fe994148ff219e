"""Typed errors of the edge state library, all of them here. Each carries a stable
machine-readable `code`; the HTTP layer maps codes to statuses (`app/web/errors.py`).

Every error is raised before any state changes: a caller that catches one may assume the
replica is exactly as it was. (`StorageUnavailable` says so of a write the disk refused: it
was undone everywhere before the error was raised.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .clocks import Dot
    from .io.integrity import Damage
    from .messages import Envelope


class EdgeStateError(Exception):
    code = "edgestate_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownType(EdgeStateError):
    code = "unknown_type"


class InvalidKey(EdgeStateError):
    code = "invalid_key"


class InvalidCursor(EdgeStateError):
    """A listing's cursor that no page of a listing gave (`replication.listing`)."""

    code = "invalid_cursor"


class InvalidLimit(EdgeStateError):
    code = "invalid_limit"


class InvalidValue(EdgeStateError):
    """A value that is not plain JSON (NaN, non-string object keys, sets, bytes, too deep...)."""

    code = "invalid_value"


class ValueTooLarge(EdgeStateError):
    code = "value_too_large"


class LimitExceeded(EdgeStateError):
    """A write over one of the bounds of `replication.bounds`: `limit` names the bound and
    `value` is its value (both in the HTTP answer too). One subclass per kind, by its code."""

    code = "limit_exceeded"

    def __init__(self, limit: str, value: int, message: str) -> None:
        super().__init__(f"{message} (limit {limit} = {value})")
        self.limit, self.value = limit, value


class TooManyMembers(LimitExceeded):
    code = "too_many_members"  # one set operation names more members than it may


class SetTooLarge(LimitExceeded):
    code = "set_too_large"  # an add would make the set key hold more members than it may


class TooManyFields(LimitExceeded):
    code = "too_many_fields"  # one map operation names more fields than it may


class MapTooLarge(LimitExceeded):
    code = "map_too_large"  # a write would make the map key hold more fields than it may


class InvalidOperation(EdgeStateError):
    code = "invalid_operation"


class CounterOverflow(EdgeStateError):
    code = "counter_overflow"


class BadContext(EdgeStateError):
    """A context token that is malformed, tampered with, or issued for another key or cluster."""

    code = "bad_context"


class MalformedDelta(EdgeStateError):
    """A delta from a peer that does not decode to a well-formed, self-consistent delta."""

    code = "malformed_delta"


class StaleDelta(EdgeStateError):
    """An anti-entropy reply computed against a version vector this replica no longer has."""

    code = "stale_delta"


class BadSeal(MalformedDelta):
    """A dot whose content does not match its seal: a damaged copy. Names where it is (`seals`)."""

    code = "bad_seal"

    def __init__(self, ns: str, key: str, dot: Dot, where: str = "") -> None:
        at = f" {where}" if where else ""
        super().__init__(f"{ns} {key!r}: the content of dot {tuple(dot)} does not match its seal{at}")
        self.ns, self.key, self.dot = ns, key, dot


# -- idempotency keys (`idempotency`) ------------------------------------------------------


class InvalidIdempotencyKey(EdgeStateError):
    code = "invalid_idempotency_key"


class IdempotencyKeyReused(EdgeStateError):
    """The key was used for another request at this replica (within its lifetime)."""

    code = "idempotency_key_reused"


class IdempotencyTableFull(EdgeStateError):
    """The replica holds as many records as it may: a keyed write is refused until some expire."""

    code = "idempotency_table_full"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Overloaded(EdgeStateError):
    """The simulated network is too far behind to take another write now (see
    `app/dashboard/simulated.py`, MAX_IN_FLIGHT): refused before anything changed; retry after
    `retry_after_s`."""

    code = "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


# -- which replica: a cluster's (`cluster`, `sim`, the app's clusters) ---------------------


class UnknownReplica(EdgeStateError):
    code = "unknown_replica"


class ReplicaDown(EdgeStateError):
    """The replica is crashed: it cannot take reads or writes until it recovers."""

    code = "replica_down"

    def __init__(self, node_id: str, since: float) -> None:
        super().__init__(f"replica {node_id!r} is down (crashed at t={since:.3f} ms); recover it first")
        self.node_id = node_id
        self.since = since


class NotWithProcesses(EdgeStateError):
    """A control of the simulator (speed, pause, step, loss, strategy, scenarios) asked of a
    cluster of real replica processes."""

    code = "not_supported_with_processes"


class NotWithAttach(NotWithProcesses):
    """A control this dashboard cannot use on replicas it is only attached to (`serve --attach`):
    crash and recover (it does not own their processes), the simulator's controls, and faults a
    replica's admin API refuses."""

    code = "not_supported_with_attach"


# -- a real replica: its disk and its start (`storage`, `migrate`, `runner`) ----------------


class StorageError(EdgeStateError):
    code = "storage_error"


class StorageLocked(StorageError):
    """Another process (or Storage object) holds this data directory."""

    code = "storage_locked"


class WrongReplica(StorageError):
    """The data directory belongs to another replica."""

    code = "wrong_replica"


class CorruptStorage(StorageError):
    """Stored state that fails its checks: a damaged disk, a bug or tampering. `damage` names
    each file and record."""

    code = "corrupt_storage"

    def __init__(self, message: str, damage: list[Damage] | None = None) -> None:
        super().__init__(message)
        self.damage = list(damage or [])


class MigrationError(EdgeStateError):
    code = "migration_failed"


class StorageUnavailable(EdgeStateError):
    """The disk refused a flush: the write was not applied, here or anywhere; retry it."""

    code = "storage_unavailable"


class Recovering(EdgeStateError):
    """The replica is catching up after repairing damaged storage: try again, or another one."""

    code = "recovering"


# -- the wire between replica processes (`wire`, `net`) ------------------------------------


class BadFrame(EdgeStateError):
    """A frame that must be dropped; the connection it came on should be closed.

    `code` says why: bad_hmac, oversized, truncated, malformed, misdirected. `decoded`
    holds the envelopes of good frames that came before it in the same `feed` call.
    """

    code = "bad_frame"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.decoded: list[Envelope] = []
