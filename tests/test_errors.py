"""Every typed error lives in `replication/errors.py`, with the code and HTTP status it has always had."""

from __future__ import annotations

import importlib
import pkgutil

import app
import replication
from app.web.errors import STATUS_BY_CODE
from replication import errors
from replication.errors import EdgeStateError

# code -> status, as clients and scripts rely on them (README: External contracts)
EXPECTED_STATUS = {
    "invalid_key": 422, "overloaded": 503, "invalid_cursor": 400, "invalid_limit": 422, "invalid_value": 422, "invalid_operation": 422, "counter_overflow": 422,
    "value_too_large": 413, "bad_context": 400, "unknown_type": 404, "unknown_replica": 404,
    "replica_down": 503, "storage_unavailable": 503, "recovering": 503, "not_supported_with_processes": 409,
    "not_supported_with_attach": 409,
    "invalid_idempotency_key": 400, "idempotency_key_reused": 422, "idempotency_table_full": 429,
    "too_many_members": 413, "too_many_fields": 413, "set_too_large": 422, "map_too_large": 422,
}

EXPECTED_CODES = {
    "EdgeStateError": "edgestate_error", "UnknownType": "unknown_type", "InvalidKey": "invalid_key", "Overloaded": "overloaded", "InvalidCursor": "invalid_cursor", "InvalidLimit": "invalid_limit",
    "InvalidValue": "invalid_value", "ValueTooLarge": "value_too_large", "InvalidOperation": "invalid_operation",
    "CounterOverflow": "counter_overflow", "BadContext": "bad_context", "MalformedDelta": "malformed_delta",
    "StaleDelta": "stale_delta", "BadSeal": "bad_seal", "InvalidIdempotencyKey": "invalid_idempotency_key",
    "IdempotencyKeyReused": "idempotency_key_reused", "IdempotencyTableFull": "idempotency_table_full",
    "UnknownReplica": "unknown_replica", "ReplicaDown": "replica_down",
    "NotWithProcesses": "not_supported_with_processes", "NotWithAttach": "not_supported_with_attach",
    "StorageError": "storage_error",
    "StorageLocked": "storage_locked", "WrongReplica": "wrong_replica", "CorruptStorage": "corrupt_storage",
    "MigrationError": "migration_failed", "StorageUnavailable": "storage_unavailable", "Recovering": "recovering",
    "BadFrame": "bad_frame", "LimitExceeded": "limit_exceeded", "TooManyMembers": "too_many_members",
    "SetTooLarge": "set_too_large", "TooManyFields": "too_many_fields", "MapTooLarge": "map_too_large",
}


def _import_all(package) -> None:
    for mod in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if mod.name.endswith("__main__"):
            continue
        importlib.import_module(mod.name)


def _subclasses(cls) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def test_every_typed_error_is_defined_in_errors_py():
    _import_all(replication)
    _import_all(app)
    ours = [c for c in _subclasses(EdgeStateError) if c.__module__.split(".")[0] in ("replication", "app")]
    elsewhere = sorted(f"{c.__module__}.{c.__qualname__}" for c in ours if c.__module__ != "replication.errors")
    assert elsewhere == [], "typed errors belong in replication/errors.py"
    assert {c.__name__: c.code for c in [EdgeStateError, *ours]} == EXPECTED_CODES


def test_the_http_mapping_is_unchanged():
    assert STATUS_BY_CODE == EXPECTED_STATUS
    codes = {getattr(errors, name).code for name in EXPECTED_CODES}
    assert set(STATUS_BY_CODE) <= codes, "every mapped code is some error's"


def test_the_old_import_paths_still_name_the_same_classes():
    from replication import idempotency
    from replication import wire
    from replication.io import migrate
    from replication.io import runner
    from replication.io import storage
    from replication.sim import cluster
    from replication.sim import simulator as sim

    assert storage.CorruptStorage is errors.CorruptStorage and storage.StorageError is errors.StorageError
    assert runner.StorageUnavailable is errors.StorageUnavailable and runner.Recovering is errors.Recovering
    assert sim.ReplicaDown is errors.ReplicaDown and cluster.UnknownReplica is errors.UnknownReplica
    assert migrate.MigrationError is errors.MigrationError and wire.BadFrame is errors.BadFrame
    assert idempotency.IdempotencyTableFull is errors.IdempotencyTableFull
