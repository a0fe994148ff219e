"""One replica's keyspace as the dashboard lists it: the most recently touched keys first.

Built here for an embedded replica (the WebSocket hub) and by a replica process for
`GET /api/detail` (which `serve --processes` relays), so both look the same on the page.
"""

from __future__ import annotations

from collections.abc import Iterable

from replication.crdts import BY_NAMESPACE
from replication.replica import Replica

DETAIL_KEYS = 100  # keys listed in a replica's detail


def replica_detail(r: Replica, recent: Iterable[tuple[str, str]], up: bool) -> dict:
    """`recent`: key refs, oldest first (the order they were last touched). One list per type,
    by namespace, each entry the key and its type's `summary` of the value (each type bounds
    how much of a value its summary lists: a set's members, a map's fields)."""
    present = set(r.store.keys())
    ordered = [k for k in reversed(list(recent)) if k in present]
    if len(ordered) < min(len(present), DETAIL_KEYS):
        listed = set(ordered)
        ordered += sorted(k for k in present if k not in listed)
    shown = ordered[:DETAIL_KEYS]
    by_type: dict[str, list] = {ns: [] for ns in BY_NAMESPACE}
    for ns, key in shown:
        by_type[ns].append({"key": key, **BY_NAMESPACE[ns].summary(r.read(ns, key))})
    return {
        "status": "up" if up else "down", "digest": r.digest(),
        "version_vector": r.version_vector.to_dict(), **by_type,
        "keys": len(present), "truncated": max(0, len(present) - len(shown)),
    }


def empty_detail(status: str, digest: str, version_vector: dict, keys: int) -> dict:
    """A replica's detail with no keys listed (not fetched yet, or the replica is down)."""
    return {"status": status, "digest": digest, "version_vector": version_vector,
            **{ns: [] for ns in BY_NAMESPACE}, "keys": keys, "truncated": 0}
