"""One operation of a generated history, applied at a replica (shared by the property tests)."""

from __future__ import annotations

from replication import Replica


def do(r: Replica, op, now):
    """Apply ("kv"|"kvctx"|"del"|"ctr"|"sadd"|"srm", key, argument) at `r`; returns its delta or None."""
    kind, key, arg = op
    if kind == "kv":
        return r.write_kv(key, arg, now=now)[1]
    if kind == "kvctx":
        return r.write_kv(key, arg, r.read_kv(key).context, now=now)[1]
    if kind == "del":
        return r.delete_kv(key, now=now)[1]
    if kind == "ctr":
        return r.add_counter(key, arg, now=now)[1]
    if kind == "sadd":
        return r.add_to_set(key, arg, now=now)[1]
    return r.remove_from_set(key, arg, now=now)[1]
