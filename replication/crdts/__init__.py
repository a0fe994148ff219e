"""Delta-state CRDTs, one module per type, and the registry that maps namespaces to types.

Every type module implements `base.CrdtType` (new/update/value/merge/to_binary/from_binary, in
riak_dt's words; the module docstring of `base` has the whole behaviour) and is registered here,
once. Everything that handles typed keys (the replica, the store, deltas, seals, storage, the
HTTP API, the dashboard, scenarios, the coordinated baseline, the property harness and the fault
campaign) finds the type through `BY_NAMESPACE`; adding a type is its module plus one
`register` line below (and, for the dashboard, its renderer in `app/dashboard/static/js/types.js`).
"""

from __future__ import annotations

from . import mvregister, ormap, orset, pncounter
from .base import CrdtType, missing_members

BY_NAMESPACE: dict[str, CrdtType] = {}  # namespace -> type, in registration order
BY_LABEL: dict[str, CrdtType] = {}  # its singular label ("map") -> type


def register(t) -> CrdtType:
    """Add a type. Refuses one that lacks a member of the protocol, or whose namespace or label
    is taken."""
    missing = missing_members(t)
    if missing:
        raise TypeError(f"{getattr(t, '__name__', t)!r} is not a CRDT type: it lacks {', '.join(missing)}")
    if t.NAME in BY_NAMESPACE or t.LABEL in BY_LABEL:
        raise ValueError(f"a type named {t.NAME!r} (or labelled {t.LABEL!r}) is registered already")
    BY_NAMESPACE[t.NAME] = t
    BY_LABEL[t.LABEL] = t
    return t


def types() -> list[CrdtType]:
    return list(BY_NAMESPACE.values())


register(mvregister)
register(pncounter)
register(orset)
register(ormap)

__all__ = ["BY_LABEL", "BY_NAMESPACE", "CrdtType", "mvregister", "ormap", "orset", "pncounter", "register", "types"]
