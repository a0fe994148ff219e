"""Typed errors of the edge state library. Each carries a stable machine-readable `code`.

Every error is raised before any state changes: a caller that catches one may assume the
replica is exactly as it was.
"""


class EdgeStateError(Exception):
    code = "edgestate_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownType(EdgeStateError):
    code = "unknown_type"


class InvalidKey(EdgeStateError):
    code = "invalid_key"


class InvalidValue(EdgeStateError):
    """A value that is not plain JSON (NaN, non-string object keys, sets, bytes, too deep...)."""

    code = "invalid_value"


class ValueTooLarge(EdgeStateError):
    code = "value_too_large"


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
