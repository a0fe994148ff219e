"""One replica's keyspace as the dashboard lists it: the most recently touched keys first.

Built here for an embedded replica (the WebSocket hub) and by a replica process for
`GET /api/detail` (which `serve --processes` relays), so both look the same on the page.
"""

from __future__ import annotations

from collections.abc import Iterable

from replication.replica import Replica

DETAIL_KEYS = 100  # keys listed in a replica's detail
DETAIL_MEMBERS = 50  # set members listed per set


def replica_detail(r: Replica, recent: Iterable[tuple[str, str]], up: bool) -> dict:
    """`recent`: key refs, oldest first (the order they were last touched)."""
    present = set(r.store.keys())
    ordered = [k for k in reversed(list(recent)) if k in present]
    if len(ordered) < min(len(present), DETAIL_KEYS):
        listed = set(ordered)
        ordered += sorted(k for k in present if k not in listed)
    shown = ordered[:DETAIL_KEYS]
    kv, counters, sets = [], [], []
    for ns, key in shown:
        if ns == "kv":
            view = r.read_kv(key)
            kv.append({"key": key, "siblings": [
                {"value": s.value, "replica": s.replica, "counter": s.counter, "hlc": [s.wall_ms, s.logical]}
                for s in view.siblings
            ]})
        elif ns == "counters":
            counters.append({"key": key, "value": r.read_counter(key)})
        elif ns == "sets":
            members = r.read_set(key)
            sets.append({"key": key, "members": members[:DETAIL_MEMBERS], "size": len(members)})
    return {
        "status": "up" if up else "down", "digest": r.digest(),
        "version_vector": r.version_vector.to_dict(), "kv": kv, "counters": counters, "sets": sets,
        "keys": len(present), "truncated": max(0, len(present) - len(shown)),
    }
